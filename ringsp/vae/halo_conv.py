"""A stride-1 convolution on a row slab (rows = dim -2) that matches the convolution of the
whole tensor: the rows next to a neighbour are recomputed from the neighbour's halo.

The bulk of the slab is convolved with zero rows standing in for the halo while the halo
is in flight; that result is exact everywhere except the `before` top / `after` bottom
rows facing a neighbour, which are then recomputed from thin slabs [halo | edge rows] and
written over. At the global top and bottom the zero rows are the original padding, so
nothing is recomputed there. No full-size copy beyond what the convolution itself makes.
"""
import torch

__all__ = ["halo_conv"]


def halo_conv(x, conv, before, after, start_exchange):
    """Convolves the slab x with its neighbours' rows.

    conv(inp, pad_rows): the convolution; with pad_rows=True it zero-pads `before`/`after`
        rows itself (output has inp's rows), with pad_rows=False inp already carries the
        halo (output has inp's rows - before - after).
    start_exchange(x): starts the halo transfer; returns a handle whose wait() gives
        (before rows from the previous slab or None, after rows from the next slab or None).
    """
    handle = start_exchange(x)
    out = conv(x, True)  # issued before the wait, so the transfer overlaps it
    from_prev, from_next = handle.wait()
    if from_prev is None and from_next is None:
        return out
    rows = x.shape[-2]
    if rows < before + after:
        # Too thin for separate edge fixes (the two edges overlap): redo the slab whole.
        whole = [_or_zeros(from_prev, x, before), x, _or_zeros(from_next, x, after)]
        return conv(torch.cat(whole, dim=-2), False)
    if from_prev is not None and before > 0:
        out[..., :before, :] = conv(torch.cat([from_prev, x[..., : before + after, :]], dim=-2), False)
    if from_next is not None and after > 0:
        out[..., rows - after :, :] = conv(torch.cat([x[..., rows - before - after :, :], from_next], dim=-2), False)
    return out


def _or_zeros(halo, x, n):
    if halo is not None:
        return halo
    shape = list(x.shape)
    shape[-2] = n
    return x.new_zeros(shape)
