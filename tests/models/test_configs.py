"""The published configs build models of the published sizes; the tiny ones build and run."""
import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ringsp.models import configs  # noqa: E402

# Parameter counts of the published checkpoints (the "1.3B", "14B", "5B" of the names).
PUBLISHED_PARAMS = {
    "wan2.1-t2v-1.3b": (1.40e9, 1.44e9),
    "wan2.1-t2v-14b": (14.2e9, 14.4e9),
    "wan2.1-i2v-14b": (16.3e9, 16.5e9),
    "wan2.2-t2v-a14b": (14.2e9, 14.4e9),
    "wan2.2-i2v-a14b": (14.2e9, 14.4e9),
    "wan2.2-ti2v-5b": (4.95e9, 5.05e9),
}


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(configs.TRANSFORMERS))
def test_published_transformer_has_published_size(name):
    with torch.device("meta"):
        model = diffusers.WanTransformer3DModel.from_config(configs.transformer_config(name))
    low, high = PUBLISHED_PARAMS[name]
    assert low <= _count(model) <= high


def test_every_model_names_known_configs():
    assert set(configs.MODELS) == set(PUBLISHED_PARAMS)
    for name, spec in configs.MODELS.items():
        assert spec["vae"] in configs.VAES
        assert all(t in configs.TRANSFORMERS for t in spec["transformers"])
        assert (len(spec["transformers"]) == 2) == (spec["boundary_ratio"] is not None), name
    assert configs.model_spec("wan2.2-ti2v-5b")["expand_timesteps"]


def test_wan21_vae_is_diffusers_default():
    defaults = {k: p.default for k, p in inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters.items()}
    for key, value in configs.vae_config("wan2.1").items():
        assert defaults[key] == value, key


@pytest.mark.parametrize("name,latent_channels,low,high", [("wan2.1", 16, 120e6, 135e6), ("wan2.2", 48, 690e6, 720e6)])
def test_vae_configs_build(name, latent_channels, low, high):
    cfg = configs.vae_config(name)
    assert len(cfg["latents_mean"]) == len(cfg["latents_std"]) == latent_channels == cfg["z_dim"]
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLWan.from_config(cfg)
    assert low <= _count(vae) <= high


def test_copies_are_independent():
    cfg = configs.transformer_config("wan2.1-t2v-1.3b")
    cfg["patch_size"][0] = 99
    assert configs.transformer_config("wan2.1-t2v-1.3b")["patch_size"][0] == 1


@pytest.mark.parametrize("fn", [configs.transformer_config, configs.vae_config, configs.model_spec])
def test_unknown_name_is_refused(fn):
    with pytest.raises(ValueError, match="unknown"):
        fn("wan9-nope")


@pytest.mark.parametrize("name", sorted(configs.TINY_TRANSFORMERS))
def test_tiny_configs_run(name):
    cfg = configs.transformer_config(name)
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel.from_config(cfg).eval()
    latents = torch.randn(1, cfg["in_channels"], 2, 4, 4)
    text = torch.randn(1, 512 if cfg["image_dim"] else 7, cfg["text_dim"])
    image = torch.randn(1, 3, cfg["image_dim"]) if cfg["image_dim"] else None
    with torch.no_grad():
        out = model(latents, torch.tensor([500]), text, encoder_hidden_states_image=image, return_dict=False)[0]
    assert out.shape == (1, cfg["out_channels"], 2, 4, 4)
    assert torch.isfinite(out).all()
