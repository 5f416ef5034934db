"""Inductor and piecewise CUDA graphs under SP on a GPU (one NCCL rank): compiled equals
eager, graphs are recorded and replayed with the SP ops outside them, a new text mask or new
values replay correctly, and full-mode outputs survive the next forward."""
import pytest
import torch

pytest.importorskip("diffusers")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = 1e-3  # fp32 with Inductor's fused reductions


def _recorded_graphs():
    """CUDA graphs the cudagraph trees of GPU 0 hold."""
    from torch._inductor import cudagraph_trees

    manager = cudagraph_trees.get_manager(0, create_if_none_exists=False)
    if manager is None:
        return 0
    stack = [node for nodes in manager.roots.values() for node in nodes]
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(child for children in node.children.values() for child in children)
    return count


def _to(kwargs, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def _forward(model, kwargs):
    with torch.no_grad():
        return model(**kwargs)[0]


def _wan_and_qwen(mode, cuda_graphs, names):
    """Per model: (max rel. error compiled vs eager over repeated and new inputs, graphs
    recorded, Inductor's cudagraph skips, an earlier output unchanged by later forwards)."""
    from torch._dynamo.utils import counters

    import ringsp
    from ringsp.models import compile_transformer, uncompile_transformer
    from tests.models import qwen_cases, wan_cases

    device = torch.device("cuda", 0)
    ctx = wan_cases.context(1, 1)
    wan = wan_cases.tiny_model("tiny-t2v").to(device)
    qwen = qwen_cases.tiny_model("tiny-qwen").to(device)
    calls = {
        "wan": (wan, [_to(wan_cases.tiny_inputs(wan, (5, 10, 14), 2, "plain", seed=s), device) for s in (1, 2)]),
        "qwen": (qwen, [_to(qwen_cases.tiny_inputs(qwen, [(1, 4, 5)], 3, 7, m, "plain", seed=s), device)
                        for m, s in (("ragged", 1), ("prefix", 2))]),
    }
    results = {}
    for name in names:
        model, inputs = calls[name]
        ringsp.enable_sequence_parallel(model, ctx)
        eager = [_forward(model, kw) for kw in inputs]
        torch._dynamo.reset()
        counters.clear()
        compile_transformer(model, mode, cuda_graphs)
        errors, first = [], None
        for _ in range(4):  # uncaptured, recording, replays
            for kw, ref in zip(inputs, eager):
                out = _forward(model, kw)
                first = out if first is None else first
                errors.append(wan_cases.rel_error(out, ref))
        kept = wan_cases.rel_error(first, eager[0])  # still the first call's values
        results[name] = (max(errors), _recorded_graphs(), counters["inductor"]["cudagraph_skips"], kept)
        uncompile_transformer(model)
        ringsp.disable_sequence_parallel(model)
    return results


# Regional without graphs is what bench/device/compile.sh measures on the real models.
@pytest.mark.parametrize("mode,cuda_graphs,names", [("regional", True, ("wan", "qwen")), ("full", True, ("wan",))])
def test_inductor_and_cuda_graphs_equal_eager(mode, cuda_graphs, names):
    from tests.mp_pool import run_distributed

    [results] = run_distributed(1, _wan_and_qwen, mode, cuda_graphs, names, backend="nccl", timeout=900)
    assert set(results) == set(names)
    for name, (err, graphs, skips, kept) in results.items():
        assert err <= TOL and kept <= TOL, (name, err, kept)
        if cuda_graphs:
            assert skips == 0, (name, "Inductor skipped CUDA graphs", skips)
            assert graphs > 0, (name, "no CUDA graph was recorded")
