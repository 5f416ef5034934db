"""Device types of `ringsp generate`: the backend per device (NCCL / HCCL / gloo), `auto`, and
--device npu checked on CPU: without torch_npu a clear error; with a stand-in torch_npu module
the launcher takes HCCL, sets the NPU through torch.npu and never touches torch.cuda."""
import sys
import types

import pytest
import torch

from ringsp.cli import devices
from ringsp.cli.args import UsageError, parse_request
from ringsp.cli.devices import DeviceError, backend_for, default_dtype, resolve_device

TINY = ["--model", "tiny-wan", "--no-output"]


@pytest.mark.parametrize("device, backend, dtype", [
    ("cuda", "nccl", "bfloat16"), ("npu", "hccl", "bfloat16"), ("cpu", "gloo", "float32"),
])
def test_backend_and_dtype_per_device(device, backend, dtype):
    assert backend_for(device) == backend and default_dtype(device) == dtype


def test_unknown_device_type():
    with pytest.raises(ValueError, match="device type must be one of"):
        backend_for("tpu")
    with pytest.raises(DeviceError, match="--device must be one of"):
        resolve_device("tpu")


def test_npu_without_torch_npu(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # makes `import torch_npu` raise ImportError
    with pytest.raises(DeviceError, match="torch_npu is not importable"):
        resolve_device("npu")
    with pytest.raises(UsageError, match="--device npu: torch_npu is not importable"):
        parse_request(TINY + ["--device", "npu"], env={})


class _FakeNpu:
    """What torch_npu installs as torch.npu, reduced to the calls ringsp makes."""

    def __init__(self, count):
        self.count, self.current = count, None

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count

    def set_device(self, index):
        self.current = index


@pytest.fixture
def fake_npu(monkeypatch):
    npu = _FakeNpu(2)
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return npu


def test_npu_request_with_torch_npu(fake_npu):
    req = parse_request(TINY + ["--device", "npu", "--num-gpus", "2"], env={})
    assert (req.device, req.dtype, req.num_gpus) == ("npu", "bfloat16", 2)
    with pytest.raises(UsageError, match="needs 4 NPUs on this machine but 2 are present"):
        parse_request(TINY + ["--device", "npu", "--num-gpus", "4"], env={})
    fake_npu.count = 0
    with pytest.raises(UsageError, match="no NPU is available"):
        parse_request(TINY + ["--device", "npu"], env={})


def test_auto_prefers_cuda_then_npu(fake_npu, monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())
    assert resolve_device("auto") == "npu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_launcher_uses_hccl_on_npus(fake_npu, monkeypatch):
    import torch.distributed as dist

    from ringsp.cli import launch

    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))

    def no_cuda(*args, **kwargs):
        raise AssertionError("a CUDA call on an NPU run")

    monkeypatch.setattr(torch.cuda, "set_device", no_cuda)
    req = parse_request(TINY + ["--device", "npu", "--num-gpus", "2"], env={})
    launch.init_group(req, local_rank=1)
    assert fake_npu.current == 1
    assert calls[0][0] == "hccl" and "device_id" not in calls[0][1]
    cpu = parse_request(TINY + ["--device", "cpu", "--num-gpus", "2"], env={})
    launch.init_group(cpu, local_rank=0)
    assert calls[1][0] == "gloo"


def test_rank_device_registers_npu_first(fake_npu, monkeypatch):
    seen = []
    monkeypatch.setattr(devices, "device_module", lambda t: seen.append(t))
    monkeypatch.setattr(torch, "device", lambda *a: a)  # torch.device("npu") needs the real torch_npu
    assert devices.rank_device("npu", 1) == ("npu", 1) and seen == ["npu"]
    assert devices.rank_device("cpu", 3) == ("cpu",)
