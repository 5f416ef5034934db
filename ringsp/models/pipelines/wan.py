"""Wan text-to-video pipelines: the published configs with random weights, the embedded tiny
one, and what a local WanPipeline directory holds (the package's load_pipeline reads it).

Dummy pipelines get a byte-level tokenizer made here (no vocabulary file) and a small random
UMT5 of the real output width (UMT5-XXL's 5.7B random parameters only cost time and memory;
`full_text_encoder=True` builds them anyway).
"""
import torch

from ..configs import model_spec, transformer_config, vae_config
from .common import (
    Family, ModelDefaults, ModelDirError, ModelInfo, building_on, dir_configs, dir_info, keep_fp32, listed,
)

TINY_NAME = "tiny-wan"
WAN_NAMES = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b", TINY_NAME)
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

_DEFAULTS = {
    "wan2.1-t2v-1.3b": ModelDefaults(480, 832, 81, 50, 5.0),
    "wan2.1-t2v-14b": ModelDefaults(720, 1280, 81, 50, 5.0),
    "wan2.2-ti2v-5b": ModelDefaults(704, 1280, 121, 50, 5.0, fps=24.0),  # 720p at 24 fps, as published
    "wan2.2-t2v-a14b": ModelDefaults(720, 1280, 81, 40, 4.0),
    # Non-square and odd latent sizes (6 x 10 latents, 3 latent frames: 45 tokens) so
    # transposed or unevenly sharded axes show up as differences, not as luck.
    TINY_NAME: ModelDefaults(48, 80, 9, 4, 5.0, max_sequence_length=32),
}
# Scheduler of the published pipelines: UniPC on flow matching; the shift is 3.0 for
# 480p checkpoints and 5.0 for 720p ones (diffusers' Wan example says so).
_FLOW_SHIFT = {"wan2.1-t2v-1.3b": 3.0, TINY_NAME: 3.0}



def wan_info(name):
    tcfg, vcfg = _configs_of(name)[:2]
    return _info(name, tcfg, vcfg, _DEFAULTS[name], "dummy")


def inspect_wan_dir(path, index):
    tname = "transformer" if listed(index, "transformer") else "transformer_2"
    if not listed(index, tname):
        raise ModelDirError(f"--model-path {path!r}: model_index.json lists no transformer")
    tcfg, vcfg = dir_configs(path, index, ("tokenizer", "text_encoder", "vae", "scheduler"), tname)
    return dir_info(path, _info, tcfg, vcfg, _DEFAULTS["wan2.2-ti2v-5b" if index.get("expand_timesteps")
                                                        else "wan2.1-t2v-1.3b"])


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


def build_wan_pipeline(name, *, dtype, device, seed, full_text_encoder, vae_dtype):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    tcfg, vcfg, n_transformers, boundary, expand = _configs_of(name)
    tokenizer = byte_tokenizer(_DEFAULTS[name].max_sequence_length)
    torch.manual_seed(seed)
    with building_on(device, dtype):
        transformers = [keep_fp32(WanTransformer3DModel(**tcfg)) for _ in range(n_transformers)]
        te_cfg = _text_encoder_config(name, tcfg["text_dim"], len(tokenizer), full_text_encoder)
        text_encoder = UMT5EncoderModel(te_cfg)
    with building_on(device, vae_dtype):
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


FAMILY = Family(WAN_NAMES, WAN_PIPELINE_CLASSES, wan_info, inspect_wan_dir, build_wan_pipeline,
                {"transformer": "WanTransformer3DModel", "transformer_2": "WanTransformer3DModel",
                 "vae": "AutoencoderKLWan"})
