"""SP attention on 3 gloo ranks whose arguments disagree: every rank raises the same
ValueError naming the field and each rank's value, within seconds. The group has a short
timeout, so a regression into a hang fails fast here instead of stalling CI."""
import datetime
import time

import pytest
import torch
import torch.distributed as dist

from tests.mp_pool import run_distributed

SHORT = datetime.timedelta(seconds=15)
FAST_S = 10.0  # below SHORT: nobody waited for a peer's timeout
_groups = {}


def _group_and_context():
    """The world again with a short timeout, and a USP context over it (made once per worker)."""
    from ringsp.parallel import ParallelConfig, init_parallel

    if not _groups:
        group = dist.new_group(list(range(dist.get_world_size())), timeout=SHORT)
        _groups["group"] = group
        _groups["ctx"] = init_parallel(ParallelConfig(1, dist.get_world_size()), group=group, timeout=SHORT)
    return _groups["group"], _groups["ctx"]


def _attend_with_rank_one_changed(api, change):
    from ringsp.parallel import ring_attention, ulysses_attention, usp_attention

    group, ctx = _group_and_context()
    args = dict(heads=2, dtype=torch.float32, seq_len=None)
    if dist.get_rank() == 1:
        args.update(change)
    q = torch.randn(1, 2, args["heads"], 8).to(args["dtype"])
    start = time.monotonic()
    try:
        if api == "ring":
            ring_attention(q, q, q, group, seq_len=args["seq_len"])
        elif api == "ulysses":
            ulysses_attention(q, q, q, group, seq_len=args["seq_len"])
        else:
            usp_attention(q, q, q, ctx, seq_len=args["seq_len"])
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc), time.monotonic() - start
    return "no error", "", time.monotonic() - start


# Shards of 2 tokens on 3 ranks: seq_len None means 6 (no padding).
CASES = {
    "heads": ({"heads": 3}, "  q shape: rank 0 has (1, 2, 2, 8), rank 1 has (1, 2, 3, 8), rank 2 has (1, 2, 2, 8)"),
    "dtype": ({"dtype": torch.bfloat16}, "  q dtype: rank 0 has float32, rank 1 has bfloat16, rank 2 has float32"),
    "sequence length": ({"seq_len": 5}, "  seq_len: rank 0 has 6, rank 1 has 5, rank 2 has 6"),
}


@pytest.mark.parametrize("api", ["ring", "ulysses", "usp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_disagreeing_ranks_raise_the_same_error_everywhere(api, case):
    change, line = CASES[case]
    out = run_distributed(3, _attend_with_rank_one_changed, api, change, timeout=90)
    assert len({message for _, message, _ in out}) == 1, out  # the same words on every rank
    for kind, message, seconds in out:
        assert kind == "ValueError" and f"{api}_attention: ranks disagree" in message, message
        assert line in message and seconds < FAST_S, (message, seconds)
