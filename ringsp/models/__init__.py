"""Pipeline layer: model adapters that put diffusers transformers under sequence parallelism.

    ringsp.enable_sequence_parallel(pipe_or_transformer, ctx)   # Wan2.1 / Wan2.2 and Qwen-Image transformers
    ringsp.disable_sequence_parallel(pipe_or_transformer)
    ringsp.models.compile_pipeline(pipe, mode="regional", cuda_graphs=False)   # torch.compile, under SP or not

Published model configs (for random-weight models of the real shapes) are in `configs`.
"""
from .tested_versions import check_tested_versions

check_tested_versions()  # before any model code: an untested diffusers / transformers fails here, in one line

from .compile import compile_pipeline, compile_transformer, uncompile_transformer  # noqa: E402
from .sp import disable_sequence_parallel, enable_sequence_parallel, is_sequence_parallel_enabled  # noqa: E402

__all__ = ["enable_sequence_parallel", "disable_sequence_parallel", "is_sequence_parallel_enabled",
           "compile_pipeline", "compile_transformer", "uncompile_transformer"]
