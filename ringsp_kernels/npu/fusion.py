"""Attention over one KV block through torch_npu's fused attention, and the LSE derived
from its softmax statistics. Pure logic: the fused-attention callable is passed in, so the
module runs on CPU against a stand-in that implements the same documented contract.

The contract relied on (torch_npu `npu_fusion_attention`, Atlas A2/A3; docs/npu.md cites it):
  out, softmax_max, softmax_sum, _, _, _, _ = fa(query, key, value, head_num, input_layout,
                                                 scale=..., keep_prob=..., sparse_mode=...)
  - input_layout "BSND": query/key/value are [B, S, N, D]; out is [B, Sq, N, D], q's dtype.
  - y = softmax(scale * q k^T) (an atten_mask, True = masked out, is not used here).
  - softmax_max, softmax_sum: float32 [B, N, Sq, 8] for every layout but TND; the row max of
    the scaled scores and sum(exp(s - max)), each value replicated 8 times (one 32-byte
    block). Hence lse = max + log(sum), [B, N, Sq], which is ringsp's [B, H, Sq] as it is.
  - B, S >= 1, 1 <= N <= 256, 1 <= D <= 768.
"""
import torch

from ..checks import default_scale

FA_MAX_HEADS = 256
STAT_WIDTH = 8  # softmax_max / softmax_sum carry each row's value 8 times


def lse_from_softmax_stats(softmax_max, softmax_sum, expected):
    """lse [B, N, Sq] = max + log(sum) from the [B, N, Sq, 8] statistics; `expected` is
    (B, N, Sq). Anything else means the torch_npu contract changed: fail loudly, since a
    wrong LSE silently mis-weights every later merge."""
    want = (*expected, STAT_WIDTH)
    for name, t in (("softmax_max", softmax_max), ("softmax_sum", softmax_sum)):
        if tuple(t.shape) != want or t.dtype != torch.float32:
            raise RuntimeError(
                f"npu_fusion_attention returned {name} {tuple(t.shape)} {t.dtype}; ringsp expects "
                f"float32 {want} (see docs/npu.md: the torch_npu contract may have changed)"
            )
    # sum >= 1 for every row with a key (its max term is exp(0)), so log never sees 0
    return softmax_max[..., 0] + torch.log(softmax_sum[..., 0])


def keys_in_use(k, v, kv_len):
    """k/v cut to their first kv_len keys. Slicing rather than masking: an atten_mask is
    [Sq, Sk] bytes per call (89 MB per rank for Wan 720p on 8 ranks), TND's cumulative
    actual_seq_kvlen cannot skip padding inside a packed batch, and padding that is cut off
    (NaN, garbage) can never reach the kernel. At B=1 the cut is already contiguous; for
    B>1 it costs one copy of the keys in use, small next to the attention itself."""
    if kv_len == k.shape[1]:
        return k, v
    return k[:, :kv_len], v[:, :kv_len]


def fa_arguments(q, scale):
    """Keyword arguments for one non-causal, dropout-free call in BSND layout."""
    return {
        "head_num": q.shape[2],
        "input_layout": "BSND",
        "scale": default_scale(q, scale),
        "keep_prob": 1.0,
        "sparse_mode": 0,
    }


def empty_result(q):
    """The contract's answer for rows that see no key: output 0, lse -inf."""
    B, Sq, H, _ = q.shape
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    return out, torch.full((B, H, Sq), float("-inf"), dtype=torch.float32, device=q.device)


def attn_fwd(fa, q, k, v, scale=None, kv_len=None):
    """(out in q's dtype [B, Sq, H, D], lse float32 [B, H, Sq]) of q over k/v[:, :kv_len],
    computed by `fa` (torch_npu.npu_fusion_attention or a stand-in with its contract)."""
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, _ = q.shape
    if kv_len == 0 or B * Sq * H == 0:  # the fused kernel needs B, S >= 1
        return empty_result(q)
    if H > FA_MAX_HEADS:
        raise ValueError(f"q has {H} heads; npu_fusion_attention supports at most {FA_MAX_HEADS}")
    k, v = keys_in_use(k, v, kv_len)
    result = fa(q.contiguous(), k.contiguous(), v.contiguous(), **fa_arguments(q, scale))
    out, softmax_max, softmax_sum = result[0], result[1], result[2]
    if tuple(out.shape) != tuple(q.shape):
        raise RuntimeError(f"npu_fusion_attention returned out {tuple(out.shape)}, expected {tuple(q.shape)}")
    return out, lse_from_softmax_stats(softmax_max, softmax_sum, (B, H, Sq))
