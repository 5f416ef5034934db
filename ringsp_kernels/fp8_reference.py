"""PyTorch reference of the 8-bit attention math of `ringsp_kernels.fp8`, step for step.

It quantises exactly as the Triton kernels do (same scales, same rounding, same tile-wise
online softmax, so the result depends on the key tile size `block_n` as the kernel's does)
and runs on any device in float32. Tests compare it with float64 attention (the accuracy
of the scheme) and with the Triton kernels (the kernels implement the scheme).

The scheme, per KV block (one `attn_fwd` / `attn_step_` call), for each (batch, head):
  K smoothed: its per-channel mean over the block's keys, mu, is subtracted. Softmax is
    invariant to the per-row shift q.mu this takes off every score, so only the LSE needs
    it back (added in float32); channel outliers common to all keys no longer set the
    quantisation scale.
  "fp8"  Q per row and K per block scaled to e4m3's range (448) and rounded to e4m3;
         P = exp2(s - max) is rounded to e4m3 in units of 2^-P_LOG2_UNIT (its max 1 maps
         to ~446), V per channel to e4m3; both products accumulate in float32.
  "int8" Q per row and K per key scaled to 127 and rounded (half away from zero) to int8;
         the integer Q.K^T is exact; P.V runs in q's dtype (bf16/fp16) like the native
         kernel.
  The online softmax and the state (acc float32 normalised output, lse float32) are
  exactly ringsp's: quantised and native blocks can be mixed in one state.

Why two precisions: e4m3 keeps 3 mantissa bits, so rounding any one of Q, K, P or V costs
~2.5% relative error on the output of random (randn) attention, whatever the scales
(floating point: the error is relative to each element). "fp8" is the fast one (all four
products' operands in 8 bits, FP8 tensor cores for both matmuls) at ~5e-2 relative error on
randn; "int8" rounds Q and K to a fixed-point grid per row/key, which on randn-like data
is ~4x finer than e4m3, and keeps P.V in 16 bits: ~1e-2, within cosine >= 0.9999.
"""
import math

import torch

FP8_MAX = 448.0          # largest finite float8_e4m3fn
INT8_MAX = 127.0
P_LOG2_UNIT = 8.8        # fp8 P is stored as p * 2**8.8 (~445.7 <= 448): e4m3's whole range
V_SCALE_FLOOR = 2.0 ** -16  # a V channel's scale is at least this fraction of the block's largest
KV_PAD = 128             # quantised K/V are padded to a multiple of this many keys
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
PRECISIONS = ("fp8", "int8")


def to_fp8(x):
    """Round-to-nearest-even onto the e4m3 grid (values are within +-448 by construction)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype)


def round_int8(x):
    """Round half away from zero (|x| <= 127 by construction), as the kernels do."""
    return torch.trunc(torch.where(x >= 0, x + 0.5, x - 0.5))


def _safe_scale(amax, top):
    return torch.where(amax > 0, amax / top, torch.ones_like(amax))


def quantise_q(qf, precision):
    """qf float32 [B, H, Sq, D] -> (rounded values as float32, per-row scale [B, H, Sq])."""
    amax = qf.abs().amax(-1)
    if precision == "int8":
        sq = _safe_scale(amax, INT8_MAX)
        return round_int8(qf / sq[..., None]), sq
    sq = _safe_scale(amax, FP8_MAX)
    return to_fp8(qf / sq[..., None]), sq


def quantise_k(kf, precision, smooth=True):
    """kf float32 [B, H, n, D] (n >= 1) -> (mu [B, H, D], rounded K, scale): the scale is
    [B, H] for fp8 (per block) and [B, H, n] for int8 (per key)."""
    mu = kf.sum(2) / kf.shape[2] if smooth else torch.zeros_like(kf[:, :, 0])
    ks = kf - mu[:, :, None]
    if precision == "int8":
        sk = _safe_scale(ks.abs().amax(-1), INT8_MAX)
        return mu, round_int8(ks / sk[..., None]), sk
    sk = _safe_scale(ks.abs().amax((-1, -2)), FP8_MAX)
    return mu, to_fp8(ks / sk[..., None, None]), sk


def quantise_v(vf):
    """vf float32 [B, H, n, D] -> (e4m3 V as float32, per-channel scale [B, H, D])."""
    vmax = vf.abs().amax(2)
    top = vmax.amax(-1, keepdim=True)
    sv = torch.where(top > 0, torch.maximum(vmax, top * V_SCALE_FLOOR) / FP8_MAX, torch.ones_like(vmax))
    return to_fp8(vf / sv[:, :, None]), sv


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _attend(q, k, v, acc, lse, scale, kv_len, precision, block_n, smooth):
    """Runs the quantised online softmax over k/v[:, :kv_len] from the state (acc, lse)
    ([B, H, Sq, D] / [B, H, Sq] float32, or None for an empty state); returns the new
    (normalised output, lse) in that layout."""
    f32 = torch.float32
    qf = q.to(f32).transpose(1, 2)
    kf, vf = (t[:, :kv_len].to(f32).transpose(1, 2) for t in (k, v))
    qk_scale = torch.tensor(scale * LOG2E, dtype=f32)
    fp8 = precision == "fp8"
    mu, k8, sk = quantise_k(kf, precision, smooth)
    q8, sq = quantise_q(qf, precision)
    row_a = sq * sk[..., None] * qk_scale if fp8 else sq * qk_scale
    c = (qf * mu[:, :, None]).sum(-1) * qk_scale  # q.mu in log2 units: the shift smoothing took off
    if fp8:
        v8, sv = quantise_v(vf)
        p_unit = torch.tensor(2.0 ** P_LOG2_UNIT, dtype=f32)
    else:
        v8, sv, p_unit = vf, None, torch.tensor(1.0, dtype=f32)
    p_off = P_LOG2_UNIT if fp8 else 0.0
    B, H, Sq, D = qf.shape
    if lse is None:
        m = torch.full((B, H, Sq), float("-inf"), dtype=f32, device=qf.device)
        l_i = torch.zeros_like(m)
        a = torch.zeros_like(qf)
    else:
        seen = lse > float("-inf")
        m = torch.where(seen, lse * LOG2E - c, float("-inf"))
        l_i = torch.where(seen, p_unit, 0.0)
        a = torch.where(seen[..., None], acc, 0.0)
        if fp8:
            a = a * (p_unit / sv[:, :, None])
    for t0 in range(0, kv_len, block_n):
        t1 = min(t0 + block_n, kv_len)
        if fp8:
            qk = (q8 @ k8[:, :, t0:t1].transpose(-1, -2)) * row_a[..., None]
        else:  # integer products and sums are exact in float64
            s = (q8.double() @ k8[:, :, t0:t1].double().transpose(-1, -2)).to(f32)
            qk = s * row_a[..., None] * sk[:, :, None, t0:t1]
        if t1 - t0 < block_n:  # the kernel's tail tile: masked columns
            qk = torch.cat([qk, qk.new_full((*qk.shape[:-1], block_n - (t1 - t0)), float("-inf"))], -1)
        m_new = torch.maximum(m, qk.amax(-1))
        p = torch.exp2(qk - (m_new - p_off)[..., None])[..., : t1 - t0]
        alpha = torch.exp2(m - m_new)
        l_i = l_i * alpha + p.sum(-1)
        if fp8:
            pv = to_fp8(p) @ v8[:, :, t0:t1]
        else:
            pv = p.to(v.dtype).to(f32) @ v8[:, :, t0:t1].to(v.dtype).to(f32)
        a = a * alpha[..., None] + pv
        m = m_new
    has = l_i > 0
    l_safe = torch.where(has, l_i, 1.0)
    out = (a * sv[:, :, None] if fp8 else a) / l_safe[..., None]
    new_lse = torch.where(has, (m + c + torch.log2(l_safe) - p_off) * LN2, float("-inf"))
    return out, new_lse


def attn_q8_reference(q, k, v, scale=None, kv_len=None, precision="fp8", block_n=128, smooth=True):
    """The quantised `attn_fwd`: (out in q's dtype [B, Sq, H, D], lse float32 [B, H, Sq]).
    `smooth=False` skips K's mean subtraction (to show what it buys)."""
    _check_precision(precision)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, D = q.shape
    if kv_len == 0:
        return torch.zeros_like(q), torch.full((B, H, Sq), float("-inf"), device=q.device)
    out, lse = _attend(q, k, v, None, None, scale, kv_len, precision, block_n, smooth)
    return out.transpose(1, 2).to(q.dtype), lse


def step_q8_reference_(q, k, v, acc, lse, scale=None, kv_len=None, precision="fp8", block_n=128, smooth=True):
    """The quantised `attn_step_`: merges this block into the float32 state in place."""
    _check_precision(precision)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    kv_len = k.shape[1] if kv_len is None else kv_len
    if kv_len == 0 or q.shape[1] == 0:
        return
    out, new_lse = _attend(q, k, v, acc.transpose(1, 2), lse, scale, kv_len, precision, block_n, smooth)
    acc.copy_(out.transpose(1, 2))
    lse.copy_(new_lse)


def accuracy(out, ref):
    """(cosine similarity, relative Frobenius error) of out against ref, in float64."""
    a, b = out.double().flatten(), ref.double().flatten()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    rel = ((a - b).norm() / b.norm()).item()
    return cos, rel if math.isfinite(rel) else float("inf")
