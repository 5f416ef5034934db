"""Shared by the LTX-Video model tests (and run inside the tests.mp_pool workers): tiny
LTXVideoTransformer3DModels, their inputs, and the cases the SP forward is checked on."""
import torch

from .wan_cases import TOL, context, rel_error  # noqa: F401 - re-exported for the LTX tests

# (latent grid F x H x W, batch, text tokens, text mask, variant); S = F * H * W (patch 1).
CASES = [
    ((3, 5, 7), 2, 7, "prefix", "plain"),     # S = 105: uneven on 2 and 4 ranks; rows of 7 and 4 valid tokens
    ((1, 1, 1), 1, 5, "none", "plain"),       # S = 1: fewer tokens than ranks
    ((2, 3, 5), 2, 9, "holes", "per_token"),  # S = 30: a timestep per token (image-to-video)
    ((2, 4, 3), 1, 6, "prefix", "coords"),    # S = 24: rotary from video_coords
]
ROPE_INTERPOLATION = (8 / 25, 32, 32)  # LTXPipeline's at 25 fps: (temporal / fps, spatial, spatial)


def tiny_model(seed=0):
    """The tiny-ltx-video transformer with random weights (equal on every rank for one seed)."""
    from diffusers import LTXVideoTransformer3DModel

    from ringsp.models import configs

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel.from_config(configs.transformer_config("tiny-ltx-video")).eval()


def text_mask(kind, batch, text_len):
    if kind == "none":
        return None
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    if kind == "prefix":
        mask[-1, text_len - 3:] = False
    else:  # holes
        mask[0, [1, 4]] = False
        mask[-1, 0] = False
    return mask


def tiny_inputs(model, grid, batch, text_len, mask, variant, seed=1):
    """Forward kwargs as LTXPipeline makes them (timesteps in [0, 1000], the latent grid and its
    rotary interpolation scale); per-token timesteps; video coordinates instead of the grid."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    seq_len = grid[0] * grid[1] * grid[2]
    kwargs = {
        "hidden_states": torch.randn(batch, seq_len, cfg.in_channels, generator=g),
        "encoder_hidden_states": torch.randn(batch, text_len, cfg.caption_channels, generator=g),
        "timestep": torch.rand(batch, generator=g) * 1000,
        "encoder_attention_mask": text_mask(mask, batch, text_len),
        "num_frames": grid[0], "height": grid[1], "width": grid[2],
        "rope_interpolation_scale": ROPE_INTERPOLATION,
        "return_dict": False,
    }
    if variant == "per_token":
        kwargs["timestep"] = torch.rand(batch, seq_len, generator=g) * 1000
    if variant == "coords":
        f, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
        coords = torch.stack([f * 8 + 1, h * 32, w * 32]).flatten(1)  # pixel coordinates of each latent token
        kwargs["video_coords"] = coords[None].expand(batch, -1, -1)
    return kwargs


def forward(model, kwargs):
    with torch.no_grad():
        return (model(**kwargs)[0],)
