"""Ranks that disagree on a call's arguments fail fast, with an error on every rank."""
import time

import pytest
import torch
import torch.distributed as dist

from ringsp.parallel.agreement import disagreement_message
from tests.mp_pool import run_distributed
from tests.parallel.helpers import context

FAST_S = 10.0  # far below the workers' 60 s collective timeout: no rank waited on a peer


def _call_with_rank_one_changed(api, change):
    """Runs one SP attention call in which rank 1's arguments differ by `change`;
    returns (exception type, message, seconds) as seen by this rank."""
    from ringsp.parallel import ring_attention, ulysses_attention, usp_attention

    rank = dist.get_rank()
    args = dict(S_local=3, dtype=torch.float32, seq_len=None, joint_len=None, H=2)
    if rank == 1:
        args.update(change)
    q = torch.randn(1, args["S_local"], args["H"], 16).to(args["dtype"])
    joint = torch.randn(1, 4, args["H"], 16).to(args["dtype"])
    kwargs = dict(seq_len=args["seq_len"], joint_q=joint, joint_k=joint, joint_v=joint, joint_len=args["joint_len"])
    start = time.monotonic()
    try:
        if api == "usp":
            usp_attention(q, q, q, context(2, 2) if dist.get_world_size() == 4 else context(1, 2), **kwargs)
        elif api == "ring":
            ring_attention(q, q, q, **kwargs)
        else:
            ulysses_attention(q, q, q, **kwargs)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc), time.monotonic() - start
    return None, "no error", time.monotonic() - start


@pytest.mark.parametrize("api", ["usp", "ring", "ulysses"])
@pytest.mark.parametrize("change,field", [
    ({"S_local": 4}, "q"), ({"dtype": torch.bfloat16}, "q"), ({"seq_len": 5}, "seq_len"),
    ({"joint_len": 2}, "joint_len"), ({"H": 3}, "q"),
])
def test_disagreeing_ranks_fail_fast_on_every_rank(api, change, field):
    results = run_distributed(4 if api == "usp" else 2, _call_with_rank_one_changed, api, change)
    for exc_type, message, seconds in results:
        assert exc_type == "ValueError", message
        assert f"  {field}: rank 0=" in message and "rank 1=" in message
        assert seconds < FAST_S


def test_a_bad_argument_on_one_rank_fails_every_rank():
    results = run_distributed(2, _call_with_rank_one_changed, "ring", {"joint_len": 99})
    assert results[1][0] == "ValueError" and "joint_len=99 is out of range" in results[1][1]
    assert results[0][0] == "ValueError" and "rank 1: ValueError: joint_len=99" in results[0][1]
    assert max(r[2] for r in results) < FAST_S


def _count_checks(calls, every_call):
    """How many fingerprint exchanges `calls` equal calls need."""
    from ringsp.parallel import agreement, ring_attention

    counter = {"n": 0}
    original = agreement._all_gather

    def counting(t, group):
        counter["n"] += 1
        return original(t, group)

    agreement._all_gather, agreement.CHECK_EVERY_CALL = counting, every_call
    try:
        q = torch.randn(1, 5 + every_call, 2, 16)  # a shape no other test uses
        for _ in range(calls):
            ring_attention(q, q, q)
    finally:
        agreement._all_gather, agreement.CHECK_EVERY_CALL = original, False
    return counter["n"]


def test_checks_are_cached_per_signature():
    assert run_distributed(2, _count_checks, 3, False) == [1, 1]
    assert run_distributed(2, _count_checks, 3, True) == [3, 3]


def test_disagreement_message_lists_each_rank():
    msg = disagreement_message("op", [{"a": 1, "b": 2}, {"a": 1, "b": 3}])
    assert msg == "op: ranks disagree on their arguments:\n  b: rank 0=2, rank 1=3"
    msg = disagreement_message("op", [{"a": 1}, {"a": 1, "error": "TypeError: x"}])
    assert "rank 1: TypeError: x" in msg
