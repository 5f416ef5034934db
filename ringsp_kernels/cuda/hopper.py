"""The "hopper" attention path: ringsp's own warp-specialised Gluon kernel (hopper_step.py) on
sm90 GPUs (H100, H200), with the ring step's merge inside the kernel.

    usable(q)                                   sm90, fp16/bf16, head dim 64 or 128, Gluon present
    attn_fwd(q, k, v, scale, kv_len[, int8])    -> (out in q's dtype, lse float32 [B, H, Sq])
    attn_step_(q, k, v, acc, lse, scale, kv_len)   one ring step into the state, in place
    launch(..., config=Config(...))             another tile shape (benchmarks, tests)
    launch_int8(q, k, v, acc, lse, scale, kv_len, has_state)
                                                the "int8" precision's scheme (fp8_reference.py) in
                                                the same kernel: integer Q.K^T, P.V in q's dtype

Host path: tensor descriptors are built per call (TMA needs the base addresses) and the kernel
goes through Triton's JIT launch, the way it was checked and timed on the GPU; a cached direct
launch, as the Triton kernel has (fast_launch.py), is not done for this kernel yet.
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


# Whether the automatic dispatch may measure and choose this path. Off until its GPU tests
# (tests/kernels/test_hopper_gpu.py, test_ops_gpu.py's hopper cases) have passed with this host
# wrapper: the kernel's source compiles to the PTX of the revision checked on an H100, but this
# wrapper has not run on a GPU. RINGSP_CUDA_ATTN=hopper runs it regardless.
AUTO = False

# The same for the kernel's int8 variant (launch_int8) as a candidate of precision="int8":
# off until its GPU tests (test_hopper_gpu.py's int8 cases) have passed; it has not run on a GPU.
AUTO_INT8 = False

# 2 and 3 stages ran level on an H100 (bench/results/hopper_dev_h100.json); 2 needs less shared memory
DEFAULT = {128: Config(), 64: Config()}

try:  # Gluon ships with Triton >= 3.5; without it (or its Hopper dialect) the path is not usable
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .hopper_step import ring_step_kernel
except ImportError as e:  # noqa: F841 -- kept for the message
    ring_step_kernel = None
    _WHY = f"Triton's Gluon Hopper dialect is not importable ({e})"
else:
    _WHY = None
    _GL = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32, torch.int8: gl.int8}

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
    kv_lay = _layout(k.dtype, (1, c.block_n, D))
    kd = TensorDescriptor(k, [B, kv_len, H * D], [k.stride(0), k.stride(1), 1], [1, c.block_n, D], kv_lay)
    vd = TensorDescriptor(v, [B, kv_len, H * D], [v.stride(0), v.stride(1), 1], [1, c.block_n, D], kv_lay)
    sa, sl = acc.stride(), lse.stride()
    grid = (-(-Sq // c.block_m), B * H)
    with torch.cuda.device(q.device):  # Triton launches on the current device
        ring_step_kernel[grid](qd, kd, vd, acc, lse, acc, lse, scale * LOG2E, kv_len, Sq, H,
                               sa[0], sa[1], sa[2], sl[0], sl[1], sl[2], None, None, None, None,
                               HEAD_DIM=D, BLOCK_M=c.block_m, BLOCK_N=c.block_n, STAGES=c.stages,
                               HAS_STATE=has_state, QK_INT8=False, num_warps=4, maxnreg=MAXNREG)


def launch_int8(q, k, v, acc, lse, scale, kv_len, has_state, config=None):
    """launch() with the "int8" precision: K/V prepared as for the Triton 8-bit kernel
    (triton_fp8.prepare_kv: K smoothed, int8 per key, zero-padded per head), Q rounded per row,
    then the same warp-specialised kernel with an integer Q.K^T. A candidate of
    precision="int8"'s dispatch (cuda/q8.py) only once AUTO_INT8 is set."""
    from . import triton_fp8

    B, Sq, H, D = q.shape
    c = config or DEFAULT[D]
    kv = triton_fp8.prepare_kv(k, v, kv_len, int8=True)  # k8 [B*H, skp, D], skp a multiple of 128
    q8, row_a, shift = triton_fp8.quantise_q_int8(q, kv.mu, scale * LOG2E, lse)
    v = v if keys_ok(v) else v.contiguous()
    rows = c.block_m // 2
    q8, k8 = q8.view(B * Sq, H * D), kv.k8.view(B * H * kv.skp, D)
    qd = TensorDescriptor(q8, list(q8.shape), [H * D, 1], [rows, D], _layout(torch.int8, (rows, D)))
    kd = TensorDescriptor(k8, list(k8.shape), [D, 1], [c.block_n, D], _layout(torch.int8, (c.block_n, D)))
    vd = TensorDescriptor(v, [B, kv_len, H * D], [v.stride(0), v.stride(1), 1], [1, c.block_n, D],
                          _layout(v.dtype, (1, c.block_n, D)))
    sa, sl = acc.stride(), lse.stride()
    grid = (-(-Sq // c.block_m), B * H)
    with torch.cuda.device(q.device):
        ring_step_kernel[grid](qd, kd, vd, acc, lse, acc, lse, scale * LOG2E, kv_len, Sq, H,
                               sa[0], sa[1], sa[2], sl[0], sl[1], sl[2], row_a, shift, kv.kscale, kv.skp,
                               HEAD_DIM=D, BLOCK_M=c.block_m, BLOCK_N=c.block_n, STAGES=c.stages,
                               HAS_STATE=has_state, QK_INT8=True, num_warps=4, maxnreg=MAXNREG)


def attn_fwd(q, k, v, scale, kv_len, int8=False):
    """(out, lse); int8: the "int8" precision's scheme (launch_int8; kv_len >= 1)."""
    B, Sq, H, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    (launch_int8 if int8 else launch)(q, k, v, out, lse, scale, kv_len, False)
    return out, lse


def attn_step_(q, k, v, acc, lse, scale, kv_len):
    launch(q, k, v, acc, lse, scale, kv_len, True)

