"""ringsp_kernels: fused ring-attention steps with the online-softmax merge inside the kernel.

    out, lse = attn_fwd(q, k, v)            # attention over one KV block
    acc, lse = init_state(q)                # empty online-softmax state
    attn_step_(q, k, v, acc, lse)           # one ring step, merged in place
    merge_(acc, lse, out_blk, lse_blk)      # merge a partial result computed elsewhere
    out = finalize(acc, lse, q.dtype)

q/k/v/out are [B, S, H, D]; lse is [B, H, S] float32 (natural log, -inf for a row that
has seen no key); acc is float32 [B, S, H, D] holding the normalised output so far.
Every function is also `torch.ops.ringsp.<name>`; the backend follows the tensors' device.
Plain CUDA tensors in eager mode skip the op dispatcher (a few us per call, which a ring
step pays on every block) and call the CUDA implementation directly; under torch.compile,
fake tensors, dispatch modes or autograd the calls go through `torch.ops.ringsp`.

The face of the ops layer: what the layers above use, and all they import.
    DTYPES, PRECISIONS, MAX_HEAD_DIM, reference_attention
    check_qkv, check_like, check_state, check_merge, check_precision   argument checks, written once
    settings.current()        every RINGSP_* switch, read once (ringsp_kernels.settings)
    agreed_fields()           what every rank of a group must share (settings + backend facts)
    choices_snapshot() / install_choices(snap) / uninstall_choices() / choices_fingerprint()
                              the rank-consistent table of CUDA kernel choices
    clear_caches()            forgets every module cache of the ops layer (tests)
Backends live in wings (cpu/, cuda/, npu/) and register themselves (backends.py).
"""
import torch

from . import backends, dispatch, registry, settings  # noqa: F401  (registry: loads the ops, binds the backends)
from . import fp8 as _lowp  # opt-in 8-bit precisions (precision="fp8" / "int8")
from .caches import clear_caches
from .checks import DTYPES, MAX_HEAD_DIM, check_like, check_merge, check_qkv, check_state
from .fp8 import check_precision
from .fp8_reference import PRECISIONS
from .reference import reference_attention

__all__ = ["attn_fwd", "init_state", "attn_step_", "merge_", "finalize", "reference_attention", "DTYPES",
           "PRECISIONS", "MAX_HEAD_DIM", "check_qkv", "check_like", "check_state", "check_merge", "check_precision", "settings",
           "agreed_fields", "choices_snapshot", "install_choices", "uninstall_choices", "choices_fingerprint",
           "clear_caches"]

_OPS = torch.ops.ringsp
_cuda = backends.for_device("cuda")  # registered by the CUDA wing where Triton is installed
_CUDA = _cuda.ops if _cuda is not None and _cuda.direct else None
_compiling = torch.compiler.is_compiling
_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)


def _impl(q, name):
    """The CUDA implementation itself where nothing needs to see the op, else torch.ops."""
    if (_CUDA is not None and type(q) is torch.Tensor and q.is_cuda and not _compiling()
            and not _modes() and not (q.requires_grad and torch.is_grad_enabled())):
        return _CUDA[name]
    return getattr(_OPS, name)


def attn_fwd(q, k, v, scale=None, kv_len=None, precision=None):
    """Attention of q over k/v[:, :kv_len]; returns (out in q's dtype, lse float32 [B, H, Sq]).
    precision: None (q's dtype) or "fp8" / "int8" (CUDA; see ringsp_kernels.fp8)."""
    kv_len = check_qkv(q, k, v, scale, kv_len)
    if precision is not None and _lowp.quantised(precision, q):
        return _lowp.attn_fwd(q, k, v, scale, kv_len, precision)
    return _impl(q, "attn_fwd")(q, k, v, scale, kv_len)


def init_state(q):
    """An empty running state for q: acc zeros (float32, q's shape), lse -inf [B, H, Sq]."""
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise ValueError("q must be a [B, S, H, D] tensor")
    return torch.ops.ringsp.init_state(q)


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None, precision=None):
    """Attends q to this KV block and merges the result into (acc, lse) in place.
    precision: None (q's dtype) or "fp8" / "int8" (CUDA; see ringsp_kernels.fp8)."""
    kv_len = check_qkv(q, k, v, scale, kv_len)
    check_state(q, acc, lse)
    if precision is not None and _lowp.quantised(precision, q):
        return _lowp.attn_step_(q, k, v, acc, lse, scale, kv_len, precision)
    _impl(q, "attn_step_")(q, k, v, acc, lse, scale, kv_len)


def merge_(acc, lse, out_blk, lse_blk):
    """Merges a partial attention result (out_blk, lse_blk) into (acc, lse) in place."""
    check_merge(acc, lse, out_blk, lse_blk)
    _impl(acc, "merge_")(acc, lse, out_blk, lse_blk)


def finalize(acc, lse, dtype):
    """The attention output of the state in `dtype` -- pass q.dtype: a float32 state cannot
    know which dtype q had. Rows that saw no key are 0."""
    check_state(acc, acc, lse, q_name="acc")
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32 (q.dtype), got {dtype!r}")
    return torch.ops.ringsp.finalize(acc, lse, dtype)


# --- what the parallel layer agrees on ------------------------------------------------------

def agreed_fields():
    """{name: value} that every rank of a process group must share to compute the same
    results: the RINGSP_* switches that change numerics or control flow, and facts of the
    backends (which optional kernel paths this process can run)."""
    return {**settings.agreed(), **backends.facts()}


def choices_snapshot():
    """Every kernel choice this process would make (shipped table < this machine's disk cache
    for the installed software versions < choices made so far), JSON-able, for
    install_choices() on the peers."""
    return dispatch.snapshot(backends.versions())


def install_choices(snapshot):
    """Makes `snapshot` (rank 0's choices_snapshot()) the only table of kernel choices: ranks
    that installed the same snapshot make the same choice for every shape, never timing one."""
    dispatch.install(snapshot)


def uninstall_choices():
    """Back to this process's own tables (local mode)."""
    dispatch.uninstall()


def choices_fingerprint():
    """A short hash of the installed table (None before install_choices)."""
    return dispatch.fingerprint()
