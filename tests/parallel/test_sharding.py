"""shard_sequence / gather_sequence round trips, padding, and argument errors."""
import pytest
import torch
import torch.distributed as dist

from tests.mp_pool import run_distributed
from tests.parallel.helpers import context


def _round_trip(S, dim, use_ctx):
    from ringsp.parallel import gather_sequence, shard_sequence

    world, rank = dist.get_world_size(), dist.get_rank()
    where = context(world, 1) if use_ctx else None
    shape = [2, 3, 4]
    shape[dim] = S
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(S))
    local = shard_sequence(x, where, dim=dim)
    per = -(-S // world)
    d = dim % x.dim()
    expect = x.narrow(d, min(rank * per, S), max(0, min(per, S - rank * per)))
    pad = local.narrow(d, expect.shape[d], per - expect.shape[d])
    ok = local.shape[d] == per and torch.equal(local.narrow(d, 0, expect.shape[d]), expect)
    ok = ok and bool((pad == 0).all())
    whole = gather_sequence(local, where, dim=dim, seq_len=S)
    padded = gather_sequence(local, where, dim=dim)
    return ok and torch.equal(whole, x) and padded.shape[d] == per * world


@pytest.mark.parametrize("world,S,dim,use_ctx", [
    (2, 7, 1, True), (3, 2, 1, False), (3, 9, 0, True), (4, 3, -1, False), (4, 10, 1, True),
])
def test_shard_gather_round_trip(world, S, dim, use_ctx):
    assert all(run_distributed(world, _round_trip, S, dim, use_ctx))


def _gather_errors():
    from ringsp.parallel import gather_sequence, shard_sequence

    errors = []
    x = torch.randn(1, 4, 2)
    for call in (lambda: gather_sequence(x, None, seq_len=9),
                 lambda: gather_sequence(x, None, dim=3),
                 lambda: shard_sequence(torch.randn(1, 0, 2), None),
                 lambda: shard_sequence(x, "ctx"),
                 lambda: gather_sequence(x if dist.get_rank() else x[:, :3], None)):
        try:
            call()
            errors.append("no error")
        except (TypeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def test_sharding_argument_errors():
    for errors in run_distributed(2, _gather_errors):
        assert "seq_len=9 is out of range [0, 8]" in errors[0]
        assert "dim=3 is out of range" in errors[1]
        assert "empty sequence" in errors[2]
        assert errors[3].startswith("TypeError: ctx must be")
        assert "x_local shape: rank 0 has (1, 3, 2), rank 1 has (1, 4, 2)" in errors[4]
