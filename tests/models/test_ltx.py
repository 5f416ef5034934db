"""The LTX-Video adapter: a tiny LTXVideoTransformer3DModel under SP equals its single-process forward.

On 2, 3 and 4 gloo ranks (Ulysses, ring, USP), 3 heads (padded by Ulysses 2 and 4), token
counts the world does not divide, fewer tokens than ranks, text masks (prefix, holes) for
the cross-attention, per-token timesteps, rotary from video coordinates.
"""
import types

import pytest
import torch

pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from . import ltx_cases as lc  # noqa: E402
from .sp_check import assert_matches, compare, errors_under_sp, hook_counts, offline_ctx  # noqa: E402


def _sp_vs_single(u, r):
    ctx = lc.context(u, r)
    results = []
    for grid, batch, text_len, mask, variant in lc.CASES:
        model = lc.tiny_model()
        kwargs = lc.tiny_inputs(model, grid, batch, text_len, mask, variant)
        results.append(compare(ctx, model, kwargs, lc.forward, model.transformer_blocks[0]))
    return results


@pytest.mark.parametrize("u,r", [(2, 1), (1, 3), (3, 1), (2, 2)])
def test_sp_forward_matches_single_process(u, r):
    per_rank = run_distributed(u * r, _sp_vs_single, u, r, timeout=300)
    assert_matches(per_rank, lc.CASES, [g[0] * g[1] * g[2] for g, *_ in lc.CASES])


def test_the_text_mask_and_per_token_timesteps_change_the_output():
    """The cases above would pass vacuously if the mask or the per-token timesteps did not matter."""
    model = lc.tiny_model()
    kwargs = lc.tiny_inputs(model, (2, 3, 5), 2, 9, "holes", "per_token")
    out = lc.forward(model, kwargs)[0]
    unmasked = lc.forward(model, dict(kwargs, encoder_attention_mask=None))[0]
    one_step = lc.forward(model, dict(kwargs, timestep=kwargs["timestep"][:, 0]))[0]
    assert lc.rel_error(out, unmasked) > 100 * lc.TOL and lc.rel_error(out, one_step) > 100 * lc.TOL


def _errors_on_every_rank():
    import torch.distributed as dist

    ctx = lc.context(2, 1)
    rank = dist.get_rank()
    model = lc.tiny_model()
    good = lc.tiny_inputs(model, (2, 3, 5), 1, 6, "prefix", "plain")
    latents = good["hidden_states"]
    bad_calls = {
        "ranks_disagree": dict(good, hidden_states=latents[:, : 30 - 15 * rank], num_frames=2 - rank),
        "grid_vs_tokens": dict(good, width=4),
        "per_token_len": dict(good, timestep=torch.zeros(1, 7)),
        "mask_shape": dict(good, encoder_attention_mask=torch.ones(1, 4)),
    }
    return errors_under_sp(ctx, model, lc.forward, good, bad_calls)


def test_bad_inputs_fail_on_every_rank():
    per_rank = run_distributed(2, _errors_on_every_rank)
    for out in per_rank:
        for key in ("ranks_disagree", "grid_vs_tokens", "per_token_len", "mask_shape"):
            assert out[key] is not None and out[key][0] == "ValueError", (key, out[key])
        assert out["usable_after"] == (1, 30, 8)
    first = per_rank[0]
    assert "hidden_states" in first["ranks_disagree"][1] and "latent grid" in first["grid_vs_tokens"][1]
    assert "per-token" in first["per_token_len"][1] and "encoder_attention_mask" in first["mask_shape"][1]


def test_enable_dispatches_to_the_ltx_adapter_and_leaves_cross_attention():
    from ringsp.models.ltx import LTXSPAdapter

    model = lc.tiny_model()
    hooks = hook_counts(model)
    pipe = types.SimpleNamespace(transformer=model, vae=None)
    ringsp.enable_sequence_parallel(pipe, offline_ctx())
    assert isinstance(model._ringsp_sp_adapter, LTXSPAdapter)
    kinds = {name.split(".")[-2]: type(p).__name__ for name, p in model.attn_processors.items()}
    assert kinds == {"attn1": "SPAttnProcessor", "attn2": "LTXVideoAttnProcessor"}
    ringsp.disable_sequence_parallel(pipe)
    assert hook_counts(model) == hooks
