"""Sequence parallelism for diffusers' WanTransformer3DModel (Wan2.1, Wan2.2 A14B / TI2V-5B): its
plan. From `_cp_plan`: the rotary tables, a per-token timestep (TI2V: its modulation is then
computed sharded) and proj_out; the patch tokens are split where `patch_embedding` makes them
(diffusers: at blocks.0's input, the same tensor). attn1 is self-attention over the whole
sequence; attn2 (text and I2V image tokens: replicated keys, local queries) is left alone.
"""
import functools
import math

import torch

from ringsp.parallel import shard_sequence
from ringsp.parallel.agreement import describe

from .adapter import SPAdapter
from .plan import OUTPUT, Attention, Call, SPPlan, image_side


def _shard_patches(patches, ctx):
    # [B, C, f, h, w] -> [B, C, S_local]: the model's flatten(2).transpose(1, 2) follows.
    return shard_sequence(patches.flatten(2).transpose(1, 2), ctx, dim=1).transpose(1, 2)


def _check(adapter, args):
    latents, timestep = args.get("hidden_states"), args.get("timestep")
    if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
        raise ValueError(f"hidden_states must be a [B, C, F, H, W] latent tensor, got {describe(latents)}")
    if not isinstance(timestep, torch.Tensor) or timestep.dim() not in (1, 2):
        raise ValueError(f"timestep must be a [B] or per-token [B, S] tensor, got {describe(timestep)}")
    patch = tuple(adapter.transformer.config.patch_size)
    seq_len = wan_token_count(latents.shape, patch)
    if seq_len == 0:
        raise ValueError(f"hidden_states {tuple(latents.shape)} holds no whole patch of size {patch}")
    if timestep.dim() == 2 and timestep.shape[1] != seq_len:
        raise ValueError(f"timestep has {timestep.shape[1]} per-token entries but the latents make {seq_len} tokens")
    return Call(seq_len)


def _apply_rotary(x, cos, sin):
    # Wan's rotary on interleaved pairs (x[2i], x[2i+1]); the tables repeat each frequency twice.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def _qkv(attn, states, rotary):
    if getattr(attn, "fused_projections", False):
        q, k, v = attn.to_qkv(states).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(states), attn.to_k(states), attn.to_v(states)
    q = attn.norm_q(q).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(k).unflatten(2, (attn.heads, -1))
    v = v.unflatten(2, (attn.heads, -1))
    if rotary is not None:
        q, k = _apply_rotary(q, *rotary), _apply_rotary(k, *rotary)
    return q, k, v


@functools.cache
def _plan():
    from diffusers import WanTransformer3DModel

    return SPPlan(
        name="Wan", check=_check, agreed=("hidden_states", "timestep"),
        shards=image_side(WanTransformer3DModel._cp_plan,
                          replace={"blocks.0": {"patch_embedding": {OUTPUT: _shard_patches}}}),
        attention={"blocks.*.attn1": Attention("self", _qkv), "blocks.*.attn2": Attention("cross")},
    )


class WanSPAdapter(SPAdapter):
    make_plan = staticmethod(_plan)


def wan_token_count(latent_shape, patch_size=(1, 2, 2)):
    """Tokens a Wan transformer makes of latents [B, C, F, H, W] (or [F, H, W])."""
    frames, height, width = latent_shape[-3:]
    return math.prod(n // p for n, p in zip((frames, height, width), patch_size))
