"""The Wan adapter: a tiny WanTransformer3DModel under SP equals its single-process forward.

Each distributed test runs many cases in one call on the shared gloo pools (2 and 3 ranks).
Tiny models have 3 heads (not divisible by Ulysses 2), token counts not divisible by the
world, fewer tokens than ranks, per-token timesteps (Wan2.2 TI2V), I2V image tokens and
fused projections. Every rank builds the same model and inputs (same seed), runs diffusers'
own forward, then the SP forward, then the forward again after disabling SP.
"""
import math

import pytest
import torch

pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from ringsp.models import is_sequence_parallel_enabled  # noqa: E402
from ringsp.models.wan import WanSPAdapter, wan_token_count  # noqa: E402
from ringsp.parallel import ParallelConfig, ParallelContext  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from .wan_cases import (  # noqa: E402
    CASES, TOL, context, forward, hook_counts, rel_error, tiny_inputs, tiny_model, token_count,
)


def _positional(kwargs):
    """The same call with hidden_states, timestep, encoder_hidden_states passed positionally."""
    rest = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "timestep", "encoder_hidden_states")}
    return (kwargs["hidden_states"], kwargs["timestep"], kwargs["encoder_hidden_states"]), rest


def _sp_vs_single(u, r):
    """Per case: (rel. error by keyword, rel. error positional, tokens block 0 saw, S, restored)."""
    ctx = context(u, r)
    results = []
    for name, latent, batch, variant in CASES:
        model = tiny_model(name, variant)
        kwargs = tiny_inputs(model, latent, batch, variant)
        ref = forward(model, kwargs)
        processors = [b.attn1.processor for b in model.blocks]
        hooks = hook_counts(model)
        seen = []
        spy = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
        ringsp.enable_sequence_parallel(model, ctx)
        out = forward(model, kwargs)
        args, rest = _positional(kwargs)
        with torch.no_grad():
            out_positional = model(*args, **rest)[0]
        ringsp.disable_sequence_parallel(model)
        spy.remove()
        again = forward(model, kwargs)
        restored = (torch.equal(again, ref) and hooks == hook_counts(model)
                    and all(b.attn1.processor is p for b, p in zip(model.blocks, processors)))
        assert out.shape == ref.shape == out_positional.shape
        results.append((rel_error(out, ref), rel_error(out_positional, ref), seen[0],
                        token_count(model, latent), restored))
    return results


@pytest.mark.parametrize("u,r", [(2, 1), (1, 2), (3, 1), (1, 3)])
def test_sp_forward_matches_single_process(u, r):
    world = u * r
    for rank_results in run_distributed(world, _sp_vs_single, u, r, timeout=300):
        for case, (rel, rel_positional, seen, seq, restored) in zip(CASES, rank_results):
            assert rel <= TOL and rel_positional <= TOL, (case, rel, rel_positional)
            assert seen == math.ceil(seq / world), (case, seen)  # the blocks really ran on a shard
            assert restored, case


def _cfg_halves():
    """cfg_degree=2 on 2 ranks: each rank is its own SP world and runs its own inputs."""
    ctx = context(1, 1, cfg=2)
    model = tiny_model("tiny-t2v")
    kwargs = tiny_inputs(model, (3, 6, 10), 1, "plain", seed=10 + ctx.rank)  # cond / uncond differ
    ref = forward(model, kwargs)
    ringsp.enable_sequence_parallel(model, ctx)
    out = forward(model, kwargs)
    ringsp.disable_sequence_parallel(model)
    return rel_error(out, ref)


def test_sp_uses_the_sp_group_inside_a_cfg_half():
    assert all(rel <= TOL for rel in run_distributed(2, _cfg_halves))


def _errors_on_every_rank():
    """Bad or mismatched inputs: every rank raises (collected per rank as (type, message))."""
    import torch.distributed as dist
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    ctx = context(2, 1)
    rank = dist.get_rank()
    model = tiny_model("tiny-ti2v")
    good = tiny_inputs(model, (3, 6, 10), 1, "plain")
    latents = good["hidden_states"]
    bad_calls = {
        "ranks_disagree": dict(good, hidden_states=latents[..., : 10 - 2 * rank]),
        "not_5d": dict(good, hidden_states=latents[:, :, 0]),
        "one_rank_not_5d": dict(good, hidden_states=latents[:, :, 0] if rank else latents),
        "per_token_len": dict(good, timestep=torch.zeros(1, 7)),
        "no_whole_patch": dict(good, hidden_states=latents[..., :1, :1]),
    }
    ringsp.enable_sequence_parallel(model, ctx)
    out = {}
    for key, kwargs in bad_calls.items():
        out[key] = _error_of(forward, model, kwargs)
    out["twice"] = _error_of(ringsp.enable_sequence_parallel, model, ctx)
    # A processor swapped behind the adapter's back (on one rank only) must not run silently.
    if rank == 0:
        model.blocks[1].attn1.set_processor(WanAttnProcessor())
    out["replaced_processor"] = _error_of(forward, model, good)
    ringsp.disable_sequence_parallel(model)
    out["usable_after"] = tuple(forward(model, good).shape)
    return out


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return None


def test_bad_inputs_fail_on_every_rank():
    per_rank = run_distributed(2, _errors_on_every_rank)
    for out in per_rank:
        for key in ("ranks_disagree", "not_5d", "one_rank_not_5d", "per_token_len", "no_whole_patch"):
            assert out[key] is not None and out[key][0] == "ValueError", (key, out[key])
        assert out["twice"][0] == "ValueError" and "already enabled" in out["twice"][1]
        assert out["replaced_processor"] is not None, "a replaced processor ran silently"
        assert out["usable_after"] == (1, 6, 3, 6, 10)
    assert "hidden_states" in per_rank[0]["not_5d"][1]
    assert "per-token" in per_rank[0]["per_token_len"][1]
    assert "replaced" in per_rank[0]["replaced_processor"][1]


# ------------------------------------------------------------------ single process, no group


def _offline_ctx():
    cpu = torch.device("cpu")
    return ParallelContext(ParallelConfig(), None, 0, 1, cpu, None, 0, None, 0, None, 0, None, 0)


def test_enable_rejects_a_non_context():
    model = tiny_model("tiny-t2v")
    with pytest.raises(TypeError, match="ctx"):
        ringsp.enable_sequence_parallel(model, object())
    assert not is_sequence_parallel_enabled(model)
    assert all(type(b.attn1.processor).__name__ == "WanAttnProcessor" for b in model.blocks)


def test_enable_rejects_diffusers_parallelism():
    model = tiny_model("tiny-t2v")
    model._parallel_config = object()  # what diffusers' enable_parallelism leaves behind
    with pytest.raises(ValueError, match="diffusers"):
        WanSPAdapter(model, _offline_ctx())
    assert all(type(b.attn1.processor).__name__ == "WanAttnProcessor" for b in model.blocks)
    assert hook_counts(model) == hook_counts(tiny_model("tiny-t2v"))


def test_token_count():
    assert wan_token_count((1, 16, 21, 60, 104)) == 32760
    assert wan_token_count((21, 90, 160)) == 75600
    assert wan_token_count((5, 11, 15)) == 5 * 5 * 7  # diffusers floors partial patches
