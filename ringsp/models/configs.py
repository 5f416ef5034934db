"""Published configs of the Wan transformers and VAEs, as plain dicts, plus tiny test configs.

The published dicts are the `config.json` files of the Wan-AI `*-Diffusers` repositories
(keys diffusers' constructors accept; bookkeeping keys such as `_class_name` dropped), so a
model built from one with random weights has the real shapes and the real speed:

    from diffusers import WanTransformer3DModel
    model = WanTransformer3DModel.from_config(transformer_config("wan2.1-t2v-1.3b"))

`MODELS` says, per model name, which transformer(s) and VAE a pipeline holds and the
pipeline flags that change how the transformer is called (Wan2.2 A14B's second expert and
its switch-over ratio; TI2V-5B's per-token timesteps).
"""
import copy

_WAN_COMMON = {
    "patch_size": [1, 2, 2],
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-06,
    "rope_max_seq_len": 1024,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "pos_embed_seq_len": None,
}


def _wan(**overrides):
    return {**_WAN_COMMON, **overrides}


TRANSFORMERS = {
    "wan2.1-t2v-1.3b": _wan(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16, out_channels=16),
    "wan2.1-t2v-14b": _wan(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16),
    # I2V 14B: the image latents and mask are concatenated on channels (36 = 16 + 16 + 4) and
    # CLIP image tokens reach cross-attention through added K/V projections.
    "wan2.1-i2v-14b": _wan(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16,
                           image_dim=1280, added_kv_proj_dim=5120),
    # Wan2.2 A14B: two experts (high noise: `transformer`, low noise: `transformer_2`), same shape.
    "wan2.2-t2v-a14b": _wan(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16, out_channels=16),
    "wan2.2-i2v-a14b": _wan(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16),
    "wan2.2-ti2v-5b": _wan(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48),
}

_WAN21_LATENTS_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]
_WAN21_LATENTS_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]
_WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
_WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]

VAES = {
    # The Wan2.1 VAE (also used by Wan2.2 A14B): 8x spatial, 4x temporal, 16 latent channels.
    "wan2.1": {
        "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
        "temperal_downsample": [False, True, True], "dropout": 0.0,
        "latents_mean": _WAN21_LATENTS_MEAN, "latents_std": _WAN21_LATENTS_STD,
    },
    # The Wan2.2 VAE (TI2V-5B): pixels patchified 2x2 (12 channels), 16x spatial, 48 latent channels.
    # Its config.json also carries `clip_output: false`, which diffusers' constructor does not take.
    "wan2.2": {
        "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
        "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0,
        "in_channels": 12, "out_channels": 12, "patch_size": 2, "is_residual": True,
        "scale_factor_spatial": 16, "scale_factor_temporal": 4,
        "latents_mean": _WAN22_LATENTS_MEAN, "latents_std": _WAN22_LATENTS_STD,
    },
}

# Per model: transformer config names (transformer, transformer_2), VAE, pipeline flags.
MODELS = {
    "wan2.1-t2v-1.3b": {"transformers": ["wan2.1-t2v-1.3b"], "vae": "wan2.1", "boundary_ratio": None,
                        "expand_timesteps": False},
    "wan2.1-t2v-14b": {"transformers": ["wan2.1-t2v-14b"], "vae": "wan2.1", "boundary_ratio": None,
                       "expand_timesteps": False},
    "wan2.1-i2v-14b": {"transformers": ["wan2.1-i2v-14b"], "vae": "wan2.1", "boundary_ratio": None,
                       "expand_timesteps": False},
    "wan2.2-t2v-a14b": {"transformers": ["wan2.2-t2v-a14b", "wan2.2-t2v-a14b"], "vae": "wan2.1",
                        "boundary_ratio": 0.875, "expand_timesteps": False},
    "wan2.2-i2v-a14b": {"transformers": ["wan2.2-i2v-a14b", "wan2.2-i2v-a14b"], "vae": "wan2.1",
                        "boundary_ratio": 0.9, "expand_timesteps": False},
    "wan2.2-ti2v-5b": {"transformers": ["wan2.2-ti2v-5b"], "vae": "wan2.2", "boundary_ratio": None,
                       "expand_timesteps": True},
}

# Tiny configs for tests: a few layers, a few heads (3 heads: not divisible by 2, so Ulysses
# must pad heads), small widths. The head dim must be >= 6 for Wan's 3-axis rotary split.
TINY_TRANSFORMERS = {
    "tiny-t2v": _wan(num_attention_heads=3, attention_head_dim=16, ffn_dim=64, num_layers=2,
                     in_channels=4, out_channels=4, text_dim=24, freq_dim=16, rope_max_seq_len=64),
    "tiny-i2v": _wan(num_attention_heads=3, attention_head_dim=16, ffn_dim=64, num_layers=2,
                     in_channels=8, out_channels=4, text_dim=24, freq_dim=16, rope_max_seq_len=64,
                     image_dim=20, added_kv_proj_dim=48),
    "tiny-ti2v": _wan(num_attention_heads=3, attention_head_dim=16, ffn_dim=64, num_layers=2,
                      in_channels=6, out_channels=6, text_dim=24, freq_dim=16, rope_max_seq_len=64),
}


def transformer_config(name):
    """A fresh copy of the named transformer config (published or tiny)."""
    table = {**TRANSFORMERS, **TINY_TRANSFORMERS, **QWEN_TRANSFORMERS, **TINY_QWEN_TRANSFORMERS,
             **FLUX_TRANSFORMERS, **LTX_TRANSFORMERS}
    if name not in table:
        raise ValueError(f"unknown transformer config name {name!r}; known: {sorted(table)}")
    return copy.deepcopy(table[name])


def vae_config(name):
    """A fresh copy of the named VAE config."""
    table = {**VAES, **QWEN_VAES, **FLUX_VAES, **LTX_VAES}
    if name not in table:
        raise ValueError(f"unknown VAE config name {name!r}; known: {sorted(table)}")
    return copy.deepcopy(table[name])


def model_spec(name):
    """A fresh copy of MODELS[name]: transformer config names, VAE name and pipeline flags."""
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
    return copy.deepcopy(MODELS[name])


# ------------------------------------------------------------------------------ Qwen-Image
# Kept apart from the Wan tables above (whose consumers build Wan models from every entry);
# transformer_config / vae_config find these names too.
#
# `transformer/config.json` of the Qwen/Qwen-Image* repositories (its `pooled_projection_dim`,
# which diffusers' constructor does not take, dropped). Qwen-Image, Qwen-Image-2512,
# Qwen-Image-Edit and Qwen-Image-Edit-2509 share one config (20.4B parameters); Edit-2511 adds
# `zero_cond_t` (reference-image tokens modulated with t = 0); Layered adds a layer rotary axis
# and an extra timestep condition.
_QWEN_COMMON = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False,
    "axes_dims_rope": [16, 56, 56],
}


def _qwen(**overrides):
    return {**_QWEN_COMMON, **overrides}


QWEN_TRANSFORMERS = {
    "qwen-image": _qwen(),
    "qwen-image-edit-2511": _qwen(zero_cond_t=True),
    "qwen-image-layered": _qwen(use_additional_t_cond=True, use_layer3d_rope=True),
}

# `vae/config.json` of Qwen/Qwen-Image (AutoencoderKLQwenImage; equal to diffusers' defaults).
QWEN_VAES = {
    "qwen-image": {
        "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
        "temperal_downsample": [False, True, True], "dropout": 0.0,
        "latents_mean": list(_WAN21_LATENTS_MEAN), "latents_std": list(_WAN21_LATENTS_STD),
    },
}

# Per Qwen model: transformer config name, VAE name, and whether reference-image tokens are
# concatenated to the image stream (the Edit pipelines).
QWEN_MODELS = {
    "qwen-image": {"transformer": "qwen-image", "vae": "qwen-image", "edit": False},
    "qwen-image-2512": {"transformer": "qwen-image", "vae": "qwen-image", "edit": False},
    "qwen-image-edit": {"transformer": "qwen-image", "vae": "qwen-image", "edit": True},
    "qwen-image-edit-2509": {"transformer": "qwen-image", "vae": "qwen-image", "edit": True},
    "qwen-image-edit-2511": {"transformer": "qwen-image-edit-2511", "vae": "qwen-image", "edit": True},
}

# Tiny Qwen configs for tests: 3 heads (Ulysses 2 must pad heads), head dim 16 split 4 + 6 + 6
# over the rotary axes (frame, height, width); 16 packed input channels = 4 latent x 2 x 2.
_TINY_QWEN = _qwen(num_layers=2, attention_head_dim=16, num_attention_heads=3, joint_attention_dim=24,
                   in_channels=16, out_channels=4, axes_dims_rope=[4, 6, 6])
TINY_QWEN_TRANSFORMERS = {
    "tiny-qwen": _TINY_QWEN,
    "tiny-qwen-edit-2511": {**_TINY_QWEN, "zero_cond_t": True},
    "tiny-qwen-layered": {**_TINY_QWEN, "use_additional_t_cond": True, "use_layer3d_rope": True},
}


def qwen_model_spec(name):
    """A fresh copy of QWEN_MODELS[name]: transformer config name, VAE name, edit flag."""
    if name not in QWEN_MODELS:
        raise ValueError(f"unknown Qwen model name {name!r}; known: {sorted(QWEN_MODELS)}")
    return copy.deepcopy(QWEN_MODELS[name])


# ------------------------------------------------------------------------------ Flux.1, LTX-Video
# `transformer/config.json` and `vae/config.json` of black-forest-labs/FLUX.1-dev (11.9B; the
# published single-file config of the same model agrees: 19 + 38 blocks, 24 heads of 128).
FLUX_TRANSFORMERS = {
    "flux.1-dev": {"patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
                   "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
                   "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56]},
    # 3 heads (Ulysses 2 pads heads), head dim 16 = 4 + 6 + 6 over the rotary axes (index, height,
    # width); 16 packed input channels = 4 latent x 2 x 2.
    "tiny-flux": {"patch_size": 1, "in_channels": 16, "out_channels": None, "num_layers": 2, "num_single_layers": 2,
                  "attention_head_dim": 16, "num_attention_heads": 3, "joint_attention_dim": 24,
                  "pooled_projection_dim": 20, "guidance_embeds": True, "axes_dims_rope": [4, 6, 6]},
}
FLUX_VAES = {
    "flux.1": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
               "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
               "layers_per_block": 2, "act_fn": "silu", "latent_channels": 16, "norm_num_groups": 32,
               "sample_size": 1024,
               "scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True, "use_quant_conv": False,
               "use_post_quant_conv": False, "mid_block_add_attention": True},
    # 8x spatial as the real one, toy widths
    "tiny-flux": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                  "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
                  "latent_channels": 4, "norm_num_groups": 4, "scaling_factor": 0.3611, "shift_factor": 0.1159,
                  "use_quant_conv": False, "use_post_quant_conv": False},
}
# Lightricks/LTX-Video (2B, 0.9.0): its transformer and VAE configs are diffusers' defaults of
# LTXVideoTransformer3DModel and AutoencoderKLLTXVideo (32x spatial, 8x temporal, 128 latent channels).
LTX_TRANSFORMERS = {
    "ltx-video": {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
                  "num_attention_heads": 32, "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 28,
                  "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads",
                  "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 4096, "attention_bias": True,
                  "attention_out_bias": True},
    # 3 heads of 12 (the rotary splits the inner dim 36 over 3 axes in pairs: 36 % 6 == 0)
    "tiny-ltx-video": {"in_channels": 8, "out_channels": 8, "patch_size": 1, "patch_size_t": 1,
                       "num_attention_heads": 3, "attention_head_dim": 12, "cross_attention_dim": 36, "num_layers": 2,
                       "caption_channels": 24},
}
LTX_VAES = {
    "ltx-video": {},  # diffusers' defaults
    # the real 32x spatial / 8x temporal structure at toy widths
    "tiny-ltx-video": {"latent_channels": 8, "block_out_channels": [8, 8, 8, 8],
                       "decoder_block_out_channels": [8, 8, 8, 8], "layers_per_block": [1, 1, 1, 1, 1],
                       "decoder_layers_per_block": [1, 1, 1, 1, 1]},
}
