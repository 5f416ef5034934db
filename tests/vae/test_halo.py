"""Halo exchange between neighbouring ranks, on gloo: every rank gets exactly its
neighbours' edge rows, for uneven slabs, any dim, before != after, and subgroups."""
import pytest
import torch
import torch.distributed as dist

from ringsp.vae.halo import exchange_halo, start_halo_exchange
from ringsp.vae.rows import split_rows
from tests.mp_pool import run_distributed


def _global_tensor(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _exchange_cases(cases):
    """For each (shape, dim, before, after): split a shared random tensor by rows of `dim`
    across the group and compare what arrives with the neighbours' true rows."""
    rank, world = dist.get_rank(), dist.get_world_size()
    checked = 0
    for seed, (shape, dim, before, after) in enumerate(cases):
        full = _global_tensor(shape, seed)
        bounds = split_rows(shape[dim], world)
        start, stop = bounds[rank]
        local = full.narrow(dim, start, stop - start)
        handle = start_halo_exchange(local, dim, before, after)
        from_prev, from_next = handle.wait()
        assert handle.wait() is not None  # a second wait is harmless
        if rank == 0 or before == 0:
            assert from_prev is None
        else:
            torch.testing.assert_close(from_prev, full.narrow(dim, start - before, before), rtol=0, atol=0)
        if rank == world - 1 or after == 0:
            assert from_next is None
        else:
            torch.testing.assert_close(from_next, full.narrow(dim, stop, after), rtol=0, atol=0)
        checked += 1
    return checked


CASES = [
    ((2, 3, 7, 5), 2, 1, 1),  # uneven rows
    ((2, 3, 7, 5), -2, 2, 1),  # negative dim, before != after
    ((4, 9), 0, 1, 0),  # only from the previous rank
    ((4, 9), 0, 0, 2),  # only from the next rank
    ((3, 6, 4), 1, 0, 0),  # nothing to exchange
    ((1, 2, 3, 4, 6), 3, 1, 1),  # 5-D, as in the causal 3-D convs
]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_neighbours_rows_arrive(world):
    cases = [c for c in CASES if c[0][c[1]] >= 2 * world]  # every slab >= the widest halo
    assert run_distributed(world, _exchange_cases, cases) == [len(cases)] * world


def _one_row_per_rank():
    # The thinnest slabs that still work: one row each, a one-row halo.
    return _exchange_cases([((dist.get_world_size(), 3), 0, 1, 1)])


def test_one_row_per_rank():
    assert run_distributed(3, _one_row_per_rank) == [1, 1, 1]


def _too_few_rows():
    # Every rank holds 1 row but its neighbours would need 2: a halo cannot hop over a
    # rank, so each rank refuses locally, before posting any transfer.
    try:
        exchange_halo(torch.zeros(1, 4), 0, 2, 2)
    except ValueError as exc:
        return str(exc)
    return None


def test_too_few_rows_is_refused_before_sending():
    results = run_distributed(3, _too_few_rows)
    for rank, message in enumerate(results):
        assert message is not None and f"rank {rank} holds 1 rows" in message


def _subgroup_exchange():
    # Ranks 1..3 form a group; within it they are ranks 0..2 and exchange as a line.
    group = dist.new_group([1, 2, 3])
    rank = dist.get_rank()
    if rank == 0:
        return "outside"
    grank = dist.get_rank(group)
    local = torch.full((2, 3), float(grank))
    from_prev, from_next = exchange_halo(local, 0, 1, 1, group=group)
    return (None if from_prev is None else from_prev.tolist(), None if from_next is None else from_next.tolist())


def test_subgroup_uses_group_ranks():
    out = run_distributed(4, _subgroup_exchange)
    assert out[0] == "outside"
    assert out[1] == (None, [[1.0, 1.0, 1.0]])
    assert out[2] == ([[0.0, 0.0, 0.0]], [[2.0, 2.0, 2.0]])
    assert out[3] == ([[1.0, 1.0, 1.0]], None)


def _bad_arguments():
    x = torch.zeros(4, 4)
    errors = []
    for kwargs in (dict(dim=2, before=1, after=1), dict(dim=0, before=-1, after=1),
                   dict(dim=0, before=1.0, after=1), dict(dim=True, before=1, after=1)):
        try:
            start_halo_exchange(x, **kwargs)
        except (TypeError, ValueError) as exc:
            errors.append(type(exc).__name__)
    try:
        start_halo_exchange([1, 2], 0, 1, 1)
    except TypeError:
        errors.append("TypeError")
    return errors


def test_bad_arguments_are_refused():
    out = run_distributed(2, _bad_arguments)
    assert out[0] == out[1] == ["ValueError", "ValueError", "TypeError", "TypeError", "TypeError"]


def test_needs_initialised_distributed():
    if dist.is_initialized():
        pytest.skip("this process already has a process group")
    with pytest.raises(ValueError, match="initialised"):
        start_halo_exchange(torch.zeros(3, 3), 0, 1, 1)
