"""CUDA implementations of the ringsp ops, registered for the CUDA key.

Attention runs in the fused Triton kernel (triton_attn.py) or, where a vendor kernel is
faster for a shape class -- cuDNN, or FlashAttention-4 where installed (fa4.py) -- as that
kernel with LSE followed by the one-pass Triton merge, so users never pay for the slower
path. dispatch.py decides per (device, dtype, head dim, heads, size class, op) from its
tables, measuring a class no table knows once (local mode only; see dispatch.py for the
rank-consistent mode). Each exact shape's plan (path + Triton
config) is then kept here, so a call costs one dict lookup before its launch.

RINGSP_CUDA_ATTN=triton|cudnn|fa4 forces a path (auto by default); it is read once, at import
-- set_forced() / forced() change it later. A forced path never triggers a measurement.
"""
import contextlib
import functools
import logging
import os

import torch

from . import dispatch, fa4, timing
from .triton_attn import capability, configs, launch
from .triton_merge import launch_merge

log = logging.getLogger("ringsp")
CHOICES = ("auto", "triton", "cudnn", "fa4")
_PLANS = {}  # (device, q.shape, Sk, dtype, op, forced path) -> (path, config)
_NAMES = {}  # device index -> device name
_CUDNN = torch.ops.aten._scaled_dot_product_cudnn_attention.default
_capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", None) or torch.cuda.is_current_stream_capturing
dispatch.on_change(_PLANS.clear)


def _validated(value):
    if value not in CHOICES:
        raise ValueError(f"RINGSP_CUDA_ATTN must be one of {', '.join(CHOICES)}, got {value!r}")
    if value == "fa4" and not fa4.available():
        raise ValueError(f"RINGSP_CUDA_ATTN=fa4: {fa4.why_unavailable()} (pip install 'ringsp[fa4]')")
    return value


_forced = os.environ.get("RINGSP_CUDA_ATTN", "auto")  # validated on first use, not at import


def set_forced(path):
    """Forces 'triton', 'cudnn' or 'fa4' for every shape it can run ('auto' or None: the
    dispatch tables); shapes the forced vendor kernel refuses run Triton."""
    global _forced
    _forced = _validated(path or "auto")  # plans are keyed on it: switching back and forth is cheap


@contextlib.contextmanager
def forced(path):
    """with forced('triton'): ... -- for benchmarks and tests."""
    before = _forced
    set_forced(path)
    try:
        yield
    finally:
        set_forced(before)


def versions():
    """What a measured choice depends on besides the device (the disk cache's file key)."""
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "fa4": fa4.version()}


def device_name(index):
    name = _NAMES.get(index)
    if name is None:
        name = _NAMES[index] = torch.cuda.get_device_name(index)
        dispatch.set_versions(versions())
    return name


def cudnn_ok(q):
    """Shapes cuDNN's fused attention takes: half precision, head dim a multiple of 8 <= 256."""
    D = q.shape[3]
    return q.dtype != torch.float32 and D % 8 == 0 and D <= 256


def cudnn_attn(q, k, v, scale, kv_len):
    """cuDNN attention over k/v[:, :kv_len]: cuDNN's own (out [B,S,H,D] view, lse [B,H,S])."""
    if kv_len != k.shape[1]:
        k, v = k[:, :kv_len], v[:, :kv_len]
    res = _CUDNN(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, scale=scale)
    lse = res[1]
    B, Sq, H, _ = q.shape
    lse = lse.view(B, H, Sq) if lse.is_contiguous() else lse.reshape(B, H, Sq)
    return res[0].transpose(1, 2), lse.float()


def usable_paths(q):
    """The paths that can run this query's shape class in this process."""
    return {"triton"} | ({"cudnn"} if cudnn_ok(q) else set()) | ({"fa4"} if fa4.usable(q) else set())


_VENDOR = {"cudnn": cudnn_attn, "fa4": fa4.attention}  # path -> fn(q, k, v, scale, kv_len) -> (out, lse)


def _plan(q, k, v, scale, kv_len, op):
    key = (q.get_device(), q.shape, k.shape[1], q.dtype, op, _forced)
    plan = _PLANS.get(key)
    if plan is None:
        plan, keep = _make_plan(q, k, v, scale, kv_len, op)
        if keep:
            _PLANS[key] = plan
    return plan


def _demote(q, k, op, path, error):
    """A vendor kernel refused a shape its class chose it for: this shape runs Triton from now on."""
    log.warning("ringsp: %s attention failed for %s (%s); using the Triton kernel for this shape",
                path, tuple(q.shape), (str(error).splitlines() or [""])[0][:200])
    key = (q.get_device(), q.shape, k.shape[1], q.dtype, op, _forced)
    _PLANS[key] = ("triton", _PLANS.get(key, (None, None))[1])


def _make_plan(q, k, v, scale, kv_len, op):
    """(path, config) for this shape, and whether it may be kept (not during a capture)."""
    forced = _validated(_forced)
    B, Sq, H, D = q.shape
    key = dispatch.class_key(device_name(q.get_device()), q.dtype, D, H, B, Sq, k.shape[1], op)
    capturing = _capturing()
    measure = None
    if forced == "auto" and not capturing:  # no timing inside a CUDA graph capture
        measure = functools.partial(_measure, q, k, v, scale, kv_len, op, key)
    entry = dispatch.resolve(key, measure)
    usable = usable_paths(q)
    path = dispatch.choose(entry, usable) if forced == "auto" else (forced if forced in usable else "triton")
    return (path, tuple(entry["config"])), not capturing


def _cfg_name(cfg):
    return "triton:" + ",".join(str(int(x)) for x in cfg)


def _measure(q, k, v, scale, kv_len, op, key):
    """Times every Triton config and each usable vendor kernel (+merge for a step) on this
    call's inputs, writing into scratch buffers (the caller's state is not touched);
    returns the dispatch entry."""
    has_state = op == "step"
    B, Sq, H, _ = q.shape
    out = torch.zeros(q.shape, dtype=torch.float32 if has_state else q.dtype, device=q.device)
    lse = torch.full((B, H, Sq), float("-inf") if not has_state else 0.0, device=q.device)
    fns = {}
    for cfg in configs(capability(q.get_device())[0], q.shape[3]):
        fns[_cfg_name(cfg)] = (cfg, functools.partial(launch, q, k, v, out, lse, scale, kv_len, has_state, cfg))
    for path in sorted(usable_paths(q) - {"triton"}):
        fns[path] = (None, functools.partial(_vendor_run, path, q, k, v, scale, kv_len, out, lse, has_state))
    samples = timing.compare({n: f for n, (_, f) in fns.items()})
    ms = {n: timing.quartiles(s)[1] for n, s in samples.items()}
    order = timing.ranked(samples)
    tri = [n for n in order if n in fns and fns[n][0] is not None]
    config = list(fns[tri[0]][0]) if tri else dispatch.default_config(q.shape[3])
    path = dispatch.path_of(order[0])
    log.info("ringsp: %s -> %s %s (%s)", key, path, config, ", ".join(f"{n} {t:.4f} ms" for n, t in ms.items()))
    return {"path": path, "config": config, "ms": ms}


def _vendor_run(path, q, k, v, scale, kv_len, out, lse, has_state):
    o, l_blk = _VENDOR[path](q, k, v, scale, kv_len)
    if has_state:
        launch_merge(out, lse, o, l_blk)


def _unit_stride(t):
    """The kernels want unit stride in D; returns (tensor to use, tensor to copy back to)."""
    return (t, None) if t.stride(3) == 1 else (t.contiguous(), t)


def _empty_result(q):
    B, Sq, H, _ = q.shape
    return torch.zeros_like(q), torch.full((B, H, Sq), float("-inf"), device=q.device)


def attn_fwd(q, k, v, scale=None, kv_len=None):
    B, Sq, H, D = q.shape
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or Sq == 0 or B == 0 or H == 0:
        return _empty_result(q)
    scale = D ** -0.5 if scale is None else float(scale)
    config = None
    if q.is_cuda:
        path, config = _plan(q, k, v, scale, kv_len, "fwd")
        if path in _VENDOR:
            try:
                out, lse = _VENDOR[path](q, k, v, scale, kv_len)
                return (out if out.is_contiguous() else out.contiguous()), lse
            except (RuntimeError, AssertionError) as e:  # FA4 checks its inputs with asserts
                _demote(q, k, "fwd", path, e)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    launch(q, k, v, out, lse, scale, kv_len, False, config)
    return out, lse


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, D = q.shape
    if kv_len == 0 or Sq == 0 or B == 0 or H == 0:  # an empty block leaves the state as it is
        return
    scale = D ** -0.5 if scale is None else float(scale)
    work, back = _unit_stride(acc)
    path, config = _plan(q, k, v, scale, kv_len, "step") if q.is_cuda else ("triton", None)
    if path in _VENDOR:
        try:
            out, lse_blk = _VENDOR[path](q, k, v, scale, kv_len)
        except (RuntimeError, AssertionError) as e:
            _demote(q, k, "step", path, e)
            path = "triton"
        else:
            launch_merge(work, lse, out, lse_blk)
    if path not in _VENDOR:
        launch(q, k, v, work, lse, scale, kv_len, True, config)
    if back is not None:
        back.copy_(work)


def merge_(acc, lse, out_blk, lse_blk):
    work, back = _unit_stride(acc)
    launch_merge(work, lse, out_blk, lse_blk)
    if back is not None:
        back.copy_(work)
