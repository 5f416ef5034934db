"""Shared by the Qwen-Image model tests (and run inside the tests.mp_pool workers): tiny
QwenImageTransformer2DModels, their inputs, and the cases the SP forward is checked on."""
import math

import torch

from .wan_cases import TOL, context, rel_error  # noqa: F401 - re-exported for the Qwen tests

# (config name, image grids (f, h, w) of one sample, batch, text tokens, text mask, variant).
# S = sum of f*h*w over the grids; "edit" concatenates a reference image's tokens after the target's.
CASES = [
    ("tiny-qwen", [(1, 5, 7)], 2, 7, "none", "plain"),                  # S = 35: uneven on 2 and 3 ranks
    ("tiny-qwen", [(1, 3, 5)], 1, 10, "prefix", "plain"),               # S = 15, 7 of 10 text tokens valid
    ("tiny-qwen", [(1, 1, 1)], 1, 5, "prefix", "plain"),                # S = 1: fewer tokens than ranks
    ("tiny-qwen", [(1, 4, 5)], 3, 7, "ragged", "plain"),                # rows with 7, 4 and 0 valid tokens
    ("tiny-qwen", [(1, 3, 4)], 2, 9, "holes", "plain"),                 # masks that are not a prefix
    ("tiny-qwen", [(1, 4, 6), (1, 3, 5)], 2, 7, "mixed", "edit"),       # S = 24 + 15: target + reference
    ("tiny-qwen-edit-2511", [(1, 4, 6), (1, 3, 5)], 2, 7, "prefix", "edit"),  # zero_cond_t: modulate_index
    ("tiny-qwen-layered", [(1, 3, 4), (1, 3, 4), (1, 3, 4)], 1, 5, "none", "layered"),  # layer rotary axis
    ("tiny-qwen", [(1, 3, 5)], 2, 6, "none", "controlnet"),             # ControlNet residuals per block
]


def token_count(grids):
    return sum(math.prod(g) for g in grids)


def tiny_model(name, seed=0):
    """A tiny QwenImageTransformer2DModel with random weights (equal on every rank for one seed)."""
    from diffusers import QwenImageTransformer2DModel

    from ringsp.models import configs

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel.from_config(configs.transformer_config(name)).eval()


def text_mask(kind, batch, text_len):
    """A 0/1 long mask [B, T] (what the pipelines pass), or None."""
    if kind == "none":
        return None
    mask = torch.ones(batch, text_len, dtype=torch.long)
    if kind == "prefix":
        mask[:, text_len - 3:] = 0
    elif kind == "ragged":
        for row, valid in enumerate((text_len, text_len - 3, 0)[:batch]):
            mask[row, valid:] = 0
    elif kind == "holes":  # the same count per row, in different places
        mask[0, [1, 4]] = 0
        mask[1, [0, text_len - 2]] = 0
    elif kind == "mixed":  # holes in one row, a shorter prefix in the other
        mask[0, [2, 3]] = 0
        mask[1, 3:] = 0
    else:
        raise ValueError(kind)
    return mask


def tiny_inputs(model, grids, batch, text_len, mask_kind, variant, seed=1):
    """Forward kwargs: packed latents [B, S, C], text [B, T, D], mask, timestep in (0, 1),
    img_shapes; Layered's additional_t_cond; ControlNet residuals."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    seq_len = token_count(grids)
    kwargs = {
        "hidden_states": torch.randn(batch, seq_len, cfg.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(batch, text_len, cfg.joint_attention_dim, generator=g),
        "encoder_hidden_states_mask": text_mask(mask_kind, batch, text_len),
        "timestep": torch.rand(batch, generator=g),
        "img_shapes": [list(grids)] * batch,
        "return_dict": False,
    }
    if variant == "layered":
        kwargs["additional_t_cond"] = torch.arange(batch) % 2
    if variant == "controlnet":
        inner = cfg.num_attention_heads * cfg.attention_head_dim
        kwargs["controlnet_block_samples"] = [torch.randn(batch, seq_len, inner, generator=g) * 0.1 for _ in range(2)]
    return kwargs


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def forward_with_text(model, kwargs):
    """(output [B, S, C_out], the text stream leaving the last block [B, T, D])."""
    seen = []
    spy = model.transformer_blocks[-1].register_forward_hook(lambda m, a, out: seen.append(out[0]))
    try:
        with torch.no_grad():
            out = model(**kwargs)[0]
    finally:
        spy.remove()
    return out, seen[-1]
