"""The CUDA wing of the ops: Triton kernels (triton_attn, triton_merge, triton_fp8), their
launcher (fast_launch), the other attention paths (hopper, cudnn, fa4, gathered in paths), the plan
per shape and the measurement that fills the dispatch tables (ops, timing, tune), and the
8-bit ops (q8).

Importing the wing registers its Backend with ringsp_kernels.backends where Triton is
installed; without Triton CUDA tensors get the dispatcher's clear "no kernel" error.
`python -m ringsp_kernels.cuda.tune` measures the dispatch tables of this GPU.
"""
from .. import backends

try:
    import triton  # noqa: F401
except ImportError:  # no Triton: no CUDA backend
    triton = None


def _facts():
    from . import fa4

    # rank 0's kernel table names FA4 where it was fastest: each rank picks among the paths it
    # can run, so ranks must be able to run the same ones
    return {"FlashAttention-4 path": fa4.version() if fa4.available() else "unavailable"}


def _register():
    from . import ops, q8

    return backends.register(backends.Backend(
        name="cuda", device_type="cuda", dispatch_key="CUDA", direct=True,
        ops={"attn_fwd": ops.attn_fwd, "attn_step_": ops.attn_step_, "merge_": ops.merge_,
             "attn_fwd_q8": q8.attn_fwd_q8, "attn_step_q8_": q8.attn_step_q8_},
        versions=ops.versions, facts=_facts, check_precision=q8.check_precision))


BACKEND = _register() if triton is not None else None
