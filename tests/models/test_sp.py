"""enable_sequence_parallel / disable_sequence_parallel: what they accept and what they touch."""
import types

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from ringsp.models import is_sequence_parallel_enabled  # noqa: E402
from ringsp.parallel import ParallelConfig, ParallelContext  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from .wan_cases import TOL, context, forward, rel_error, tiny_inputs, tiny_model  # noqa: E402


def _offline_ctx():
    # Enabling runs no collective, so a context of one rank needs no process group here.
    cpu = torch.device("cpu")
    return ParallelContext(ParallelConfig(), None, 0, 1, cpu, None, 0, None, 0, None, 0, None, 0)


@pytest.mark.parametrize("target", [torch.nn.Linear(2, 2), types.SimpleNamespace(vae=None),
                                    types.SimpleNamespace(transformer=torch.nn.Linear(2, 2)), 3, None])
def test_unsupported_targets_are_refused(target):
    with pytest.raises(TypeError, match="transformer_or_pipeline"):
        ringsp.enable_sequence_parallel(target, _offline_ctx())
    with pytest.raises(TypeError, match="transformer_or_pipeline"):
        ringsp.disable_sequence_parallel(target)


def test_pipeline_enable_is_all_or_nothing():
    good = tiny_model("tiny-t2v")
    pipe = types.SimpleNamespace(transformer=good, transformer_2=torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="no sequence-parallel adapter"):
        ringsp.enable_sequence_parallel(pipe, _offline_ctx())
    assert not is_sequence_parallel_enabled(good)


def test_enable_twice_is_refused_and_disable_is_idempotent():
    model = tiny_model("tiny-t2v")
    originals = [b.attn1.processor for b in model.blocks]
    assert ringsp.enable_sequence_parallel(model, _offline_ctx()) is model
    assert is_sequence_parallel_enabled(model)
    with pytest.raises(ValueError, match="already enabled"):
        ringsp.enable_sequence_parallel(model, _offline_ctx())
    assert ringsp.disable_sequence_parallel(model) is model
    ringsp.disable_sequence_parallel(model)
    assert not is_sequence_parallel_enabled(model)
    assert all(b.attn1.processor is p for b, p in zip(model.blocks, originals))


def test_a_pipeline_holding_one_module_twice_enables_it_once():
    model = tiny_model("tiny-t2v")
    pipe = types.SimpleNamespace(transformer=model, transformer_2=model)
    ringsp.enable_sequence_parallel(pipe, _offline_ctx())
    assert is_sequence_parallel_enabled(model)
    ringsp.disable_sequence_parallel(pipe)
    assert not is_sequence_parallel_enabled(model)
    assert all(type(b.attn1.processor).__name__ == "WanAttnProcessor" for b in model.blocks)


def _pipeline_round_trip():
    """A pipeline-like object with transformer and transformer_2 (Wan2.2 A14B), 2 ranks."""
    ctx = context(2, 1)
    pipe = types.SimpleNamespace(transformer=tiny_model("tiny-t2v", seed=0),
                                 transformer_2=tiny_model("tiny-t2v", seed=5), vae=None)
    experts = (pipe.transformer, pipe.transformer_2)
    kwargs = tiny_inputs(pipe.transformer, (3, 6, 10), 1, "plain")
    refs = [forward(t, kwargs) for t in experts]
    ringsp.enable_sequence_parallel(pipe, ctx)
    enabled = [is_sequence_parallel_enabled(t) for t in experts]
    outs = [forward(t, kwargs) for t in experts]
    ringsp.disable_sequence_parallel(pipe)
    disabled = [not is_sequence_parallel_enabled(t) for t in experts]
    rels = [rel_error(o, r) for o, r in zip(outs, refs)]
    return enabled, disabled, rels, float((refs[0] - refs[1]).abs().max())


def test_pipeline_enables_both_transformers():
    for enabled, disabled, rels, experts_differ in run_distributed(2, _pipeline_round_trip):
        assert all(enabled) and all(disabled)
        assert max(rels) <= TOL
        assert experts_differ > 0.1  # two distinct experts, each checked against itself
