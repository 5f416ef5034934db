"""CUDA implementations of the ringsp ops, registered for the CUDA key.

Attention runs in the fused Triton kernel (triton_attn.py) or, where another path is faster
for a shape class -- cuDNN, or FlashAttention-4 where installed (paths.py) -- as that
kernel with LSE followed by the one-pass Triton merge, so users never pay for the slower
path. ringsp_kernels.dispatch decides per (device, dtype, head dim, heads, size class, op)
from its tables, measuring a class no table knows once (local mode only; see dispatch.py
for the rank-consistent mode). Each exact shape's plan (path + Triton config) is then kept
here, so a call costs one dict lookup before its launch.

RINGSP_CUDA_ATTN=triton|cudnn|fa4|hopper forces a path (auto by default; ringsp_kernels.settings
reads it once) -- set_forced() / forced() change it later. A forced path never triggers a
measurement.
"""
import contextlib
import functools
import logging

import torch

from .. import caches, dispatch, settings
from . import fa4, hopper, timing
from .cudnn import cudnn_attn, cudnn_ok  # noqa: F401  (cudnn_attn: the benchmarks' peer ring)
from .paths import VENDOR
from .triton_attn import capability, capturing, configs, launch
from .triton_merge import launch_merge

log = logging.getLogger("ringsp")
CHOICES = settings.BY_NAME["RINGSP_CUDA_ATTN"].values
_PLANS = {}  # (device, q.shape, Sk, dtype, op, forced path) -> (path, config)
_NAMES = {}  # device index -> device name
_VERSIONS = {}  # what measured choices depend on, read once
dispatch.on_change(_PLANS.clear)
for _name, _cache in (("cuda plans", _PLANS), ("cuda device names", _NAMES), ("cuda versions", _VERSIONS)):
    caches.register(_name, _cache.clear)


def _validated(value):
    if value not in CHOICES:
        raise ValueError(f"RINGSP_CUDA_ATTN must be one of {', '.join(CHOICES)}, got {value!r}")
    if value == "fa4" and not fa4.available():
        raise ValueError(f"RINGSP_CUDA_ATTN=fa4: {fa4.why_unavailable()} (pip install 'ringsp[fa4]')")
    if value == "hopper" and hopper.why_unavailable():
        raise ValueError(f"RINGSP_CUDA_ATTN=hopper: {hopper.why_unavailable()}")
    return value


def set_forced(path):
    """Forces 'triton', 'cudnn' or 'fa4' for every shape it can run ('auto' or None: the
    dispatch tables); shapes the forced vendor kernel refuses run Triton. The setting is
    RINGSP_CUDA_ATTN's, so init_parallel compares it across ranks."""
    settings.override(cuda_attn=_validated(path or "auto"))  # plans are keyed on it


@contextlib.contextmanager
def forced(path):
    """with forced('triton'): ... -- for benchmarks and tests."""
    before = settings.current().cuda_attn
    set_forced(path)
    try:
        yield
    finally:
        set_forced(before)


def versions():
    """What a measured choice depends on besides the device (the disk cache's file key)."""
    if not _VERSIONS:
        import triton

        _VERSIONS.update(torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                         cudnn=torch.backends.cudnn.version(), fa4=fa4.version())
    return dict(_VERSIONS)


def device_name(index):
    name = _NAMES.get(index)
    if name is None:
        name = _NAMES[index] = torch.cuda.get_device_name(index)
    return name


def usable_paths(q, forced=False):
    """The paths that can run this query's shape class in this process (for the automatic
    choice only those a measurement may choose, see paths.Path.auto)."""
    return {"triton"} | {name for name, path in VENDOR.items() if (forced or path.auto) and path.usable(q)}


def _plan(q, k, v, scale, kv_len, op):
    key = (q.get_device(), q.shape, k.shape[1], q.dtype, op, settings.current().cuda_attn)
    plan = _PLANS.get(key)
    if plan is None:
        plan, keep = _make_plan(q, k, v, scale, kv_len, op)
        if keep:
            _PLANS[key] = plan
    return plan


def _demote(q, k, op, path, error):
    """A path failed on a shape its class chose it for. In local mode the shape runs Triton
    from now on, with a warning. In consistent mode (after init_parallel) every rank must run
    what the agreed table chose -- this rank switching alone would change the replicated
    results it computes -- so the failure is raised, naming the shape and the path."""
    what = f"{path} attention failed for q {tuple(q.shape)} ({q.dtype}, {k.shape[1]} keys, op {op})"
    reason = (str(error).splitlines() or [""])[0][:200]
    if dispatch.consistent():
        raise RuntimeError(
            f"ringsp: {what}: {reason}. The ranks of a group run the path of their agreed kernel "
            f"table, so this rank does not switch to Triton alone; set RINGSP_CUDA_ATTN=triton on "
            f"every rank to keep the {path} path out") from error
    log.warning("ringsp: %s (%s); using the Triton kernel for this shape", what, reason)
    key = (q.get_device(), q.shape, k.shape[1], q.dtype, op, settings.current().cuda_attn)
    _PLANS[key] = ("triton", _PLANS.get(key, (None, None))[1])


def _make_plan(q, k, v, scale, kv_len, op):
    """(path, config) for this shape, and whether it may be kept (not during a capture)."""
    if not q.is_cuda:  # Triton's interpreter on CPU tensors (tests): nothing to choose
        return ("triton", None), True
    forced = _validated(settings.current().cuda_attn)
    B, Sq, H, D = q.shape
    key = dispatch.class_key(device_name(q.get_device()), q.dtype, D, H, B, Sq, k.shape[1], op)
    in_capture = capturing()
    measure = None
    if forced == "auto" and not in_capture:  # no timing inside a CUDA graph capture
        measure = functools.partial(_measure, q, k, v, scale, kv_len, op, key)
    entry = dispatch.resolve(key, versions(), measure, wanted=usable_paths(q) - {"triton"})
    if forced == "auto":
        path = dispatch.choose(entry, usable_paths(q))
    else:
        path = forced if forced in usable_paths(q, forced=True) else "triton"
    return (path, tuple(entry["config"])), not in_capture


def cfg_name(cfg):
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
        fns[cfg_name(cfg)] = (cfg, functools.partial(launch, q, k, v, out, lse, scale, kv_len, has_state, cfg))
    for path in sorted(usable_paths(q) - {"triton"}):
        fns[path] = (None, functools.partial(_path_run, VENDOR[path], q, k, v, scale, kv_len, out, lse, has_state))
    samples = timing.compare({n: f for n, (_, f) in fns.items()})
    ms = {n: timing.quartiles(s)[1] for n, s in samples.items()}
    order = timing.ranked(samples)
    tri = [n for n in order if n in fns and fns[n][0] is not None]
    config = list(fns[tri[0]][0]) if tri else dispatch.default_config(q.shape[3])
    path = dispatch.path_of(order[0])
    log.info("ringsp: %s -> %s %s (%s)", key, path, config, ", ".join(f"{n} {t:.4f} ms" for n, t in ms.items()))
    return {"path": path, "config": config, "ms": ms, "paths": sorted(usable_paths(q))}


def _path_run(path, q, k, v, scale, kv_len, out, lse, has_state):
    """One call of `path` as attn_fwd / attn_step_ would make it (a step into (out, lse))."""
    if not has_state:
        path.fwd(q, k, v, scale, kv_len)
    elif path.step is not None:
        path.step(q, k, v, out, lse, scale, kv_len)
    else:
        launch_merge(out, lse, *path.fwd(q, k, v, scale, kv_len))


def _unit_stride(t):
    """The kernels want unit stride in D; returns (tensor to use, tensor to copy back to)."""
    return (t, None) if t.stride(3) == 1 else (t.contiguous(), t)


def _empty_result(q):
    B, Sq, H, _ = q.shape
    return torch.zeros_like(q), torch.full((B, H, Sq), float("-inf"), device=q.device)


def _vendor_fwd(path, q, k, v, scale, kv_len, op):
    """(out, lse) of a path other than Triton, or None where it failed and the shape was
    demoted to Triton (local mode; consistent mode raises, see _demote)."""
    try:
        return VENDOR[path].fwd(q, k, v, scale, kv_len)
    except (RuntimeError, AssertionError) as e:  # FA4 checks its inputs with asserts
        _demote(q, k, op, path, e)
        return None


def _vendor_step(path, q, k, v, acc, lse, scale, kv_len):
    """Whether `path` did the step into (acc, lse); False where it failed and the shape was
    demoted to Triton (local mode). The merge after a path's fwd is ringsp's own: its
    failure is no reason to demote."""
    p = VENDOR[path]
    if p.step is None:
        res = _vendor_fwd(path, q, k, v, scale, kv_len, "step")
        if res is not None:
            launch_merge(acc, lse, *res)
        return res is not None
    try:
        p.step(q, k, v, acc, lse, scale, kv_len)
    except (RuntimeError, AssertionError) as e:
        _demote(q, k, "step", path, e)
        return False
    return True


def attn_fwd(q, k, v, scale=None, kv_len=None):
    B, Sq, H, D = q.shape
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or Sq == 0 or B == 0 or H == 0:
        return _empty_result(q)
    scale = D ** -0.5 if scale is None else float(scale)
    path, config = _plan(q, k, v, scale, kv_len, "fwd")
    if path in VENDOR:
        res = _vendor_fwd(path, q, k, v, scale, kv_len, "fwd")
        if res is not None:
            out, lse = res
            return (out if out.is_contiguous() else out.contiguous()), lse
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
    path, config = _plan(q, k, v, scale, kv_len, "step")
    if path not in VENDOR or not _vendor_step(path, q, k, v, work, lse, scale, kv_len):
        launch(q, k, v, work, lse, scale, kv_len, True, config)
    if back is not None:
        back.copy_(work)


def merge_(acc, lse, out_blk, lse_blk):
    work, back = _unit_stride(acc)
    launch_merge(work, lse, out_blk, lse_blk)
    if back is not None:
        back.copy_(work)
