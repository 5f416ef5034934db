"""Triton kernel for one ring step: attention of a q tile over a KV block, starting from
and ending in the running online-softmax state (acc, lse).

The state is loaded as the softmax's initial (max, sum, numerator) = (lse, 1, acc): the
normalised output with its log-sum-exp *is* a valid online-softmax state, so merging a
new block costs nothing beyond attending to it -- no partial output, no merge launch.
`attn_fwd` is the same kernel starting from the empty state and writing q's dtype.
Scores live in the log2 domain (exp2 with the scale folded into one multiply).
"""
import torch
import triton
import triton.language as tl

from .. import caches
from ..dispatch import default_config
from .fast_launch import INTERPRET, CachedKernel

LOG2E = 1.4426950408889634


@triton.jit
def _attend_block(q, k_tile, v_tile, m_i, l_i, acc, qk_scale, cols, kv_len,
                  MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    qk = tl.dot(q, tl.trans(k_tile), input_precision=DOT_PRECISION) * qk_scale
    if MASK:  # keys past kv_len are padding: they get no weight, and their values can't leak NaN
        valid = cols < kv_len
        qk = tl.where(valid[None, :], qk, float("-inf"))
        v_tile = tl.where(valid[:, None], v_tile, 0.0)
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v_tile.dtype), v_tile, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _load_kv(K, V, desc_k, desc_v, b, h, start_n, offs_n, offs_d, Sk,
             stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
             HEAD_DIM: tl.constexpr, USE_DESC: tl.constexpr):
    if USE_DESC:  # TMA: rows past this batch's keys are masked by kv_len in _attend_block
        row = b * Sk + start_n
        k_tile = desc_k.load([row, h * HEAD_DIM])
        v_tile = desc_v.load([row, h * HEAD_DIM])
    else:
        rows = start_n + offs_n
        mask = (rows[:, None] < Sk) & (offs_d[None, :] < HEAD_DIM)
        k_tile = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + offs_d[None, :],
                         mask=mask, other=0.0)
        v_tile = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vs + offs_d[None, :],
                         mask=mask, other=0.0)
    return k_tile, v_tile


@triton.jit
def _load_state(acc_ptrs, lse_ptrs, row_ok, tile_mask, HAS_STATE: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """The softmax's start (max in log2 units, sum, numerator): the running state, or empty."""
    if HAS_STATE:
        m_i = tl.load(lse_ptrs, mask=row_ok, other=float("-inf")) * 1.4426950408889634
        seen = m_i > float("-inf")
        l_i = tl.where(seen, 1.0, 0.0)
        # rows that have seen no key hold nothing: skipping their load saves the whole
        # state read on a ring's first step
        acc = tl.load(acc_ptrs, mask=tile_mask & seen[:, None], other=0.0)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    return m_i, l_i, acc


@triton.jit(do_not_specialize=["kv_len", "Sq", "Sk", "kv_rows"])
def ring_attn_kernel(
    Q, K, V, Acc, Lse,
    qk_scale, kv_len, Sq, Sk, kv_rows, H,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ab, stride_as, stride_ah,
    stride_lb, stride_lh, stride_ls,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_STATE: tl.constexpr, USE_DESC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    WARP_SPEC: tl.constexpr = False,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    tile_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :],
                mask=tile_mask, other=0.0)
    acc_ptrs = Acc + b * stride_ab + h * stride_ah + offs_m[:, None] * stride_as + offs_d[None, :]
    lse_ptrs = Lse + b * stride_lb + h * stride_lh + offs_m * stride_ls
    m_i, l_i, acc = _load_state(acc_ptrs, lse_ptrs, row_ok, tile_mask, HAS_STATE, BLOCK_M, BLOCK_D)

    desc_k = K
    desc_v = V
    if USE_DESC:
        desc_k = tl.make_tensor_descriptor(K, shape=[kv_rows, H * HEAD_DIM], strides=[stride_ks, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        desc_v = tl.make_tensor_descriptor(V, shape=[kv_rows, H * HEAD_DIM], strides=[stride_vs, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])

    n_full = (kv_len // BLOCK_N) * BLOCK_N
    for start_n in tl.range(0, n_full, BLOCK_N, warp_specialize=WARP_SPEC):
        k_tile, v_tile = _load_kv(K, V, desc_k, desc_v, b, h, start_n, offs_n, offs_d, Sk,
                                  stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                                  HEAD_DIM, USE_DESC)
        m_i, l_i, acc = _attend_block(q, k_tile, v_tile, m_i, l_i, acc, qk_scale, offs_n, kv_len,
                                      False, DOT_PRECISION)
    if n_full < kv_len:
        k_tile, v_tile = _load_kv(K, V, desc_k, desc_v, b, h, n_full, offs_n, offs_d, Sk,
                                  stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                                  HEAD_DIM, USE_DESC)
        m_i, l_i, acc = _attend_block(q, k_tile, v_tile, m_i, l_i, acc, qk_scale, n_full + offs_n,
                                      kv_len, True, DOT_PRECISION)

    has_keys = l_i > 0.0
    acc = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, (m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(lse_ptrs, lse, mask=row_ok)
    tl.store(acc_ptrs, acc.to(Acc.dtype.element_ty), mask=tile_mask)


# --- launching -------------------------------------------------------------------------

INTERPRET_CONFIG = (16, 16, 4, 1, False)  # the interpreter's cost grows with the tile size


def configs(major, head_dim=128):
    """The Triton configs the tuner tries on a GPU of compute capability `major`:
    (BLOCK_M, BLOCK_N, warps, stages, warp specialisation), the leaders of the H100 sweep
    in bench/RESULTS.md per head dim (few: each costs a compile on a fresh machine), plus
    64-row tiles, which fill the SMs on the short blocks of small images. Warp
    specialisation is a Hopper-and-newer feature."""
    if major >= 9:
        if head_dim <= 64:
            return [(128, 128, 4, 3, True), (128, 64, 8, 3, True), (128, 128, 8, 3, False), (64, 128, 4, 3, False)]
        return [(128, 128, 8, 3, False), (128, 128, 8, 3, True), (128, 64, 8, 3, True), (64, 128, 4, 3, False)]
    return [(128, 128, 8, 3, False), (128, 64, 8, 3, False), (128, 64, 4, 3, False), (64, 128, 4, 3, False)]


_KERNEL = CachedKernel(ring_attn_kernel)
_CAPABILITY = {}  # device index -> (major, minor): read once, not per call
_DESC = {}  # launch key -> whether that kernel reads K/V through tensor descriptors
_SCRATCH = {}  # (device, stream) -> int8 buffer for the kernel's in-kernel TMA descriptors
for _name, _cache in (("triton capabilities", _CAPABILITY), ("triton descriptor choices", _DESC),
                     ("triton TMA scratch", _SCRATCH), ("triton attention launches", _KERNEL.entries)):
    caches.register(_name, _cache.clear)
_get_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
# whether a CUDA graph is being captured on the current stream (nothing may be timed then)
capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", None) or torch.cuda.is_current_stream_capturing


def capability(device_index):
    cap = _CAPABILITY.get(device_index)
    if cap is None:
        cap = _CAPABILITY[device_index] = torch.cuda.get_device_capability(device_index)
    return cap


def _scratch(size, align, stream):
    """Triton's allocator for the descriptors a launch builds in global memory. Launches on
    one stream run in order, so one buffer per stream serves them all without a per-call
    allocation; inside a CUDA graph capture a fresh one is taken (graphs may replay on
    other streams)."""
    if capturing():
        return torch.empty(size, dtype=torch.int8, device="cuda")
    key = (_get_device(), stream)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < size:
        buf = _SCRATCH[key] = torch.empty(max(size, 1 << 16), dtype=torch.int8, device="cuda")
    return buf


def desc_layout_ok(k, v):
    """Whether K/V can be read as one 2-D [B*Sk, H*D] tensor descriptor: heads packed in a row,
    batches one after another (or a single batch, as for a ring block sliced out of a longer
    sequence), 16-byte aligned base and row stride, D a power of two of >= 16 bytes."""
    d, es = k.shape[3], k.element_size()
    ok = d == triton.next_power_of_2(d) and d * es >= 16
    for t in (k, v):
        ok = ok and t.stride(3) == 1 and t.stride(2) == d
        ok = ok and (t.shape[0] == 1 or t.stride(0) == t.shape[1] * t.stride(1))
        ok = ok and (t.stride(1) * es) % 16 == 0 and t.data_ptr() % 16 == 0
    return ok


def _can_use_desc(k, v):
    """TMA on Hopper and newer, for half-precision inputs with a descriptor-friendly layout."""
    if INTERPRET or k.device.type != "cuda" or capability(k.device.index)[0] < 9:
        return False
    return k.dtype != torch.float32 and desc_layout_ok(k, v)


def launch(q, k, v, acc, lse, scale, kv_len, has_state, config=None, use_desc=None, block=None, warp_spec=False):
    """Runs the kernel. `acc` (unit stride in D) is the float32 state when has_state, else
    the output in q's dtype. `config` = (BLOCK_M, BLOCK_N, warps, stages, warp_spec)
    (`block` = the first four and `warp_spec`, for benchmarks); None takes the portable
    default. `use_desc` forces TMA loads on or off (benchmarks), None picks by layout."""
    B, Sq, H, D = q.shape
    if Sq == 0 or B == 0 or H == 0:
        return
    if config is None:
        config = (*block, warp_spec) if block is not None else INTERPRET_CONFIG if INTERPRET else _default(D)
    sq, sk, sv = q.stride(), k.stride(), v.stride()
    if sq[3] != 1 or sk[3] != 1 or sv[3] != 1:
        q, k, v = (t if t.stride(3) == 1 else t.contiguous() for t in (q, k, v))
        sq, sk, sv = q.stride(), k.stride(), v.stride()
    sa, sl = acc.stride(), lse.stride()
    Sk = k.shape[1]
    args = (q, k, v, acc, lse, scale * LOG2E, kv_len, Sq, Sk, B * Sk, H, sq[0], sq[1], sq[2], sk[0], sk[1], sk[2],
            sv[0], sv[1], sv[2], sa[0], sa[1], sa[2], sl[0], sl[1], sl[2])
    grid = (-(-Sq // config[0]), B * H, 1)  # ceil; triton.cdiv is a jit function in Triton 3.9 (~9 us)
    if INTERPRET:
        use_desc = _can_use_desc(k, v) if use_desc is None else use_desc
        c, o = _constexprs(q, D, has_state, use_desc, config)
        ring_attn_kernel[grid](*args, **c, **o)
        return
    dev = q.get_device()
    if dev != _get_device():  # Triton launches on the current device
        if dev < 0:
            raise ValueError(f"launch needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}")
        with torch.cuda.device(dev):
            return launch(q, k, v, acc, lse, scale, kv_len, has_state, config, use_desc)
    p = (q.data_ptr(), k.data_ptr(), v.data_ptr(), acc.data_ptr(), lse.data_ptr())
    align = (p[0] | p[1] | p[2] | p[3] | p[4]) & 15
    if align:  # Triton specialises each pointer on 16-byte alignment
        align = tuple(x % 16 == 0 for x in p)
    key = (dev, q.dtype, acc.dtype, has_state, config, use_desc, B, Sk, H, D, sq, sk, sv, sa, sl, align)
    desc = _DESC.get(key)
    if desc is None:
        if len(_DESC) >= _KERNEL.max_entries:
            _DESC.clear()
        desc = _DESC[key] = _can_use_desc(k, v) if use_desc is None else use_desc
    if desc:
        triton.set_allocator(_scratch)
    _KERNEL.launch(key, grid, args, lambda: _constexprs(q, D, has_state, desc, config))


def _default(D):
    return tuple(default_config(D))


def _constexprs(q, D, has_state, use_desc, config):
    bm, bn, warps, stages, ws = config
    consts = dict(HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_M=bm, BLOCK_N=bn,
                  HAS_STATE=has_state, USE_DESC=use_desc,
                  DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", WARP_SPEC=ws)
    return consts, dict(num_warps=warps, num_stages=stages)
