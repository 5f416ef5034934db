"""Pipelines for `ringsp generate`: Wan (text-to-video), Qwen-Image (text-to-image) and
Qwen-Image-Edit, loaded from a local diffusers directory or built from a published config
with random weights (`--dummy-weights`), or tiny ones built in code.

    info = model_info("wan2.1-t2v-1.3b")           # shapes and defaults, nothing built
    info = inspect_model_dir("/models/Qwen-Image")  # reads JSON only (the family from model_index.json)
    pipe, notes = build_dummy_pipeline("tiny-qwen-image-edit", dtype=torch.float32, device="cpu")
    pipe, notes = load_pipeline(path, dtype=torch.bfloat16, device="cuda:0")

Nothing is downloaded; `notes` says which stand-ins were used (text encoders, tokenizers),
for the report. Modules: common (shared), wan, qwen, qwen_text (Qwen's offline text side).
"""
import os

import torch

from .common import ModelDefaults, ModelDirError, ModelInfo, read_json
from .qwen import QWEN_NAMES, QWEN_PIPELINE_CLASSES, build_qwen_pipeline, check_qwen_weights, inspect_qwen_dir, \
    load_qwen_pipeline, qwen_info
from .wan import TINY_NAME, WAN_NAMES, WAN_PIPELINE_CLASSES, build_wan_pipeline, byte_tokenizer, check_wan_weights, \
    inspect_wan_dir, load_wan_pipeline, wan_info

MODEL_NAMES = WAN_NAMES + QWEN_NAMES
SUPPORTED_PIPELINES = WAN_PIPELINE_CLASSES + tuple(QWEN_PIPELINE_CLASSES)

__all__ = ["MODEL_NAMES", "TINY_NAME", "WAN_NAMES", "QWEN_NAMES", "ModelDefaults", "ModelInfo", "ModelDirError",
           "model_info", "inspect_model_dir", "build_dummy_pipeline", "load_pipeline", "byte_tokenizer"]


def model_info(name):
    """ModelInfo of a named model (published config or a tiny one); nothing is built."""
    if name in WAN_NAMES:
        return wan_info(name)
    if name in QWEN_NAMES:
        return qwen_info(name)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def _index(path):
    if not os.path.isdir(path):
        raise ModelDirError(f"--model-path {path!r} is not a directory")
    index = read_json(os.path.join(path, "model_index.json"), "model_index.json (not a diffusers pipeline?)")
    cls = index.get("_class_name")
    if cls not in SUPPORTED_PIPELINES:
        raise ModelDirError(f"--model-path {path!r} holds a {cls!r} pipeline; supported: "
                            f"{', '.join(SUPPORTED_PIPELINES)}")
    return index


def inspect_model_dir(path, check_weights=False):
    """ModelInfo of a diffusers Wan / Qwen-Image / Qwen-Image-Edit directory, from its JSON
    files (no weights read). check_weights: also read the safetensors headers and check that
    the transformer and VAE files hold exactly the weights their configs need (a model built
    on the meta device). Raises ModelDirError naming what is missing or malformed."""
    index = _index(path)
    qwen = index["_class_name"] in QWEN_PIPELINE_CLASSES
    info = inspect_qwen_dir(path, index) if qwen else inspect_wan_dir(path, index)
    if check_weights:
        (check_qwen_weights if qwen else check_wan_weights)(path, index)
    return info


def build_dummy_pipeline(name, *, dtype=torch.float32, device="cpu", seed=0, full_text_encoder=False,
                         vae_dtype=torch.float32):
    """(pipeline with random weights of the named model's published shapes, notes).
    The weights depend only on (name, seed, dtype): every rank that builds it gets the same
    ones on CPU; on accelerators the launcher also broadcasts them from rank 0."""
    model_info(name)  # the name check
    build = build_wan_pipeline if name in WAN_NAMES else build_qwen_pipeline
    return build(name, dtype=dtype, device=device, seed=seed, full_text_encoder=full_text_encoder,
                 vae_dtype=vae_dtype)


def load_pipeline(path, *, dtype=torch.bfloat16, device="cpu", vae_dtype=torch.float32):
    """(pipeline from a local diffusers directory on `device`, notes)."""
    inspect_model_dir(path)
    index = _index(path)
    load = load_qwen_pipeline if index["_class_name"] in QWEN_PIPELINE_CLASSES else load_wan_pipeline
    return load(path, index, dtype=dtype, device=device, vae_dtype=vae_dtype)
