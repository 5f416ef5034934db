"""Pipelines for `ringsp generate` (Wan, Qwen-Image and -Edit, FLUX.1, LTX-Video), loaded from a
local diffusers directory, or built from a published or tiny config with random weights.

    info = model_info("wan2.1-t2v-1.3b")           # shapes and defaults, nothing built
    info = inspect_model_dir("/models/Qwen-Image")  # reads JSON only (the family from model_index.json)
    pipe, notes = build_dummy_pipeline("tiny-flux", dtype=torch.float32, device="cpu")
    pipe, notes = load_pipeline(path, dtype=torch.bfloat16, device="cuda:0")

Nothing is downloaded; `notes` says which stand-ins were used (text encoders, tokenizers).
Each family module (wan, qwen, flux, ltx) exports a Family (common.py).
"""
import os

import torch

from . import flux, ltx, qwen, wan
from .common import (
    ModelDefaults, ModelDirError, ModelInfo, check_model_weights, from_pretrained_pipeline, listed, load_model,
    read_json,
)
from .qwen import QWEN_NAMES
from .wan import TINY_NAME, WAN_NAMES, byte_tokenizer

FAMILIES = (wan.FAMILY, qwen.FAMILY, flux.FAMILY, ltx.FAMILY)
MODEL_NAMES = tuple(name for family in FAMILIES for name in family.names)
SUPPORTED_PIPELINES = tuple(cls for family in FAMILIES for cls in family.pipeline_classes)

__all__ = ["MODEL_NAMES", "TINY_NAME", "WAN_NAMES", "QWEN_NAMES", "ModelDefaults", "ModelInfo", "ModelDirError",
           "model_info", "inspect_model_dir", "build_dummy_pipeline", "load_pipeline", "byte_tokenizer"]


def _family_of(name):
    for family in FAMILIES:
        if name in family.names:
            return family
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def model_info(name):
    """ModelInfo of a named model (published config or a tiny one); nothing is built."""
    return _family_of(name).info(name)


def _index(path):
    """(model_index.json, the family of its pipeline class)."""
    if not os.path.isdir(path):
        raise ModelDirError(f"--model-path {path!r} is not a directory")
    index = read_json(os.path.join(path, "model_index.json"), "model_index.json (not a diffusers pipeline?)")
    cls = index.get("_class_name")
    for family in FAMILIES:
        if cls in family.pipeline_classes:
            return index, family
    raise ModelDirError(f"--model-path {path!r} holds a {cls!r} pipeline; supported: {', '.join(SUPPORTED_PIPELINES)}")


def inspect_model_dir(path, check_weights=False):
    """ModelInfo of a diffusers directory of a supported pipeline, from its JSON files (no
    weights read). check_weights: also read the safetensors headers and check that the
    transformer and VAE files hold exactly the weights their configs need (a model built on
    the meta device). Raises ModelDirError naming what is missing or malformed."""
    index, family = _index(path)
    info = family.inspect(path, index)
    if check_weights:
        check_model_weights(path, index, _weight_classes(family).items(), family.text_encoders)
    return info


def build_dummy_pipeline(name, *, dtype=torch.float32, device="cpu", seed=0, full_text_encoder=False,
                         vae_dtype=torch.float32):
    """(pipeline with random weights of the named model's published shapes, notes).
    The weights depend only on (name, seed, dtype): every rank that builds it gets the same
    ones on CPU; on accelerators the launcher also broadcasts them from rank 0."""
    return _family_of(name).build(name, dtype=dtype, device=device, seed=seed, full_text_encoder=full_text_encoder,
                                  vae_dtype=vae_dtype)


def load_pipeline(path, *, dtype=torch.bfloat16, device="cpu", vae_dtype=torch.float32):
    """(pipeline from a local diffusers directory on `device`, notes). The transformer(s) and the
    VAE are read by `load_model`; the tokenizers, text encoders and scheduler (and the family's
    extra parts) come through the pipeline's from_pretrained."""
    import diffusers

    inspect_model_dir(path)
    index, family = _index(path)
    parts, notes = family.extra_parts(path, index) if family.extra_parts else ({}, [])
    for comp, cls in _weight_classes(family).items():
        parts[comp] = load_model(cls, os.path.join(path, comp), vae_dtype if comp == "vae" else dtype, device) \
            if listed(index, comp) else None
    pipe = from_pretrained_pipeline(getattr(diffusers, index["_class_name"]), path, dtype, **parts)
    for name in family.text_encoders:
        getattr(pipe, name).to(device)
    return pipe, notes


def _weight_classes(family):
    import diffusers

    return {comp: getattr(diffusers, cls) for comp, cls in family.weights.items()}
