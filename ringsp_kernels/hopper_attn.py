"""Candidate Hopper kernels for the fused ring step, measured side by side with
the current kernel and cuDNN by ringsp_bench.kernel_variants before one joins the dispatcher.

`launch(q, k, v, acc, lse, scale, kv_len, has_state, variant=...)` keeps the contract of
triton_attn.launch: q/k/v [B, S, H, D] (unit stride in D); with has_state, (acc float32
[B,Sq,H,D], lse float32 [B,H,Sq]) is the running online-softmax state, loaded as the
initial (max, sum, numerator) = (lse*log2e, 1, acc) and written back; without it, acc
receives the output in q's dtype and lse the block's LSE. Keys at or past kv_len get no
weight and their values cannot leak NaN.

Variants (VARIANTS):
  persist     one program per SM looping over (batch*head, m-tile) work items, head-major
              so that programs running together share one head's K/V in L2; a tile's
              state store drains while the next tile's loads start. Scores are scaled
              inside the exp2's FFMA (one op per score, not two).
  pipe        persist, with block j+1's QK^T issued before block j's softmax in the source
              (FA3's intra-warpgroup overlap, as far as Triton's scheduler keeps it); a
              second score tile in registers, so BLOCK_N=64 at D=128.
  split       persist, and when (m-tiles x heads) cannot fill the SMs the KV block is split
              across programs: each writes a float32 partial (out, lse), and one merge
              pass folds the partials and the running state together.
Measured on an H200 (bench/RESULTS.md, ringsp_bench.kernel_variants): none beats triton_attn.py,
so the dispatcher does not use them; they are kept with their bench as the starting point for
the next attempt. (A Gluon warp-specialised kernel was tried too: it did not compile under
Triton 3.6 and was removed.)
"""
import math
import os

import torch
import triton
import triton.language as tl

from .fast_launch import CachedKernel
from .triton_attn import _can_use_desc, _load_kv, _load_state, _scratch  # what the two kernels share

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
INTERPRET_BLOCK = (16, 16)  # the interpreter's cost grows with the tile size


# --- kernels ----------------------------------------------------------------------------

@triton.jit
def _online_block(q, k, v, m_i, l_i, acc, qk_scale, cols, hi,
                  MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    return _softmax_pv(s, v, m_i, l_i, acc, qk_scale, cols, hi, MASK, DOT_PRECISION)


@triton.jit
def _softmax_pv(s, v, m_i, l_i, acc, qk_scale, cols, hi, MASK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    if MASK:  # keys at or past `hi` belong to padding or to another split
        valid = cols < hi
        s = tl.where(valid[None, :], s, float("-inf"))
        v = tl.where(valid[:, None], v, 0.0)
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # qk_scale > 0: max commutes with it
    p = tl.math.exp2(s * qk_scale - m_new[:, None])  # scale and shift fuse into one FFMA
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
    return m_new, l_i, acc


@triton.jit
def _kv_loop_pipelined(q, K, V, desc_k, desc_v, b, h, lo, hi, m_i, l_i, acc, qk_scale, offs_n, offs_d, Sk,
                       stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                       HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, USE_DESC: tl.constexpr,
                       DOT_PRECISION: tl.constexpr):
    """Full KV blocks [lo, hi) with block j+1's QK^T issued before block j's softmax, so
    the tensor cores work through the softmax (FA3's intra-warpgroup overlap); costs a
    second score tile in registers."""
    if lo < hi:
        k, v = _load_kv(K, V, desc_k, desc_v, b, h, lo, offs_n, offs_d, Sk,
                        stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, HEAD_DIM, USE_DESC)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        for start_n in tl.range(lo + BLOCK_N, hi, BLOCK_N):
            k_next, v_next = _load_kv(K, V, desc_k, desc_v, b, h, start_n, offs_n, offs_d, Sk,
                                      stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                                      HEAD_DIM, USE_DESC)
            s_next = tl.dot(q, tl.trans(k_next), input_precision=DOT_PRECISION)
            m_i, l_i, acc = _softmax_pv(s, v, m_i, l_i, acc, qk_scale, offs_n, hi, False, DOT_PRECISION)
            s = s_next
            v = v_next
        m_i, l_i, acc = _softmax_pv(s, v, m_i, l_i, acc, qk_scale, offs_n, hi, False, DOT_PRECISION)
    return m_i, l_i, acc


@triton.jit(do_not_specialize=["kv_len", "Sq", "Sk", "kv_rows", "n_m", "n_splits", "split_len", "n_items",
                               "stride_qb", "stride_kb", "stride_vb", "stride_ap", "stride_ab",
                               "stride_lp", "stride_lb", "stride_lh"])
def persistent_attn_kernel(
    Q, K, V, Acc, Lse,
    qk_scale, kv_len, Sq, Sk, kv_rows, H, n_m, n_splits, split_len, n_items,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ap, stride_ab, stride_as, stride_ah,
    stride_lp, stride_lb, stride_lh, stride_ls,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_STATE: tl.constexpr, USE_DESC: tl.constexpr, DOT_PRECISION: tl.constexpr,
    FLATTEN: tl.constexpr, PIPE_QK: tl.constexpr,
):
    """Work item = (b*H + h, m-tile, split), split fastest, then m-tile: the programs that
    run at one time cover one or two heads, whose K/V then stay in L2. With n_splits > 1
    (Acc, Lse) are the partial buffers [split, B, S, H, D] / [split, B, H, S] (stride_ap,
    stride_lp per split) and HAS_STATE is False: the merge kernel adds the state."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    desc_k = K
    desc_v = V
    if USE_DESC:  # built once per program, reused by all its tiles
        desc_k = tl.make_tensor_descriptor(K, shape=[kv_rows, H * HEAD_DIM], strides=[stride_ks, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        desc_v = tl.make_tensor_descriptor(V, shape=[kv_rows, H * HEAD_DIM], strides=[stride_vs, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
    for item in tl.range(tl.program_id(0), n_items, tl.num_programs(0), flatten=FLATTEN):
        split = item % n_splits
        tile = item // n_splits
        pid_m = tile % n_m
        bh = tile // n_m
        b = bh // H
        h = bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Sq
        tile_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
        q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :],
                    mask=tile_mask, other=0.0)
        acc_ptrs = (Acc + split.to(tl.int64) * stride_ap + b.to(tl.int64) * stride_ab + h * stride_ah
                    + offs_m[:, None] * stride_as + offs_d[None, :])
        lse_ptrs = (Lse + split.to(tl.int64) * stride_lp + b.to(tl.int64) * stride_lb + h * stride_lh
                    + offs_m * stride_ls)
        m_i, l_i, acc = _load_state(acc_ptrs, lse_ptrs, row_ok, tile_mask, HAS_STATE, BLOCK_M, BLOCK_D)
        lo = split * split_len
        hi = tl.minimum(lo + split_len, kv_len)
        full_end = lo + ((hi - lo) // BLOCK_N) * BLOCK_N
        if PIPE_QK:
            m_i, l_i, acc = _kv_loop_pipelined(q, K, V, desc_k, desc_v, b, h, lo, full_end, m_i, l_i, acc, qk_scale,
                                               offs_n, offs_d, Sk, stride_kb, stride_ks, stride_kh, stride_vb,
                                               stride_vs, stride_vh, HEAD_DIM, BLOCK_N, USE_DESC, DOT_PRECISION)
        else:
            for start_n in tl.range(lo, full_end, BLOCK_N):
                k, v = _load_kv(K, V, desc_k, desc_v, b, h, start_n, offs_n, offs_d, Sk,
                                stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, HEAD_DIM, USE_DESC)
                m_i, l_i, acc = _online_block(q, k, v, m_i, l_i, acc, qk_scale, offs_n, hi, False, DOT_PRECISION)
        if full_end < hi:
            k, v = _load_kv(K, V, desc_k, desc_v, b, h, full_end, offs_n, offs_d, Sk,
                            stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, HEAD_DIM, USE_DESC)
            m_i, l_i, acc = _online_block(q, k, v, m_i, l_i, acc, qk_scale, full_end + offs_n, hi,
                                          True, DOT_PRECISION)
        has_keys = l_i > 0.0
        l_safe = tl.where(has_keys, l_i, 1.0)
        acc = acc / l_safe[:, None]
        lse = tl.where(has_keys, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("-inf"))
        tl.store(lse_ptrs, lse, mask=row_ok)
        tl.store(acc_ptrs, acc.to(Acc.dtype.element_ty), mask=tile_mask)


@triton.jit(do_not_specialize=["rows", "Sq", "n_splits", "stride_pp", "stride_pb", "stride_qp", "stride_qb",
                               "stride_qh", "stride_ab", "stride_lb", "stride_lh"])
def merge_splits_kernel(
    PartO, PartL, Acc, Lse,
    rows, Sq, H, n_splits,
    stride_pp, stride_pb, stride_ps, stride_ph,
    stride_qp, stride_qb, stride_qh, stride_qs,
    stride_ab, stride_as, stride_ah,
    stride_lb, stride_lh, stride_ls,
    HAS_STATE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Folds n_splits partial results (and the running state, when HAS_STATE) into
    (Acc, Lse) in one pass; Acc is the float32 state or the output in q's dtype. Each
    partial covers >= 1 key, so the running max is finite."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # row = (b, s, h) flattened
    r_ok = r < rows
    b = r // (Sq * H)
    s = (r // H) % Sq
    h = r % H
    d = tl.arange(0, BLOCK_D)
    mask = r_ok[:, None] & (d[None, :] < HEAD_DIM)
    part_l = PartL + b * stride_qb + h * stride_qh + s * stride_qs
    part_o = PartO + (b * stride_pb + s * stride_ps + h * stride_ph)[:, None] + d[None, :]
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    for i in range(n_splits):
        m = tl.maximum(m, tl.load(part_l + i * stride_qp, mask=r_ok, other=0.0))
    total = tl.zeros([BLOCK_R], tl.float32)
    out = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    acc_ptrs = Acc + (b * stride_ab + s * stride_as + h * stride_ah)[:, None] + d[None, :]
    lse_ptrs = Lse + b * stride_lb + h * stride_lh + s * stride_ls
    if HAS_STATE:
        la = tl.load(lse_ptrs, mask=r_ok, other=float("-inf"))
        seen = la > float("-inf")
        m = tl.maximum(m, la)
        total = tl.where(seen, tl.exp(la - m), 0.0)
        out = tl.load(acc_ptrs, mask=mask & seen[:, None], other=0.0) * total[:, None]
    for i in range(n_splits):
        w = tl.exp(tl.load(part_l + i * stride_qp, mask=r_ok, other=0.0) - m)
        total += w
        out += tl.load(part_o + i * stride_pp, mask=mask, other=0.0) * w[:, None]
    tl.store(acc_ptrs, (out / total[:, None]).to(Acc.dtype.element_ty), mask=mask)
    tl.store(lse_ptrs, m + tl.log(total), mask=r_ok)


# --- launching ----------------------------------------------------------------------------

# name -> default config per head dim: (BLOCK_M, BLOCK_N, warps, stages, flatten). Triton
# 3.6's warp_specialize compiles this loop for sm_90 to the same SASS as without it, so no
# variant offers it.
VARIANTS = {
    "persist": {64: (128, 128, 8, 3, False), 128: (128, 128, 8, 3, False)},
    "pipe": {64: (128, 128, 8, 3, False), 128: (128, 64, 8, 3, False)},
    "split": {64: (128, 128, 8, 3, False), 128: (128, 128, 8, 3, False)},
}
# the short tuning lists ringsp_bench.kernel_variants tries per variant and head dim
TUNE = {
    "persist": {64: [(128, 128, 8, 3, False), (128, 128, 4, 3, False)],
                128: [(128, 128, 8, 3, False), (128, 128, 8, 3, True)]},
    "pipe": {64: [(128, 128, 8, 3, False)], 128: [(128, 64, 8, 3, False)]},
    "split": {64: [(128, 128, 8, 3, False)], 128: [(128, 128, 8, 3, False)]},
}
_KERNELS = {}  # kernel -> CachedKernel
_SMS = {}  # device index -> multiprocessor count


def _sms(device):
    if device.type != "cuda":
        return 4  # the interpreter: a few programs, so the persistent loop runs more than once
    n = _SMS.get(device.index)
    if n is None:
        n = _SMS[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
    return n


def choose_splits(n_tiles, n_blocks, sms, max_splits=4):
    """How many programs share one tile's KV block: the fewest splits that bring the
    busiest SM's share of KV blocks (rounds x blocks per split) within 10% of the best,
    counting one extra block per split for writing and re-reading the float32 partial.
    1 whenever the tiles already fill the SMs; never a split of under two blocks."""
    if n_tiles <= 0 or n_blocks <= 0:
        return 1

    def cost(s):
        per = math.ceil(n_blocks / s)
        return math.ceil(n_tiles * s / sms) * per + (0 if s == 1 else 1 + s * 0.25)

    options = [s for s in range(1, max_splits + 1) if s == 1 or n_blocks >= 2 * s]
    best = min(cost(s) for s in options)
    return next(s for s in options if cost(s) <= 1.1 * best)


def _run(kernel, grid, args, consts, options, key):
    if INTERPRET:
        kernel[grid](*args, **consts, **options)
        return
    cached = _KERNELS.get(kernel)
    if cached is None:
        cached = _KERNELS[kernel] = CachedKernel(kernel)
    align = tuple(a.data_ptr() % 16 == 0 for a in args if isinstance(a, torch.Tensor))
    cached.launch(key + (align,), grid, args, lambda: (consts, options))


def _check(q, k, v, acc, lse, kv_len, has_state):
    B, Sq, H, D = q.shape
    if k.shape[0] != B or k.shape[2] != H or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"k/v must be [B, Sk, H, D] matching q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}, {tuple(v.shape)}")
    if not 0 <= kv_len <= k.shape[1]:
        raise ValueError(f"kv_len must be in [0, {k.shape[1]}], got {kv_len}")
    if acc.shape != q.shape or acc.stride(3) != 1:
        raise ValueError(f"acc must have q's shape {tuple(q.shape)} with unit stride in D")
    if has_state and acc.dtype != torch.float32:
        raise TypeError(f"acc must be float32 for a step with state, got {acc.dtype}")
    if lse.shape != (B, H, Sq) or lse.dtype != torch.float32:
        raise ValueError(f"lse must be float32 [B, H, Sq] = {(B, H, Sq)}, got {lse.dtype} {tuple(lse.shape)}")


def launch(q, k, v, acc, lse, scale, kv_len, has_state, variant="persist", config=None, splits=None,
           use_desc=None):
    """Runs `variant` (a key of VARIANTS). `config` = (BLOCK_M, BLOCK_N, warps,
    stages, flatten) overrides the variant's default; `splits` forces the KV
    split of the "split" variant (None: choose_splits); `use_desc` forces TMA loads of K/V
    on or off (tests; None: by layout)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    _check(q, k, v, acc, lse, kv_len, has_state)
    B, Sq, H, D = q.shape
    if Sq == 0 or B == 0 or H == 0:
        return
    q, k, v = (t if t.stride(3) == 1 else t.contiguous() for t in (q, k, v))
    bm, bn, warps, stages, flat = config or VARIANTS[variant][D if D in (64, 128) else 128]
    if INTERPRET:
        bm, bn = INTERPRET_BLOCK
        warps, stages, flat = 4, 1, False
    n_m = triton.cdiv(Sq, bm)
    n_tiles = B * H * n_m
    sms = _sms(q.device)
    n_splits = 1
    if variant == "split":
        n_splits = splits if splits is not None else choose_splits(n_tiles, triton.cdiv(kv_len, bn), sms)
        n_splits = max(1, min(n_splits, triton.cdiv(max(kv_len, 1), bn)))
    use_desc = _can_use_desc(k, v) if use_desc is None else use_desc
    if use_desc and not INTERPRET:
        triton.set_allocator(_scratch)
    split_len = triton.cdiv(triton.cdiv(max(kv_len, 1), n_splits), bn) * bn
    n_splits = triton.cdiv(max(kv_len, 1), split_len)  # no empty split
    if n_splits > 1:
        part_o = torch.empty((n_splits, B, Sq, H, D), dtype=torch.float32, device=q.device)
        part_l = torch.empty((n_splits, B, H, Sq), dtype=torch.float32, device=q.device)
        out, out_lse, state = part_o, part_l, False
    else:
        out, out_lse, state = acc, lse, has_state
    n_items = n_tiles * n_splits
    grid = (min(n_items, sms), 1, 1)
    so, sl = out.stride(), out_lse.stride()
    so, sl = ((0,) + so, (0,) + sl) if n_splits == 1 else (so, sl)
    sq, sk, sv = q.stride(), k.stride(), v.stride()
    Sk = k.shape[1]
    args = (q, k, v, out, out_lse, scale * LOG2E, kv_len, Sq, Sk, B * Sk, H, n_m, n_splits, split_len, n_items,
            sq[0], sq[1], sq[2], sk[0], sk[1], sk[2], sv[0], sv[1], sv[2], *so[:4], *sl[:4])
    consts = dict(HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_M=bm, BLOCK_N=bn,
                  HAS_STATE=state, USE_DESC=use_desc, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
                  FLATTEN=flat, PIPE_QK=variant == "pipe")
    big = any(abs(a) >= 2 ** 31 - 1 for a in args[6:] if isinstance(a, int))  # Triton widens those to i64
    key = ("attn", big, q.device.index, q.dtype, out.dtype, state, use_desc, bm, bn, warps, stages, flat,
           variant == "pipe", H, D,
           sq[1:], sk[1:], sv[1:], so[2:], sl[3:])
    _run(persistent_attn_kernel, grid, args, consts, dict(num_warps=warps, num_stages=stages), key)
    if n_splits > 1:
        _merge(part_o, part_l, acc, lse, has_state)


def _merge(part_o, part_l, acc, lse, has_state):
    n_splits, B, Sq, H, D = part_o.shape
    rows = B * Sq * H
    block_d = max(16, triton.next_power_of_2(D))
    block_r = max(1, min(64, 4096 // block_d))
    po, pl, sa, sl = part_o.stride(), part_l.stride(), acc.stride(), lse.stride()
    args = (part_o, part_l, acc, lse, rows, Sq, H, n_splits, po[0], po[1], po[2], po[3], pl[0], pl[1], pl[2], pl[3],
            sa[0], sa[1], sa[2], sl[0], sl[1], sl[2])
    consts = dict(HAS_STATE=has_state, HEAD_DIM=D, BLOCK_D=block_d, BLOCK_R=block_r)
    key = ("merge", acc.device.index, acc.dtype, has_state, H, D, po[2:], sa[1:], sl[2:])
    _run(merge_splits_kernel, (triton.cdiv(rows, block_r), 1, 1), args, consts, dict(num_warps=8, num_stages=1), key)
