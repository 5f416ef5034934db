"""Attention over one KV block through torch_npu's npu_fused_infer_attention_score, which
returns the LSE itself (softmax_lse_flag=True) -- the kernel SGLang's NPU ring attention
uses. Pure logic: the callable is passed in, so the module runs on CPU against a stand-in
that implements the same documented contract. Chosen by RINGSP_NPU_ATTN=fused_infer; not
run on an NPU yet.

The contract relied on (torch_npu `npu_fused_infer_attention_score`, Ascend op-plugin docs,
Atlas A2/A3):
  attention_out, softmax_lse = fia(query, key, value, *, num_heads=N, input_layout="BSND",
                                   scale=..., sparse_mode=0, softmax_lse_flag=True)
  - "BSND": query [B, Sq, N, D], key/value [B, Sk, N, D], contiguous; attention_out is
    [B, Sq, N, D] in q's dtype: softmax(scale * q k^T) v.
  - softmax_lse: float32 [B, N, Sq, 1], log(sum(exp(s - max))) + max of the scaled scores
    (natural log); with softmax_lse_flag=False a [1] tensor of 0 instead.
  - query float16 or bfloat16; with more than one query row (the PromptFlashAttention
    branch): B <= 65536, N <= 256, D <= 512 and a multiple of 16 for 16-bit inputs. One query
    row takes the incremental branch, whose limits differ: such calls use
    npu_fusion_attention instead.
  - The scale argument is `scale` in current torch_npu and `scale_value` in the 6.0 releases;
    the caller passes the name its torch_npu's schema has (scale_keyword).
"""
import torch

from ..checks import default_scale
from .fusion import empty_result, keys_in_use

DTYPES_TAKEN = (torch.float16, torch.bfloat16)
MAX_BATCH = 65536
MAX_HEADS = 256
MAX_HEAD_DIM = 512
HEAD_DIM_ALIGN = 16


def unfit_reason(q):
    """Why npu_fused_infer_attention_score's documented limits exclude q (None: they don't)."""
    B, Sq, H, D = q.shape
    if q.dtype not in DTYPES_TAKEN:
        return f"it takes float16 or bfloat16, q is {q.dtype}"
    if Sq < 2:
        return "a single query row goes to its incremental branch"
    if D % HEAD_DIM_ALIGN or D > MAX_HEAD_DIM:
        return f"head dim {D} is not a multiple of {HEAD_DIM_ALIGN} up to {MAX_HEAD_DIM}"
    if H > MAX_HEADS or B > MAX_BATCH:
        return f"{B} x {H} (batch x heads) is beyond its {MAX_BATCH} x {MAX_HEADS}"
    return None


def scale_keyword(argument_names):
    """The name of the scale argument among the op's schema arguments ("scale" by default)."""
    return "scale_value" if "scale_value" in argument_names and "scale" not in argument_names else "scale"


def fia_arguments(q, scale, scale_name="scale"):
    """Keyword arguments for one non-causal, unmasked call in BSND layout that returns the LSE."""
    return {"num_heads": q.shape[2], "input_layout": "BSND", scale_name: default_scale(q, scale),
            "sparse_mode": 0, "softmax_lse_flag": True}


def lse_of(softmax_lse, expected):
    """lse [B, N, Sq] from the kernel's [B, N, Sq, 1]; anything else means the contract changed
    (a [1] tensor: the flag was not honoured) -- fail loudly, a wrong LSE mis-weights every merge."""
    if tuple(softmax_lse.shape) != (*expected, 1) or softmax_lse.dtype != torch.float32:
        raise RuntimeError(
            f"npu_fused_infer_attention_score returned softmax_lse {tuple(softmax_lse.shape)} {softmax_lse.dtype}; "
            f"ringsp expects float32 {(*expected, 1)} (see docs/npu.md: the torch_npu contract may have changed)")
    return softmax_lse[..., 0]


def attn_fwd(fia, q, k, v, scale=None, kv_len=None, scale_name="scale"):
    """(out in q's dtype [B, Sq, H, D], lse float32 [B, H, Sq]) of q over k/v[:, :kv_len],
    computed by `fia` (npu_fused_infer_attention_score or a stand-in with its contract);
    q must pass unfit_reason()."""
    kv_len = k.shape[1] if kv_len is None else kv_len
    B, Sq, H, _ = q.shape
    if kv_len == 0 or B * Sq * H == 0:
        return empty_result(q)
    unfit = unfit_reason(q)
    if unfit is not None:
        raise ValueError(f"npu_fused_infer_attention_score cannot take q {tuple(q.shape)}: {unfit}")
    k, v = keys_in_use(k, v, kv_len)
    out, softmax_lse = fia(q.contiguous(), k.contiguous(), v.contiguous(), **fia_arguments(q, scale, scale_name))
    if tuple(out.shape) != tuple(q.shape):
        raise RuntimeError(f"npu_fused_infer_attention_score returned out {tuple(out.shape)}, expected {tuple(q.shape)}")
    return out, lse_of(softmax_lse, (B, H, Sq))
