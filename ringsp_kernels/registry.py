"""Op registration: the `ringsp` op schemas and CPU kernels (defined in C++, csrc/, loaded by
the cpu wing), the 8-bit op schemas (fp8.py), fake implementations (so the ops run under
torch.compile and on meta tensors), and every registered backend's kernels bound to its
dispatch key. Each wing registers its Backend when imported; this module binds them."""
import torch

from . import backends
from . import cpu  # noqa: F401  (first: loads the C++ library that defines the `ringsp` schemas)
from . import fp8  # noqa: F401  (the 8-bit op schemas)
from . import cuda, npu  # noqa: F401  (each registers its Backend; cuda only where Triton is installed)

_bound = set()  # (op name, dispatch key) pairs already bound in this process


@torch.library.register_fake("ringsp::attn_fwd")
def _attn_fwd_fake(q, k, v, scale=None, kv_len=None):
    B, Sq, H, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty((B, H, Sq), dtype=torch.float32)


@torch.library.register_fake("ringsp::attn_step_")
def _attn_step_fake(q, k, v, acc, lse, scale=None, kv_len=None):
    return None


@torch.library.register_fake("ringsp::merge_")
def _merge_fake(acc, lse, out_blk, lse_blk):
    return None


def bind_backends():
    """Binds each registered backend's ops to its dispatch key, once per (op, key): binding a
    kernel over another would replace it with a warning."""
    for backend in backends.registered():
        if backend.dispatch_key is None:
            continue
        for name, fn in backend.ops.items():
            if (name, backend.dispatch_key) not in _bound:
                torch.library.impl(f"ringsp::{name}", backend.dispatch_key)(fn)
                _bound.add((name, backend.dispatch_key))


bind_backends()
