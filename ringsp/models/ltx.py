"""Sequence parallelism for diffusers' LTXVideoTransformer3DModel (LTX-Video 0.9.x): its plan.

From diffusers' `_cp_plan`: the video tokens [B, S, C] are split where the forward receives
them, the rotary tables [B, S, D] (computed for the whole latent grid) are split, and
proj_out's output is gathered; the text and its mask stay whole. A per-token timestep
[B, S] (the image-to-video pipelines) is split too, so the per-token modulation is computed
sharded. `transformer_blocks.*.attn1` is self-attention over the video tokens;
`transformer_blocks.*.attn2` is cross-attention to the text (replicated keys, its mask
applied by diffusers, local queries): left alone.
"""
import functools

import torch

from ringsp.parallel.agreement import describe

from .adapter import SPAdapter
from .plan import Attention, Call, SPPlan, Split, image_side, packed_latents


def _check(adapter, args):
    cfg = adapter.transformer.config
    latents, text, mask = args.get("hidden_states"), args.get("encoder_hidden_states"), \
        args.get("encoder_attention_mask")
    timestep, coords = args.get("timestep"), args.get("video_coords")
    batch, seq_len = packed_latents(latents, cfg.in_channels)
    if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[0] != batch:
        raise ValueError(f"encoder_hidden_states must be [{batch}, T, {cfg.caption_channels}], got {describe(text)}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape[0] != batch
                             or mask.shape[-1] != text.shape[1]):
        raise ValueError(f"encoder_attention_mask must be [{batch}, {text.shape[1]}], got {describe(mask)}")
    if not isinstance(timestep, torch.Tensor) or timestep.dim() > 2 \
            or (timestep.dim() == 2 and timestep.shape[1] != seq_len):
        raise ValueError(f"timestep must be [B] or per-token [B, {seq_len}], got {describe(timestep)}")
    if coords is not None:
        if not isinstance(coords, torch.Tensor) or tuple(coords.shape) != (batch, 3, seq_len):
            raise ValueError(f"video_coords must be [{batch}, 3, {seq_len}], got {describe(coords)}")
    else:
        grid = tuple(args.get(name) for name in ("num_frames", "height", "width"))
        if not all(isinstance(n, int) and n > 0 for n in grid) or grid[0] * grid[1] * grid[2] != seq_len:
            raise ValueError(f"num_frames x height x width {grid} must be the latent grid of the {seq_len} tokens "
                             "(the rotary table covers that grid)")
    return Call(seq_len)


def _qkv(attn, states, rotary):
    from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

    # diffusers' order: project, qk-norm across heads, rotary on the flat inner dim, split heads
    q, k, v = attn.norm_q(attn.to_q(states)), attn.norm_k(attn.to_k(states)), attn.to_v(states)
    if rotary is not None:
        q, k = apply_rotary_emb(q, rotary), apply_rotary_emb(k, rotary)
    return tuple(x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))


@functools.cache
def _plan():
    from diffusers import LTXVideoTransformer3DModel

    shards = image_side(LTXVideoTransformer3DModel._cp_plan)
    shards[""] |= {"timestep": Split(1, expected_dims=2)}
    return SPPlan(
        name="LTX-Video", check=_check, shards=shards,
        agreed=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep", "num_frames",
                "height", "width", "rope_interpolation_scale", "video_coords"),
        attention={"transformer_blocks.*.attn1": Attention("self", _qkv),
                   "transformer_blocks.*.attn2": Attention("cross")},
    )


class LTXSPAdapter(SPAdapter):
    make_plan = staticmethod(_plan)
