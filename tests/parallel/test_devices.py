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


@pytest.mark.parametrize("backend,compute,control", [
    ("gloo", "cpu", "cpu"),
    ("nccl", "accelerator", "accelerator"),
    ("hccl", "accelerator", "accelerator"),  # Ascend: not CPU although the name is not "nccl"
    ("cpu:gloo,cuda:nccl", "accelerator", "cpu"),  # mixed: data on the GPU, control on gloo
    ("cpu:gloo,npu:hccl", "accelerator", "cpu"),
])
def test_devices_follow_the_backend_alone(monkeypatch, backend, compute, control):
    """Every rank of a group picks the same kind of device from the backend name alone, a
    rank whose own tensors were unusable included (it has no tensor to look at)."""
    from ringsp.parallel import devices

    accelerator = torch.device("meta")  # stands in for this rank's CUDA / NPU device
    monkeypatch.setattr(devices.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(devices, "_accelerator", lambda: accelerator)
    named = {"cpu": torch.device("cpu"), "accelerator": accelerator}
    assert devices.compute_device(None) == named[compute]
    assert devices.control_device(None) == named[control]
