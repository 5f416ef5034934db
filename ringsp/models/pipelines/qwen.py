"""Qwen-Image (text-to-image) and Qwen-Image-Edit pipelines: the published configs with random
weights, tiny ones, and what local directories hold (read by the package's load_pipeline).

Dummy pipelines get the offline text side of `qwen_text` (a stand-in Qwen2Tokenizer, a small
random Qwen2.5-VL text encoder, and for Edit the image + text processor); `notes` says so.
"""
import os

import torch

from ..configs import QWEN_VAES, transformer_config
from .common import (
    Family, ModelDefaults, ModelDirError, ModelInfo, building_on, dir_configs, dir_info, keep_fp32, listed,
)

QWEN_NAMES = ("qwen-image", "qwen-image-edit", "tiny-qwen-image", "tiny-qwen-image-edit")
QWEN_PIPELINE_CLASSES = {"QwenImagePipeline": False, "QwenImageEditPipeline": True}  # class -> edit
QWEN_MAX_TEXT_TOKENS = 1024  # diffusers' Qwen pipelines refuse a longer max_sequence_length
# diffusers' QwenImageEditPipeline resizes the reference image to about 1024 x 1024 pixels.
EDIT_IMAGE_AREA = 1024 * 1024

_TINY_VAE = {
    "base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
    "latents_mean": [0.12, -0.21, 0.33, -0.04], "latents_std": [1.17, 0.86, 1.02, 1.49],
}
# name -> (transformer config, VAE config, edit)
_SPECS = {
    "qwen-image": ("qwen-image", QWEN_VAES["qwen-image"], False),
    "qwen-image-edit": ("qwen-image", QWEN_VAES["qwen-image"], True),
    "tiny-qwen-image": ("tiny-qwen", _TINY_VAE, False),
    "tiny-qwen-image-edit": ("tiny-qwen", _TINY_VAE, True),
}
# diffusers' defaults: 1024 x 1024 (Edit: the reference image's size), 50 steps, true_cfg_scale 4.
# The tiny ones: 3 x 5 packed tokens; the Edit reference image is resized to about 64 x 64 pixels.
_DEFAULTS = {
    "qwen-image": ModelDefaults(1024, 1024, 1, 50, 4.0, 512),
    "qwen-image-edit": ModelDefaults(None, None, 1, 50, 4.0, 512, image_area=EDIT_IMAGE_AREA),
    "tiny-qwen-image": ModelDefaults(48, 80, 1, 4, 4.0, 64),
    "tiny-qwen-image-edit": ModelDefaults(None, None, 1, 4, 4.0, 64, image_area=64 * 64),
}
# Qwen/Qwen-Image's scheduler/scheduler_config.json (also Qwen-Image-Edit's).
_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 0.9,
    "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02, "time_shift_type": "exponential",
    "invert_sigmas": False, "stochastic_sampling": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}



def qwen_info(name):
    tname, vcfg, edit = _SPECS[name]
    return _info(name, transformer_config(tname), vcfg, edit, _DEFAULTS[name], "dummy")


def inspect_qwen_dir(path, index):
    edit = QWEN_PIPELINE_CLASSES[index.get("_class_name")]
    tcfg, vcfg = dir_configs(path, index, ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")
                             + (("processor",) if edit else ()))
    for key, what in (("guidance_embeds", "guidance-distilled"), ("zero_cond_t", "Edit-2511"),
                      ("use_layer3d_rope", "Layered")):
        if tcfg.get(key):
            raise ModelDirError(f"--model-path {path!r}: a {what} Qwen-Image transformer ({key}) is not supported "
                                "by ringsp generate")
    return dir_info(path, _info, tcfg, vcfg, edit, _DEFAULTS["qwen-image-edit" if edit else "qwen-image"])


def _info(name, tcfg, vcfg, edit, defaults, source):
    patch = int(tcfg.get("patch_size", 2))
    z_dim = int(vcfg.get("z_dim", 16))
    in_channels = int(tcfg.get("in_channels", 64))
    if patch < 1 or in_channels != z_dim * patch * patch:
        raise ValueError(f"the transformer takes {in_channels} channels, not the VAE's {z_dim} latent channels "
                         f"packed {patch} x {patch}")
    # diffusers' Qwen pipelines: vae_scale_factor = 2 ** len(temperal_downsample)
    spatial = 2 ** len(vcfg.get("temperal_downsample", [False, True, True]))
    return ModelInfo(name=name, patch_size=(1, patch, patch), vae_scale_spatial=spatial, vae_scale_temporal=1,
                     num_heads=int(tcfg.get("num_attention_heads", 24)), defaults=defaults, source=source,
                     family="qwen", edit=edit, max_text_tokens=QWEN_MAX_TEXT_TOKENS, min_steps=2)



def template_corpus():
    """The prompt templates of diffusers' Qwen-Image pipelines (read from instances built
    without components, so they follow the installed diffusers)."""
    from diffusers import QwenImageEditPipeline, QwenImagePipeline

    t2i = QwenImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None)
    edit = QwenImageEditPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, processor=None,
                                 transformer=None)
    return [t2i.prompt_template_encode, edit.prompt_template_encode]


def build_qwen_pipeline(name, *, dtype, device, seed, full_text_encoder, vae_dtype):
    from diffusers import (
        AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline, QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration

    from .qwen_text import QwenImageTextProcessor, image_processor, qwen_tokenizer, text_encoder_config

    tname, vcfg, edit = _SPECS[name]
    tiny = name.startswith("tiny-")
    tcfg = transformer_config(tname)
    tokenizer = qwen_tokenizer(template_corpus())
    kind = "tiny" if tiny else ("full" if full_text_encoder else "stand-in")
    torch.manual_seed(seed)
    with building_on(device, dtype):
        transformer = keep_fp32(QwenImageTransformer2DModel(**tcfg))
        text_encoder = Qwen2_5_VLForConditionalGeneration(
            text_encoder_config(tokenizer, tcfg["joint_attention_dim"], kind))
    with building_on(device, vae_dtype):
        vae = AutoencoderKLQwenImage(**vcfg)
    parts = {"scheduler": FlowMatchEulerDiscreteScheduler(**_SCHEDULER), "vae": vae.eval(),
             "text_encoder": text_encoder.eval(), "tokenizer": tokenizer, "transformer": transformer.eval()}
    if edit:
        parts["processor"] = QwenImageTextProcessor(image_processor(), tokenizer)
    pipe = (QwenImageEditPipeline if edit else QwenImagePipeline)(**parts)
    return pipe, _notes(name, seed, tiny, full_text_encoder, edit)


def _notes(name, seed, tiny, full_text_encoder, edit):
    notes = [f"dummy weights: {name} built from its published config with random weights (seed {seed})"]
    if tiny:
        return notes
    if not full_text_encoder:
        notes.append("text encoder: a small random Qwen2.5-VL (2 text + 2 vision layers at Qwen2.5-VL-7B's widths) "
                     "replaces Qwen2.5-VL-7B (--full-text-encoder builds the full one); TextEncoding time is not "
                     "representative")
    notes.append("tokenizer: a Qwen2Tokenizer stand-in whose vocabulary covers the prompt templates (other text is "
                 "split into bytes, so prompts make more tokens than with Qwen's vocabulary; nothing is downloaded)")
    if edit:
        notes.append("processor: Qwen2VLProcessor without its video part (ringsp's QwenImageTextProcessor, "
                     "which needs no torchvision)")
    return notes



def _extra_parts(path, index):
    """Where transformers cannot build Qwen2VLProcessor (no torchvision for its video part),
    an Edit directory's processor is read into QwenImageTextProcessor instead."""
    # diffusers loads a component of a custom library (a directory saved from a dummy Edit
    # pipeline names QwenImageTextProcessor) only once that module is imported
    from . import qwen_text  # noqa: F401

    parts, notes = {}, []
    edit = QWEN_PIPELINE_CLASSES[index["_class_name"]]
    from transformers.utils import is_torchvision_available

    if edit and listed(index, "processor") and index["processor"] == ["transformers", "Qwen2VLProcessor"] \
            and not is_torchvision_available():
        from .qwen_text import QwenImageTextProcessor

        try:
            parts["processor"] = QwenImageTextProcessor.from_pretrained(os.path.join(path, "processor"))
        except (OSError, ValueError) as exc:
            raise ModelDirError(f"--model-path {path!r}: cannot load the processor ({exc})") from None
        notes.append("processor: Qwen2VLProcessor's image and text parts (QwenImageTextProcessor); its video part "
                     "needs torchvision, which is not installed")
    return parts, notes


FAMILY = Family(QWEN_NAMES, tuple(QWEN_PIPELINE_CLASSES), qwen_info, inspect_qwen_dir, build_qwen_pipeline,
                {"transformer": "QwenImageTransformer2DModel", "vae": "AutoencoderKLQwenImage"},
                extra_parts=_extra_parts)
