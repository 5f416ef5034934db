"""The CUDA implementations of the 8-bit attention ops (ringsp_kernels.fp8 defines the ops and
validates `precision`; the kernels are triton_fp8.py's), and which GPUs can run them."""
import torch

from ..checks import default_scale
from ..fp8_reference import PRECISIONS
from .triton_attn import capability

MIN_CAPABILITY = {"fp8": (8, 9), "int8": (8, 0)}


def check_precision(q, precision):
    """8-bit attention needs the tensor cores for it: FP8 from compute capability 8.9, INT8 from 8.0."""
    index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    have, need = capability(index), MIN_CAPABILITY[precision]
    if have < need:
        raise ValueError(f"precision={precision!r} needs compute capability >= {need[0]}.{need[1]} "
                         f"({'FP8' if precision == 'fp8' else 'INT8'} tensor cores); {q.device} has "
                         f"{have[0]}.{have[1]}: use precision=None")


def _int8(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "int8"


def attn_fwd_q8(q, k, v, scale=None, kv_len=None, precision="fp8"):
    from . import triton_fp8

    int8 = _int8(precision)
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    if kv_len == 0 or out.numel() == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    triton_fp8.attend(q, k, v, out, lse, default_scale(q, scale), kv_len, int8, has_state=False)
    return out, lse


def attn_step_q8_(q, k, v, acc, lse, scale=None, kv_len=None, precision="fp8"):
    from . import triton_fp8

    int8 = _int8(precision)
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or q.numel() == 0:  # an empty block leaves the state as it is
        return
    triton_fp8.attend(q, k, v, acc, lse, default_scale(q, scale), kv_len, int8, has_state=True)
