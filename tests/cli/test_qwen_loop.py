"""The stage-timed loop on Qwen-Image pipelines equals diffusers' own QwenImagePipeline.__call__
and QwenImageEditPipeline.__call__, bit for bit (true CFG on and off, the edit input image);
bad inputs raise clear errors."""
import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsp.cli.generation import GenerationParams, generate
from ringsp.cli.qwen_loop import load_image, reference_size
from ringsp.cli.timing import STAGES, StageTimer

from .conftest import QWEN_IMAGE_AREA, QWEN_SIZE, build_qwen_test_pipeline, write_test_image


@pytest.fixture(scope="module")
def pipe():
    return build_qwen_test_pipeline(edit=False)


@pytest.fixture(scope="module")
def edit_pipe():
    return build_qwen_test_pipeline(edit=True)


def _params(**kw):
    base = dict(prompt="a red fox in snow", negative_prompt="blurry", num_frames=1, steps=3, seed=11,
                max_sequence_length=64, **QWEN_SIZE)
    return GenerationParams(**{**base, **kw})


def _reference(pipe, params, **kw):
    cfg = params.guidance_scale > 1
    out = pipe(prompt=params.prompt, negative_prompt=params.negative_prompt if cfg else None,
               true_cfg_scale=params.guidance_scale, height=params.height, width=params.width,
               num_inference_steps=params.steps, generator=torch.Generator().manual_seed(params.seed),
               output_type="np", max_sequence_length=params.max_sequence_length, **kw)
    return out.images


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_matches_diffusers_call(pipe, guidance):
    params = _params(guidance_scale=guidance)
    timer = StageTimer()
    result = generate(pipe, params, timer=timer)
    ref = _reference(pipe, params)
    assert ref.std() > 0.01  # a real picture of noise, not a constant
    np.testing.assert_array_equal(result.frames.numpy(), ref)
    assert result.frames.shape == (1, 48, 80, 3)
    assert result.latents.shape == (1, 15, 16) and result.latents.dtype == torch.float32  # packed 2 x 2
    assert list(timer.stages) == list(STAGES) and len(timer.steps) == params.steps


def test_edit_matches_diffusers_call(edit_pipe, tmp_path, monkeypatch):
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module

    # diffusers resizes the input to about 1024 x 1024 pixels (a literal in __call__); a smaller
    # area keeps the test fast, for both sides alike.
    real = edit_module.calculate_dimensions
    monkeypatch.setattr(edit_module, "calculate_dimensions", lambda area, ratio: real(QWEN_IMAGE_AREA, ratio))
    path = write_test_image(tmp_path / "in.png")
    params = _params(prompt="add a red hat", negative_prompt="", height=None, width=None, guidance_scale=4.0,
                     image=path, image_area=QWEN_IMAGE_AREA)
    result = generate(edit_pipe, params)
    ref = _reference(edit_pipe, params, image=PIL.Image.open(path).convert("RGB"))
    assert ref.std() > 0.01
    assert result.frames.shape == (1, 32, 64, 3)  # the resized input's size: 72 x 40 at about 48 x 48 pixels
    np.testing.assert_array_equal(result.frames.numpy(), ref)
    # the input image matters: another one changes the result
    other = _params(**{**params.__dict__, "image": write_test_image(tmp_path / "other.png", seed=1)})
    moved = generate(edit_pipe, other).latents
    assert torch.isfinite(moved).all() and not torch.equal(moved, result.latents)


def test_negative_prompt_reaches_the_transformer(pipe):
    # a negative prompt of another length: its embeddings differ, so CFG changes the result
    a = generate(pipe, _params(guidance_scale=3.0, steps=2, negative_prompt="")).latents
    b = generate(pipe, _params(guidance_scale=3.0, steps=2, negative_prompt="blurry and dark")).latents
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert not torch.equal(a, b)


@pytest.mark.parametrize("change, message", [
    ({"height": 40}, "multiples of 16"),
    ({"width": 0}, "multiples of 16"),
    ({"num_frames": 5}, "one image"),
    ({"image": "x.png"}, "takes none"),
    ({"max_sequence_length": 2000}, "1024"),
    ({"steps": 1}, "at least 2 steps"),
])
def test_bad_inputs_raise(pipe, change, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, _params(guidance_scale=2.0, **change))


def test_edit_needs_a_readable_image(edit_pipe, tmp_path):
    with pytest.raises(ValueError, match="image is required"):
        generate(edit_pipe, _params(height=None, width=None))
    with pytest.raises(ValueError, match="no such file"):
        generate(edit_pipe, _params(image=str(tmp_path / "missing.png")))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read it as an image"):
        load_image(str(bad))
    with pytest.raises(TypeError, match="path or a PIL image"):
        load_image(3)


@pytest.mark.parametrize("size, area, expected", [
    ((72, 40), 48 * 48, (64, 32)),
    ((1000, 1000), 1024 * 1024, (1024, 1024)),
    ((1920, 1080), 1024 * 1024, (1376, 768)),  # diffusers' rounding to multiples of 32
])
def test_reference_size(size, area, expected):
    assert reference_size(size, area) == expected


def test_reference_size_refuses_degenerate_sizes():
    with pytest.raises(ValueError, match="under 32 pixels"):
        reference_size((4000, 10), 64 * 64)
    with pytest.raises(ValueError, match="positive"):
        reference_size((10, 10), 0)


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 8000), h=st.integers(1, 8000), area=st.integers(32 * 32, 2048 * 2048))
def test_reference_size_properties(w, h, area):
    try:
        width, height = reference_size((w, h), area)
    except ValueError as exc:
        assert "under 32 pixels" in str(exc)
        return
    assert width % 32 == 0 and height % 32 == 0 and width >= 32 and height >= 32
    # rounding moves each side by at most 16 pixels from the exact size of that area and ratio
    exact_w = (area * w / h) ** 0.5
    assert abs(width - exact_w) <= 16 + 1e-6 and abs(height - exact_w * h / w) <= 16 + 1e-6
