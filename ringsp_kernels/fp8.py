"""Opt-in 8-bit precisions of the attention ops: `attn_fwd(..., precision="fp8")`,
`attn_step_(..., precision="fp8")` (and "int8").

    precision  Q.K^T                 P.V                 randn accuracy vs float64
    None       q's dtype             q's dtype           (the native kernels)
    "fp8"      e4m3, FP8 tensor core  e4m3, FP8 tensor core ~5e-2 relative error, cos ~0.9987
    "int8"     int8, exact int32     q's dtype           ~1e-2 relative error, cos ~0.99995

bf16/fp16 in and out; the state is ringsp's (acc float32 [B, S, H, D] normalised output, lse
float32 [B, H, S]), so ring, Ulysses and USP run unchanged, and quantised and native blocks
mix in one state. The scheme (K smoothing, scales, rounding) is fp8_reference.py's; the
kernels are the CUDA wing's (cuda/triton_fp8.py, bound by cuda/q8.py, which takes each shape
class's kernel config from the dispatch tables). "native" and the name of q's own dtype ("bf16", "fp16", "fp32")
mean None; a dtype name that is not q's raises rather than converting.

CUDA only: "fp8" needs FP8 tensor cores (compute capability >= 8.9), "int8" >= 8.0. Anything
else -- CPU tensors, older GPUs, NPUs -- raises a ValueError naming `precision`: a precision
is never changed silently. (fp8_reference.py computes the same math in PyTorch anywhere,
for tests; it is not a fallback.)

Ops: `torch.ops.ringsp.attn_fwd_q8(q, k, v, scale, kv_len, precision)` and
`torch.ops.ringsp.attn_step_q8_(q, k, v, acc, lse, scale, kv_len, precision)`, with fake
kernels (torch.compile); defined here as a fragment of the `ringsp` library, next to the C++
schemas of the native ops.
"""
import torch

from . import backends
from .fp8_reference import PRECISIONS

NATIVE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def quantised(precision, q):
    """Validates `precision` for q: True for an 8-bit precision, False for q's own dtype."""
    if precision is None or precision == "native":
        return False
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a str or None, got {type(precision).__name__}")
    if precision in NATIVE_NAMES:
        if NATIVE_NAMES[precision] != q.dtype:
            raise ValueError(f"precision={precision!r} but q is {q.dtype}: inputs are not converted; "
                             "pass precision=None (q's own dtype) or convert q/k/v yourself")
        return False
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'native', 'bf16', 'fp16', 'fp32' (q's own dtype) "
                         f"or one of {PRECISIONS}, got {precision!r}")
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"precision={precision!r} takes float16 or bfloat16 q/k/v, got {q.dtype}")
    return True


def check_device(q, precision):
    """8-bit attention runs on CUDA GPUs with the tensor cores for it; anything else raises."""
    backend = backends.for_device(q.device.type)
    if q.device.type != "cuda" or backend is None or backend.check_precision is None:
        why = "it has no 8-bit kernel here" if q.device.type == "cuda" else f"it has no {q.device.type} kernel"
        raise ValueError(f"precision={precision!r} needs a CUDA GPU with Triton installed ({why}); "
                         "use precision=None there")
    backend.check_precision(q, precision)


def check_precision(precision, q):
    """None for q's own dtype, else the 8-bit precision, which q's device must be able to run
    (the parallel layer checks this on every rank before its first collective)."""
    if precision is None or not quantised(precision, q):
        return None
    check_device(q, precision)
    return precision


def attn_fwd(q, k, v, scale, kv_len, precision):
    """ringsp_kernels.attn_fwd with an 8-bit precision (arguments already checked)."""
    check_device(q, precision)
    return torch.ops.ringsp.attn_fwd_q8(q, k, v, scale, kv_len, precision)


def attn_step_(q, k, v, acc, lse, scale, kv_len, precision):
    """ringsp_kernels.attn_step_ with an 8-bit precision (arguments already checked)."""
    check_device(q, precision)
    torch.ops.ringsp.attn_step_q8_(q, k, v, acc, lse, scale, kv_len, precision)


def _no_kernel(q, *args, **kwargs):
    raise ValueError(f"8-bit attention (precision='fp8'/'int8') needs a CUDA GPU; q is on {q.device}")


def _define_ops():
    if hasattr(torch.ops.ringsp, "attn_fwd_q8"):  # already defined in this process
        return None
    lib = torch.library.Library("ringsp", "FRAGMENT")
    lib.define("attn_fwd_q8(Tensor q, Tensor k, Tensor v, float? scale, int? kv_len, str precision) "
               "-> (Tensor, Tensor)")
    lib.define("attn_step_q8_(Tensor q, Tensor k, Tensor v, Tensor(a!) acc, Tensor(b!) lse, float? scale, "
               "int? kv_len, str precision) -> ()")
    for name in ("attn_fwd_q8", "attn_step_q8_"):
        lib.impl(name, _no_kernel, "CPU")

    @torch.library.register_fake("ringsp::attn_fwd_q8", lib=lib)
    def _fwd_fake(q, k, v, scale=None, kv_len=None, precision="fp8"):
        B, Sq, H, _ = q.shape
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                q.new_empty((B, H, Sq), dtype=torch.float32))

    @torch.library.register_fake("ringsp::attn_step_q8_", lib=lib)
    def _step_fake(q, k, v, acc, lse, scale=None, kv_len=None, precision="fp8"):
        return None

    return lib


_LIB = _define_ops()  # kept alive: the registrations last as long as this object
