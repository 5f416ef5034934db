"""torch.compile under sequence parallelism (gloo, 2-4 processes): the SP attention of a block
is ONE op in the compiled graph, no graph breaks, no recompiles for a new text mask, and
the compiled forward equals the eager SP forward and diffusers' single-process forward.

Dynamo runs with a recording aot_eager backend (fake kernels, functionalisation, the op's
eager body at run time) to keep compile times small: Inductor (and CUDA graphs) are checked
on a GPU by test_compile_gpu.py.
"""
import pytest
import torch

pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from ringsp.models import compile_transformer, uncompile_transformer  # noqa: E402
from ringsp.models.compile import compiled_mode, cuda_graphs_problem  # noqa: E402
from tests.mp_pool import run_distributed  # noqa: E402

from . import flux_cases, ltx_cases, qwen_cases, wan_cases  # noqa: E402

TOL = wan_cases.TOL
SP_ATTENTION_OPS = ("sp_attention", "sp_joint_attention")

# (config, latent F/H/W, batch, variant): S = 175 and 45, uneven on 2 and 3 ranks.
WAN_CASES = [("tiny-t2v", (5, 10, 14), 2, "plain"), ("tiny-ti2v", (3, 6, 10), 1, "per_token")]
# (config, grids, batch, text tokens, mask, variant, the mask of a second call): rows with
# 7, 4 and 0 valid tokens; masks with holes; Edit-2511's per-token modulation.
QWEN_CASES = [("tiny-qwen", [(1, 4, 5)], 3, 7, "ragged", "plain", "prefix"),
              ("tiny-qwen", [(1, 3, 4)], 2, 9, "holes", "plain", "holes_swapped"),
              ("tiny-qwen-edit-2511", [(1, 4, 6), (1, 3, 5)], 2, 7, "prefix", "edit", "ragged")]
# Flux: dual- and single-stream blocks; S = 15 and 20.
FLUX_CASES = [((3, 5), 2, 7, "plain"), ((4, 5), 1, 9, "fused")]
# LTX: S = 105 with a text mask for the cross-attention (a second mask: no new graph); per-token timesteps.
LTX_CASES = [((3, 5, 7), 2, 7, "prefix", "plain", "holes"), ((2, 3, 5), 2, 9, "holes", "per_token", "prefix")]


def _recording_backend(graphs):
    """aot_eager, keeping every graph Dynamo hands over."""
    from torch._dynamo.backends.debugging import aot_eager

    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    return backend


def _op_counts(gm):
    """{op name: count} of ringsp's SP ops in a Dynamo graph."""
    counts = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith("ringsp."):  # ringsp.<op>.default
            name = str(node.target).split(".")[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _compile(model, how, graphs):
    """The callable to run: the model compiled `how` (regional / full / torch.compile)."""
    backend = _recording_backend(graphs)
    if how == "torch.compile":  # the user's own call: the adapter's top-level hooks stay eager
        return torch.compile(model, fullgraph=True, backend=backend)
    return compile_transformer(model, how, backend=backend)


def _check_graphs(graphs, how, num_blocks, attention_op, block_graphs=1):
    """(graph breaks, one SP attention per block graph) from what Dynamo compiled."""
    from torch._dynamo.utils import counters

    breaks = sum(counters["graph_break"].values())
    counts = [_op_counts(g) for g in graphs]
    with_attention = [c for c in counts if any(op in c for op in SP_ATTENTION_OPS)]
    if how == "regional":  # a graph per block class (and stride layout), reused by every such block
        ok = len(with_attention) == block_graphs and all(c == {attention_op: 1} for c in with_attention)
    else:  # the whole forward: every block's attention and the final gather in one graph
        ok = len(with_attention) == 1 and with_attention[0] == {attention_op: num_blocks, "sp_gather": 1}
    return breaks, ok


def _run_case(model, kwargs, other_kwargs, ctx, how, forward, attention_op, blocks, block_graphs=1):
    """(rel. error vs diffusers, compiled vs eager SP, graph breaks, graphs ok, recompiled, mode)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ref = forward(model, kwargs)
    ringsp.enable_sequence_parallel(model, ctx)
    eager = forward(model, kwargs)
    eager_other = forward(model, other_kwargs)
    graphs = []
    compiled = _compile(model, how, graphs)
    out = forward(compiled, kwargs)
    before = len(graphs)
    out_other = forward(compiled, other_kwargs)  # a new mask / new values: no new graph
    breaks, ok = _check_graphs(graphs, how, len(blocks), attention_op, block_graphs)
    mode = compiled_mode(model)
    uncompile_transformer(model)
    ringsp.disable_sequence_parallel(model)
    return (wan_cases.rel_error(out, ref), max(wan_cases.rel_error(out, eager), wan_cases.rel_error(out_other,
            eager_other)), breaks, ok, len(graphs) != before, mode)


def _wan_forward(model, kwargs):
    with torch.no_grad():
        return model(**kwargs)[0]


def _qwen_forward(model, kwargs):
    with torch.no_grad():
        return model(**kwargs)[0]


def _compiled_vs_eager(u, r, how, wan_picks, qwen_picks, flux_picks=(), ltx_picks=()):
    ctx = wan_cases.context(u, r)
    results = []
    for name, latent, batch, variant in [WAN_CASES[i] for i in wan_picks]:
        model = wan_cases.tiny_model(name, variant)
        kwargs = wan_cases.tiny_inputs(model, latent, batch, variant)
        other = wan_cases.tiny_inputs(model, latent, batch, variant, seed=2)
        results.append(_run_case(model, kwargs, other, ctx, how, _wan_forward, "sp_attention", model.blocks))
    for name, grids, batch, text_len, mask, variant, other_mask in [QWEN_CASES[i] for i in qwen_picks]:
        model = qwen_cases.tiny_model(name)
        kwargs = qwen_cases.tiny_inputs(model, grids, batch, text_len, mask, variant)
        other = dict(qwen_cases.tiny_inputs(model, grids, batch, text_len, mask, variant, seed=2),
                     encoder_hidden_states_mask=_mask(other_mask, batch, text_len))
        results.append(_run_case(model, kwargs, other, ctx, how, _qwen_forward, "sp_joint_attention",
                                 model.transformer_blocks))
    for grid, batch, text_len, variant in [FLUX_CASES[i] for i in flux_picks]:
        model = flux_cases.tiny_model(variant)
        kwargs, other = (flux_cases.tiny_inputs(model, grid, batch, text_len, variant, seed=s) for s in (1, 2))
        blocks = list(model.transformer_blocks) + list(model.single_transformer_blocks)
        # regional: 3 block graphs, SP or not: diffusers hands the first single-stream block a whole
        # tensor and the others a slice of [text; image], a stride Dynamo compiles once more for
        results.append(_run_case(model, kwargs, other, ctx, how, _qwen_forward, "sp_joint_attention", blocks, 3))
    for grid, batch, text_len, mask, variant, other_mask in [LTX_CASES[i] for i in ltx_picks]:
        model = ltx_cases.tiny_model()
        kwargs = ltx_cases.tiny_inputs(model, grid, batch, text_len, mask, variant)
        other = ltx_cases.tiny_inputs(model, grid, batch, text_len, other_mask, variant, seed=2)
        results.append(_run_case(model, kwargs, other, ctx, how, _wan_forward, "sp_attention",
                                 model.transformer_blocks))
    return results


def _mask(kind, batch, text_len):
    if kind == "holes_swapped":  # the same counts as "holes", the holes elsewhere
        return qwen_cases.text_mask("holes", batch, text_len).flip(1)
    return qwen_cases.text_mask(kind, batch, text_len)


def _assert_results(per_rank, how, wan_picks, qwen_picks, flux_picks=(), ltx_picks=()):
    cases = [WAN_CASES[i] for i in wan_picks] + [QWEN_CASES[i] for i in qwen_picks] + \
        [FLUX_CASES[i] for i in flux_picks] + [LTX_CASES[i] for i in ltx_picks]
    for rank_results in per_rank:
        assert len(rank_results) == len(cases)
        for case, (rel, rel_eager, breaks, ok, recompiled, mode) in zip(cases, rank_results):
            assert rel <= TOL and rel_eager <= TOL, (case, rel, rel_eager)
            assert breaks == 0, (case, breaks)
            assert ok, (case, "each block's SP attention must be one op of one graph")
            assert not recompiled, (case, "a new mask or new values recompiled")
            assert mode == (None if how == "torch.compile" else (how, False)), mode


# Every case and every way of compiling runs somewhere; each run compiles a few cases only
# (compiling costs seconds per case and rank on the CI's two cores).
@pytest.mark.parametrize("u,r,how,wan_picks,qwen_picks,flux_picks,ltx_picks", [
    (2, 1, "regional", [0], [0, 2], [0], [0]),      # Ulysses
    (1, 3, "regional", [1], [1], [1], [1]),         # ring
    (1, 2, "full", [0], [0], [0], [1]),
    (3, 1, "torch.compile", [1], [1, 2], [1], [0]),
    (2, 2, "regional", [0], [0], [0], [1]),         # USP
])
def test_compiled_sp_equals_eager_without_graph_breaks(u, r, how, wan_picks, qwen_picks, flux_picks, ltx_picks):
    per_rank = run_distributed(u * r, _compiled_vs_eager, u, r, how, wan_picks, qwen_picks, flux_picks, ltx_picks,
                               timeout=300)
    _assert_results(per_rank, how, wan_picks, qwen_picks, flux_picks, ltx_picks)


# ------------------------------------------------------------------ eager behaviour under compile


def _mismatch_under_compile():
    """Ranks given different latents: the eager pre-hook still fails on every rank."""
    import torch.distributed as dist

    ctx = wan_cases.context(1, 2)
    model = wan_cases.tiny_model("tiny-t2v")
    kwargs = wan_cases.tiny_inputs(model, (3, 6, 10 - 2 * dist.get_rank()), 1, "plain")
    ringsp.enable_sequence_parallel(model, ctx)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    try:
        _wan_forward(compiled, kwargs)
    except ValueError as exc:
        return str(exc)
    finally:
        ringsp.disable_sequence_parallel(model)
    return None


def test_ranks_that_disagree_fail_on_every_rank_under_compile():
    for message in run_distributed(2, _mismatch_under_compile):
        assert message is not None and "hidden_states" in message


# ------------------------------------------------------------------ single process


def test_compile_arguments_are_checked():
    model = wan_cases.tiny_model("tiny-t2v")
    with pytest.raises(ValueError, match="mode"):
        compile_transformer(model, "everything")
    with pytest.raises(TypeError, match="transformer"):
        compile_transformer(object())
    compile_transformer(model, "full", backend="eager")
    with pytest.raises(ValueError, match="already compiled"):
        compile_transformer(model)
    uncompile_transformer(model)
    assert compiled_mode(model) is None and "forward" not in vars(model)


def test_cuda_graphs_are_refused_off_cuda():
    model = wan_cases.tiny_model("tiny-t2v")
    assert "cpu" in cuda_graphs_problem(model)
    with pytest.raises(ValueError, match="CUDA graphs cannot run here"):
        compile_transformer(model, cuda_graphs=True)
    assert compiled_mode(model) is None


def test_regional_compile_restores_eager_blocks():
    model = wan_cases.tiny_model("tiny-t2v")
    compile_transformer(model, backend="eager")
    assert all(b._compiled_call_impl is not None for b in model.blocks)
    uncompile_transformer(model)
    assert all(b._compiled_call_impl is None for b in model.blocks)
