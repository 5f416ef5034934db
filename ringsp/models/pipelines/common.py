"""What the pipeline families share: model facts read without building anything, the Family
record each family module exports, model-directory errors and JSON reading, building on a
device, and loading diffusers models from safetensors without `accelerate`."""
import contextlib
import json
import os
from dataclasses import dataclass, field

import torch

# diffusers keeps the submodules a model names here in fp32 under bf16/fp16.
_FP32_KEEP_ATTR = "_keep_in_fp32_modules"
IMAGE_FAMILIES = ("qwen", "flux")  # the others make videos


@dataclass(frozen=True)
class ModelDefaults:
    height: int
    width: int
    num_frames: int
    steps: int
    guidance_scale: float
    max_sequence_length: int = 512
    image_area: int | None = None  # edit models: pixels the reference image is resized to
    fps: float = 16.0  # video models: the published frame rate (Wan2.1, Wan2.2 A14B: 16); images ignore it


@dataclass(frozen=True)
class ModelInfo:
    """What argument checking needs to know about a model, read without building it."""
    name: str
    patch_size: tuple            # (t, h, w) of the transformer's patch embedding
    vae_scale_spatial: int
    vae_scale_temporal: int
    num_heads: int
    defaults: ModelDefaults
    source: str = "dummy"        # "dummy" or a directory path
    notes: tuple = field(default=())
    family: str = "wan"          # "wan", "ltx" (text-to-video), "qwen", "flux" (text-to-image, image editing)
    edit: bool = False           # takes an input image (Qwen-Image-Edit)
    guidance: str = "cfg"        # --guidance-scale: "cfg" (a negative pass), "embedded" (FLUX.1-dev) or "none"
    max_text_tokens: int | None = None  # the pipeline refuses longer --max-sequence-length
    min_steps: int = 1           # schedulers stretched to a terminal shift give NaN sigmas for 1 step

    @property
    def size_multiple(self):
        """Height and width must be multiples of this (VAE stride x patch size)."""
        return self.vae_scale_spatial * self.patch_size[1], self.vae_scale_spatial * self.patch_size[2]

    @property
    def makes_images(self):
        return self.family in IMAGE_FAMILIES


@dataclass(frozen=True)
class Family:
    """What a family module (wan, qwen, flux, ltx) gives the package (see __init__)."""
    names: tuple                # model names of --model
    pipeline_classes: tuple     # diffusers pipeline classes of model_index.json
    info: object                # name -> ModelInfo
    inspect: object             # (path, index) -> ModelInfo, from the directory's JSON
    build: object               # (name, dtype, device, seed, full_text_encoder, vae_dtype) -> (pipeline, notes)
    weights: dict               # component -> diffusers class name, read from safetensors by load_model
    text_encoders: tuple = ("text_encoder",)
    extra_parts: object = None  # (path, index) -> ({component: loaded}, notes) for from_pretrained


def dir_configs(path, index, components, transformer="transformer"):
    """(transformer config, VAE config) of a directory whose model_index.json lists components."""
    require_components(path, index, components)
    return (read_json(os.path.join(path, transformer, "config.json"), f"{transformer}/config.json"),
            read_json(os.path.join(path, "vae", "config.json"), "vae/config.json"))


def dir_info(path, make, *args):
    """make(the directory's name, *args, path): its ModelInfo, a config error as ModelDirError."""
    try:
        return make(os.path.basename(os.path.normpath(path)), *args, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"--model-path {path!r}: malformed transformer/vae config ({exc})") from None


class ModelDirError(ValueError):
    """A --model-path that is missing or is not a usable diffusers directory of a supported model."""


def read_json(path, what):
    if not os.path.isfile(path):
        raise ModelDirError(f"missing {what}: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"malformed {what}: {path} ({exc})") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"malformed {what}: {path} (not a JSON object)")
    return data


def listed(index, comp):
    """Whether model_index.json names a (library, class) for the component."""
    entry = index.get(comp)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


def require_components(path, index, comps):
    for comp in comps:
        if not listed(index, comp):
            raise ModelDirError(f"--model-path {path!r}: model_index.json lists no {comp!r}")


@contextlib.contextmanager
def building_on(device, dtype):
    """Parameters created inside land on `device` in `dtype` directly (a 14B model built in
    fp32 on the host first would need 56 GB of RAM and minutes of random init)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def keep_fp32(model):
    """diffusers' rule under from_pretrained(torch_dtype=half): parameters of the modules it
    names stay fp32 (Wan's time embedder, norms, modulation table); buffers are left alone."""
    keep = getattr(model, _FP32_KEEP_ATTR, None) or []
    for pname, param in model.named_parameters():
        if any(k in pname.split(".") for k in keep) and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


# ------------------------------------------------------------------------------ weights


def check_model_weights(path, index, classes, text_encoders=("text_encoder",)):
    """For each (component, diffusers class) listed in the index: the safetensors hold exactly
    the weights the component's config needs (compared on the meta device). The text encoders'
    safetensors headers must be readable."""
    for comp, cls in classes:
        if not listed(index, comp):
            continue
        folder = os.path.join(path, comp)
        stored = set()
        for f in weight_files(folder):
            stored |= safetensors_keys(f)
        try:
            with torch.device("meta"):
                expected = set(cls.from_config(cls.load_config(folder)).state_dict())
        except Exception as exc:  # noqa: BLE001 - any config the constructor rejects
            raise ModelDirError(f"{folder}: config.json does not build a {cls.__name__} ({exc})") from None
        if stored != expected:
            missing, extra = sorted(expected - stored), sorted(stored - expected)
            raise ModelDirError(f"{folder}: the weights do not fit the config ({len(missing)} missing, e.g. "
                                f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})")
    for te in (os.path.join(path, name) for name in text_encoders):
        te_files = [f for f in (os.listdir(te) if os.path.isdir(te) else []) if f.endswith(".safetensors")]
        if not te_files:
            raise ModelDirError(f"{te}: no *.safetensors weights")
        for f in te_files:
            safetensors_keys(os.path.join(te, f))


def safetensors_keys(filename):
    from safetensors import safe_open

    try:
        with safe_open(filename, framework="pt") as f:
            return set(f.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelDirError(f"unreadable weights file {filename} ({exc})") from None


def weight_files(folder):
    index = os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json")
    single = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(index):
        shards = sorted(set(read_json(index, "safetensors index").get("weight_map", {}).values()))
        files = [os.path.join(folder, s) for s in shards]
    elif os.path.isfile(single):
        files = [single]
    else:
        raise ModelDirError(f"{folder}: no diffusion_pytorch_model.safetensors (other formats are not supported)")
    for f in files:
        if not os.path.isfile(f):
            raise ModelDirError(f"missing weight shard {f}")
    return files


def load_model(cls, folder, dtype, device):
    """A diffusers model read from its folder's safetensors, built on `device` (diffusers
    itself insists on `accelerate` for these models); keep-in-fp32 modules as diffusers does."""
    from safetensors.torch import load_file

    files = weight_files(folder)
    with building_on(device, dtype):
        # fp32-kept parameters are widened before loading, so fp32 checkpoints keep their bits
        model = keep_fp32(cls.from_config(cls.load_config(folder)))
    expected = set(model.state_dict())
    seen = set()
    for f in files:  # shard by shard: the host never holds more than one shard
        shard = load_file(f, device=str(device))
        unknown = set(shard) - expected
        if unknown:
            raise ModelDirError(f"{f}: unexpected weights {sorted(unknown)[:3]}...")
        model.load_state_dict(shard, strict=False)
        seen |= set(shard)
        del shard
    missing = expected - seen
    if missing:
        raise ModelDirError(f"{folder}: weights missing for {sorted(missing)[:3]}...")
    return model.eval()


def from_pretrained_pipeline(cls, path, dtype, **parts):
    """cls.from_pretrained on a local directory with the given components already built."""
    import warnings

    try:
        with warnings.catch_warnings():  # newer diffusers renames torch_dtype; older ones lack `dtype`
            warnings.simplefilter("ignore", FutureWarning)
            return cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True, **parts)
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"--model-path {path!r}: cannot load the pipeline ({exc})") from None
