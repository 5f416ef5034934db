"""The Qwen-Image adapter: a tiny QwenImageTransformer2DModel under SP equals its single-process forward.

Each distributed test runs every case of qwen_cases.CASES in one call on the shared gloo pools
(2 and 3 ranks): 3 heads (not divisible by Ulysses 2), image token counts the world does not
divide, fewer tokens than ranks, padded text masks (prefix, different per row, with holes),
Edit inputs (target + reference image), Edit-2511's zero_cond_t, Layered, ControlNet residuals.
Both the output and the text stream leaving the last block are compared with diffusers' own
forward; then SP is disabled and the model must be exactly as before.
"""
import math
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from ringsp.models import configs, is_sequence_parallel_enabled  # noqa: E402
from ringsp.models.qwen import QwenSPAdapter, image_grids, qwen_token_count, text_plan  # noqa: E402
from ringsp.parallel import ParallelConfig, ParallelContext  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from .qwen_cases import (  # noqa: E402
    CASES, TOL, context, forward_with_text, hook_counts, rel_error, text_mask, tiny_inputs, tiny_model, token_count,
)


def _positional(kwargs):
    """The same call with hidden_states ... img_shapes passed positionally."""
    names = ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep", "img_shapes")
    return tuple(kwargs[n] for n in names), {k: v for k, v in kwargs.items() if k not in names}


def _sp_vs_single(u, r):
    """Per case: (rel. error of output, of the text stream, of the positional call, tokens
    block 0 saw, text stream equal on every rank (checked by the caller), model restored)."""
    ctx = context(u, r)
    results = []
    for name, grids, batch, text_len, mask, variant in CASES:
        model = tiny_model(name)
        kwargs = tiny_inputs(model, grids, batch, text_len, mask, variant)
        ref, ref_text = forward_with_text(model, kwargs)
        processors = [b.attn.processor for b in model.transformer_blocks]
        hooks = hook_counts(model)
        seen = []
        spy = model.transformer_blocks[0].register_forward_pre_hook(
            lambda m, args, kw: seen.append(kw["hidden_states"].shape[1]), with_kwargs=True)
        ringsp.enable_sequence_parallel(model, ctx)
        out, text = forward_with_text(model, kwargs)
        args, rest = _positional(kwargs)
        with torch.no_grad():
            out_positional = model(*args, **rest)[0]
        ringsp.disable_sequence_parallel(model)
        spy.remove()
        again, _ = forward_with_text(model, kwargs)
        restored = (torch.equal(again, ref) and hooks == hook_counts(model)
                    and all(b.attn.processor is p for b, p in zip(model.transformer_blocks, processors)))
        assert out.shape == ref.shape == out_positional.shape
        results.append((rel_error(out, ref), rel_error(text, ref_text), rel_error(out_positional, ref),
                        seen[0], text, restored))
    return results


@pytest.mark.parametrize("u,r", [(2, 1), (1, 2), (3, 1), (1, 3)])
def test_sp_forward_matches_single_process(u, r):
    world = u * r
    per_rank = run_distributed(world, _sp_vs_single, u, r, timeout=300)
    for rank_results in per_rank:
        for case, (rel, rel_text, rel_positional, seen, _, restored) in zip(CASES, rank_results):
            assert max(rel, rel_text, rel_positional) <= TOL, (case, rel, rel_text, rel_positional)
            assert seen == math.ceil(token_count(case[1]) / world), (case, seen)  # blocks ran on a shard
            assert restored, case
    for i, case in enumerate(CASES):  # the replicated text stream is the same on every rank
        assert all(torch.equal(rank[i][4], per_rank[0][i][4]) for rank in per_rank), case


def _cfg_halves():
    """cfg_degree=2 on 2 ranks: each rank is its own SP world and runs its own inputs."""
    ctx = context(1, 1, cfg=2)
    model = tiny_model("tiny-qwen")
    kwargs = tiny_inputs(model, [(1, 3, 5)], 1, 6, "prefix", "plain", seed=10 + ctx.rank)
    ref, _ = forward_with_text(model, kwargs)
    ringsp.enable_sequence_parallel(model, ctx, check_inputs=False)  # the path without the cross-rank check
    out, _ = forward_with_text(model, kwargs)
    ringsp.disable_sequence_parallel(model)
    return rel_error(out, ref)


def test_sp_uses_the_sp_group_inside_a_cfg_half():
    assert all(rel <= TOL for rel in run_distributed(2, _cfg_halves))


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return None


def _errors_on_every_rank():
    """Bad or mismatched inputs: every rank raises (collected per rank as (type, message))."""
    import torch.distributed as dist
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    ctx = context(2, 1)
    rank = dist.get_rank()
    model = tiny_model("tiny-qwen")
    good = tiny_inputs(model, [(1, 3, 5)], 2, 6, "prefix", "plain")
    latents, mask = good["hidden_states"], good["encoder_hidden_states_mask"]
    other_mask = mask.clone()
    other_mask[1, [0, 5]] = other_mask[1, [5, 0]]  # the same valid count, in other places
    bad_calls = {
        "ranks_disagree": dict(good, hidden_states=latents[:, : 15 - 3 * rank], img_shapes=[[(1, 3, 5 - rank)]] * 2),
        "shapes_vs_tokens": dict(good, img_shapes=[[(1, 3, 4)]] * 2),
        "no_img_shapes": dict(good, img_shapes=None),
        "not_packed": dict(good, hidden_states=latents.unflatten(1, (3, 5))),
        "mask_shape": dict(good, encoder_hidden_states_mask=mask[:, :4]),
        "mask_differs": dict(good, encoder_hidden_states_mask=other_mask if rank else mask),
        "control_shape": dict(good, controlnet_block_samples=[torch.zeros(2, 14, 48)]),
    }
    ringsp.enable_sequence_parallel(model, ctx)
    out = {key: _error_of(forward_with_text, model, kwargs) for key, kwargs in bad_calls.items()}
    out["twice"] = _error_of(ringsp.enable_sequence_parallel, model, ctx)
    # A processor swapped behind the adapter's back (on one rank only) must not run silently.
    if rank == 0:
        model.transformer_blocks[1].attn.set_processor(QwenDoubleStreamAttnProcessor2_0())
    out["replaced_processor"] = _error_of(forward_with_text, model, good)
    ringsp.disable_sequence_parallel(model)
    out["usable_after"] = tuple(forward_with_text(model, good)[0].shape)

    edit = tiny_model("tiny-qwen-edit-2511")  # zero_cond_t: every sample's grids must match S
    edit_inputs = tiny_inputs(edit, [(1, 3, 5), (1, 2, 2)], 2, 6, "none", "edit")
    ringsp.enable_sequence_parallel(edit, ctx)
    out["per_sample_shapes"] = _error_of(forward_with_text, edit, dict(
        edit_inputs, img_shapes=[[(1, 3, 5), (1, 2, 2)], [(1, 3, 5), (1, 1, 4), (1, 1, 1)]]))
    ringsp.disable_sequence_parallel(edit)
    return out


def test_bad_inputs_fail_on_every_rank():
    per_rank = run_distributed(2, _errors_on_every_rank)
    value_errors = ("ranks_disagree", "shapes_vs_tokens", "no_img_shapes", "not_packed", "mask_shape",
                    "mask_differs", "control_shape", "per_sample_shapes")
    for out in per_rank:
        for key in value_errors:
            assert out[key] is not None and out[key][0] == "ValueError", (key, out[key])
        assert out["twice"][0] == "ValueError" and "already enabled" in out["twice"][1]
        assert out["replaced_processor"] is not None, "a replaced processor ran silently"
        assert out["usable_after"] == (2, 15, 16)
    first = per_rank[0]
    assert "img_shapes" in first["shapes_vs_tokens"][1] and "img_shapes" in first["no_img_shapes"][1]
    assert "hidden_states" in first["not_packed"][1]
    assert "encoder_hidden_states_mask" in first["mask_shape"][1]
    assert "mask" in first["mask_differs"][1]
    assert "controlnet_block_samples" in first["control_shape"][1]
    assert "zero_cond_t" in first["per_sample_shapes"][1]
    assert "replaced" in first["replaced_processor"][1]


# ------------------------------------------------------------------ single process, no group


def _offline_ctx():
    cpu = torch.device("cpu")
    return ParallelContext(ParallelConfig(), None, 0, 1, cpu, None, 0, None, 0, None, 0, None, 0)


def test_enable_dispatches_to_the_qwen_adapter_and_disable_restores():
    model = tiny_model("tiny-qwen")
    hooks = hook_counts(model)
    pipe = types.SimpleNamespace(transformer=model, vae=None)
    ringsp.enable_sequence_parallel(pipe, _offline_ctx())
    assert isinstance(model._ringsp_sp_adapter, QwenSPAdapter)
    assert is_sequence_parallel_enabled(model)
    ringsp.disable_sequence_parallel(pipe)
    assert not is_sequence_parallel_enabled(model) and hook_counts(model) == hooks
    assert all(type(b.attn.processor).__name__ == "QwenDoubleStreamAttnProcessor2_0" for b in model.transformer_blocks)


def test_enable_rejects_bad_contexts_and_diffusers_parallelism():
    model = tiny_model("tiny-qwen")
    with pytest.raises(TypeError, match="ctx"):
        ringsp.enable_sequence_parallel(model, object())
    model._parallel_config = object()  # what diffusers' enable_parallelism leaves behind
    with pytest.raises(ValueError, match="diffusers"):
        QwenSPAdapter(model, _offline_ctx())
    assert not is_sequence_parallel_enabled(model)
    assert hook_counts(model) == hook_counts(tiny_model("tiny-qwen"))


def test_the_mask_changes_the_output():
    """The masked cases above would pass vacuously if padding did not matter to the model."""
    model = tiny_model("tiny-qwen")
    kwargs = tiny_inputs(model, [(1, 3, 5)], 2, 9, "holes", "plain")
    masked, _ = forward_with_text(model, kwargs)
    unmasked, _ = forward_with_text(model, dict(kwargs, encoder_hidden_states_mask=None))
    assert rel_error(masked, unmasked) > 100 * TOL


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.data())
def test_text_plan_counts_each_row_and_puts_valid_tokens_first(batch, text_len, data):
    bits = data.draw(st.lists(st.booleans(), min_size=batch * text_len, max_size=batch * text_len))
    mask = torch.tensor(bits).view(batch, text_len)
    plan = text_plan(mask.long())
    assert plan.lens.device.type == "cpu" and torch.equal(plan.lens, mask.sum(dim=1))
    order = plan.order if plan.order is not None else torch.arange(text_len).expand(batch, text_len)
    reordered = mask.gather(1, order)
    for row, valid in enumerate(plan.lens.tolist()):
        assert reordered[row, :valid].all() and not reordered[row, valid:].any()
    if plan.order is not None:
        assert torch.equal(order.gather(1, plan.inverse), torch.arange(text_len).expand(batch, text_len))
        assert torch.equal(order.sort(dim=1).values, torch.arange(text_len).expand(batch, text_len))


def test_text_plan_without_mask_or_with_prefixes():
    plan = text_plan(None)
    assert (plan.lens, plan.order, plan.inverse) == (None, None, None)
    plan = text_plan(text_mask("ragged", 3, 8))
    assert plan.lens.tolist() == [8, 5, 0] and plan.order is None and plan.inverse is None


def _mask_reads(steps):
    """Host reads of the text mask in each forward of a few steps alternating the cond and
    uncond masks, then after an in-place write to the cond mask."""
    from ringsp.models import qwen

    ctx = context(1, 2)
    model = tiny_model("tiny-qwen")
    cond, uncond = (tiny_inputs(model, [(1, 3, 5)], 1, 6, "prefix", "plain", seed=s) for s in (1, 2))
    uncond["encoder_hidden_states_mask"] = torch.tensor([[1, 1, 0, 0, 0, 0]])
    calls, original = [], qwen.text_plan
    qwen.text_plan = lambda mask: calls.append(mask is not None) or original(mask)
    reads = []
    ringsp.enable_sequence_parallel(model, ctx)
    try:
        for kwargs in [cond, uncond] * steps + [None]:
            if kwargs is None:  # same values, but written: the mask must be read again
                cond["encoder_hidden_states_mask"][0, 0] = 1
                kwargs = cond
            calls.clear()
            forward_with_text(model, kwargs)
            reads.append(sum(calls))
    finally:
        qwen.text_plan = original
        ringsp.disable_sequence_parallel(model)
    return reads


def test_cond_and_uncond_masks_are_read_once_each():
    for reads in run_distributed(2, _mask_reads, 3):
        assert reads == [1, 1, 0, 0, 0, 0, 1]


def test_token_count_and_grids():
    assert qwen_token_count([[(1, 83, 83)]]) == 6889  # 1328 x 1328
    assert qwen_token_count([(1, 64, 64)]) == 4096  # a list of grids per batch: the first is used
    assert qwen_token_count([[(1, 64, 64), (1, 32, 48)]] * 2) == 4096 + 1536  # Edit: target + reference
    assert qwen_token_count((1, 4, 5)) == 20
    assert image_grids([[(1, 2, 3), [1, 4, 5]]]) == [(1, 2, 3), (1, 4, 5)]
    for bad in ([[(1, 2)]], [[(1, 0, 3)]], [[]], [["a", 2, 3]]):
        with pytest.raises(ValueError, match="img_shapes"):
            qwen_token_count(bad)


# ------------------------------------------------------------------ configs


def test_published_qwen_transformers_have_the_published_size():
    for name in configs.QWEN_TRANSFORMERS:
        with torch.device("meta"):
            model = diffusers.QwenImageTransformer2DModel.from_config(configs.transformer_config(name))
        assert 20.40e9 <= sum(p.numel() for p in model.parameters()) <= 20.45e9, name  # "20B"


def test_qwen_vae_config_is_diffusers_default_and_models_name_known_configs():
    import inspect

    params = inspect.signature(diffusers.AutoencoderKLQwenImage.__init__).parameters
    defaults = {k: p.default for k, p in params.items()}
    for key, value in configs.vae_config("qwen-image").items():
        assert defaults[key] == value, key
    for name, spec in configs.QWEN_MODELS.items():
        assert spec["transformer"] in configs.QWEN_TRANSFORMERS and spec["vae"] in configs.QWEN_VAES, name
    assert configs.qwen_model_spec("qwen-image-edit-2511")["edit"]
    with pytest.raises(ValueError, match="unknown"):
        configs.qwen_model_spec("qwen-nope")
