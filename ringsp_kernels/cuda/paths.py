"""The attention paths the CUDA dispatch chooses between besides the fused Triton kernel.

Each path computes one KV block's attention with its LSE; `attn_step_` then merges that into
the running state with the one-pass Triton merge (a path that can start from the state itself
gives `step`, and no merge runs). The dispatch tables name paths by these keys (the table
format's ringsp_kernels.dispatch.PATHS lists the same names). Adding a path -- e.g. a Hopper
kernel -- is one `Path` here and its name in dispatch.PATHS: ops.py measures, chooses and
runs every usable path the same way.
"""
from dataclasses import dataclass
from typing import Callable

from . import fa4, hopper
from .cudnn import cudnn_attn, cudnn_ok


@dataclass(frozen=True)
class Path:
    name: str
    usable: Callable   # q -> whether this process can run q's shape class on this path
    fwd: Callable      # (q, k, v, scale, kv_len) -> (out [B, Sq, H, D], lse float32 [B, H, Sq])
    step: Callable | None = None  # (q, k, v, acc, lse, scale, kv_len) in place; None: fwd + merge
    auto: bool = True  # a candidate of the automatic choice (else it runs only when forced)


def _fa4_fwd(q, k, v, scale, kv_len):
    return fa4.attention(q, k, v, scale, kv_len)


def _fa4_usable(q):
    return fa4.usable(q)


VENDOR = {
    "hopper": Path("hopper", hopper.usable, hopper.attn_fwd, hopper.attn_step_, auto=hopper.AUTO),
    "cudnn": Path("cudnn", cudnn_ok, cudnn_attn),
    "fa4": Path("fa4", _fa4_usable, _fa4_fwd),
}
