"""Float64 reference attention, for tests and for users' own property tests."""
import torch


def reference_attention(q, k, v, scale=None, kv_len=None):
    """Non-causal attention in float64 on the CPU; returns (out float64 [B, Sq, H, D],
    lse float64 [B, H, Sq]). Keys past kv_len are ignored; rows with no keys get out 0,
    lse -inf."""
    q, k, v = (t.detach().to("cpu", torch.float64) for t in (q, k, v))
    if kv_len is not None:
        k, v = k[:, :kv_len], v[:, :kv_len]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, Sq, H, D = q.shape
    if k.shape[1] == 0:
        return torch.zeros_like(q), torch.full((B, H, Sq), float("-inf"), dtype=torch.float64)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    return torch.einsum("bhqk,bkhd->bqhd", p, v), lse
