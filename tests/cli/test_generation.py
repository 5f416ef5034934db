"""The stage-timed loop equals diffusers' own WanPipeline.__call__, bit for bit, on the
variants it must cover: CFG on and off, Wan2.2 A14B's two experts, TI2V per-token timesteps."""
import copy

import numpy as np
import pytest
import torch

from ringsp.cli.generation import GenerationParams, generate
from ringsp.cli.timing import STAGES, StageTimer

from .conftest import SIZE, build_test_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_test_pipeline()


def _reference(pipe, params):
    out = pipe(params.prompt, negative_prompt=params.negative_prompt, height=params.height, width=params.width,
               num_frames=params.num_frames, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
               generator=torch.Generator().manual_seed(params.seed), output_type="np",
               max_sequence_length=params.max_sequence_length)
    return out.frames[0]


def _params(**kw):
    base = dict(prompt="a red fox in snow", negative_prompt="blurry", steps=3, seed=11, max_sequence_length=24, **SIZE)
    return GenerationParams(**{**base, **kw})


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_matches_diffusers_call(pipe, guidance):
    params = _params(guidance_scale=guidance)
    timer = StageTimer()
    result = generate(pipe, params, timer=timer)
    ref = _reference(pipe, params)
    assert ref.std() > 0.01  # a real picture of noise, not a constant
    np.testing.assert_array_equal(result.frames.numpy(), ref)
    assert result.latents.shape == (1, 4, 3, 6, 10) and result.latents.dtype == torch.float32
    assert list(timer.stages) == list(STAGES) and len(timer.steps) == params.steps


def test_two_experts_and_per_token_timesteps_match_diffusers(pipe):
    # Wan2.2 A14B: transformer_2 below the boundary; TI2V-5B: one timestep per token.
    torch.manual_seed(3)
    second = copy.deepcopy(pipe.transformer)
    for p in second.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    two = type(pipe)(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                     scheduler=pipe.scheduler, transformer=pipe.transformer, transformer_2=second,
                     boundary_ratio=0.6, expand_timesteps=True)
    params = _params(guidance_scale=3.0, steps=4)
    np.testing.assert_array_equal(generate(two, params).frames.numpy(), _reference(two, params))
    # and the second expert really ran: without it the result differs
    one = type(pipe)(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae,
                     scheduler=pipe.scheduler, transformer=pipe.transformer, expand_timesteps=True)
    assert not torch.equal(generate(one, params).latents, generate(two, params).latents)


@pytest.mark.parametrize("change, message", [
    ({"height": 40}, "divisible by 16"),
    ({"num_frames": 6}, "4k\\+1"),
])
def test_bad_sizes_raise(pipe, change, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, _params(guidance_scale=2.0, **change))


def test_seed_changes_the_result(pipe):
    a = generate(pipe, _params(guidance_scale=2.0, steps=1, seed=1)).latents
    b = generate(pipe, _params(guidance_scale=2.0, steps=1, seed=2)).latents
    assert not torch.equal(a, b)
