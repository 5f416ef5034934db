"""Row-sharded replacements for the forward of the decoder layers that reach across rows.

Each function takes the module instance it stands in for plus the RowShard, and keeps the
module's own arithmetic: the same weights, the same zero padding at the global top/bottom
edge, the same causal time padding and cache handling as diffusers' forward.
"""
import torch
import torch.nn.functional as F

from ringsp.parallel.gather import all_gather_cat

from .halo import start_halo_exchange
from .halo_conv import halo_conv

__all__ = ["causal_conv3d_forward", "conv2d_forward", "attention_forward"]


def _exchange(shard, before, after):
    return lambda t: start_halo_exchange(t, -2, before, after, shard.group)


def causal_conv3d_forward(module, shard, x, cache_x=None):
    """diffusers' causal conv (Wan/Qwen-Image): cached frames first, then the row halo.

    The halo is taken from [cache frames | new frames] together, because the kernel reads the
    neighbour's rows of the cached frames too; the cache itself stays per rank."""
    pad_w, _, pad_h, _, pad_t, pad_t_end = module._padding
    if cache_x is not None and pad_t > 0:
        x = torch.cat([cache_x.to(x.device), x], dim=2)
        pad_t -= cache_x.shape[2]
    if pad_t or pad_t_end:
        x = F.pad(x, (0, 0, 0, 0, pad_t, pad_t_end))

    def conv(inp, pad_rows):
        padding = (0, pad_h if pad_rows else 0, pad_w)
        return F.conv3d(inp, module.weight, module.bias, module.stride, padding, module.dilation, module.groups)

    return halo_conv(x, conv, pad_h, pad_h, _exchange(shard, pad_h, pad_h))


def conv2d_forward(module, shard, x):
    """A zero-padded 2-D conv on [N, C, H, W] (the conv after the nearest x2 upsample)."""
    pad_h, pad_w = module.padding

    def conv(inp, pad_rows):
        padding = (pad_h if pad_rows else 0, pad_w)
        return F.conv2d(inp, module.weight, module.bias, module.stride, padding, module.dilation, module.groups)

    return halo_conv(x, conv, pad_h, pad_h, _exchange(shard, pad_h, pad_h))


def attention_forward(module, shard, x):
    """Single-head self-attention over each frame's full H x W (the decoder mid-block).

    Norm and the 1x1 projections are per pixel and run on the local rows; the keys and
    values of all rows are all-gathered, so each rank attends its queries to every pixel."""
    identity = x
    b, c, t, h, w = x.shape
    x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    qkv = module.to_qkv(module.norm(x))
    q, kv = qkv.split([c, 2 * c], dim=1)
    kv = all_gather_cat(kv, shard.group, -2, sizes=shard.rows_at(h))  # [bt, 2c, H, w]
    q = q.reshape(b * t, 1, c, h * w).transpose(-1, -2)
    k, v = kv.reshape(b * t, 1, 2 * c, -1).transpose(-1, -2).chunk(2, dim=-1)
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.squeeze(1).transpose(-1, -2).reshape(b * t, c, h, w)
    out = module.proj(out)
    return out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4) + identity
