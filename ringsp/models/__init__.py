"""Pipeline layer: model adapters that put diffusers transformers under sequence parallelism.

    ringsp.enable_sequence_parallel(pipe_or_transformer, ctx)   # Wan2.1 / Wan2.2 and Qwen-Image transformers
    ringsp.disable_sequence_parallel(pipe_or_transformer)

Published model configs (for random-weight models of the real shapes) are in `configs`.
"""
from .sp import disable_sequence_parallel, enable_sequence_parallel, is_sequence_parallel_enabled

__all__ = ["enable_sequence_parallel", "disable_sequence_parallel", "is_sequence_parallel_enabled"]
