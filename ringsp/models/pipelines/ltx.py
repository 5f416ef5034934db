"""LTX-Video text-to-video pipelines (LTXPipeline): the published LTX-Video config with random
weights, the tiny one, and what a local directory holds.

Dummy pipelines get a byte-level stand-in for the T5 tokenizer and a random T5-XXL text
encoder (text_stand_ins); `notes` says so. VAEs with timestep conditioning (LTX-Video 0.9.1
and later decode with a noise level) are refused: ringsp's loop decodes without one.
"""
import torch

from ..configs import transformer_config, vae_config
from .common import (
    Family, ModelDefaults, ModelDirError, ModelInfo, building_on, dir_configs, dir_info, keep_fp32,
)
from .text_stand_ins import t5_encoder
from .wan import byte_tokenizer

LTX_NAMES = ("ltx-video", "tiny-ltx-video")
PIPELINE_CLASSES = ("LTXPipeline",)
# diffusers' LTXPipeline defaults: 512 x 704, 161 frames, 50 steps, guidance 3, 128 text tokens, 25 fps.
# Tiny: 3 x 5 latents x 3 latent frames = 45 tokens (uneven on 2 and 4 ranks).
_DEFAULTS = {"ltx-video": ModelDefaults(512, 704, 161, 50, 3.0, 128, fps=25.0),
             "tiny-ltx-video": ModelDefaults(96, 160, 17, 4, 3.0, 16, fps=25.0)}
# Lightricks/LTX-Video's scheduler/scheduler_config.json: the shift grows from 0.95 at 1024
# tokens to 2.05 at 4096 (as in LTX's own code), and the sigmas end at the terminal 0.1.
_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.95,
              "max_shift": 2.05, "base_image_seq_len": 1024, "max_image_seq_len": 4096, "shift_terminal": 0.1}
_VAE_DEFAULTS = {"patch_size": 4, "patch_size_t": 1, "spatio_temporal_scaling": [True, True, True, False],
                 "latent_channels": 128}


def ltx_info(name):
    return _info(name, transformer_config(name), vae_config(name), _DEFAULTS[name], "dummy")


def inspect_ltx_dir(path, index):
    tcfg, vcfg = dir_configs(path, index, ("tokenizer", "text_encoder", "vae", "scheduler", "transformer"))
    if vcfg.get("timestep_conditioning"):
        raise ModelDirError(f"--model-path {path!r}: an LTX-Video VAE with timestep_conditioning (0.9.1 and later) "
                            "is not supported by ringsp generate")
    return dir_info(path, _info, tcfg, vcfg, _DEFAULTS["ltx-video"])


def _info(name, tcfg, vcfg, defaults, source):
    vcfg = {**_VAE_DEFAULTS, **vcfg}
    patch, patch_t = int(tcfg.get("patch_size", 1)), int(tcfg.get("patch_size_t", 1))
    if int(tcfg.get("in_channels", 128)) != vcfg["latent_channels"] * patch_t * patch * patch:
        raise ValueError(f"the transformer takes {tcfg.get('in_channels')} channels, not the VAE's "
                         f"{vcfg['latent_channels']} latent channels in {patch_t} x {patch} x {patch} patches")
    # AutoencoderKLLTXVideo's compression ratios
    scaling = 2 ** sum(bool(s) for s in vcfg["spatio_temporal_scaling"])
    return ModelInfo(name=name, patch_size=(patch_t, patch, patch),
                     vae_scale_spatial=int(vcfg["patch_size"]) * scaling,
                     vae_scale_temporal=int(vcfg["patch_size_t"]) * scaling,
                     num_heads=int(tcfg.get("num_attention_heads", 32)), defaults=defaults, source=source,
                     family="ltx", min_steps=2)


def build_ltx_pipeline(name, *, dtype, device, seed, full_text_encoder, vae_dtype):
    from diffusers import (
        AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel,
    )

    tcfg = transformer_config(name)
    tiny = name.startswith("tiny-")
    tokenizer = byte_tokenizer(_DEFAULTS[name].max_sequence_length)
    torch.manual_seed(seed)
    with building_on(device, dtype):
        transformer = keep_fp32(LTXVideoTransformer3DModel(**tcfg))
        text_encoder = t5_encoder(tcfg["caption_channels"], len(tokenizer),
                                  "tiny" if tiny else ("full" if full_text_encoder else "stand-in"))
    with building_on(device, vae_dtype):
        vae = AutoencoderKLLTXVideo(**vae_config(name))
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**_SCHEDULER), vae=vae.eval(),
                       text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer.eval())
    notes = [f"dummy weights: {name} built from its published config with random weights (seed {seed})"]
    if not tiny:
        if not full_text_encoder:
            notes.append("text encoder: a small random T5 (2 layers, d_model 4096) replaces T5-v1.1-XXL "
                         "(--full-text-encoder builds the full one); TextEncoding time is not representative")
        notes.append("tokenizer: byte-level stand-in for the T5 tokenizer (nothing is downloaded)")
    return pipe, notes


FAMILY = Family(LTX_NAMES, PIPELINE_CLASSES, ltx_info, inspect_ltx_dir, build_ltx_pipeline,
                {"transformer": "LTXVideoTransformer3DModel", "vae": "AutoencoderKLLTXVideo"})
