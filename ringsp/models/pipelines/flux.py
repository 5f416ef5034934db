"""FLUX.1 text-to-image pipelines (FluxPipeline): the published FLUX.1-dev config with random
weights, the tiny one, and what a local directory holds.

Dummy pipelines get byte-level stand-ins for the CLIP and T5 tokenizers and random CLIP-L /
T5-XXL text encoders (text_stand_ins); `notes` says so. FLUX.1-dev is guidance-distilled:
--guidance-scale is an input of the transformer, not a negative pass.
"""
import torch

from ..configs import transformer_config, vae_config
from .common import (
    Family, ModelDefaults, ModelInfo, building_on, dir_configs, dir_info, keep_fp32,
)
from .text_stand_ins import clip_text_encoder, t5_encoder
from .wan import byte_tokenizer

FLUX_NAMES = ("flux.1-dev", "tiny-flux")
PIPELINE_CLASSES = ("FluxPipeline",)
MAX_TEXT_TOKENS = 512  # FluxPipeline refuses a longer max_sequence_length
CLIP_TOKENS = 77
# diffusers' FluxPipeline defaults: 1024 x 1024, 28 steps, guidance 3.5. Tiny: 3 x 5 packed tokens.
_DEFAULTS = {"flux.1-dev": ModelDefaults(1024, 1024, 1, 28, 3.5, 512),
             "tiny-flux": ModelDefaults(48, 80, 1, 4, 3.5, 32)}
_CONFIGS = {"flux.1-dev": ("flux.1-dev", "flux.1"), "tiny-flux": ("tiny-flux", "tiny-flux")}  # transformer, VAE
# black-forest-labs/FLUX.1-dev's scheduler/scheduler_config.json
_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
              "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def flux_info(name):
    tname, vname = _CONFIGS[name]
    return _info(name, transformer_config(tname), vae_config(vname), _DEFAULTS[name], "dummy")


def inspect_flux_dir(path, index):
    tcfg, vcfg = dir_configs(path, index, ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae",
                                           "scheduler", "transformer"))
    return dir_info(path, _info, tcfg, vcfg, _DEFAULTS["flux.1-dev"])


def _info(name, tcfg, vcfg, defaults, source):
    latent = int(vcfg.get("latent_channels", 16))
    if int(tcfg.get("patch_size", 1)) != 1 or int(tcfg.get("in_channels", 64)) != latent * 4:
        raise ValueError(f"the transformer takes {tcfg.get('in_channels')} channels with patch size "
                         f"{tcfg.get('patch_size')}, not the VAE's {latent} latent channels packed 2 x 2")
    # FluxPipeline: vae_scale_factor = 2 ** (len(block_out_channels) - 1); latents are packed 2 x 2
    spatial = 2 ** (len(vcfg.get("block_out_channels", [0] * 4)) - 1)
    return ModelInfo(name=name, patch_size=(1, 2, 2), vae_scale_spatial=spatial, vae_scale_temporal=1,
                     num_heads=int(tcfg.get("num_attention_heads", 24)), defaults=defaults, source=source,
                     family="flux", guidance="embedded" if tcfg.get("guidance_embeds") else "none",
                     max_text_tokens=MAX_TEXT_TOKENS)


def build_flux_pipeline(name, *, dtype, device, seed, full_text_encoder, vae_dtype):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tname, vname = _CONFIGS[name]
    tcfg = transformer_config(tname)
    tiny = name.startswith("tiny-")
    kind = "tiny" if tiny else ("full" if full_text_encoder else "stand-in")
    tokenizer, tokenizer_2 = byte_tokenizer(CLIP_TOKENS), byte_tokenizer(MAX_TEXT_TOKENS)
    torch.manual_seed(seed)
    with building_on(device, dtype):
        transformer = keep_fp32(FluxTransformer2DModel(**tcfg))
        text_encoder = clip_text_encoder(tcfg["pooled_projection_dim"], len(tokenizer), kind, CLIP_TOKENS)
        text_encoder_2 = t5_encoder(tcfg["joint_attention_dim"], len(tokenizer_2), kind)
    with building_on(device, vae_dtype):
        vae = AutoencoderKL(**vae_config(vname))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**_SCHEDULER), vae=vae.eval(),
                        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer_2, transformer=transformer.eval())
    notes = [f"dummy weights: {name} built from its published config with random weights (seed {seed})"]
    if not tiny:
        if not full_text_encoder:
            notes.append("text encoders: a small random CLIP-L and T5 (2 layers each, at their real widths) replace "
                         "CLIP ViT-L/14 and T5-v1.1-XXL (--full-text-encoder builds the full ones); TextEncoding time "
                         "is not representative")
        notes.append("tokenizers: byte-level stand-ins for the CLIP and T5 tokenizers (nothing is downloaded)")
    return pipe, notes


FAMILY = Family(FLUX_NAMES, PIPELINE_CLASSES, flux_info, inspect_flux_dir, build_flux_pipeline,
                {"transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL"},
                text_encoders=("text_encoder", "text_encoder_2"))
