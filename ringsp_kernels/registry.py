"""Binds the `ringsp` op schemas (defined in C++, csrc/) to their backends and fake kernels.

CPU kernels come with the C++ library; CUDA kernels are Triton (cuda.py); fake
implementations let the ops run under torch.compile and on meta tensors.
"""
import torch

from ._library import load_ops_library

load_ops_library()


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


def _register_cuda():
    try:
        import triton  # noqa: F401
    except ImportError:  # no Triton: CUDA tensors get a clear error from the dispatcher
        return
    from . import cuda

    for name in ("attn_fwd", "attn_step_", "merge_"):
        torch.library.impl(f"ringsp::{name}", "CUDA")(getattr(cuda, name))


_register_cuda()


def _register_npu():
    # binds the NPU (PrivateUse1) kernels; imports no torch_npu until an NPU op runs
    from . import npu

    npu.register()


_register_npu()
