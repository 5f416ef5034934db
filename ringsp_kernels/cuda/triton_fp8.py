"""Triton kernels of the 8-bit attention precisions ("fp8", "int8"); the math is specified,
step for step, by fp8_reference.py.

Per call (one KV block) two stages:
  prepare_kv   K/V quantised once for the whole block, whatever the number of query tiles:
               a stats pass (per-chunk partial sums / min / max per channel), a per-head
               reduction (K's mean, the K and V scales), then the quantising pass. Outputs are
               padded with zeros to a multiple of KV_PAD keys and BLOCK_D channels, so the
               attention kernel loads them unmasked and padding never reaches it. fp8 V is
               stored transposed, [D, keys]: fp8 wgmma wants its B operand K-major, and for
               P.V the reduction runs over keys.
  attention    ring_attn_kernel's structure (pointer loads, online softmax started from the
               state (max, sum, numerator) = (lse, 1, acc)): Q quantised per row in registers,
               one 8-bit Q.K^T per key tile, float32 softmax, P.V in fp8 (or q's dtype for
               "int8"), float32 accumulation.
"""
import torch
import triton
import triton.language as tl

from ..fp8_reference import FP8_MAX, INT8_MAX, KV_PAD, LOG2E, P_LOG2_UNIT, V_SCALE_FLOOR
from .fast_launch import INTERPRET

STAT_ROWS = 64      # keys per inner step of the prepare passes
CHUNK_BLOCK = 16    # chunks reduced per step of the per-head reduction
TARGET_PROGRAMS = 512  # stats pass: enough (chunk, head) programs to fill a GPU
# the reference's constants, as constexprs for the kernels (Triton reads no other globals)
_FP8_MAX = tl.constexpr(FP8_MAX)
_INT8_MAX = tl.constexpr(INT8_MAX)
_V_SCALE_FLOOR = tl.constexpr(V_SCALE_FLOOR)


@triton.jit
def _to_fp8(x, EMULATE: tl.constexpr):
    if EMULATE:
        # Triton's interpreter rounds float32 -> fp8 wrongly when the mantissa carries: round to
        # the e4m3 grid here (to nearest even, subnormals included) so that its cast is exact
        bits = x.to(tl.int32, bitcast=True)
        e = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)  # e4m3 subnormals: spacing of 2^-6's binade
        ulp = ((e + 124) << 23).to(tl.float32, bitcast=True)  # 2^(e-3)
        y = (x / ulp + 12582912.0) - 12582912.0  # 1.5 * 2^23: rounds |x/ulp| < 2^22 to an integer
        x = tl.minimum(tl.maximum(y * ulp, -448.0), 448.0)
    return x.to(tl.float8e4nv)


@triton.jit
def _to_int8(x):  # half away from zero, as fp8_reference.round_int8; |x| <= 127 here
    return tl.where(x >= 0, x + 0.5, x - 0.5).to(tl.int8)


@triton.jit
def _kv_stats_kernel(
    K, V, Part, kv_len, H, rows_per_prog, n_chunks,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, FP8: tl.constexpr,
):
    """Partials of one chunk of keys of one head: K's channel sums (and for fp8 K's channel
    min/max and V's channel |max|), stored at Part[bh, chunk, 0..3, :]."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    ksum = tl.zeros([BLOCK_D], tl.float32)
    kmin = tl.full([BLOCK_D], float("inf"), tl.float32)
    kmax = tl.full([BLOCK_D], float("-inf"), tl.float32)
    vmax = tl.zeros([BLOCK_D], tl.float32)
    start = c * rows_per_prog
    end = tl.minimum(start + rows_per_prog, kv_len)
    for r0 in range(start, end, ROWS):
        rows = r0 + offs_r
        m = (rows < end)[:, None] & d_ok[None, :]
        k = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                    mask=m, other=0.0).to(tl.float32)
        ksum += tl.sum(k, 0)
        if FP8:
            kmin = tl.minimum(kmin, tl.min(tl.where(m, k, float("inf")), 0))
            kmax = tl.maximum(kmax, tl.max(tl.where(m, k, float("-inf")), 0))
            v = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                        mask=m, other=0.0).to(tl.float32)
            vmax = tl.maximum(vmax, tl.max(tl.abs(v), 0))
    base = Part + (bh * n_chunks + c) * 4 * BLOCK_D + offs_d
    tl.store(base, ksum)
    if FP8:
        tl.store(base + BLOCK_D, kmin)
        tl.store(base + 2 * BLOCK_D, kmax)
        tl.store(base + 3 * BLOCK_D, vmax)


@triton.jit
def _kv_reduce_kernel(
    Part, Mu, KScale, VScale, kv_len, n_chunks,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CB: tl.constexpr, FP8: tl.constexpr,
):
    """Per head: mu = K's channel mean; for fp8 also K's block scale max|K - mu| / 448 and
    V's channel scales (see fp8_reference.quantise_k / quantise_v)."""
    bh = tl.program_id(0)
    offs_c = tl.arange(0, CB)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    ksum = tl.zeros([BLOCK_D], tl.float32)
    kmin = tl.full([BLOCK_D], float("inf"), tl.float32)
    kmax = tl.full([BLOCK_D], float("-inf"), tl.float32)
    vmax = tl.zeros([BLOCK_D], tl.float32)
    for c0 in range(0, n_chunks, CB):
        cs = c0 + offs_c
        m = (cs < n_chunks)[:, None] & (offs_d >= 0)[None, :]
        ptrs = Part + (bh * n_chunks + cs)[:, None] * (4 * BLOCK_D) + offs_d[None, :]
        ksum += tl.sum(tl.load(ptrs, mask=m, other=0.0), 0)
        if FP8:
            kmin = tl.minimum(kmin, tl.min(tl.load(ptrs + BLOCK_D, mask=m, other=float("inf")), 0))
            kmax = tl.maximum(kmax, tl.max(tl.load(ptrs + 2 * BLOCK_D, mask=m, other=float("-inf")), 0))
            vmax = tl.maximum(vmax, tl.max(tl.load(ptrs + 3 * BLOCK_D, mask=m, other=0.0), 0))
    mu = ksum / kv_len
    tl.store(Mu + bh * BLOCK_D + offs_d, mu)
    if FP8:
        dev = tl.where(d_ok, tl.maximum(kmax - mu, mu - kmin), 0.0)  # = max |K - mu| per channel
        kamax = tl.max(dev, 0)
        tl.store(KScale + bh, tl.where(kamax > 0, kamax / _FP8_MAX, 1.0))
        top = tl.max(vmax, 0)
        sv = tl.where(top > 0, tl.maximum(vmax, top * _V_SCALE_FLOOR) / _FP8_MAX, 1.0)
        tl.store(VScale + bh * BLOCK_D + offs_d, sv)


@triton.jit
def _kv_quant_kernel(
    K, V, Mu, KScale, VScale, K8, KRowScale, V8t, kv_len, H, Skp,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, FP8: tl.constexpr,
    EMULATE: tl.constexpr,
):
    """Writes ROWS keys of one head: K8 [bh, key, d] (K - mu rounded to fp8 / int8) and, for
    fp8, V8t [bh, d, key]; for int8 the per-key scales. Keys past kv_len are written as 0."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = c * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    m = (rows < kv_len)[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(K + b * stride_kb + h * stride_kh + rows[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                mask=m, other=0.0).to(tl.float32)
    mu = tl.load(Mu + bh * BLOCK_D + offs_d)
    ks = tl.where(m, k - mu[None, :], 0.0)
    k_out = K8 + (bh * Skp + rows)[:, None] * BLOCK_D + offs_d[None, :]
    if FP8:
        tl.store(k_out, _to_fp8(ks / tl.load(KScale + bh), EMULATE))
        v = tl.load(V + b * stride_vb + h * stride_vh + rows[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=m, other=0.0).to(tl.float32)
        sv = tl.load(VScale + bh * BLOCK_D + offs_d)
        vt = tl.trans(v / sv[None, :])  # [BLOCK_D, ROWS]: stores run along keys
        tl.store(V8t + (bh * BLOCK_D + offs_d)[:, None] * Skp + rows[None, :], _to_fp8(vt, EMULATE))
    else:
        amax = tl.max(tl.abs(ks), 1)
        sk = tl.where(amax > 0, amax / _INT8_MAX, 1.0)
        tl.store(k_out, _to_int8(ks / sk[:, None]))
        tl.store(KRowScale + bh * Skp + rows, sk)


@triton.jit
def _q8_tile(q8, row_a, m_i, l_i, acc, K8, KScale, V, V8t, b, h, bh, start_n, kv_len, Skp,
             offs_n, offs_d, stride_vb, stride_vs, stride_vh, stride_vd,
             HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK: tl.constexpr,
             QK_INT8: tl.constexpr, POS_SCALE: tl.constexpr, P_OFF: tl.constexpr, EMULATE: tl.constexpr):
    """One key tile: scores from the 8-bit product, the float32 online-softmax update, P.V."""
    cols = start_n + offs_n
    k8 = tl.load(K8 + (bh * Skp + cols)[:, None] * BLOCK_D + offs_d[None, :])
    s = tl.dot(q8, tl.trans(k8))
    if QK_INT8:
        # int32 -> float32 by the exponent trick (|s| <= 256 * 127^2 < 2^22): an integer add
        # and a float add instead of a conversion per score
        sf = (s + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
        qk = sf * row_a[:, None] * tl.load(KScale + bh * Skp + cols)[None, :]
        if MASK:  # keys past kv_len: quantised as 0, and given no weight
            qk = tl.where((cols < kv_len)[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - (m_new - P_OFF)[:, None])
    elif POS_SCALE:  # row_a > 0: the row max of the raw products scales with them (one multiply less)
        if MASK:
            s = tl.where((cols < kv_len)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * row_a)
        p = tl.math.exp2(s * row_a[:, None] - (m_new - P_OFF)[:, None])  # one FMA per score
    else:  # scale <= 0 (allowed, if odd): mask after scaling
        qk = s * row_a[:, None]
        if MASK:
            qk = tl.where((cols < kv_len)[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - (m_new - P_OFF)[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if QK_INT8:
        v_mask = (cols < kv_len)[:, None] & (offs_d < HEAD_DIM)[None, :]
        v = tl.load(V + b * stride_vb + h * stride_vh + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd,
                    mask=v_mask, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)
    else:
        # a fresh product per tile, added in float32: Hopper's fp8 MMA accumulates with ~14-bit
        # precision, fine over one tile's keys, not over a whole block's (Triton keeps this add
        # out of the MMA for fp8, see CombineDotAddPattern)
        vt = tl.load(V8t + (bh * BLOCK_D + offs_d)[:, None] * Skp + cols[None, :])
        acc += tl.dot(_to_fp8(p, EMULATE), tl.trans(vt))
    return m_new, l_i, acc


@triton.jit
def _q_tile(Q, Mu, b, h, bh, offs_m, offs_d, mask, qk_scale, stride_qb, stride_qs, stride_qh, stride_qd,
            BLOCK_D: tl.constexpr):
    """A query tile in float32 and its score shift q.mu x qk_scale (what K's smoothing took
    off every score of the row, log2 units)."""
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=mask, other=0.0).to(tl.float32)
    mu = tl.load(Mu + bh * BLOCK_D + offs_d)
    return q, tl.sum(q * mu[None, :], 1) * qk_scale


@triton.jit
def _q_rows(q, KScale, bh, qk_scale, FP8: tl.constexpr, EMULATE: tl.constexpr):
    """q rounded per row to int8 (scale amax / 127) or e4m3 (amax / 448; 1 for an all-zero row),
    and the row's dequantisation factor in log2 units: its scale x qk_scale, x K's block scale
    KScale[bh] for fp8 (int8's K scales are per key, applied per score)."""
    amax = tl.max(tl.abs(q), 1)
    if FP8:
        sq = tl.where(amax > 0, amax / _FP8_MAX, 1.0)
        q8 = _to_fp8(q / sq[:, None], EMULATE)
        row_a = sq * tl.load(KScale + bh) * qk_scale
    else:
        sq = tl.where(amax > 0, amax / _INT8_MAX, 1.0)
        q8 = _to_int8(q / sq[:, None])
        row_a = sq * qk_scale
    return q8, row_a


@triton.jit(do_not_specialize=["kv_len", "Sq", "Skp"])
def q8_attn_kernel(
    Q, K8, KScale, Mu, V, V8t, VScale, Acc, Lse,
    qk_scale, kv_len, Sq, H, Skp,
    stride_qb, stride_qs, stride_qh, stride_qd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_ab, stride_as, stride_ah, stride_ad,
    stride_lb, stride_lh, stride_ls,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_STATE: tl.constexpr, QK_INT8: tl.constexpr, POS_SCALE: tl.constexpr, P_OFF: tl.constexpr,
    P_UNIT: tl.constexpr, EMULATE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    tile_mask = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]

    q, c = _q_tile(Q, Mu, b, h, bh, offs_m, offs_d, tile_mask, qk_scale, stride_qb, stride_qs, stride_qh, stride_qd,
                   BLOCK_D)
    q8, row_a = _q_rows(q, KScale, bh, qk_scale, not QK_INT8, EMULATE)
    if QK_INT8:
        sv = tl.full([BLOCK_D], 1.0, tl.float32)
    else:
        sv = tl.load(VScale + bh * BLOCK_D + offs_d)

    acc_ptrs = Acc + b * stride_ab + h * stride_ah + offs_m[:, None] * stride_as + offs_d[None, :] * stride_ad
    lse_ptrs = Lse + b * stride_lb + h * stride_lh + offs_m * stride_ls
    if HAS_STATE:
        # the state as the softmax's start: max = lse (shifted into the smoothed frame), sum
        # = 1 and numerator = acc, both in the units P.V accumulates in
        lse0 = tl.load(lse_ptrs, mask=row_ok, other=float("-inf"))
        seen = lse0 > float("-inf")
        m_i = tl.where(seen, lse0 * 1.4426950408889634 - c, float("-inf"))
        l_i = tl.where(seen, P_UNIT, 0.0)
        acc = tl.load(acc_ptrs, mask=tile_mask & seen[:, None], other=0.0)
        if not QK_INT8:
            acc = acc * (P_UNIT / sv)[None, :]
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    n_full = (kv_len // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        m_i, l_i, acc = _q8_tile(q8, row_a, m_i, l_i, acc, K8, KScale, V, V8t, b, h, bh, start_n, kv_len, Skp,
                                 offs_n, offs_d, stride_vb, stride_vs, stride_vh, stride_vd,
                                 HEAD_DIM, BLOCK_D, False, QK_INT8, POS_SCALE, P_OFF, EMULATE)
    if n_full < kv_len:
        m_i, l_i, acc = _q8_tile(q8, row_a, m_i, l_i, acc, K8, KScale, V, V8t, b, h, bh, n_full, kv_len, Skp,
                                 offs_n, offs_d, stride_vb, stride_vs, stride_vh, stride_vd,
                                 HEAD_DIM, BLOCK_D, True, QK_INT8, POS_SCALE, P_OFF, EMULATE)

    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc * sv[None, :] / l_safe[:, None]
    lse = tl.where(has_keys, (m_i + c + tl.math.log2(l_safe) - P_OFF) * 0.6931471805599453, float("-inf"))
    tl.store(lse_ptrs, lse, mask=row_ok)
    tl.store(acc_ptrs, out.to(Acc.dtype.element_ty), mask=tile_mask)


@triton.jit
def _q8_kernel(
    Q, Mu, KScale, Q8, RowA, Shift, qk_scale, Sq, H,
    stride_qb, stride_qs, stride_qh, stride_qd,
    stride_rb, stride_rh, stride_rs,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, FP8: tl.constexpr,
    EMULATE: tl.constexpr,
):
    """Q rounded per row, as q8_attn_kernel does in registers, for the Hopper kernel's 8-bit
    Q.K^T: Q8 [B, Sq, H, HEAD_DIM] contiguous, int8 (or e4m3 for FP8); RowA = the row's scale
    x qk_scale (x K's block scale KScale[bh] for FP8) and Shift = q.mu x qk_scale (the score
    shift of K's smoothing), both [B, H, Sq], log2 units."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Sq
    mask = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q, c = _q_tile(Q, Mu, b, h, bh, offs_m, offs_d, mask, qk_scale, stride_qb, stride_qs, stride_qh, stride_qd,
                   BLOCK_D)
    q8, row_a = _q_rows(q, KScale, bh, qk_scale, FP8, EMULATE)
    tl.store(Q8 + ((b * Sq + offs_m[:, None]) * H + h) * HEAD_DIM + offs_d[None, :], q8, mask=mask)
    r_off = b * stride_rb + h * stride_rh + offs_m * stride_rs
    tl.store(RowA + r_off, row_a, mask=row_ok)
    tl.store(Shift + r_off, c, mask=row_ok)


def quantise_q(q, kv, qk_scale, lse):
    """(Q8 [B, Sq, H, D], RowA, Shift) for q and a KV block prepared by prepare_kv (its mean,
    and for fp8 its K scale); int8 or e4m3 as the block. RowA and Shift are laid out like
    `lse` [B, H, Sq], whose strides the kernel reads them with."""
    B, Sq, H, D = q.shape
    dt = torch.int8 if kv.int8 else torch.float8_e4m3fn
    q8 = torch.empty((B, Sq, H, D), dtype=dt, device=q.device)
    row_a = torch.empty_strided(lse.shape, lse.stride(), dtype=torch.float32, device=q.device)
    shift = torch.empty_strided(lse.shape, lse.stride(), dtype=torch.float32, device=q.device)
    rows = 16 if INTERPRET else 64
    _q8_kernel[(triton.cdiv(Sq, rows), B * H)](q, kv.mu, kv.kscale, q8, row_a, shift, qk_scale, Sq, H, *q.stride(),
                                               *lse.stride(), HEAD_DIM=D, BLOCK_D=block_d(D), ROWS=rows,
                                               FP8=not kv.int8, EMULATE=INTERPRET, num_warps=4)
    return q8, row_a, shift


# (BLOCK_M, BLOCK_N, warps, stages). Every entry is a shape Triton's Hopper and Ada lowering
# accepts for 8-bit dots (M a multiple of 64 per 4 warps, N and K >= 32); the first is the
# bf16 kernel's best on H100. Few on purpose: each is a compile per (precision, head dim,
# state, dtype). Which one runs a shape class is the dispatch table's (cuda/q8.py times them);
# FALLBACK runs where the chosen one does not compile, INTERPRETED in Triton's interpreter.
CONFIGS = [(128, 128, 8, 3), (128, 64, 8, 3), (64, 128, 4, 3)]
FALLBACK = (64, 64, 4, 2)
INTERPRETED = (16, 32, 4, 1)


def block_d(head_dim):
    # 8-bit dots need K >= 32: narrower heads are zero-padded (free: the quantised K/V are ours)
    return max(32, triton.next_power_of_2(head_dim))


class QuantKV:
    """A KV block prepared for the attention kernel (see prepare_kv)."""

    def __init__(self, k8, kscale, mu, v, v8t, vscale, kv_len, skp, int8):
        self.k8, self.kscale, self.mu, self.v, self.v8t, self.vscale = k8, kscale, mu, v, v8t, vscale
        self.kv_len, self.skp, self.int8 = kv_len, skp, int8


def prepare_kv(k, v, kv_len, int8):
    """Quantises k/v[:, :kv_len] (kv_len >= 1) once for every query tile of this call."""
    B, _, H, D = k.shape
    BD, BH = block_d(D), B * H
    skp = triton.cdiv(kv_len, KV_PAD) * KV_PAD
    n_chunks = max(1, min(triton.cdiv(TARGET_PROGRAMS, BH), triton.cdiv(kv_len, STAT_ROWS)))
    rows_per_prog = triton.cdiv(triton.cdiv(kv_len, n_chunks), STAT_ROWS) * STAT_ROWS
    n_chunks = triton.cdiv(kv_len, rows_per_prog)
    dev, f32 = k.device, torch.float32
    part = torch.empty((BH, n_chunks, 4, BD), dtype=f32, device=dev)
    mu = torch.empty((BH, BD), dtype=f32, device=dev)
    if int8:
        k8 = torch.empty((BH, skp, BD), dtype=torch.int8, device=dev)
        kscale = torch.empty((BH, skp), dtype=f32, device=dev)
        v8t, vscale = k8, mu  # not read by the int8 kernels
    else:
        k8 = torch.empty((BH, skp, BD), dtype=torch.float8_e4m3fn, device=dev)
        kscale = torch.empty((BH,), dtype=f32, device=dev)
        v8t = torch.empty((BH, BD, skp), dtype=torch.float8_e4m3fn, device=dev)
        vscale = torch.empty((BH, BD), dtype=f32, device=dev)
    strides = (*k.stride(), *v.stride())
    _kv_stats_kernel[(n_chunks, BH)](k, v, part, kv_len, H, rows_per_prog, n_chunks, *strides,
                                     HEAD_DIM=D, BLOCK_D=BD, ROWS=STAT_ROWS, FP8=not int8, num_warps=4)
    _kv_reduce_kernel[(BH,)](part, mu, kscale, vscale, kv_len, n_chunks,
                             HEAD_DIM=D, BLOCK_D=BD, CB=CHUNK_BLOCK, FP8=not int8, num_warps=4)
    _kv_quant_kernel[(skp // STAT_ROWS, BH)](k, v, mu, kscale, vscale, k8, kscale, v8t, kv_len, H, skp, *strides,
                                             HEAD_DIM=D, BLOCK_D=BD, ROWS=STAT_ROWS, FP8=not int8,
                                             EMULATE=INTERPRET, num_warps=4)
    return QuantKV(k8, kscale, mu, v, v8t, vscale, kv_len, skp, int8)


def attend(q, k, v, acc, lse, scale, kv_len, int8, has_state, block=None):
    """One call: `acc` is the float32 state when has_state, else the output in q's dtype.
    kv_len >= 1 and Sq >= 1. `block` = (BLOCK_M, BLOCK_N, warps, stages); None: FALLBACK
    (INTERPRETED in the interpreter)."""
    if block is None:
        block = INTERPRETED if INTERPRET else FALLBACK
    kv = prepare_kv(k, v, kv_len, int8)
    B, Sq, H, D = q.shape
    args = (q, kv.k8, kv.kscale, kv.mu, kv.v, kv.v8t, kv.vscale, acc, lse,
            scale * LOG2E, kv_len, Sq, H, kv.skp,
            *q.stride(), *v.stride(), *acc.stride(), *lse.stride())
    consts = dict(HEAD_DIM=D, BLOCK_D=block_d(D), HAS_STATE=has_state, QK_INT8=int8, POS_SCALE=scale > 0,
                  P_OFF=0.0 if int8 else P_LOG2_UNIT, P_UNIT=1.0 if int8 else 2.0 ** P_LOG2_UNIT,
                  EMULATE=INTERPRET)
    bm, bn, nw, ns = block
    q8_attn_kernel[(triton.cdiv(Sq, bm), B * H)](*args, BLOCK_M=bm, BLOCK_N=bn, num_warps=nw, num_stages=ns, **consts)
