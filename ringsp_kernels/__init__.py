"""ringsp_kernels: fused ring-attention steps with the online-softmax merge inside the kernel.

    out, lse = attn_fwd(q, k, v)            # attention over one KV block
    acc, lse = init_state(q)                # empty online-softmax state
    attn_step_(q, k, v, acc, lse)           # one ring step, merged in place
    merge_(acc, lse, out_blk, lse_blk)      # merge a partial result computed elsewhere
    out = finalize(acc, lse, q.dtype)

q/k/v/out are [B, S, H, D]; lse is [B, H, S] float32 (natural log, -inf for a row that
has seen no key); acc is float32 [B, S, H, D] holding the normalised output so far.
Every function is also `torch.ops.ringsp.<name>`; the backend follows the tensors' device.
"""
import torch

from . import registry  # noqa: F401  (loads the op library and binds the backends)
from .checks import DTYPES, check_merge, check_qkv, check_state
from .reference import reference_attention

__all__ = ["attn_fwd", "init_state", "attn_step_", "merge_", "finalize", "reference_attention"]


def attn_fwd(q, k, v, scale=None, kv_len=None):
    """Attention of q over k/v[:, :kv_len]; returns (out in q's dtype, lse float32 [B, H, Sq])."""
    kv_len = check_qkv(q, k, v, scale, kv_len)
    return torch.ops.ringsp.attn_fwd(q, k, v, scale, kv_len)


def init_state(q):
    """An empty running state for q: acc zeros (float32, q's shape), lse -inf [B, H, Sq]."""
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise ValueError("q must be a [B, S, H, D] tensor")
    return torch.ops.ringsp.init_state(q)


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
    """Attends q to this KV block and merges the result into (acc, lse) in place."""
    kv_len = check_qkv(q, k, v, scale, kv_len)
    check_state(q, acc, lse)
    torch.ops.ringsp.attn_step_(q, k, v, acc, lse, scale, kv_len)


def merge_(acc, lse, out_blk, lse_blk):
    """Merges a partial attention result (out_blk, lse_blk) into (acc, lse) in place."""
    check_merge(acc, lse, out_blk, lse_blk)
    torch.ops.ringsp.merge_(acc, lse, out_blk, lse_blk)


def finalize(acc, lse, dtype):
    """The attention output of the state in `dtype` -- pass q.dtype: a float32 state cannot
    know which dtype q had. Rows that saw no key are 0."""
    check_state(acc, acc, lse, q_name="acc")
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32 (q.dtype), got {dtype!r}")
    return torch.ops.ringsp.finalize(acc, lse, dtype)
