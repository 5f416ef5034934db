"""Parallel VAE decoding: the latent is split along height across the ranks of a group; every
spatial convolution exchanges halo rows with its neighbours (ringsp.vae.halo) and the
mid-block attention runs across the shards. See docs/vae.md."""
from .decode import DEFAULT_MIN_PARALLEL_PIXELS, parallel_vae_decode

__all__ = ["parallel_vae_decode", "DEFAULT_MIN_PARALLEL_PIXELS"]
