"""The stage-timed loop on FLUX.1 equals diffusers' own FluxPipeline.__call__ bit for bit; under
sequence parallelism (2, 3 and 4 gloo processes: Ulysses, ring, USP) `ringsp generate` on a
saved tiny-flux directory equals the single-process run; the CLI refuses what FLUX.1 does not do."""
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

    return build_dummy_pipeline("tiny-flux", seed=3)[0]


def _params(**kw):
    base = dict(prompt="a red fox in snow", negative_prompt="", height=48, width=80, num_frames=1, steps=3, seed=11,
                guidance_scale=3.5, max_sequence_length=24)
    return GenerationParams(**{**base, **kw})


def test_matches_diffusers_call(pipe):
    params = _params()
    timer = StageTimer()
    result = generate(pipe, params, timer=timer)
    ref = pipe(params.prompt, height=params.height, width=params.width, num_inference_steps=params.steps,
               guidance_scale=params.guidance_scale, generator=torch.Generator().manual_seed(params.seed),
               output_type="np", max_sequence_length=params.max_sequence_length).images
    assert ref.std() > 0.01  # a real picture of noise, not a constant
    np.testing.assert_array_equal(result.frames.numpy(), ref)
    assert result.latents.shape == (1, 15, 16) and result.latents.dtype == torch.float32  # packed 2 x 2
    assert list(timer.stages) == list(STAGES) and len(timer.steps) == params.steps
    # the distilled guidance reaches the transformer, and no negative pass runs
    assert not torch.equal(generate(pipe, _params(guidance_scale=1.5)).latents, result.latents)


@pytest.mark.parametrize("change, message", [
    ({"height": 40}, "multiples of 16"),
    ({"num_frames": 5}, "one image"),
    ({"max_sequence_length": 600}, "512"),
])
def test_bad_inputs_raise(pipe, change, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, _params(**change))


ARGV = ["--device", "cpu", "--no-output", "--steps", "2", "--seed", "5", "--prompt", "a boat on a lake",
        "--max-sequence-length", "13", "--height", "48", "--width", "80"]  # 13 text tokens: uneven on 2, 3, 4


@pytest.mark.parametrize("world, layouts", [(2, [(2, 1, 1)]), (3, [(1, 3, 1)]), (4, [(2, 2, 1)])])
def test_sp_generate_equals_single_process(flux_model_dir, world, layouts):
    check_sp_generate(["--model-path", flux_model_dir] + ARGV, world, layouts, (1, 48, 80, 3), "image")


def test_dummy_model_name_and_directory_agree(flux_model_dir):
    req = parse_request(["--model", "tiny-flux", "--device", "cpu", "--no-output"], env={})
    assert (req.height, req.width, req.num_frames, req.guidance_scale, req.media) == (48, 80, 1, 3.5, "image")
    for argv in (["--model-path", flux_model_dir], ["--model", "flux.1-dev", "--dummy-weights"]):
        req = parse_request(argv + ["--device", "cpu", "--no-output"], env={})
        assert (req.height, req.width, req.steps, req.guidance_scale, req.max_sequence_length) == \
            (1024, 1024, 28, 3.5, 512)  # FluxPipeline's defaults


@pytest.mark.parametrize("extra, message", [
    (["--cfg-parallel", "--num-gpus", "2"], "--cfg-parallel: tiny-flux runs no negative pass"),
    (["--negative-prompt", "fog"], "--negative-prompt: tiny-flux runs no negative pass"),
    (["--max-sequence-length", "513"], "at most 512 text tokens"),
    (["--height", "40"], "multiple of 16"),
    (["--num-frames", "5"], "makes one image"),
])
def test_cli_refuses(extra, message):
    with pytest.raises(UsageError, match=message):
        parse_request(["--model", "tiny-flux", "--device", "cpu", "--no-output"] + extra, env={})
