"""cuDNN's fused attention with LSE (through aten) as a CUDA attention path."""
import torch

_CUDNN = torch.ops.aten._scaled_dot_product_cudnn_attention.default


def cudnn_ok(q):
    """Shapes cuDNN's fused attention takes: half precision, head dim a multiple of 8 <= 256."""
    D = q.shape[3]
    return q.is_cuda and q.dtype != torch.float32 and D % 8 == 0 and D <= 256


def cudnn_attn(q, k, v, scale, kv_len):
    """cuDNN attention over k/v[:, :kv_len]: cuDNN's own (out [B,S,H,D] view, lse [B,H,S])."""
    if kv_len != k.shape[1]:
        k, v = k[:, :kv_len], v[:, :kv_len]
    res = _CUDNN(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, scale=scale)
    lse = res[1]
    B, Sq, H, _ = q.shape
    lse = lse.view(B, H, Sq) if lse.is_contiguous() else lse.reshape(B, H, Sq)
    return res[0].transpose(1, 2), lse.float()
