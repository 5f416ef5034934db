"""Shared by the model tests (and run inside the tests.mp_pool workers): tiny Wan models,
their inputs, and the cases the SP forward is checked on."""
import math

import torch

TOL = 1e-4  # max abs error relative to the output's max abs value (fp32)

# (config name, latent F/H/W, batch, variant); S = F * H/2 * W/2.
CASES = [
    ("tiny-t2v", (5, 10, 14), 2, "plain"),       # S = 175: uneven on 2 and 3 ranks
    ("tiny-t2v", (1, 2, 2), 1, "plain"),         # S = 1: fewer tokens than ranks
    ("tiny-t2v", (3, 6, 10), 1, "fused"),        # S = 45, fused qkv projections
    ("tiny-i2v", (2, 6, 6), 1, "i2v"),           # S = 18, 512 text + 5 image tokens
    ("tiny-ti2v", (5, 10, 14), 2, "per_token"),  # S = 175, a timestep per token
]

def context(u, r, cfg=1):
    """One ParallelContext per config per worker (the parallel tests' cache, shared)."""
    from tests.parallel.helpers import context as cached_context

    return cached_context(u, r, cfg)


def tiny_model(name, variant="plain", seed=0):
    """A tiny WanTransformer3DModel with random weights (equal on every rank for one seed)."""
    from diffusers import WanTransformer3DModel

    from ringsp.models import configs

    torch.manual_seed(seed)
    model = WanTransformer3DModel.from_config(configs.transformer_config(name)).eval()
    if variant == "fused":
        for block in model.blocks:
            block.attn1.fuse_projections()
    return model


def token_count(model, latent):
    return math.prod(n // p for n, p in zip(latent, model.config.patch_size))


def tiny_inputs(model, latent, batch, variant, seed=1):
    """Forward kwargs: random latents, text (512 tokens for I2V, whose processor assumes it),
    image tokens for I2V, a per-token timestep for `per_token`."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, cfg.in_channels, *latent, generator=g)
    text = torch.randn(batch, 512 if variant == "i2v" else 7, cfg.text_dim, generator=g)
    kwargs = {"hidden_states": latents, "encoder_hidden_states": text, "return_dict": False}
    if variant == "i2v":
        kwargs["encoder_hidden_states_image"] = torch.randn(batch, 5, cfg.image_dim, generator=g)
    shape = (batch, token_count(model, latent)) if variant == "per_token" else (batch,)
    kwargs["timestep"] = torch.rand(*shape, generator=g) * 1000
    return kwargs


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def forward(model, kwargs):
    with torch.no_grad():
        return model(**kwargs)[0]


def rel_error(out, ref):
    return float((out - ref).abs().max() / ref.abs().max())
