"""The edge-fix convolution on row slabs, in one process: slabs of a random tensor, with
the neighbours' rows handed over directly, must reproduce the whole tensor's convolution."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsp.vae.halo_conv import halo_conv
from ringsp.vae.rows import split_rows


class _Handed:
    def __init__(self, prev, nxt):
        self.rows = (prev, nxt)

    def wait(self):
        return self.rows


def _slab_convs(full, weight, pad, sizes):
    """Runs halo_conv on each slab of `full` (rows = dim -2) and concatenates the outputs."""
    bounds, start = [], 0
    for n in sizes:
        bounds.append((start, start + n))
        start += n
    outs = []
    for i, (lo, hi) in enumerate(bounds):
        x = full[..., lo:hi, :]
        prev = full[..., lo - pad : lo, :] if i > 0 else None
        nxt = full[..., hi : hi + pad, :] if i < len(bounds) - 1 else None

        def conv(inp, pad_rows):
            return F.conv2d(inp, weight, padding=(pad if pad_rows else 0, pad))

        outs.append(halo_conv(x, conv, pad, pad, lambda _x, p=prev, n=nxt: _Handed(p, n)))
    return torch.cat(outs, dim=-2)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 20),
    parts=st.integers(1, 6),
    kernel=st.sampled_from([3, 5]),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_slabs_match_whole_convolution(height, parts, kernel, width, seed):
    pad = kernel // 2
    sizes = [hi - lo for lo, hi in split_rows(height, parts)]
    if min(sizes) < pad:  # a halo cannot hop over a slab: the caller refuses such splits
        return
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(2, 3, height, width, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, kernel, kernel, generator=g, dtype=torch.float64)
    expected = F.conv2d(full, weight, padding=pad)
    torch.testing.assert_close(_slab_convs(full, weight, pad, sizes), expected, rtol=1e-12, atol=1e-12)


def test_without_halo_the_seams_would_differ():
    # Guards the test above: zero-padding each slab on its own is measurably wrong.
    g = torch.Generator().manual_seed(0)
    full = torch.randn(1, 2, 8, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    naive = torch.cat([F.conv2d(full[..., :4, :], weight, padding=1), F.conv2d(full[..., 4:, :], weight, padding=1)], -2)
    assert (naive - F.conv2d(full, weight, padding=1)).abs().max() > 1e-3
