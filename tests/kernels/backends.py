"""The ops' backends as seen by tests: the public API on CPU tensors (C++ kernels), and the
Triton kernels, which run in the interpreter on CPU tensors where there is no GPU."""
import os

import torch

import ringsp_kernels as rk
from ringsp_kernels import checks


class CppBackend:
    name = "cpp"
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    attn_fwd = staticmethod(rk.attn_fwd)
    attn_step_ = staticmethod(rk.attn_step_)
    merge_ = staticmethod(rk.merge_)


class TritonBackend:
    """Calls the Triton implementations directly (after the public checks), so that on a
    CPU machine they run under TRITON_INTERPRET=1. bf16 is left out in the interpreter:
    its tl.dot on bf16 operands is wrong (a known interpreter bug), the GPU tests cover it."""

    name = "triton"
    dtypes = (torch.float32, torch.float16)

    @staticmethod
    def attn_fwd(q, k, v, scale=None, kv_len=None):
        from ringsp_kernels.cuda import ops as cuda

        kv_len = checks.check_qkv(q, k, v, scale, kv_len)
        return cuda.attn_fwd(q, k, v, scale, kv_len)

    @staticmethod
    def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
        from ringsp_kernels.cuda import ops as cuda

        kv_len = checks.check_qkv(q, k, v, scale, kv_len)
        checks.check_state(q, acc, lse)
        cuda.attn_step_(q, k, v, acc, lse, scale, kv_len)

    @staticmethod
    def merge_(acc, lse, out_blk, lse_blk):
        from ringsp_kernels.cuda import ops as cuda

        checks.check_merge(acc, lse, out_blk, lse_blk)
        cuda.merge_(acc, lse, out_blk, lse_blk)


def available():
    out = [CppBackend]
    if os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton  # noqa: F401

            out.append(TritonBackend)
        except ImportError:
            pass
    return out
