"""Running diffusers' own decoder on a row shard: the layers that reach across rows get
their forward swapped, on these module instances only and only inside a `with` block.

Every leaf layer of the decoder is classified first. A layer that mixes rows in a way this
module does not know (a GroupNorm, a strided conv, ...) is refused with a TypeError rather
than decoded wrongly.
"""
import contextlib
import functools

import torch.nn as nn

from .sharded_layers import attention_forward, causal_conv3d_forward, conv2d_forward

__all__ = ["plan_patches", "min_rows_per_rank", "row_sharded"]


def plan_patches(decoder, family):
    """[(module, replacement forward, rows it needs from each neighbour)] for this decoder."""
    plan = []
    for name, module in _leaves(decoder, family):
        entry = _classify(name, module, family)
        if entry is not None:
            plan.append((module,) + entry)
    return plan


def min_rows_per_rank(plan):
    """Latent rows every rank must hold. A neighbour's halo must come from one slab (it
    cannot hop over a rank), and the widest halo is needed at latent resolution at the
    latest (later layers see every shard doubled by the upsamples); the attention's gather
    needs at least one row."""
    return max([1] + [halo for _, _, halo in plan])


@contextlib.contextmanager
def row_sharded(plan, shard):
    """Within the block, the planned modules run their row-sharded forward for `shard`."""
    saved = []
    try:
        for module, forward, _ in plan:
            # An instance attribute may already be there (accelerate hooks put one there).
            saved.append((module, module.__dict__.get("forward")))
            module.forward = functools.partial(forward, module, shard)
        yield
    finally:
        for module, previous in reversed(saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous


def _leaves(module, family, prefix="decoder"):
    """Leaf layers, with the attention block taken as one leaf (its parts are per pixel)."""
    children = list(module.named_children())
    if isinstance(module, family.attention) or not children:
        yield prefix, module
        return
    for name, child in children:
        yield from _leaves(child, family, f"{prefix}.{name}")


def _classify(name, module, family):
    """(forward, halo rows) for a layer that needs a halo, None for a row-local one."""
    if isinstance(module, family.attention):
        return attention_forward, 0
    if isinstance(module, family.causal_conv):
        return _causal_conv_entry(name, module)
    if isinstance(module, nn.Conv2d):
        return _conv2d_entry(name, module)
    if isinstance(module, nn.Upsample):
        return _check_upsample(name, module)
    if isinstance(module, family.row_local + _ROW_LOCAL):
        return None
    raise TypeError(f"{name} ({type(module).__name__}) is not known to keep rows separate; cannot row-shard it")


# Per-element layers from torch itself.
_ROW_LOCAL = (nn.Identity, nn.Dropout, nn.SiLU, nn.GELU, nn.ReLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LeakyReLU)


def _causal_conv_entry(name, module):
    kh, stride_h, dil_h = module.kernel_size[1], module.stride[1], module.dilation[1]
    pad_w0, pad_w1, pad_h0, pad_h1 = module._padding[:4]
    _require(name, stride_h == 1, "stride 1 along height")
    _require(name, pad_w0 == pad_w1 and pad_h0 == pad_h1, "symmetric spatial padding")
    _require(name, 2 * pad_h0 == dil_h * (kh - 1), "'same' padding along height")
    if kh == 1:
        return None
    return causal_conv3d_forward, pad_h0


def _conv2d_entry(name, module):
    kh, stride_h, dil_h = module.kernel_size[0], module.stride[0], module.dilation[0]
    _require(name, not isinstance(module.padding, str), "numeric padding")
    _require(name, module.padding_mode == "zeros", "zero padding")
    _require(name, stride_h == 1, "stride 1 along height")
    _require(name, 2 * module.padding[0] == dil_h * (kh - 1), "'same' padding along height")
    if kh == 1:
        return None
    return conv2d_forward, module.padding[0]


def _check_upsample(name, module):
    # Nearest with an integer factor maps output row i to input row i // factor: it only
    # ever reads its own shard's rows.
    factors = module.scale_factor if isinstance(module.scale_factor, tuple) else (module.scale_factor,)
    _require(name, module.mode in ("nearest", "nearest-exact"), "nearest upsampling")
    _require(name, module.size is None and all(float(f).is_integer() for f in factors), "an integer scale factor")
    return None


def _require(name, ok, what):
    if not ok:
        raise TypeError(f"{name}: row-sharded decoding needs {what}")
