"""ringsp.models.pipelines: the byte tokenizer, dummy pipelines of the published shapes (built
on the meta device: shapes only), model-dir inspection, and loading a saved directory back
(sharded safetensors, keep-in-fp32 modules under bf16); for Qwen-Image also the offline
tokenizer (the templates' system prompts are exactly the tokens the pipelines drop), the
image + text processor, and Edit directories that name transformers' Qwen2VLProcessor."""
import functools
import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")

from ringsp.models.pipelines import (  # noqa: E402
    MODEL_NAMES, ModelDirError, build_dummy_pipeline, byte_tokenizer, inspect_model_dir, load_pipeline, model_info,
)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_byte_tokenizer_pads_masks_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    tok = byte_tokenizer(16)
    enc = tok(["a cat é"], padding="max_length", max_length=12, truncation=True, return_attention_mask=True)
    ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
    n = len("a cat é".encode()) + 1  # one id per byte, then </s>
    assert len(ids) == 12 and ids[n - 1] == tok.eos_token_id == 1 and ids[n:] == [0] * (12 - n)
    assert mask == [1] * n + [0] * (12 - n)
    assert tok.decode(ids[: n - 1]) == "a cat é"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again(["a cat é"])["input_ids"] == tok(["a cat é"])["input_ids"]


@pytest.mark.parametrize("name, billions, multiple", [
    ("wan2.1-t2v-1.3b", 1.42, 16), ("wan2.1-t2v-14b", 14.29, 16), ("wan2.2-ti2v-5b", 5.00, 32),
    ("wan2.2-t2v-a14b", 14.29, 16),
])
def test_dummy_pipelines_have_the_published_shapes(name, billions, multiple):
    pipe, notes = build_dummy_pipeline(name, device="meta", dtype=torch.bfloat16)
    assert _count(pipe.transformer) / 1e9 == pytest.approx(billions, abs=0.01)
    assert (pipe.transformer_2 is not None) == (name == "wan2.2-t2v-a14b")
    assert pipe.config.expand_timesteps == (name == "wan2.2-ti2v-5b")
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert any("UMT5-XXL" in n for n in notes)  # the stand-in text encoder is said out loud
    assert model_info(name).size_multiple == (multiple, multiple)


def test_full_text_encoder_is_umt5_xxl():
    pipe, notes = build_dummy_pipeline("wan2.1-t2v-1.3b", device="meta", dtype=torch.bfloat16, full_text_encoder=True)
    assert _count(pipe.text_encoder) / 1e9 == pytest.approx(5.68, abs=0.01)
    assert not any("UMT5-XXL" in n for n in notes)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'wan3'"):
        model_info("wan3")
    assert "tiny-wan" in MODEL_NAMES


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pipe, _ = build_dummy_pipeline("tiny-wan", seed=4)
    path = tmp_path_factory.mktemp("tiny")
    pipe.save_pretrained(str(path))
    # re-save the transformer in several shards, as large checkpoints come
    tdir = path / "transformer"
    for f in tdir.glob("diffusion_pytorch_model*"):
        f.unlink()
    pipe.transformer.save_pretrained(str(tdir), max_shard_size="20KB")
    assert (tdir / "diffusion_pytorch_model.safetensors.index.json").exists()
    return pipe, str(path)


def test_load_pipeline_round_trip(saved):
    pipe, path = saved
    info = inspect_model_dir(path, check_weights=True)
    assert (info.patch_size, info.vae_scale_spatial, info.vae_scale_temporal, info.num_heads) == ((1, 2, 2), 8, 4, 3)
    loaded, notes = load_pipeline(path, dtype=torch.float32)
    assert notes == []
    for name in ("transformer", "vae", "text_encoder"):
        ref, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref), name
    assert loaded.tokenizer("a cat")["input_ids"] == pipe.tokenizer("a cat")["input_ids"]


def test_bf16_load_keeps_diffusers_fp32_modules(saved):
    _, path = saved
    loaded, _ = load_pipeline(path, dtype=torch.bfloat16)
    dtypes = {n: p.dtype for n, p in loaded.transformer.named_parameters()}
    assert dtypes["scale_shift_table"] == torch.float32
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert loaded.vae.dtype == torch.float32 and loaded.text_encoder.dtype == torch.bfloat16


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, path = saved
    model = tmp_path / "m"
    shutil.copytree(path, model)
    vae_file = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(vae_file))
    weights.pop(sorted(weights)[0])
    weights["surprise.weight"] = torch.zeros(1)
    save_file(weights, str(vae_file))
    inspect_model_dir(str(model))  # the JSON alone is fine
    with pytest.raises(ModelDirError, match="1 missing.*1 unexpected"):
        inspect_model_dir(str(model), check_weights=True)
    with pytest.raises(ModelDirError, match="unexpected weights"):
        load_pipeline(str(model), dtype=torch.float32)


def test_missing_shard_and_missing_component(saved, tmp_path):
    import shutil

    _, path = saved
    model = tmp_path / "m"
    shutil.copytree(path, model)
    index = json.loads((model / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    os.remove(model / "transformer" / sorted(set(index["weight_map"].values()))[-1])
    with pytest.raises(ModelDirError, match="missing weight shard"):
        inspect_model_dir(str(model), check_weights=True)
    mi = json.loads((model / "model_index.json").read_text())
    del mi["vae"]
    (model / "model_index.json").write_text(json.dumps(mi))
    with pytest.raises(ModelDirError, match="lists no 'vae'"):
        inspect_model_dir(str(model))


# ------------------------------------------------------------------------------ Qwen-Image


@pytest.mark.parametrize("name, edit", [("qwen-image", False), ("qwen-image-edit", True)])
def test_qwen_dummy_pipelines_have_the_published_shapes(name, edit):
    from diffusers import QwenImageEditPipeline

    pipe, notes = build_dummy_pipeline(name, device="meta", dtype=torch.bfloat16)
    assert isinstance(pipe, QwenImageEditPipeline) == edit
    assert _count(pipe.transformer) / 1e9 == pytest.approx(20.43, abs=0.01)
    assert _count(pipe.vae) / 1e9 == pytest.approx(0.127, abs=0.001)
    assert _count(pipe.text_encoder) / 1e9 < 1.0  # the 2 + 2 layer stand-in
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert any("Qwen2.5-VL-7B" in n for n in notes) and any("tokenizer" in n for n in notes)
    info = model_info(name)
    assert (info.size_multiple, info.edit, info.makes_images) == ((16, 16), edit, True)


def test_qwen_full_text_encoder_is_qwen25_vl_7b():
    pipe, notes = build_dummy_pipeline("qwen-image", device="meta", dtype=torch.bfloat16, full_text_encoder=True)
    assert _count(pipe.text_encoder) / 1e9 == pytest.approx(8.29, abs=0.01)
    assert not any("Qwen2.5-VL-7B" in n for n in notes)


def test_qwen_tokenizer_drops_exactly_the_system_prompt(tmp_path):
    from transformers import AutoTokenizer

    from ringsp.models.pipelines.qwen import template_corpus
    from ringsp.models.pipelines.qwen_text import qwen_tokenizer

    tok = qwen_tokenizer(template_corpus())
    assert tok.get_vocab() == qwen_tokenizer(template_corpus()).get_vocab()  # every rank builds the same
    # diffusers' prompt_template_encode_start_idx: 34 (Qwen-Image), 64 (Edit)
    for drop, template, kept in zip((34, 64), template_corpus(), ("", "<|vision_start|><|image_pad|><|vision_end|>")):
        ids = tok(template.format("Ein Hund läuft"))["input_ids"]
        assert tok.convert_ids_to_tokens(ids[drop - 3:drop]) == ["<|im_start|>", "user", "Ċ"]  # the cut
        assert tok.decode(ids[drop:]) == kept + "Ein Hund läuft<|im_end|>\n<|im_start|>assistant\n"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = template_corpus()[1].format("mach es blau 🙂")
    assert again(text)["input_ids"] == tok(text)["input_ids"]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_qwen_tokenizer_round_trips_any_text(text):
    import unicodedata

    tok = _qwen_tokenizer()
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)  # Qwen's tokenizer normalises to NFC
    assert all(0 <= i < len(tok) for i in ids)


@functools.lru_cache(maxsize=1)
def _qwen_tokenizer():
    from ringsp.models.pipelines.qwen import template_corpus
    from ringsp.models.pipelines.qwen_text import qwen_tokenizer

    return qwen_tokenizer(template_corpus())


def test_qwen_processor_expands_image_tokens(tmp_path):
    import PIL.Image

    from ringsp.models.pipelines.qwen import template_corpus
    from ringsp.models.pipelines.qwen_text import QwenImageTextProcessor, image_processor, qwen_tokenizer

    tok = qwen_tokenizer(template_corpus())
    proc = QwenImageTextProcessor(image_processor(), tok)
    text = template_corpus()[1].format("add a hat")
    out = proc(text=[text], images=PIL.Image.new("RGB", (96, 64), (10, 200, 30)), padding=True, return_tensors="pt")
    grid = out["image_grid_thw"][0].tolist()
    assert grid[0] == 1 and grid[1] * grid[2] == out["pixel_values"].shape[0]  # one row per 14 x 14 patch
    pads = (out["input_ids"][0] == tok.convert_tokens_to_ids("<|image_pad|>")).sum().item()
    assert pads == grid[1] * grid[2] // 4  # one token per 2 x 2 merged patches, as Qwen2VLProcessor makes
    proc.save_pretrained(tmp_path)
    again = QwenImageTextProcessor.from_pretrained(str(tmp_path))
    back = again(text=[text], images=PIL.Image.new("RGB", (96, 64), (10, 200, 30)), padding=True, return_tensors="pt")
    assert torch.equal(back["input_ids"], out["input_ids"]) and torch.equal(back["pixel_values"], out["pixel_values"])
    with pytest.raises(ValueError, match="image"):
        proc(text=["no image token here"], images=PIL.Image.new("RGB", (64, 64)), return_tensors="pt")


@pytest.fixture(scope="module")
def saved_qwen_edit(tmp_path_factory):
    pipe, _ = build_dummy_pipeline("tiny-qwen-image-edit", seed=4)
    path = tmp_path_factory.mktemp("tiny-qwen-edit")
    pipe.save_pretrained(str(path))
    return pipe, path


def _same_weights(a, b):
    for name in ("transformer", "vae", "text_encoder"):
        ref, got = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), name


def test_qwen_edit_dir_round_trip(saved_qwen_edit):
    from ringsp.models.pipelines.qwen_text import QwenImageTextProcessor

    pipe, path = saved_qwen_edit
    info = inspect_model_dir(str(path), check_weights=True)
    assert (info.family, info.edit, info.patch_size, info.vae_scale_spatial, info.num_heads) == \
        ("qwen", True, (1, 2, 2), 8, 3)
    assert info.defaults.image_area == 1024 * 1024  # a directory gets diffusers' defaults
    loaded, notes = load_pipeline(str(path), dtype=torch.float32)
    _same_weights(pipe, loaded)
    assert isinstance(loaded.processor, QwenImageTextProcessor) and notes == []


def test_qwen_edit_dir_naming_qwen2vlprocessor(saved_qwen_edit, tmp_path):
    """A published Qwen-Image-Edit directory names transformers' Qwen2VLProcessor; without
    torchvision its processor folder is read into QwenImageTextProcessor, and the run says so."""
    import shutil

    from transformers.utils import is_torchvision_available

    from ringsp.models.pipelines.qwen_text import QwenImageTextProcessor

    if is_torchvision_available():
        pytest.skip("with torchvision, transformers' own Qwen2VLProcessor loads")
    pipe, path = saved_qwen_edit
    model = tmp_path / "m"
    shutil.copytree(path, model)
    index = json.loads((model / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (model / "model_index.json").write_text(json.dumps(index))
    loaded, notes = load_pipeline(str(model), dtype=torch.float32)
    assert isinstance(loaded.processor, QwenImageTextProcessor) and any("torchvision" in n for n in notes)
    _same_weights(pipe, loaded)


def test_unsupported_pipeline_classes(saved_qwen_edit, tmp_path):
    import shutil

    _, path = saved_qwen_edit
    model = tmp_path / "m"
    shutil.copytree(path, model)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "QwenImageEditPlusPipeline"}))
    with pytest.raises(ModelDirError, match="'QwenImageEditPlusPipeline' pipeline; supported: WanPipeline"):
        inspect_model_dir(str(model))
    del index["processor"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelDirError, match="lists no 'processor'"):
        inspect_model_dir(str(model))


# ------------------------------------------------------------------------------ FLUX.1, LTX-Video


@pytest.mark.parametrize("name, billions, vae_millions, text_billions, multiple, heads", [
    ("flux.1-dev", 11.90, 83.8, 0.5, 16, 24),   # text: the 2-layer CLIP-L and T5 stand-ins at their real widths
    ("ltx-video", 1.92, 419.2, 0.5, 32, 32),
])
def test_flux_and_ltx_dummy_pipelines_have_the_published_shapes(name, billions, vae_millions, text_billions, multiple,
                                                                  heads):
    pipe, notes = build_dummy_pipeline(name, device="meta", dtype=torch.bfloat16)
    assert _count(pipe.transformer) / 1e9 == pytest.approx(billions, abs=0.01)
    assert _count(pipe.vae) / 1e6 == pytest.approx(vae_millions, abs=0.1)
    text = _count(pipe.text_encoder) + _count(getattr(pipe, "text_encoder_2", None) or torch.nn.Module())
    assert text / 1e9 < text_billions
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert any("T5-v1.1-XXL" in n for n in notes) and any("tokenizer" in n for n in notes)
    info = model_info(name)
    assert (info.size_multiple, info.num_heads) == ((multiple, multiple), heads)


def test_flux_and_ltx_full_text_encoders():
    pipe, notes = build_dummy_pipeline("flux.1-dev", device="meta", dtype=torch.bfloat16, full_text_encoder=True)
    assert _count(pipe.text_encoder) / 1e6 == pytest.approx(123.1, abs=0.1)   # CLIP ViT-L/14 text
    assert _count(pipe.text_encoder_2) / 1e9 == pytest.approx(4.76, abs=0.01)  # T5-v1.1-XXL encoder
    assert not any("T5-v1.1-XXL" in n for n in notes)
    info = model_info("ltx-video")
    assert (info.vae_scale_spatial, info.vae_scale_temporal, info.patch_size, info.min_steps) == (32, 8, (1, 1, 1), 2)


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-ltx-video"])
def test_flux_and_ltx_dir_round_trip(name, tmp_path):
    pipe, _ = build_dummy_pipeline(name, seed=4)
    pipe.save_pretrained(str(tmp_path))
    info = inspect_model_dir(str(tmp_path), check_weights=True)
    assert (info.family, info.num_heads, info.size_multiple) == \
        (model_info(name).family, 3, model_info(name).size_multiple)
    loaded, notes = load_pipeline(str(tmp_path), dtype=torch.float32)
    assert type(loaded) is type(pipe) and notes == []
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, part, None) is not None:
            ref, got = getattr(pipe, part).state_dict(), getattr(loaded, part).state_dict()
            assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), part
    assert loaded.tokenizer("a cat")["input_ids"] == pipe.tokenizer("a cat")["input_ids"]
