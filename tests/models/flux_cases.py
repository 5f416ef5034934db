"""Shared by the Flux model tests (and run inside the tests.mp_pool workers): tiny
FluxTransformer2DModels, their inputs, and the cases the SP forward is checked on."""
import torch

from .wan_cases import TOL, context, rel_error  # noqa: F401 - re-exported for the Flux tests

# (packed image grid h x w, batch, text tokens, variant); S = h * w.
CASES = [
    ((3, 5), 2, 7, "plain"),       # S = 15: uneven on 2, 3 and 4 ranks
    ((1, 1), 1, 5, "plain"),       # S = 1: fewer image tokens than ranks
    ((4, 5), 1, 9, "fused"),       # S = 20, fused qkv projections
    ((3, 4), 2, 6, "controlnet"),  # ControlNet residuals for both block kinds
]


def tiny_model(variant="plain", seed=0):
    """The tiny-flux transformer with random weights (equal on every rank for one seed)."""
    from diffusers import FluxTransformer2DModel

    from ringsp.models import configs

    torch.manual_seed(seed)
    model = FluxTransformer2DModel.from_config(configs.transformer_config("tiny-flux")).eval()
    if variant == "fused":
        model.fuse_qkv_projections()
    return model


def tiny_inputs(model, grid, batch, text_len, variant, seed=1):
    """Forward kwargs as FluxPipeline makes them: packed latents, T5 and pooled CLIP embeddings,
    a timestep in (0, 1), position ids of the grid (text ids all zero), the distilled guidance."""
    from diffusers import FluxPipeline

    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    seq_len = grid[0] * grid[1]
    kwargs = {
        "hidden_states": torch.randn(batch, seq_len, cfg.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(batch, text_len, cfg.joint_attention_dim, generator=g),
        "pooled_projections": torch.randn(batch, cfg.pooled_projection_dim, generator=g),
        "timestep": torch.rand(batch, generator=g),
        "img_ids": FluxPipeline._prepare_latent_image_ids(batch, *grid, "cpu", torch.float32),
        "txt_ids": torch.zeros(text_len, 3),
        "guidance": torch.full((batch,), 3.5),
        "return_dict": False,
    }
    if variant == "controlnet":
        inner = cfg.num_attention_heads * cfg.attention_head_dim
        for name in ("controlnet_block_samples", "controlnet_single_block_samples"):
            kwargs[name] = [torch.randn(batch, seq_len, inner, generator=g) * 0.1]
    return kwargs


def forward_with_text(model, kwargs):
    """(output [B, S, C_out], the text stream leaving the last dual-stream block and the last
    single-stream block)."""
    seen = []
    spies = [blocks[-1].register_forward_hook(lambda m, a, out: seen.append(out[0]))
             for blocks in (model.transformer_blocks, model.single_transformer_blocks)]
    try:
        with torch.no_grad():
            out = model(**kwargs)[0]
    finally:
        for spy in spies:
            spy.remove()
    return out, seen[-2], seen[-1]
