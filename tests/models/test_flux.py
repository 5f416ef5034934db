"""The Flux adapter: a tiny FluxTransformer2DModel under SP equals its single-process forward.

On 2, 3 and 4 gloo ranks (Ulysses, ring, USP), 3 heads (padded by Ulysses 2 and 4), image
token counts the world does not divide, fewer tokens than ranks, odd text lengths, fused
projections, ControlNet residuals. The output and the text stream leaving the last
dual-stream and the last single-stream block are compared with diffusers' own forward, and
the text streams must be equal on every rank.
"""
import types

import pytest
import torch

pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from . import flux_cases as fc  # noqa: E402
from .sp_check import assert_matches, compare, errors_under_sp, hook_counts, offline_ctx  # noqa: E402


def _sp_vs_single(u, r):
    ctx = fc.context(u, r)
    results = []
    for grid, batch, text_len, variant in fc.CASES:
        model = fc.tiny_model(variant)
        kwargs = fc.tiny_inputs(model, grid, batch, text_len, variant)
        results.append(compare(ctx, model, kwargs, fc.forward_with_text, model.transformer_blocks[0]))
    return results


@pytest.mark.parametrize("u,r", [(2, 1), (1, 3), (3, 1), (2, 2)])
def test_sp_forward_matches_single_process(u, r):
    per_rank = run_distributed(u * r, _sp_vs_single, u, r, timeout=300)
    assert_matches(per_rank, fc.CASES, [g[0] * g[1] for g, *_ in fc.CASES])


def _errors_on_every_rank():
    import torch.distributed as dist

    ctx = fc.context(2, 1)
    rank = dist.get_rank()
    model = fc.tiny_model()
    good = fc.tiny_inputs(model, (3, 5), 1, 6, "plain")
    latents, ids = good["hidden_states"], good["img_ids"]
    bad_calls = {
        "ranks_disagree": dict(good, hidden_states=latents[:, : 15 - 5 * rank], img_ids=ids[: 15 - 5 * rank]),
        "batched_ids": dict(good, img_ids=ids[None]),
        "ids_vs_tokens": dict(good, img_ids=ids[:12]),
        "txt_ids": dict(good, txt_ids=torch.zeros(5, 3)),
        "ip_adapter": dict(good, joint_attention_kwargs={"ip_adapter_image_embeds": [torch.zeros(1, 4)]}),
    }
    return errors_under_sp(ctx, model, fc.forward_with_text, good, bad_calls)


def test_bad_inputs_fail_on_every_rank():
    per_rank = run_distributed(2, _errors_on_every_rank)
    for out in per_rank:
        for key in ("ranks_disagree", "batched_ids", "ids_vs_tokens", "txt_ids", "ip_adapter"):
            assert out[key] is not None and out[key][0] == "ValueError", (key, out[key])
        assert out["usable_after"] == (1, 15, 16)
    first = per_rank[0]
    assert "hidden_states" in first["ranks_disagree"][1]
    assert "img_ids" in first["batched_ids"][1] and "img_ids" in first["ids_vs_tokens"][1]
    assert "txt_ids" in first["txt_ids"][1] and "IP-Adapter" in first["ip_adapter"][1]


def test_enable_dispatches_to_the_flux_adapter_and_disable_restores():
    from ringsp.models.flux import FluxSPAdapter

    model = fc.tiny_model()
    hooks = hook_counts(model)
    pipe = types.SimpleNamespace(transformer=model, vae=None)
    ringsp.enable_sequence_parallel(pipe, offline_ctx())
    assert isinstance(model._ringsp_sp_adapter, FluxSPAdapter)
    kinds = {type(p).__name__ for p in model.attn_processors.values()}
    assert kinds == {"SPAttnProcessor"}  # dual- and single-stream blocks alike
    ringsp.disable_sequence_parallel(pipe)
    assert hook_counts(model) == hooks
    assert {type(p).__name__ for p in model.attn_processors.values()} == {"FluxAttnProcessor"}
