"""Sequence parallelism for diffusers' FluxTransformer2DModel (FLUX.1-dev, -schnell): its plan.

From diffusers' `_cp_plan`: the packed image tokens [B, S, C] and their position ids [S, 3]
are split where the forward receives them, so the rotary table is computed for
[text; this rank's image shard] only, and proj_out's output is gathered. The text stream and
its ids stay whole on every rank. ControlNet residuals (both block kinds) are split too.
`transformer_blocks.*.attn` (dual-stream) is joint attention; `single_transformer_blocks.*.attn`
runs over [text; image shard] concatenated, the text first: "prefix" attention, whose text
part every rank computes alike, so the text stays identical on every rank.
"""
import functools

import torch

from ringsp.parallel.agreement import describe

from .adapter import SPAdapter
from .plan import Attention, Call, SPPlan, Split, check_residuals, image_side, packed_latents


def _check(adapter, args):
    cfg = adapter.transformer.config
    latents, text = args.get("hidden_states"), args.get("encoder_hidden_states")
    img_ids, txt_ids = args.get("img_ids"), args.get("txt_ids")
    batch, seq_len = packed_latents(latents, cfg.in_channels)
    if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[0] != batch or text.shape[1] == 0 \
            or text.shape[2] != cfg.joint_attention_dim:
        raise ValueError(f"encoder_hidden_states must be [{batch}, T >= 1, {cfg.joint_attention_dim}], "
                         f"got {describe(text)}")
    if not isinstance(img_ids, torch.Tensor) or tuple(img_ids.shape) != (seq_len, 3):
        raise ValueError(f"img_ids must be [{seq_len}, 3] (one position per image token; the batched form that "
                         f"diffusers deprecated is not split), got {describe(img_ids)}")
    if not isinstance(txt_ids, torch.Tensor) or txt_ids.dim() not in (2, 3) or txt_ids.shape[-2:] != (text.shape[1], 3):
        raise ValueError(f"txt_ids must be [{text.shape[1]}, 3], got {describe(txt_ids)}")
    if not isinstance(args.get("timestep"), torch.Tensor):
        raise ValueError(f"timestep must be a tensor, got {describe(args.get('timestep'))}")
    for name in ("controlnet_block_samples", "controlnet_single_block_samples"):
        check_residuals(name, args.get(name), batch, seq_len)
    if "ip_adapter_image_embeds" in (args.get("joint_attention_kwargs") or {}):
        raise ValueError("IP-Adapter image embeddings are not supported under sequence parallelism")
    return Call(seq_len, text_len=text.shape[1])


def _heads(attn, x):
    return x.unflatten(-1, (-1, attn.head_dim))


def _rotate(qkv, table):
    from diffusers.models.embeddings import apply_rotary_emb

    q, k, v = qkv
    return apply_rotary_emb(q, table, sequence_dim=1), apply_rotary_emb(k, table, sequence_dim=1), v


def _joint_qkv(attn, image_states, text_states, rotary):
    from diffusers.models.transformers.transformer_flux import _get_qkv_projections

    q, k, v, text_q, text_k, text_v = _get_qkv_projections(attn, image_states, text_states)
    image = attn.norm_q(_heads(attn, q)), attn.norm_k(_heads(attn, k)), _heads(attn, v)
    text = attn.norm_added_q(_heads(attn, text_q)), attn.norm_added_k(_heads(attn, text_k)), _heads(attn, text_v)
    if rotary is None:
        return image, text
    n = text_states.shape[1]  # the table covers [text; image shard], as diffusers concatenates them
    return _rotate(image, tuple(t[n:] for t in rotary)), _rotate(text, tuple(t[:n] for t in rotary))


def _prefix_qkv(attn, states, rotary):
    from diffusers.models.transformers.transformer_flux import _get_qkv_projections

    q, k, v = _get_qkv_projections(attn, states)[:3]
    qkv = attn.norm_q(_heads(attn, q)), attn.norm_k(_heads(attn, k)), _heads(attn, v)
    return qkv if rotary is None else _rotate(qkv, rotary)


@functools.cache
def _plan():
    from diffusers import FluxTransformer2DModel

    shards = image_side(FluxTransformer2DModel._cp_plan)
    shards[""] |= {"controlnet_block_samples": Split(1), "controlnet_single_block_samples": Split(1)}
    return SPPlan(
        name="Flux", check=_check, shards=shards,
        agreed=("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids",
                "guidance", "controlnet_block_samples", "controlnet_single_block_samples"),
        attention={"transformer_blocks.*.attn": Attention("joint", _joint_qkv),
                   "single_transformer_blocks.*.attn": Attention("prefix", _prefix_qkv)},
    )


class FluxSPAdapter(SPAdapter):
    make_plan = staticmethod(_plan)
