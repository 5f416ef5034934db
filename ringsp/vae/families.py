"""The diffusers VAEs that parallel decoding supports, and the layer types of their decoders.

diffusers is imported lazily, so `import ringsp` stays cheap.
"""
from dataclasses import dataclass

__all__ = ["VaeFamily", "family_of", "output_size"]


@dataclass(frozen=True)
class VaeFamily:
    name: str
    causal_conv: type  # the 3-D causal conv (time cache handled by its caller)
    attention: type  # per-frame spatial self-attention over the whole H x W
    row_local: tuple  # leaf layer types that never mix rows (per-pixel or row-preserving)


def family_of(vae):
    """The family of a diffusers VAE instance; TypeError for anything unsupported."""
    from diffusers.models.autoencoders import autoencoder_kl_qwenimage as qwen
    from diffusers.models.autoencoders import autoencoder_kl_wan as wan

    if isinstance(vae, wan.AutoencoderKLWan):
        return VaeFamily(
            "wan", wan.WanCausalConv3d, wan.WanAttentionBlock, (wan.WanRMS_norm, wan.WanUpsample, wan.DupUp3D)
        )
    if isinstance(vae, qwen.AutoencoderKLQwenImage):
        return VaeFamily(
            "qwenimage",
            qwen.QwenImageCausalConv3d,
            qwen.QwenImageAttentionBlock,
            (qwen.QwenImageRMS_norm, qwen.QwenImageUpsample),
        )
    raise TypeError(
        f"vae must be a diffusers AutoencoderKLWan or AutoencoderKLQwenImage, got {type(vae).__name__}"
    )


def output_size(vae, latent_shape):
    """(frames, height, width) that vae.decode produces for latents of latent_shape."""
    _, _, frames, height, width = latent_shape
    temporal = 2 ** sum(bool(t) for t in vae.config.temperal_downsample)
    spatial = int(vae.spatial_compression_ratio)
    return 1 + (frames - 1) * temporal, height * spatial, width * spatial
