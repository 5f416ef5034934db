"""Gathering slabs of equal and different extents, and broadcasting the first rank's tensor,
on gloo; the first rank's failures reach every rank."""
import datetime

import pytest
import torch
import torch.distributed as dist

from ringsp.parallel.gather import all_gather_cat, broadcast_from_first, gather_cat
from tests.mp_pool import run_distributed

# A hang in a failure case ends in a gloo timeout error within seconds, not a stuck test.
SHORT = datetime.timedelta(seconds=15)


def _bounds(n, world):
    """Uneven contiguous split: the first n % world ranks get one more, the last may get 0."""
    base, extra = divmod(n, world)
    sizes = [base + (r < extra) for r in range(world)]
    starts = [sum(sizes[:r]) for r in range(world)]
    return starts, sizes


def _gather_cases():
    rank, world = dist.get_rank(), dist.get_world_size()
    results = []
    cases = (((2, 3, 4, 7, 9), 3, torch.float32), ((1, 2, 1, world, 3), 3, torch.float32),
             ((5, 3, 2), 0, torch.float64), ((2, 9), -1, torch.bfloat16), ((2, world - 1), 1, torch.float32),
             ((4, 5), 0, torch.int64), ((3, 4), 1, torch.bool))
    for seed, (shape, dim, dtype) in enumerate(cases):
        full = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        full = (full > 0) if dtype == torch.bool else (full * 100).to(dtype)
        starts, sizes = _bounds(full.shape[dim], world)
        local = full.narrow(dim, starts[rank], sizes[rank])
        every = all_gather_cat(local, None, dim, sizes=sizes)
        first = gather_cat(local, None, dim, sizes=sizes)
        results.append(torch.equal(every, full) and (torch.equal(first, full) if rank == 0 else first is None))
    # Equal slabs (the Ulysses text gather): no sizes needed.
    x = torch.full((1, 2), float(rank))
    results.append(all_gather_cat(x, None, 1).flatten().tolist() == [float(r) for r in range(world) for _ in "ab"])
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


_groups = {}


def _short_group():
    """The world again, with a short timeout: a rank left waiting fails fast."""
    if "short" not in _groups:
        _groups["short"] = dist.new_group(list(range(dist.get_world_size())), timeout=SHORT)
    return _groups["short"]


def _broadcast_failure(case):
    group = _short_group()
    first = dist.get_rank(group) == 0
    x, error = None, None
    if first and case == "bad tensor":
        x = torch.zeros([1] * 9)  # more dims than the metadata holds
    elif first and case == "not a tensor":
        x = [1.0]
    elif first:
        error = MemoryError("out of memory while decoding")
    try:
        broadcast_from_first(x, group, torch.device("cpu"), error)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return "no error", ""


@pytest.mark.parametrize("case,first_kind,others_kind,text", [
    ("bad tensor", "ValueError", "ValueError", "cannot send a 9-D float32 tensor"),
    ("not a tensor", "ValueError", "ValueError", "needs a tensor on the first rank, got list"),
    ("error", "MemoryError", "RuntimeError", "MemoryError: out of memory while decoding"),
])
def test_first_rank_failure_reaches_every_rank(case, first_kind, others_kind, text):
    out = run_distributed(3, _broadcast_failure, case, timeout=60)
    assert out[0][0] == first_kind and (text in out[0][1] or case == "error"), out[0]
    for kind, message in out[1:]:
        assert kind == others_kind and text in message and "first rank" in message, (kind, message)


def _wrong_sizes():
    try:
        all_gather_cat(torch.zeros(1, 3, 2), None, 0, sizes=[3, 3])
    except RuntimeError as exc:
        return str(exc)


def test_slab_size_must_match_sizes():
    assert all("expected sizes=[3, 3]" in m for m in run_distributed(2, _wrong_sizes))
