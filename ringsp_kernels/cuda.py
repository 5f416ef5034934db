"""CUDA implementations of the ringsp ops, registered for the CUDA key.

Attention runs in the fused Triton kernel (triton_attn.py) or, where cuDNN is faster for a
shape, as cuDNN attention with LSE followed by the one-pass Triton merge -- so users never
pay for the slower path. The choice is measured, not guessed: the first call of each
(device, dtype, head dim, heads, size class, step/fwd) times both paths once and caches
the winner. RINGSP_CUDA_ATTN=triton|cudnn forces one (auto by default).
"""
import logging
import os

import torch

from . import checks
from .triton_attn import bucket, launch
from .triton_merge import launch_merge

log = logging.getLogger("ringsp")
_CHOICE = {}  # shape class -> "triton" | "cudnn"


def _time_pair(fn_a, fn_b, rounds=5):
    """Median milliseconds of two candidates, timed in alternation so that clock drift and
    throttling bias neither; the first call of each (compile, autotune, plan) is excluded."""
    fn_a()
    fn_b()
    times = ([], [])
    for _ in range(rounds):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    return tuple(sorted(t)[len(t) // 2] for t in times)


def _choose(q, k, v, scale, kv_len, acc, lse, has_state):
    forced = os.environ.get("RINGSP_CUDA_ATTN", "auto")
    if forced not in ("auto", "triton", "cudnn"):
        raise ValueError(f"RINGSP_CUDA_ATTN must be auto, triton or cudnn, got {forced!r}")
    if q.device.type != "cuda" or q.dtype == torch.float32:  # interpreter tests; cuDNN has no fp32
        return "triton"
    if forced != "auto":
        return forced
    B, Sq, H, D = q.shape
    key = (torch.cuda.get_device_capability(q.device), q.dtype, D, H, bucket(B), bucket(Sq), bucket(kv_len), has_state)
    if key not in _CHOICE:
        if torch.cuda.is_current_stream_capturing():  # no timing inside a CUDA graph capture
            return "triton"
        a, l2 = acc.clone(), lse.clone()  # scratch: the trials must not touch the caller's state
        try:
            triton_ms, cudnn_ms = _time_pair(lambda: launch(q, k, v, a, l2, scale, kv_len, has_state=has_state),
                                             lambda: _cudnn_into(q, k, v, scale, kv_len, a, l2, has_state))
        except RuntimeError as e:  # a shape or head dim this cuDNN build does not support
            log.info("ringsp: cuDNN attention unavailable for %s: %s", tuple(q.shape), e)
            triton_ms, cudnn_ms = 0.0, float("inf")
        _CHOICE[key] = "triton" if triton_ms <= cudnn_ms else "cudnn"
        log.info("ringsp: %s D=%d %s H=%d Sq~%d Sk~%d -> %s (triton %.3f ms, cudnn%s %.3f ms)",
                 "attn_step_" if has_state else "attn_fwd", D, q.dtype, H, bucket(Sq), bucket(kv_len),
                 _CHOICE[key], triton_ms, "+merge" if has_state else "", cudnn_ms)
    return _CHOICE[key]


def _cudnn_into(q, k, v, scale, kv_len, acc, lse, has_state):
    out, lse_blk = cudnn_attn(q, k, v, scale, kv_len)
    if has_state:
        launch_merge(acc, lse, out, lse_blk)
    else:
        acc.copy_(out)
        lse.copy_(lse_blk)


def cudnn_attn(q, k, v, scale, kv_len):
    """cuDNN attention over k/v[:, :kv_len] returning (out [B,S,H,D], lse [B,H,S] float32)."""
    k, v = k[:, :kv_len], v[:, :kv_len]
    res = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, scale=scale)
    out, lse = res[0], res[1]
    return out.transpose(1, 2), lse.reshape(q.shape[0], q.shape[2], q.shape[1]).float()


def _unit_stride(t):
    """The kernels want unit stride in D; returns (tensor to use, tensor to copy back to)."""
    return (t, None) if t.stride(3) == 1 else (t.contiguous(), t)


def _empty_result(q):
    B, Sq, H, _ = q.shape
    return torch.zeros_like(q), torch.full((B, H, Sq), float("-inf"), device=q.device)


def attn_fwd(q, k, v, scale=None, kv_len=None):
    kv_len = k.shape[1] if kv_len is None else kv_len
    scale = checks.default_scale(q, scale)
    if kv_len == 0 or q.shape[1] == 0:
        return _empty_result(q)
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    if _choose(q, k, v, scale, kv_len, out, lse, has_state=False) == "cudnn":
        _cudnn_into(q, k, v, scale, kv_len, out, lse, has_state=False)
    else:
        launch(q, k, v, out, lse, scale, kv_len, has_state=False)
    return out, lse


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or q.shape[1] == 0:  # an empty block leaves the state as it is
        return
    scale = checks.default_scale(q, scale)
    work, back = _unit_stride(acc)
    if _choose(q, k, v, scale, kv_len, work, lse, has_state=True) == "cudnn":
        _cudnn_into(q, k, v, scale, kv_len, work, lse, has_state=True)
    else:
        launch(q, k, v, work, lse, scale, kv_len, has_state=True)
    if back is not None:
        back.copy_(work)


def merge_(acc, lse, out_blk, lse_blk):
    work, back = _unit_stride(acc)
    launch_merge(work, lse, out_blk, lse_blk)
    if back is not None:
        back.copy_(work)
