"""The CUDA implementations of the 8-bit attention ops (ringsp_kernels.fp8 defines the ops and
validates `precision`; the kernels are triton_fp8.py's), which GPUs can run them, and which
kernel config runs a shape.

The config -- and whether ringsp's Hopper kernel runs the precision instead (once its variant
is cleared, hopper.AUTO_Q8) -- is a dispatch-table choice like the native kernels' (op "fp8_fwd",
"int8_step", ...): measured once per shape class in local mode, rank 0's table (or its
fallback rule) in consistent mode. The kernel's rounding depends on its key tile size, so ranks that computed
their own choice could return different replicated text outputs; the agreed table rules that
out."""
import functools
import logging

import torch
from triton.runtime.errors import TritonError

from .. import caches, dispatch
from ..checks import default_scale
from ..fp8_reference import PRECISIONS
from . import hopper, ops, timing
from .triton_attn import capability, capturing

log = logging.getLogger("ringsp")
MIN_CAPABILITY = {"fp8": (8, 9), "int8": (8, 0)}
_PLANS = {}  # (device index, q.shape, Sk, dtype, op) -> (path, (BLOCK_M, BLOCK_N, warps, stages))
dispatch.on_change(_PLANS.clear)
caches.register("cuda 8-bit plans", _PLANS.clear)


def check_precision(q, precision):
    """8-bit attention needs the tensor cores for it: FP8 from compute capability 8.9, INT8 from 8.0."""
    index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    have, need = capability(index), MIN_CAPABILITY[precision]
    if have < need:
        raise ValueError(f"precision={precision!r} needs compute capability >= {need[0]}.{need[1]} "
                         f"({'FP8' if precision == 'fp8' else 'INT8'} tensor cores); {q.device} has "
                         f"{have[0]}.{have[1]}: use precision=None")


def op_name(precision, has_state):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{precision}_{'step' if has_state else 'fwd'}"


def _shape_key(q, k, op):
    return (q.get_device(), tuple(q.shape), k.shape[1], q.dtype, op)


def usable_paths(q, precision):
    """The 8-bit paths this process may measure and choose for q: the Triton kernel, and the
    Hopper kernel's variant of the precision where it is cleared for automatic use (hopper.AUTO_Q8)."""
    paths = {"triton"}
    if hopper.AUTO_Q8[precision] and hopper.usable(q):
        paths.add("hopper")
    return paths


def plan(q, k, v, scale, kv_len, precision, has_state):
    """(path, (BLOCK_M, BLOCK_N, warps, stages)) for this call, from the dispatch table of its
    class; a class no table knows is timed (local mode, not during a CUDA graph capture)."""
    op = op_name(precision, has_state)
    local = _shape_key(q, k, op)
    got = _PLANS.get(local)
    if got is None:
        B, Sq, H, D = q.shape
        key = dispatch.class_key(ops.device_name(q.get_device()), q.dtype, D, H, B, Sq, k.shape[1], op)
        in_capture = capturing()
        measure = None if in_capture else functools.partial(measure_class, q, k, v, scale, kv_len, precision,
                                                           has_state)
        entry = dispatch.resolve(key, ops.versions(), measure, wanted=usable_paths(q, precision) - {"triton"})
        got = (dispatch.choose(entry, usable_paths(q, precision)), tuple(entry["config"][:4]))
        if not in_capture:
            _PLANS[local] = got
    return got


def block(q, k, v, scale, kv_len, precision, has_state):
    """The Triton 8-bit kernel's config for this call (plan()'s)."""
    return plan(q, k, v, scale, kv_len, precision, has_state)[1]


def measure_class(q, k, v, scale, kv_len, precision, has_state):
    """Times every config of the 8-bit kernel (and the Hopper kernel's variant where usable) on this
    call's inputs, into scratch state, and returns the dispatch entry; candidates that fail
    (a config the compiler refuses) drop out."""
    from . import triton_fp8

    B, Sq, H, _ = q.shape
    acc = torch.zeros(q.shape, dtype=torch.float32 if has_state else q.dtype, device=q.device)
    lse = torch.zeros((B, H, Sq), dtype=torch.float32, device=q.device)
    int8 = precision == "int8"
    cfgs = {ops.cfg_name(cfg): cfg for cfg in triton_fp8.CONFIGS}
    fns = {name: functools.partial(triton_fp8.attend, q, k, v, acc, lse, scale, kv_len, int8, has_state, cfg)
           for name, cfg in cfgs.items()}
    if "hopper" in usable_paths(q, precision):
        fns["hopper"] = functools.partial(hopper.launch_q8, q, k, v, acc, lse, scale, kv_len, has_state, precision)
    try:
        samples = timing.compare(fns, cuda=q.is_cuda)
    except RuntimeError:  # not one candidate ran here
        log.warning("ringsp: no 8-bit attention config compiled for q %s (%s); using %s",
                    tuple(q.shape), precision, triton_fp8.FALLBACK)
        return {"path": "triton", "config": [*triton_fp8.FALLBACK, False], "ms": {}}
    ms = {n: timing.quartiles(s)[1] for n, s in samples.items()}
    order = timing.ranked(samples)
    tri = [n for n in order if n in cfgs]
    config = cfgs[tri[0]] if tri else triton_fp8.FALLBACK
    return {"path": dispatch.path_of(order[0]), "config": [*config, False], "ms": ms,
            "paths": sorted(usable_paths(q, precision))}


def _attend(q, k, v, acc, lse, scale, kv_len, precision, has_state):
    from . import triton_fp8

    if not q.is_cuda:  # Triton's interpreter (tests): nothing to choose
        triton_fp8.attend(q, k, v, acc, lse, scale, kv_len, precision == "int8", has_state)
        return
    path, cfg = plan(q, k, v, scale, kv_len, precision, has_state)
    if path == "hopper" and _hopper_ran(q, k, v, acc, lse, scale, kv_len, precision, has_state, cfg):
        return
    run_planned(q, k, v, acc, lse, scale, kv_len, precision, has_state, cfg)


def _refuse_alone(what, error):
    """In consistent mode a rank must not change its kernel alone: raise, naming what failed.
    Returns the error's first line (for local mode's warning)."""
    reason = (str(error).splitlines() or [""])[0][:200]
    if dispatch.consistent():
        raise RuntimeError(f"ringsp: {what}: {reason}. The ranks of a group run what their agreed kernel "
                           "table chose; re-tune on this GPU (python -m ringsp_kernels.cuda.tune "
                           "--precision fp8,int8)") from error
    return reason


def _hopper_ran(q, k, v, acc, lse, scale, kv_len, precision, has_state, cfg):
    """The Hopper kernel's 8-bit variant; False where it failed before launching (local mode:
    this shape runs the Triton kernel from now on, with a warning)."""
    try:
        hopper.launch_q8(q, k, v, acc, lse, scale, kv_len, has_state, precision)
    except TritonError as e:  # raised while compiling, before the launch: the state is untouched
        what = f"the hopper {precision} kernel does not compile for q {tuple(q.shape)}"
        reason = _refuse_alone(what, e)
        log.warning("ringsp: %s (%s); using the Triton 8-bit kernel for this shape", what, reason)
        _PLANS[_shape_key(q, k, op_name(precision, has_state))] = ("triton", cfg)
        return False
    return True


def run_planned(q, k, v, acc, lse, scale, kv_len, precision, has_state, cfg):
    """The Triton 8-bit kernel with config `cfg`. One that does not compile on this GPU: in
    local mode FALLBACK runs this shape from now on (with a warning); in consistent mode it
    raises -- one rank must not change the tile size alone."""
    from . import triton_fp8

    int8 = precision == "int8"
    try:
        triton_fp8.attend(q, k, v, acc, lse, scale, kv_len, int8, has_state, cfg)
    except TritonError as e:  # raised while compiling, before the launch: the state is untouched
        if tuple(cfg) == triton_fp8.FALLBACK:
            raise
        what = f"8-bit attention config {list(cfg)} does not compile for q {tuple(q.shape)} ({precision})"
        reason = _refuse_alone(what, e)
        log.warning("ringsp: %s (%s); using %s for this shape", what, reason, triton_fp8.FALLBACK)
        _PLANS[_shape_key(q, k, op_name(precision, has_state))] = ("triton", triton_fp8.FALLBACK)
        triton_fp8.attend(q, k, v, acc, lse, scale, kv_len, int8, has_state, triton_fp8.FALLBACK)


def attn_fwd_q8(q, k, v, scale=None, kv_len=None, precision="fp8"):
    op_name(precision, False)
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    if kv_len == 0 or out.numel() == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    _attend(q, k, v, out, lse, default_scale(q, scale), kv_len, precision, has_state=False)
    return out, lse


def attn_step_q8_(q, k, v, acc, lse, scale=None, kv_len=None, precision="fp8"):
    op_name(precision, True)
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or q.numel() == 0:  # an empty block leaves the state as it is
        return
    _attend(q, k, v, acc, lse, default_scale(q, scale), kv_len, precision, has_state=True)
