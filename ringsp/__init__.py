"""ringsp: sequence-parallel attention, models and VAE decoding for diffusion transformers.

Layers (imports point down only): ringsp_kernels (ops) <- ringsp.parallel <- ringsp.models,
ringsp.vae, ringsp.cli. Public names are re-exported here.
"""
__version__ = "0.1.0"
