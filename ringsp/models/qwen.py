"""Sequence parallelism for diffusers' QwenImageTransformer2DModel (Qwen-Image, -Edit, -Edit-2511,
-Layered): its plan, and Qwen's text plan. From `_cp_plan`: the image rotary table (not the
text's), Edit-2511's per-token `modulate_index` and proj_out; the packed image tokens (with
Edit's reference images) are split before `img_in`, not at the first block, and ControlNet
residuals too. The blocks' attention is joint: the text stream stays identical on every rank.
"""
import functools
import hashlib
import math

import torch

from ringsp.parallel.agreement import describe

from .adapter import SPAdapter
from .plan import (
    Attention, Call, SPPlan, Split, check_residuals, image_side, packed_latents, text_plan,
)

_MASK_CACHE_SIZE = 4  # cond + uncond masks, with room for a second expert or request


def image_grids(img_shapes):
    """The (frames, height, width) grids whose tokens the image rotary table covers, read from
    `img_shapes` the way diffusers' QwenEmbedRope reads it: a list holds one entry per batch
    sample and only the first is used; an entry is one grid or a list of grids (Edit: target,
    then reference images; Layered: the layers, then the condition image)."""
    shapes = img_shapes[0] if isinstance(img_shapes, list) and img_shapes else img_shapes
    grids = shapes if isinstance(shapes, list) else [shapes]
    if not grids:
        raise ValueError(f"img_shapes holds no image grid: {img_shapes!r}")
    return [_grid(g) for g in grids]


def _grid(grid):
    try:
        values = tuple(int(n) for n in grid) if isinstance(grid, (tuple, list)) else ()
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"img_shapes entries must be (frames, height, width) of positive ints, got {grid!r}")
    return values


def qwen_token_count(img_shapes):
    """Image tokens a Qwen-Image transformer makes of `img_shapes` (target plus reference images)."""
    return sum(math.prod(g) for g in image_grids(img_shapes))


def _check(adapter, args):
    cfg = adapter.transformer.config
    latents, text, mask = args.get("hidden_states"), args.get("encoder_hidden_states"), \
        args.get("encoder_hidden_states_mask")
    batch, seq_len = packed_latents(latents, cfg.in_channels)
    if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[0] != batch \
            or text.shape[2] != cfg.joint_attention_dim or text.shape[1] == 0:
        raise ValueError(f"encoder_hidden_states must be [{batch}, T >= 1, {cfg.joint_attention_dim}], "
                         f"got {describe(text)}")
    if not isinstance(args.get("timestep"), torch.Tensor):
        raise ValueError(f"timestep must be a tensor, got {describe(args.get('timestep'))}")
    _check_img_shapes(args.get("img_shapes"), batch, seq_len, cfg.zero_cond_t)
    check_residuals("controlnet_block_samples", args.get("controlnet_block_samples"), batch, seq_len)
    plan, mask_key = _text_plan(adapter.memo, mask, batch, text.shape[1], latents.device)
    return Call(seq_len, text=plan, agreed={"mask": mask_key})


def _text_plan(cache, mask, batch, text_len, device):
    """(TextPlan, what ranks agree on: the valid counts and a digest) of a mask. The pipelines
    pass the same cond and uncond masks at every step: masks seen before and unchanged since
    (same object, same in-place version) come from `cache`, so no step reads one on the host."""
    if mask is None:
        return text_plan(None), None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, text_len):
        raise ValueError(f"encoder_hidden_states_mask must be [{batch}, {text_len}] (batch, text tokens), "
                         f"got {describe(mask)}")
    version = _version(mask)
    cached = cache.get(id(mask))
    if cached is not None and cached[0] is mask and version is not None and cached[1] == version:
        return cached[2]  # no device sync
    flags = mask.detach().to("cpu", torch.bool)
    key = {"valid": flags.sum(dim=1).tolist(),
           "digest": hashlib.blake2b(flags.numpy().tobytes(), digest_size=8).hexdigest()}
    result = (text_plan(flags).to(device), key)
    if version is not None:
        if len(cache) >= _MASK_CACHE_SIZE:  # the oldest goes (dicts keep insertion order)
            cache.pop(next(iter(cache)))
        cache[id(mask)] = (mask, version, result)  # the mask is held: its id stays unique
    return result


def _version(t):
    """t's in-place modification counter, or None where it has none (inference-mode tensors)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _check_img_shapes(img_shapes, batch, seq_len, per_sample):
    """img_shapes must describe exactly the S image tokens (else the rotary table and the tokens
    would be sharded differently). per_sample (zero_cond_t): every sample's grids must, too."""
    if img_shapes is None:
        raise ValueError("img_shapes is required: it gives the image grids of the rotary table")
    tokens = qwen_token_count(img_shapes)
    if tokens != seq_len:
        raise ValueError(f"img_shapes {img_shapes!r} describe {tokens} image tokens but hidden_states has {seq_len}")
    if not per_sample:
        return
    if not isinstance(img_shapes, list) or len(img_shapes) != batch:
        raise ValueError(f"with zero_cond_t, img_shapes must be a list of {batch} per-sample lists of grids, "
                         f"got {img_shapes!r}")
    for sample in img_shapes:
        if not isinstance(sample, (list, tuple)) or qwen_token_count([list(sample)]) != seq_len:
            raise ValueError(f"with zero_cond_t, every sample of img_shapes must describe {seq_len} tokens, "
                             f"got {sample!r}")


def _project(attn, states, to_q, to_k, to_v, norm_q, norm_k):
    """One stream's q, k, v as [B, S, H, D], qk-normed (diffusers' order: project, split heads, norm)."""
    head_dim = attn.inner_dim // attn.heads
    q, k, v = (proj(states).unflatten(-1, (-1, head_dim)) for proj in (to_q, to_k, to_v))
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    return q, k, v


def _qkv(attn, image_states, text_states, rotary):
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    image = _project(attn, image_states, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k)
    text = _project(attn, text_states, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                    attn.norm_added_q, attn.norm_added_k)
    if rotary is not None:
        image_freqs, text_freqs = rotary
        rotate = lambda x, f: apply_rotary_emb_qwen(x, f, use_real=False)  # noqa: E731
        image = (rotate(image[0], image_freqs), rotate(image[1], image_freqs), image[2])
        text = (rotate(text[0], text_freqs), rotate(text[1], text_freqs), text[2])
    return image, text


@functools.cache
def _plan():
    from diffusers import QwenImageTransformer2DModel

    return SPPlan(
        name="Qwen-Image", check=_check,
        agreed=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep", "img_shapes",
                "controlnet_block_samples"),
        shards={**image_side(QwenImageTransformer2DModel._cp_plan, text_outputs={("pos_embed", 1)},
                             replace={"transformer_blocks.0": {"img_in": {"input": Split(1)}}}),
                "": {"controlnet_block_samples": Split(1)}},
        attention={"transformer_blocks.*.attn": Attention("joint", _qkv)},
    )


class QwenSPAdapter(SPAdapter):
    make_plan = staticmethod(_plan)
