"""Supported VAE classes and the output size they decode to."""
import pytest
import torch

from ringsp.vae.families import family_of, output_size
from tests.vae.tiny import KINDS, build_vae, latents, reference_decode


@pytest.mark.parametrize("kind", KINDS)
def test_output_size_matches_decode(kind):
    vae = build_vae(kind)
    z = latents(kind, frames=2, height=3, width=2)
    out = reference_decode(vae, z)
    assert tuple(out.shape[2:]) == output_size(vae, z.shape)


def test_other_models_are_refused():
    with pytest.raises(TypeError, match="AutoencoderKLWan or AutoencoderKLQwenImage"):
        family_of(torch.nn.Conv2d(1, 1, 1))
