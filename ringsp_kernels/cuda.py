"""CUDA implementations of the ringsp ops: Triton kernels, registered for the CUDA key."""
import torch

from . import checks
from .triton_attn import launch
from .triton_merge import launch_merge


def _unit_stride(t):
    """The kernels want unit stride in D; returns (tensor to use, tensor to copy back to)."""
    return (t, None) if t.stride(3) == 1 else (t.contiguous(), t)


def attn_fwd(q, k, v, scale=None, kv_len=None):
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    launch(q, k, v, out, lse, checks.default_scale(q, scale), kv_len, has_state=False)
    return out, lse


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0:  # an empty block leaves the state as it is
        return
    work, back = _unit_stride(acc)
    launch(q, k, v, work, lse, checks.default_scale(q, scale), kv_len, has_state=True)
    if back is not None:
        back.copy_(work)


def merge_(acc, lse, out_blk, lse_blk):
    work, back = _unit_stride(acc)
    launch_merge(work, lse, out_blk, lse_blk)
    if back is not None:
        back.copy_(work)
