"""The "hopper" attention path: ringsp's own warp-specialised Gluon kernel (hopper_step.py) on
sm90 GPUs (H100, H200), with the ring step's merge inside the kernel.

    usable(q)                                   sm90, fp16/bf16, head dim 64 or 128, Gluon present
    attn_fwd(q, k, v, scale, kv_len[, precision])  -> (out in q's dtype, lse float32 [B, H, Sq])
    attn_step_(q, k, v, acc, lse, scale, kv_len)   one ring step into the state, in place
    launch(..., config=Config(...))             another tile shape (benchmarks, tests)
    launch_q8(q, k, v, acc, lse, scale, kv_len, has_state, precision)
                                                an 8-bit precision's scheme (fp8_reference.py) in
                                                the same kernel: "int8" integer Q.K^T, P.V in q's
                                                dtype; "fp8" e4m3 Q.K^T and P.V

Host path: tensor descriptors are built per call (TMA needs the base addresses); the kernel goes
through Triton's JIT launch, or with CACHED_LAUNCH through fast_launch.CachedKernel as the
Triton kernel does (a key's first call through the JIT, later ones straight to the compiled
kernel's launcher), which is not yet checked on a GPU.
"""
from dataclasses import dataclass

import torch

from .. import caches
from .fast_launch import INTERPRET
from .triton_attn import capability

LOG2E = 1.4426950408889634
HEAD_DIMS = (64, 128)
MAXNREG = 168  # 3 warpgroups: consumers 240 registers each, producer 24 (see ring_step_kernel)


@dataclass(frozen=True)
class Config:
    block_m: int = 128  # query rows per program (two consumer warpgroups of block_m // 2)
    block_n: int = 128  # keys per K/V tile
    stages: int = 2     # K/V tiles in flight


# Whether the automatic dispatch may measure and choose this path: its GPU tests
# (tests/kernels/test_hopper_gpu.py, test_ops_gpu.py's hopper cases) passed on an H100
# (2026-12-07, bench/results/hopper_h100_log.txt). RINGSP_CUDA_ATTN=hopper forces it.
AUTO = True

# Whether launches go through fast_launch.CachedKernel (a key's first call through Triton's JIT,
# later ones straight to the compiled kernel's launcher, as for the Triton kernel) instead of
# the JIT on every call (the path the GPU tests passed with). Off until
# test_hopper_gpu.py::test_a_repeated_launch_takes_the_cached_path_with_the_same_result has
# passed on a GPU: it has not run there yet.
CACHED_LAUNCH = False

# The same for the kernel's 8-bit variants (launch_q8) as candidates of precision="int8" / "fp8":
# each off until its GPU tests (test_hopper_gpu.py's int8 / fp8 cases) have passed.
AUTO_Q8 = {"int8": False, "fp8": False}

# 2 and 3 stages ran level on an H100 (bench/results/hopper_dev_h100.json); 2 needs less shared memory
DEFAULT = {128: Config(), 64: Config()}
# fp8 keeps a second float32 tile (each tile's P.V, added to the numerator): 64-key tiles at
# D = 128 keep the consumers within their 240 registers
DEFAULT_Q8 = {"int8": DEFAULT, "fp8": {128: Config(block_n=64, stages=3), 64: Config()}}

try:  # Gluon ships with Triton >= 3.5; without it (or its Hopper dialect) the path is not usable
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .fast_launch import CachedKernel
    from .hopper_step import FP8, INT8, NATIVE, ring_step_kernel
except ImportError as e:  # noqa: F841 -- kept for the message
    ring_step_kernel = None
    _WHY = f"Triton's Gluon Hopper dialect is not importable ({e})"
else:
    _WHY = None
    Q8_CODES = {None: NATIVE.value, "int8": INT8.value, "fp8": FP8.value}
    _KERNEL = CachedKernel(ring_step_kernel)  # launches after a key's first skip the JIT's per-call work
    caches.register("hopper path launches", _KERNEL.entries.clear)
    _GL = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32, torch.int8: gl.int8,
           torch.float8_e4m3fn: gl.float8e4nv}

_LAYOUTS = {}  # (dtype, block shape) -> NVMMASharedLayout
caches.register("hopper path layouts", _LAYOUTS.clear)


def why_unavailable():
    return _WHY


def usable(q):
    """Whether this process can run q's shape class on the hopper path."""
    return (ring_step_kernel is not None and not INTERPRET and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[3] in HEAD_DIMS and capability(q.get_device()) == (9, 0))


def rows_ok(t):
    """Whether a [B, S, H, D] tensor reads as one 2-D [B*S, H*D] TMA tensor: D, H packed, batches
    one after another, 16-byte aligned base and row stride."""
    B, S, H, D = t.shape
    s = t.stride()
    return (s[3] == 1 and s[2] == D and (B == 1 or s[0] == S * s[1]) and (s[1] * t.element_size()) % 16 == 0
            and t.data_ptr() % 16 == 0)


def keys_ok(t):
    """Whether K or V reads as a 3-D [B, S, H*D] TMA tensor (batches may lie anywhere)."""
    s = t.stride()
    es = t.element_size()
    return (s[3] == 1 and s[2] == t.shape[3] and (s[1] * es) % 16 == 0 and (s[0] * es) % 16 == 0
            and t.data_ptr() % 16 == 0)


def _layout(dtype, block):
    key = (dtype, block)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _LAYOUTS[key] = gl.NVMMASharedLayout.get_default_for(list(block), _GL[dtype])
    return lay


def launch(q, k, v, acc, lse, scale, kv_len, has_state, config=None):
    """Runs the kernel into `acc` (float32 state when has_state, else the output in q's dtype)
    and `lse`; copies q/k/v whose layout TMA cannot read."""
    B, Sq, H, D = q.shape
    c = config or DEFAULT[D]
    q = q if rows_ok(q) else q.contiguous()
    k = k if keys_ok(k) else k.contiguous()
    v = v if keys_ok(v) else v.contiguous()
    rows = c.block_m // 2
    qd = TensorDescriptor(q, [B * Sq, H * D], [q.stride(1), 1], [rows, D], _layout(q.dtype, (rows, D)))
    kd, vd = _key_desc(k, kv_len, c), _key_desc(v, kv_len, c)
    _run(qd, kd, vd, q, acc, lse, scale * LOG2E, kv_len, c, has_state, scale > 0)


def launch_q8(q, k, v, acc, lse, scale, kv_len, has_state, precision, config=None):
    """launch() with an 8-bit precision ("int8" or "fp8", fp8_reference.py's schemes): K/V
    prepared as for the Triton 8-bit kernel (triton_fp8.prepare_kv: K smoothed and quantised,
    fp8 V transposed and scaled per channel, zero-padded per head), Q rounded per row, then the
    same warp-specialised kernel with 8-bit Q.K^T (and for fp8 an e4m3 P.V). A candidate of the
    precision's dispatch (cuda/q8.py) only once AUTO_Q8 clears it. kv_len >= 1."""
    from . import triton_fp8

    B, Sq, H, D = q.shape
    c = config or DEFAULT_Q8[precision][D]
    kv = triton_fp8.prepare_kv(k, v, kv_len, int8=precision == "int8")  # K8 [B*H, skp, D]
    q8, row_a, shift = triton_fp8.quantise_q(q, kv, scale * LOG2E, lse)
    rows, dt = c.block_m // 2, q8.dtype
    q8, k8 = q8.view(B * Sq, H * D), kv.k8.view(B * H * kv.skp, D)
    qd = TensorDescriptor(q8, list(q8.shape), [H * D, 1], [rows, D], _layout(dt, (rows, D)))
    kd = TensorDescriptor(k8, list(k8.shape), [D, 1], [c.block_n, D], _layout(dt, (c.block_n, D)))
    if precision == "fp8":  # V transposed, [B*H*D, skp]: fp8 wgmma's B operand is K-major
        v8t = kv.v8t.view(B * H * D, kv.skp)
        vd = TensorDescriptor(v8t, list(v8t.shape), [kv.skp, 1], [D, c.block_n], _layout(dt, (D, c.block_n)))
        q8_args = (row_a, shift, None, kv.vscale, kv.skp)
    else:
        vd = _key_desc(v if keys_ok(v) else v.contiguous(), kv_len, c)
        q8_args = (row_a, shift, kv.kscale, None, kv.skp)
    _run(qd, kd, vd, q, acc, lse, 1.0, kv_len, c, has_state, True, precision, q8_args)


def _key_desc(t, kv_len, c):
    """K or V as a 3-D [B, kv_len, H*D] TMA tensor, tiles of [1, BLOCK_N, D]: keys past kv_len
    read as zeros."""
    B, _, H, D = t.shape
    return TensorDescriptor(t, [B, kv_len, H * D], [t.stride(0), t.stride(1), 1], [1, c.block_n, D],
                            _layout(t.dtype, (1, c.block_n, D)))


def _run(qd, kd, vd, q, acc, lse, qk_scale, kv_len, c, has_state, pos_scale, precision=None,
         q8_args=(None,) * 5):
    B, Sq, H, D = q.shape
    sa, sl = acc.stride(), lse.stride()
    args = (qd, kd, vd, acc, lse, acc, lse, qk_scale, kv_len, Sq, H, sa[0], sa[1], sa[2], sl[0], sl[1], sl[2],
            *q8_args)
    consts = dict(HEAD_DIM=D, BLOCK_M=c.block_m, BLOCK_N=c.block_n, STAGES=c.stages, HAS_STATE=has_state,
                  Q8=Q8_CODES[precision], POS_SCALE=pos_scale)
    grid = (-(-Sq // c.block_m), B * H, 1)
    options = {"num_warps": 4, "maxnreg": MAXNREG}
    with torch.cuda.device(q.device):  # Triton launches on the current device
        if CACHED_LAUNCH:
            key = (q.get_device(), *consts.values(), *map(_spec, args))
            _KERNEL.launch(key, grid, args, lambda: (consts, options))
        else:
            ring_step_kernel[grid](*args, **consts, **options)


def _spec(a):
    """What of a launch argument Triton's compiled kernel depends on (its specialisation), or
    more: descriptors by dtype, shape, strides, block and base alignment; tensors by dtype and
    16-byte alignment; integers exactly (equal to 1, divisible by 16, 32 or 64 bits)."""
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if isinstance(a, TensorDescriptor):
        return (a.base.dtype, a.base.data_ptr() % 16 == 0, tuple(a.shape), tuple(a.strides), tuple(a.block_shape),
                a.layout)
    return a  # an int (exact), the float scale (always fp32) or None (a constexpr)


def attn_fwd(q, k, v, scale, kv_len, precision=None):
    """(out, lse); precision "int8" / "fp8": that scheme (launch_q8; kv_len >= 1)."""
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    if precision is None:
        launch(q, k, v, out, lse, scale, kv_len, False)
    else:
        launch_q8(q, k, v, out, lse, scale, kv_len, False, precision)
    return out, lse


def attn_step_(q, k, v, acc, lse, scale, kv_len):
    launch(q, k, v, acc, lse, scale, kv_len, True)
