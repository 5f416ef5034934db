"""torch.compile and CUDA graphs for the transformers ringsp runs, under SP or not.

    compile_transformer(transformer, mode="regional", cuda_graphs=False)   # in place; returns it
    compile_pipeline(pipe, mode="regional", cuda_graphs=False)             # transformer (and transformer_2)
    uncompile_transformer(transformer)                                     # eager again

mode "regional" is diffusers' `compile_repeated_blocks(fullgraph=True)`: every transformer
block runs the same compiled code, so the compile takes seconds. "full" compiles the
transformer's forward as one graph (fullgraph=True). Under SP neither has a graph break: the
SP attention and the sequence gather are single ops (ringsp.parallel.sp_op) and the
transformer's own hooks (checks, rank agreement, the text plan) stay eager. Enable SP
before compiling, so that the checks below see the SP group.

cuda_graphs: Inductor captures CUDA graphs (cudagraph trees) and partitions each compiled
graph at the ops tagged `cudagraph_unsafe`, as ringsp's SP ops are: every stretch of a block
between two SP attentions is one captured graph, and the attention with its collectives and
host-side checks runs eagerly between them (piecewise capture). A forward is a new graph
generation (a pre-hook marks it); in full mode, where the transformer's output would live in
the graph pool and be overwritten by the next forward, it is copied out. The first forward
of a shape runs uncaptured, the second records, later ones replay: warm up with
`CUDA_GRAPH_WARMUP_FORWARDS` forwards. Refused with a one-line ValueError where it cannot
work (not CUDA, an SP group on gloo, a torch without the tag).
"""
import torch
import torch.distributed as dist
from torch.utils import _pytree as pytree

import ringsp_kernels as rk
from ringsp.parallel.sp_op import CUDAGRAPH_UNSAFE

from .sp import pipeline_transformers

MODES = ("regional", "full")
# torch.compile's backend where the caller names none: RINGSP_COMPILE_BACKEND (ringsp_kernels.settings), else
# Inductor. Tests set aot_eager to check the whole path without Inductor's C++ build (minutes on 2 cores).
CUDA_GRAPH_WARMUP_FORWARDS = 3  # uncaptured, recording, first replay
_ATTR = "_ringsp_compiled"


def compile_transformer(transformer, mode="regional", cuda_graphs=False, **compile_kwargs):
    """Compiles a diffusers transformer in place (see the module doc) and returns it.
    compile_kwargs go to torch.compile (e.g. backend="aot_eager", dynamic=False)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"transformer must be a torch.nn.Module, got {type(transformer).__name__}")
    if getattr(transformer, _ATTR, None) is not None:
        raise ValueError("this transformer is already compiled; call uncompile_transformer first")
    kwargs = {"fullgraph": True, "backend": rk.settings.current().compile_backend, **compile_kwargs}
    if cuda_graphs:
        problem = cuda_graphs_problem(transformer)
        if problem:
            raise ValueError(f"CUDA graphs cannot run here: {problem}")
        kwargs["options"] = {**kwargs.get("options", {}), "triton.cudagraphs": True, "graph_partition": True}
    if mode == "regional":
        transformer.compile_repeated_blocks(**kwargs)
    else:
        transformer.forward = torch.compile(transformer.forward, **kwargs)  # the module's hooks stay eager
    handles = []
    if cuda_graphs:
        eager = torch.compiler.disable
        handles.append(transformer.register_forward_pre_hook(eager(_new_graph_generation)))
        if mode == "full":
            handles.append(transformer.register_forward_hook(eager(_copy_out_of_graph_pool)))
    setattr(transformer, _ATTR, (mode, cuda_graphs, handles))
    return transformer


def uncompile_transformer(transformer):
    """Puts a transformer compiled by compile_transformer back to eager (idempotent)."""
    state = getattr(transformer, _ATTR, None)
    if state is None:
        return transformer
    mode, _, handles = state
    for handle in handles:
        handle.remove()
    if mode == "full":
        del transformer.forward  # the instance attribute; the class's forward shows again
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    delattr(transformer, _ATTR)
    return transformer


def compiled_mode(transformer):
    """(mode, cuda_graphs) of a transformer compiled by compile_transformer, or None."""
    state = getattr(transformer, _ATTR, None)
    return None if state is None else state[:2]


def compile_pipeline(pipe, mode="regional", cuda_graphs=False, **compile_kwargs):
    """compile_transformer on each transformer a pipeline holds (Wan2.2 A14B has two); returns pipe."""
    found = pipeline_transformers(pipe)
    if not found:
        raise TypeError(f"pipe must hold a transformer, got {type(pipe).__name__}")
    for module in found:
        compile_transformer(module, mode, cuda_graphs, **compile_kwargs)
    return pipe


def cuda_graphs_problem(transformer):
    """Why piecewise CUDA graphs cannot run for this transformer (one line), or None."""
    device = next(transformer.parameters()).device
    if device.type != "cuda":
        return f"they capture CUDA work and the transformer is on {device.type}"
    if not CUDAGRAPH_UNSAFE:
        return f"torch {torch.__version__} has no cudagraph_unsafe tag to keep the SP ops out of the graphs"
    adapter = getattr(transformer, "_ringsp_sp_adapter", None)
    group = None if adapter is None else adapter.ctx.sp_group
    if group is not None and dist.get_backend(group) == "gloo":
        return "the SP group uses gloo, a CPU backend"
    return None


def _new_graph_generation(module, args):
    torch.compiler.cudagraph_mark_step_begin()


def _copy_out_of_graph_pool(module, args, output):
    return pytree.tree_map_only(torch.Tensor, torch.clone, output)
