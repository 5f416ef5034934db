"""Which device a process group works on, and device-agnostic stream handles.

No CUDA-only call is made for another device type: streams and events come from
`torch.get_device_module(device)`, which is torch.cuda for CUDA and torch.npu for Ascend.
"""
import torch
import torch.distributed as dist


def _accelerator():
    acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
    if acc is None:
        return None
    return torch.device(acc.type, torch.accelerator.current_device_index())


def _backend(group):
    # A plain name ("gloo", "nccl", "hccl") or a per-device map ("cpu:gloo,cuda:nccl").
    return str(dist.get_backend(group)).lower()


def compute_device(group=None):
    """The device a group's data collectives run on (None = WORLD): CPU for a pure gloo
    group, else this process's current accelerator (CUDA for NCCL, NPU for HCCL, ...)."""
    if _backend(group) == "gloo":
        return torch.device("cpu")
    return _accelerator() or torch.device("cpu")


def control_device(group=None):
    """Where small control tensors (fingerprints, flags) go (None = WORLD): CPU when the
    group can do gloo (alone or in a mixed backend such as "cpu:gloo,cuda:nccl"), else the
    compute device (NCCL, HCCL).

    Chosen from the group's backend alone, never from a rank's own tensors: every rank picks
    the same kind of device, a rank whose arguments were unusable included."""
    return torch.device("cpu") if "gloo" in _backend(group) else compute_device(group)


def stream_module(device):
    """torch.cuda / torch.npu / ... for an accelerator device; None for CPU (no streams)."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    mod = torch.get_device_module(device)
    return mod if hasattr(mod, "Stream") and hasattr(mod, "current_stream") else None


_comm_streams = {}


def comm_stream(device):
    """One communication stream per device, created on first use; None on CPU."""
    mod = stream_module(device)
    if mod is None:
        return None
    device = torch.device(device)
    key = (device.type, device.index if device.index is not None else mod.current_device())
    if key not in _comm_streams:
        _comm_streams[key] = mod.Stream(device=torch.device(key[0], key[1]))
    return _comm_streams[key]
