"""The stage-timed loop on LTX-Video equals diffusers' own LTXPipeline.__call__ (bit for bit without
CFG; with CFG to float round-off, since diffusers batches the two prompts into one forward);
under sequence parallelism (2, 3 and 4 gloo processes: Ulysses, ring, USP, CFG-parallel)
`ringsp generate` on a saved tiny-ltx-video directory equals the single-process run."""
import numpy as np
import pytest
import torch

from ringsp.cli.args import UsageError, parse_request
from ringsp.cli.generation import GenerationParams, generate
from ringsp.cli.timing import STAGES, StageTimer

from .sp_generation import check_sp_generate


@pytest.fixture(scope="module")
def pipe():
    from ringsp.models.pipelines import build_dummy_pipeline

    return build_dummy_pipeline("tiny-ltx-video", seed=3)[0]


def _params(**kw):
    base = dict(prompt="a red fox in snow", negative_prompt="blurry", height=96, width=160, num_frames=17, steps=3,
                seed=11, guidance_scale=3.0, max_sequence_length=16)
    return GenerationParams(**{**base, **kw})


def _reference(pipe, params):
    return pipe(params.prompt, negative_prompt=params.negative_prompt, height=params.height, width=params.width,
                num_frames=params.num_frames, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
                generator=torch.Generator().manual_seed(params.seed), output_type="np",
                max_sequence_length=params.max_sequence_length).frames[0]


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_matches_diffusers_call(pipe, guidance):
    params = _params(guidance_scale=guidance)
    timer = StageTimer()
    result = generate(pipe, params, timer=timer)
    ref = _reference(pipe, params)
    assert ref.std() > 0.01 and ref.shape == (17, 96, 160, 3)
    if guidance == 1.0:
        np.testing.assert_array_equal(result.frames.numpy(), ref)
    else:  # two forwards of batch 1 here, one of batch 2 in diffusers
        assert np.abs(result.frames.numpy() - ref).max() <= 1e-5
    assert result.latents.shape == (1, 45, 8) and result.latents.dtype == torch.float32
    assert list(timer.stages) == list(STAGES) and len(timer.steps) == params.steps


def test_negative_prompt_reaches_the_transformer(pipe):
    a = generate(pipe, _params(steps=2, negative_prompt="")).latents
    b = generate(pipe, _params(steps=2, negative_prompt="blurry and dark")).latents
    assert torch.isfinite(a).all() and not torch.equal(a, b)


@pytest.mark.parametrize("change, message", [
    ({"height": 80}, "multiples of 32"),
    ({"num_frames": 12}, "8k\\+1"),
    ({"steps": 1}, "at least 2 steps"),
    ({"image": "x.png"}, "takes none"),
])
def test_bad_inputs_raise(pipe, change, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, _params(**change))


ARGV = ["--device", "cpu", "--no-output", "--steps", "2", "--seed", "5", "--prompt", "a boat on a lake",
        "--negative-prompt", "fog", "--max-sequence-length", "11", "--height", "96", "--width", "160",
        "--num-frames", "17"]


@pytest.mark.parametrize("world, layouts", [(2, [(1, 2, 1), (1, 1, 2)]), (3, [(3, 1, 1)]), (4, [(2, 2, 1)])])
def test_sp_generate_equals_single_process(ltx_model_dir, world, layouts):
    check_sp_generate(["--model-path", ltx_model_dir] + ARGV, world, layouts, (17, 96, 160, 3), "video")


def test_dummy_model_name_and_directory_defaults(ltx_model_dir):
    req = parse_request(["--model", "tiny-ltx-video", "--device", "cpu", "--no-output"], env={})
    assert (req.height, req.width, req.num_frames, req.media, req.fps) == (96, 160, 17, "video", 25.0)
    for argv in (["--model-path", ltx_model_dir], ["--model", "ltx-video", "--dummy-weights"]):
        req = parse_request(argv + ["--device", "cpu", "--no-output"], env={})
        assert (req.height, req.width, req.num_frames, req.steps, req.guidance_scale) == \
            (512, 704, 161, 50, 3.0)  # LTXPipeline's defaults


@pytest.mark.parametrize("extra, message", [
    (["--num-frames", "13"], "8k\\+1 frames"),
    (["--height", "80"], "multiple of 32"),
    (["--steps", "1"], "at least 2 steps"),
])
def test_cli_refuses(extra, message):
    with pytest.raises(UsageError, match=message):
        parse_request(["--model", "tiny-ltx-video", "--device", "cpu", "--no-output"] + extra, env={})


def test_timestep_conditioned_vae_is_refused(ltx_model_dir, tmp_path):
    import json
    import shutil

    model = tmp_path / "m"
    shutil.copytree(ltx_model_dir, model)
    config = json.loads((model / "vae" / "config.json").read_text())
    (model / "vae" / "config.json").write_text(json.dumps({**config, "timestep_conditioning": True}))
    with pytest.raises(UsageError, match="timestep_conditioning"):
        parse_request(["--model-path", str(model), "--device", "cpu", "--no-output"], env={})
