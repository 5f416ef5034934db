"""`enable_sequence_parallel` / `disable_sequence_parallel`: the pipeline layer's entry points.
They put each supported transformer of their argument (itself, or a pipeline's `transformer`
and `transformer_2`) under its model's adapter, or take it out again. The adapter lives on the
module as `_ringsp_sp_adapter`, so enabling twice is refused and disabling finds what to undo.
"""
import importlib

import torch

_ATTR = "_ringsp_sp_adapter"
PIPELINE_TRANSFORMER_ATTRS = ("transformer", "transformer_2")


# diffusers transformer class -> (module of its plan, its adapter class)
ADAPTERS = {
    "WanTransformer3DModel": ("wan", "WanSPAdapter"),
    "QwenImageTransformer2DModel": ("qwen", "QwenSPAdapter"),
    "FluxTransformer2DModel": ("flux", "FluxSPAdapter"),
    "LTXVideoTransformer3DModel": ("ltx", "LTXSPAdapter"),
}
SUPPORTED = ", ".join(ADAPTERS)


def _adapter_class(module):
    """The SP adapter class for this module, or None. diffusers is imported only when needed."""
    try:
        import diffusers
    except ImportError:  # diffusers is an optional dependency ("models" extra)
        return None
    for cls_name, (plan_module, adapter) in ADAPTERS.items():
        if isinstance(module, getattr(diffusers, cls_name)):
            return getattr(importlib.import_module(f".{plan_module}", __package__), adapter)
    return None


def _transformers_of(target, name):
    """The supported transformers target stands for: itself, or a pipeline's transformers."""
    if isinstance(target, torch.nn.Module):
        if _adapter_class(target) is None:
            raise TypeError(f"{name} must be a supported transformer (diffusers {SUPPORTED}) or a pipeline "
                            f"holding one, got {type(target).__name__}")
        return [target]
    found = pipeline_transformers(target)
    if not found:
        raise TypeError(f"{name} must be a supported transformer or a pipeline with a `transformer` "
                        f"attribute, got {type(target).__name__}")
    unsupported = [type(m).__name__ for m in found if _adapter_class(m) is None]
    if unsupported:
        raise TypeError(f"{name} holds transformer(s) with no sequence-parallel adapter: {unsupported} "
                        f"(supported: {SUPPORTED})")
    return found


def pipeline_transformers(pipe):
    """The distinct transformers a pipeline holds (Wan2.2 A14B: transformer and transformer_2)."""
    found = []
    for module in (getattr(pipe, attr, None) for attr in PIPELINE_TRANSFORMER_ATTRS):
        if module is not None and not any(module is m for m in found):
            found.append(module)
    return found


def enable_sequence_parallel(transformer_or_pipeline, ctx, check_inputs=True, attention_precision=None):
    """Runs the transformer(s) under sequence parallelism over ctx's SP group; returns the argument.

    transformer_or_pipeline: a supported diffusers transformer (SUPPORTED) or a pipeline with
    `transformer` (and optionally `transformer_2`). ctx: from `ringsp.init_parallel`.
    check_inputs: ranks compare their inputs on every forward (one tiny all_gather), so ranks
    that disagree fail with the same ValueError instead of hanging. attention_precision: None
    (the activations' dtype) or "fp8" / "int8": the SP self-attention runs 8-bit inside (CUDA
    GPUs only; elsewhere the first forward fails on every rank; measured: bench/RESULTS.md).
    """
    modules = _transformers_of(transformer_or_pipeline, "transformer_or_pipeline")
    if any(getattr(m, _ATTR, None) is not None for m in modules):
        raise ValueError("sequence parallelism is already enabled on this transformer; "
                         "call disable_sequence_parallel first")
    enabled = []
    try:
        for module in modules:
            adapter = _adapter_class(module)(module, ctx, check_inputs=check_inputs,
                                             attention_precision=attention_precision)
            setattr(module, _ATTR, adapter)
            enabled.append(module)
    except BaseException:
        for module in enabled:  # all or nothing
            getattr(module, _ATTR).remove()
            delattr(module, _ATTR)
        raise
    return transformer_or_pipeline


def disable_sequence_parallel(transformer_or_pipeline):
    """Restores the original forward of every transformer that had SP enabled; returns the argument."""
    modules = _transformers_of(transformer_or_pipeline, "transformer_or_pipeline")
    for module in modules:
        adapter = getattr(module, _ATTR, None)
        if adapter is not None:
            adapter.remove()
            delattr(module, _ATTR)
    return transformer_or_pipeline


def is_sequence_parallel_enabled(transformer):
    """Whether `enable_sequence_parallel` is in effect on this transformer module."""
    return getattr(transformer, _ATTR, None) is not None
