"""Wan pipelines for `ringsp generate`: loaded from a local diffusers directory, or built
from a published config with random weights (`--dummy-weights`), or the embedded tiny one.

    info = model_info("wan2.1-t2v-1.3b")           # shapes and defaults, nothing built
    info = inspect_model_dir("/models/Wan2.1-T2V-1.3B-Diffusers")   # reads JSON only
    pipe, notes = build_dummy_pipeline("tiny-wan", dtype=torch.float32, device="cpu")
    pipe = load_pipeline(path, dtype=torch.bfloat16, device="cuda:0")

Nothing is downloaded: the tokenizer of dummy pipelines is a byte-level one made here with
the `tokenizers` library (every prompt tokenizes, no vocabulary file), and the text encoder
of a dummy pipeline is a small random UMT5 with the real output width (UMT5-XXL's 5.7B
random parameters only cost time and memory; `full_text_encoder=True` builds them anyway).
`notes` says which such substitutions were made, for the report.
"""
import contextlib
import json
import os
import warnings
from dataclasses import dataclass, field

import torch

from .configs import model_spec, transformer_config, vae_config

TINY_NAME = "tiny-wan"
MODEL_NAMES = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", TINY_NAME)
WAN_PIPELINE_CLASSES = ("WanPipeline",)

# The tiny pipeline: the real Wan structure (8x spatial / 4x temporal VAE, patch 1x2x2) at
# toy widths, so every size rule of the real models applies to it too.
_TINY_TRANSFORMER = "tiny-t2v"  # from configs.py: 3 heads, so Ulysses must pad heads
_TINY_VAE = {
    "base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
    "latents_mean": [0.11, -0.23, 0.31, -0.05], "latents_std": [1.21, 0.83, 1.04, 1.52],
}
# UMT5-XXL as published (google/umt5-xxl encoder): what dummy pipelines stand in for.
_UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
             "num_heads": 64, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
# Keys of a keep-in-fp32 rule: diffusers keeps these Wan submodules in fp32 under bf16/fp16.
_FP32_KEEP_ATTR = "_keep_in_fp32_modules"


@dataclass(frozen=True)
class ModelDefaults:
    height: int
    width: int
    num_frames: int
    steps: int
    guidance_scale: float
    max_sequence_length: int = 512


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

    @property
    def size_multiple(self):
        """Height and width must be multiples of this (VAE stride x patch size)."""
        return self.vae_scale_spatial * self.patch_size[1], self.vae_scale_spatial * self.patch_size[2]


_DEFAULTS = {
    "wan2.1-t2v-1.3b": ModelDefaults(480, 832, 81, 50, 5.0),
    "wan2.1-t2v-14b": ModelDefaults(720, 1280, 81, 50, 5.0),
    "wan2.2-ti2v-5b": ModelDefaults(704, 1280, 121, 50, 5.0),
    "wan2.2-t2v-a14b": ModelDefaults(720, 1280, 81, 40, 4.0),
    # Non-square and odd latent sizes (6 x 10 latents, 3 latent frames: 45 tokens) so
    # transposed or unevenly sharded axes show up as differences, not as luck.
    TINY_NAME: ModelDefaults(48, 80, 9, 4, 5.0, max_sequence_length=32),
}
# Scheduler of the published pipelines: UniPC on flow matching; the shift is 3.0 for
# 480p checkpoints and 5.0 for 720p ones (diffusers' Wan example says so).
_FLOW_SHIFT = {"wan2.1-t2v-1.3b": 3.0, TINY_NAME: 3.0}


class ModelDirError(ValueError):
    """A --model-path that is missing or is not a usable Wan diffusers directory."""


# ------------------------------------------------------------------------------ model info


def model_info(name):
    """ModelInfo of a named model (published config or tiny-wan); nothing is built."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    tcfg, vcfg = _configs_of(name)[:2]
    return _info(name, tcfg, vcfg, _DEFAULTS[name], "dummy")


def inspect_model_dir(path, check_weights=False):
    """ModelInfo of a diffusers Wan directory, from its JSON files (no weights read).
    check_weights: also read the safetensors headers and check that the transformer and VAE
    files hold exactly the weights their configs need (a model built on the meta device).
    Raises ModelDirError naming what is missing or malformed."""
    if not os.path.isdir(path):
        raise ModelDirError(f"--model-path {path!r} is not a directory")
    index = _read_json(os.path.join(path, "model_index.json"), "model_index.json (not a diffusers pipeline?)")
    cls = index.get("_class_name")
    if cls not in WAN_PIPELINE_CLASSES:
        raise ModelDirError(f"--model-path {path!r} holds a {cls!r} pipeline; only {WAN_PIPELINE_CLASSES} "
                            "(text-to-video Wan) is supported")
    for comp in ("tokenizer", "text_encoder", "vae", "scheduler"):
        if not _listed(index, comp):
            raise ModelDirError(f"--model-path {path!r}: model_index.json lists no {comp!r}")
    tname = "transformer" if _listed(index, "transformer") else "transformer_2"
    if not _listed(index, tname):
        raise ModelDirError(f"--model-path {path!r}: model_index.json lists no transformer")
    tcfg = _read_json(os.path.join(path, tname, "config.json"), f"{tname}/config.json")
    vcfg = _read_json(os.path.join(path, "vae", "config.json"), "vae/config.json")
    defaults = _DEFAULTS["wan2.2-ti2v-5b" if index.get("expand_timesteps") else "wan2.1-t2v-1.3b"]
    try:
        info = _info(os.path.basename(os.path.normpath(path)), tcfg, vcfg, defaults, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"--model-path {path!r}: malformed transformer/vae config ({exc})") from None
    if check_weights:
        _check_weights(path, index)
    return info


def _check_weights(path, index):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    for comp, cls in (("transformer", WanTransformer3DModel), ("transformer_2", WanTransformer3DModel),
                      ("vae", AutoencoderKLWan)):
        if not _listed(index, comp):
            continue
        folder = os.path.join(path, comp)
        stored = set()
        for f in _weight_files(folder):
            stored |= _safetensors_keys(f)
        try:
            with torch.device("meta"):
                expected = set(cls.from_config(cls.load_config(folder)).state_dict())
        except Exception as exc:  # noqa: BLE001 - any config the constructor rejects
            raise ModelDirError(f"{folder}: config.json does not build a {cls.__name__} ({exc})") from None
        if stored != expected:
            missing, extra = sorted(expected - stored), sorted(stored - expected)
            raise ModelDirError(f"{folder}: the weights do not fit the config ({len(missing)} missing, e.g. "
                                f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})")
    te = os.path.join(path, "text_encoder")
    te_files = [f for f in (os.listdir(te) if os.path.isdir(te) else []) if f.endswith(".safetensors")]
    if not te_files:
        raise ModelDirError(f"{te}: no *.safetensors weights")
    for f in te_files:
        _safetensors_keys(os.path.join(te, f))


def _safetensors_keys(filename):
    from safetensors import safe_open

    try:
        with safe_open(filename, framework="pt") as f:
            return set(f.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelDirError(f"unreadable weights file {filename} ({exc})") from None


def _info(name, tcfg, vcfg, defaults, source):
    patch = tuple(int(p) for p in tcfg.get("patch_size", (1, 2, 2)))
    if len(patch) != 3:
        raise ValueError(f"patch_size must have 3 entries, got {patch}")
    return ModelInfo(
        name=name, patch_size=patch,
        vae_scale_spatial=int(vcfg.get("scale_factor_spatial") or 8),
        vae_scale_temporal=int(vcfg.get("scale_factor_temporal") or 4),
        num_heads=int(tcfg.get("num_attention_heads", 40)), defaults=defaults, source=source,
    )


def _listed(index, comp):
    entry = index.get(comp)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


def _read_json(path, what):
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


# ------------------------------------------------------------------------------ building


def _configs_of(name):
    """(transformer config, vae config, number of transformers, boundary ratio, expand_timesteps)."""
    if name == TINY_NAME:
        return transformer_config(_TINY_TRANSFORMER), dict(_TINY_VAE), 1, None, False
    spec = model_spec(name)
    return (transformer_config(spec["transformers"][0]), vae_config(spec["vae"]), len(spec["transformers"]),
            spec["boundary_ratio"], spec["expand_timesteps"])


def byte_tokenizer(model_max_length=512):
    """A byte-level tokenizer built in code (T5-style ids: <pad>=0, </s>=1, <unk>=2, appends
    </s>); it needs no vocabulary download and saves/loads with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(special + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def _text_encoder_config(name, text_dim, vocab_size, full):
    from transformers import UMT5Config

    if full:
        return UMT5Config(**_UMT5_XXL, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    if name == TINY_NAME:
        dims = {"d_model": text_dim, "d_kv": 8, "num_heads": text_dim // 8, "d_ff": 32, "num_layers": 2,
                "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16}
    else:  # real output width, two layers: the transformer sees embeddings of the real shape
        dims = {"d_model": text_dim, "d_kv": 64, "num_heads": text_dim // 64, "d_ff": 1024, "num_layers": 2}
    return UMT5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu", is_encoder_decoder=False, **dims)


@contextlib.contextmanager
def _building_on(device, dtype):
    """Parameters created inside land on `device` in `dtype` directly (a 14B model built in
    fp32 on the host first would need 56 GB of RAM and minutes of random init)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _keep_fp32(model):
    """diffusers' rule under from_pretrained(torch_dtype=half): parameters of the modules it
    names stay fp32 (Wan's time embedder, norms, modulation table); buffers are left alone."""
    keep = getattr(model, _FP32_KEEP_ATTR, None) or []
    for pname, param in model.named_parameters():
        if any(k in pname.split(".") for k in keep) and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def build_dummy_pipeline(name, *, dtype=torch.float32, device="cpu", seed=0, full_text_encoder=False,
                         vae_dtype=torch.float32):
    """(WanPipeline with random weights of the named model's published shapes, notes).
    The weights depend only on (name, seed, dtype): every rank that builds it gets the same
    ones on CPU; on CUDA the launcher also broadcasts them from rank 0."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    tcfg, vcfg, n_transformers, boundary, expand = _configs_of(name)
    tokenizer = byte_tokenizer(_DEFAULTS[name].max_sequence_length)
    torch.manual_seed(seed)
    with _building_on(device, dtype):
        transformers = [_keep_fp32(WanTransformer3DModel(**tcfg)) for _ in range(n_transformers)]
        te_cfg = _text_encoder_config(name, tcfg["text_dim"], len(tokenizer), full_text_encoder)
        text_encoder = UMT5EncoderModel(te_cfg)
    with _building_on(device, vae_dtype):
        vae = AutoencoderKLWan(**vcfg)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=_FLOW_SHIFT.get(name, 5.0))
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(), scheduler=scheduler,
                       transformer=transformers[0].eval(),
                       transformer_2=transformers[1].eval() if n_transformers > 1 else None,
                       boundary_ratio=boundary, expand_timesteps=expand)
    notes = [f"dummy weights: {name} built from its published config with random weights (seed {seed})"]
    if name != TINY_NAME and not full_text_encoder:
        notes.append(f"text encoder: a small random UMT5 (2 layers, d_model {tcfg['text_dim']}) replaces "
                     "UMT5-XXL (--full-text-encoder builds the full one); TextEncoding time is not representative")
    if name != TINY_NAME:
        notes.append("tokenizer: byte-level stand-in for the UMT5 tokenizer (nothing is downloaded)")
    return pipe, notes


# ------------------------------------------------------------------------------ loading


def load_pipeline(path, *, dtype=torch.bfloat16, device="cpu", vae_dtype=torch.float32):
    """A WanPipeline from a local diffusers directory, on `device`. The transformers and the
    VAE are read here (safetensors, built on the device, keep-in-fp32 modules as diffusers
    does), because diffusers insists on `accelerate` for Wan transformers; the tokenizer,
    text encoder and scheduler come through `WanPipeline.from_pretrained`."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    inspect_model_dir(path)
    index = _read_json(os.path.join(path, "model_index.json"), "model_index.json")
    parts = {}
    for comp in ("transformer", "transformer_2"):
        parts[comp] = _load_model(WanTransformer3DModel, os.path.join(path, comp), dtype, device) \
            if _listed(index, comp) else None
    parts["vae"] = _load_model(AutoencoderKLWan, os.path.join(path, "vae"), vae_dtype, device)
    try:
        with warnings.catch_warnings():  # newer diffusers renames torch_dtype; older ones lack `dtype`
            warnings.simplefilter("ignore", FutureWarning)
            pipe = WanPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True, **parts)
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"--model-path {path!r}: cannot load the pipeline ({exc})") from None
    pipe.text_encoder.to(device)
    return pipe


def _load_model(cls, folder, dtype, device):
    from safetensors.torch import load_file

    files = _weight_files(folder)
    with _building_on(device, dtype):
        # fp32-kept parameters are widened before loading, so fp32 checkpoints keep their bits
        model = _keep_fp32(cls.from_config(cls.load_config(folder)))
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


def _weight_files(folder):
    index = os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json")
    single = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(index):
        shards = sorted(set(_read_json(index, "safetensors index").get("weight_map", {}).values()))
        files = [os.path.join(folder, s) for s in shards]
    elif os.path.isfile(single):
        files = [single]
    else:
        raise ModelDirError(f"{folder}: no diffusion_pytorch_model.safetensors (other formats are not supported)")
    for f in files:
        if not os.path.isfile(f):
            raise ModelDirError(f"missing weight shard {f}")
    return files

