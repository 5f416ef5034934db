"""Device types of `ringsp generate` (cpu, cuda, npu): which one `auto` means, the
process-group backend of each, and their torch modules.

Nothing CUDA-only is called for an NPU: accelerator calls go through the device type's
module (torch.cuda, or torch.npu once Ascend's torch_npu is imported).
"""
import importlib
import importlib.util

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "npu")
BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


class DeviceError(ValueError):
    """A device type that cannot be used here (its message is one line for the user)."""


def backend_for(device_type):
    """The torch.distributed backend of a device type: NCCL on CUDA, HCCL on Ascend, gloo on CPU."""
    if device_type not in BACKENDS:
        raise ValueError(f"device type must be one of {', '.join(BACKENDS)}, got {device_type!r}")
    return BACKENDS[device_type]


def default_dtype(device_type):
    """The `--dtype auto` of a device type: bf16 on accelerators, fp32 on CPU."""
    return "float32" if device_type == "cpu" else "bfloat16"


def import_torch_npu():
    """Imports Ascend's torch_npu (it registers torch.npu); DeviceError if it cannot."""
    try:
        return importlib.import_module("torch_npu")
    except ImportError as exc:
        raise DeviceError(f"--device npu: torch_npu is not importable ({exc}); install Ascend's torch_npu built "
                          f"for torch {torch.__version__.split('+')[0]}") from None


def device_module(device_type):
    """torch.cuda / torch.npu for an accelerator type (torch_npu imported first for npu)."""
    if device_type == "npu":
        import_torch_npu()
    module = getattr(torch, device_type, None)  # what torch.get_device_module returns, without a device string
    if module is None or device_type == "cpu":
        raise DeviceError(f"no accelerator module torch.{device_type}")
    return module


def resolve_device(choice):
    """'cpu' / 'cuda' / 'npu' for a --device choice; DeviceError if it is not usable here."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "npu" if _npu_present() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    if choice == "npu" and not device_module("npu").is_available():
        raise DeviceError("--device npu: torch_npu is installed but no NPU is available on this machine")
    return choice


def _npu_present():
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        return bool(device_module("npu").is_available())
    except DeviceError:
        return False


def accelerator_count(device_type):
    return int(device_module(device_type).device_count())


def rank_device(device_type, local_rank):
    """This rank's torch.device: the CPU, or accelerator `local_rank` of its type."""
    if device_type == "cpu":
        return torch.device("cpu")
    device_module(device_type)  # registers the npu device type before torch.device names it
    return torch.device(device_type, local_rank)
