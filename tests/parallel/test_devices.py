"""Device and stream selection; accelerator paths only run where one is present."""
import pytest
import torch

from ringsp.parallel.devices import comm_stream, stream_module
from tests.mp_pool import run_distributed


def test_cpu_has_no_streams():
    assert stream_module("cpu") is None and comm_stream(torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_comm_stream_is_cached_and_separate():
    s = comm_stream(torch.device("cuda", 0))
    assert s is comm_stream("cuda:0") and s != torch.cuda.current_stream(0)


def _devices():
    from ringsp.parallel.devices import compute_device, control_device

    return compute_device().type, control_device().type


def test_gloo_group_computes_on_cpu():
    assert run_distributed(2, _devices) == [("cpu", "cpu")] * 2
