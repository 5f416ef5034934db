"""Gathering row slabs of different heights, and broadcasting rank 0's tensor, on gloo."""
import pytest
import torch
import torch.distributed as dist

from ringsp.vae.collectives import all_gather_rows, broadcast_from_first, gather_rows
from ringsp.vae.rows import split_rows
from tests.mp_pool import run_distributed


def _gather_cases():
    rank, world = dist.get_rank(), dist.get_world_size()
    results = []
    for seed, (shape, dim) in enumerate((((2, 3, 4, 7, 9), 3), ((1, 2, 1, world, 3), 3), ((5, 3, 2), 0),
                                         ((2, 9), -1))):
        full = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        bounds = split_rows(full.shape[dim], world)
        rows = [b - a for a, b in bounds]
        local = full.narrow(dim, bounds[rank][0], rows[rank])
        every = all_gather_rows(local, rows, None, dim=dim)
        first = gather_rows(local, rows, None, dim=dim)
        results.append(torch.equal(every, full) and (torch.equal(first, full) if rank == 0 else first is None))
    return results


@pytest.mark.parametrize("world", [2, 3])
def test_uneven_slabs_reassemble_exactly(world):
    assert all(all(r) for r in run_distributed(world, _gather_cases))


def _broadcast():
    x = torch.arange(24, dtype=torch.bfloat16).reshape(2, 3, 4) if dist.get_rank() == 0 else None
    got = broadcast_from_first(x, None, torch.device("cpu"))
    return got.dtype, got.tolist()


def test_broadcast_sends_shape_and_dtype():
    out = run_distributed(3, _broadcast)
    expected = torch.arange(24, dtype=torch.bfloat16).reshape(2, 3, 4).tolist()
    assert all(dtype == torch.bfloat16 and values == expected for dtype, values in out)


def _wrong_rows():
    try:
        all_gather_rows(torch.zeros(1, 3, 2), [3, 3], None, dim=0)
    except RuntimeError as exc:
        return str(exc)


def test_slab_size_must_match_rows():
    assert all("expected rows=[3, 3]" in m for m in run_distributed(2, _wrong_rows))
