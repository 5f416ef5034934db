"""FlashAttention-4 (the `flash-attn-4` package, CuTe DSL) as an optional attention path.

Where it is installed (`pip install 'ringsp[fa4]'`) and the dispatcher measured it faster
for a shape class, `attn_fwd` returns FA4's output and LSE as they are, and `attn_step_`
merges them into the running state with ringsp's one-pass Triton merge -- the same
arrangement as the cuDNN path. FA4's Hopper forward is the FA3 design (warp-specialised,
ping-pong scheduled); it pays more host time per call than cuDNN, which is why the choice
is measured per shape class rather than assumed.

RINGSP_FA4=0 turns the path off (ringsp_kernels.settings). Nothing here imports FA4 or
touches CUDA at import.
"""
import importlib.metadata

import torch

from .. import caches, settings

_state = {"fwd": None, "public": False, "error": None}
caches.register("FlashAttention-4 import", lambda: _state.update(fwd=None, public=False, error=None))


def _turned_off():
    return not settings.current().fa4


def _load():
    """FA4's forward function, or None with the reason in _state["error"]."""
    if _state["fwd"] is not None or _state["error"] is not None:
        return _state["fwd"]
    if _turned_off():
        _state["error"] = "turned off by RINGSP_FA4=0"
        return None
    try:
        from flash_attn.cute import interface
    except Exception as e:  # noqa: BLE001 -- ImportError, or its CUDA libraries failing to load
        _state["error"] = f"flash-attn-4 cannot be imported ({type(e).__name__}: {str(e)[:200]})"
        return None
    # the internal forward skips autograd's Function.apply (host time per ring step); the
    # public function is the fallback should a release rename it
    fwd = getattr(interface, "_flash_attn_fwd", None)
    _state["fwd"], _state["public"] = (fwd, False) if fwd is not None else (interface.flash_attn_func, True)
    return _state["fwd"]


def available():
    """Whether the FA4 path can run in this process (installed, not turned off, a GPU)."""
    return torch.cuda.is_available() and _load() is not None


def why_unavailable():
    """A sentence for error messages, or None when available."""
    if available():
        return None
    return _state["error"] or "no CUDA device"


def version():
    """flash-attn-4's installed version (None if absent or turned off), read from its package
    metadata without importing it: measured choices are cached per set of versions."""
    if _turned_off():
        return None
    try:
        return importlib.metadata.version("flash-attn-4")
    except importlib.metadata.PackageNotFoundError:
        return None


def head_dim_ok(major, head_dim):
    """Head dims FA4's forward takes: Hopper 8..256, Blackwell 8..128 (plus MLA shapes that
    ringsp never makes), multiples of 8 (16-byte rows in 16-bit types)."""
    top = {9: 256, 10: 128, 11: 128}.get(major)
    return top is not None and 8 <= head_dim <= top and head_dim % 8 == 0


def usable(q):
    """Whether FA4 can take this query's shape class (the dispatcher's candidate check)."""
    if not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    from .triton_attn import capability  # cached per device; here, so importing fa4 never needs Triton

    return head_dim_ok(capability(q.get_device())[0], q.shape[3]) and available()


def attention(q, k, v, scale, kv_len):
    """FA4 over k/v[:, :kv_len] (kv_len >= 1): (out [B, Sq, H, D] in q's dtype, lse
    [B, H, Sq] float32, natural log) -- FA4's own tensors, no copies."""
    if kv_len != k.shape[1]:
        k, v = k[:, :kv_len], v[:, :kv_len]
    fwd = _load()
    if fwd is None:
        raise RuntimeError(f"the FA4 attention path is unavailable: {why_unavailable()}")
    if _state["public"]:
        with torch.no_grad():
            out, lse = fwd(q, k, v, softmax_scale=scale, return_lse=True)
        return out, lse
    out, lse = fwd(q, k, v, softmax_scale=scale, return_lse=True)[:2]
    return out, lse
