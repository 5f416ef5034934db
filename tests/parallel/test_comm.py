"""The ring's P2P exchange and the all-to-all / all-gather helpers, on gloo."""
import pytest
import torch
import torch.distributed as dist

from tests.mp_pool import run_distributed


def _exchange(send, recv):
    from ringsp.parallel.comm import RingExchange

    rank, world = dist.get_rank(), dist.get_world_size()
    ex = RingExchange(None, torch.device("cpu"))
    out = torch.full((3,), -1.0)
    handle = ex.start(torch.full((3,), float(rank)), out, send=send, recv=recv)
    ex.wait(handle)
    return out.tolist(), (ex.prev, ex.next) == ((rank - 1) % world, (rank + 1) % world)


@pytest.mark.parametrize("world", [2, 3])
def test_ring_exchange_receives_from_previous(world):
    for rank, (got, neighbours) in enumerate(run_distributed(world, _exchange, True, True)):
        assert got == [float((rank - 1) % world)] * 3 and neighbours


def test_ring_exchange_can_skip_both_ends():
    assert all(got == [-1.0] * 3 for got, _ in run_distributed(2, _exchange, False, False))


def _collectives():
    from ringsp.parallel.comm import all_to_all
    from ringsp.parallel.gather import all_gather_cat

    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.arange(world, dtype=torch.float32).view(world, 1) + 10 * rank  # slice i for rank i
    got = all_to_all(x, None).flatten().tolist()
    cat = all_gather_cat(torch.full((1, 2), float(rank)), None, dim=1).flatten().tolist()
    return got, cat


def test_all_to_all_and_all_gather():
    for rank, (got, cat) in enumerate(run_distributed(3, _collectives)):
        assert got == [10.0 * src + rank for src in range(3)]
        assert cat == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
