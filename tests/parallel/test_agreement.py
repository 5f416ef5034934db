"""Ranks that disagree on a call's arguments fail fast, with an error on every rank."""
import json
import time

import pytest
import torch
import torch.distributed as dist

from ringsp.parallel.agreement import Checksum, _fingerprint, describe, disagreement_message
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
        assert f"  {field}" in message and "rank 0 has" in message and "rank 1 has" in message
        assert seconds < FAST_S


def test_a_bad_argument_on_one_rank_fails_every_rank():
    results = run_distributed(2, _call_with_rank_one_changed, "ring", {"joint_len": 99})
    assert results[1][0] == "ValueError" and "joint_len=99 is out of range" in results[1][1]
    assert results[0][0] == "ValueError"
    assert "rank 1 of 2 rejected its arguments: ValueError: joint_len=99" in results[0][1]
    assert max(r[2] for r in results) < FAST_S


def _count_checks(calls, every_call):
    """How many fingerprint exchanges `calls` equal calls need."""
    from ringsp.parallel import agreement, ring_attention

    counter = {"n": 0}
    original = agreement.all_gather_cat

    def counting(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    agreement.all_gather_cat, agreement.CHECK_EVERY_CALL = counting, every_call
    try:
        q = torch.randn(1, 5 + every_call, 2, 16)  # a shape no other test uses
        for _ in range(calls):
            ring_attention(q, q, q)
    finally:
        agreement.all_gather_cat, agreement.CHECK_EVERY_CALL = original, False
    return counter["n"]


def test_checks_are_cached_per_signature():
    assert run_distributed(2, _count_checks, 3, False) == [1, 1]
    assert run_distributed(2, _count_checks, 3, True) == [3, 3]


def _prints(*per_rank_fields, error_on=None):
    """The decoded fingerprints that agree() would gather for these per-rank fields."""
    return [json.loads(_fingerprint("op", f, ValueError("bad") if r == error_on else None))
            for r, f in enumerate(per_rank_fields)]


def test_disagreement_message_lists_each_rank_in_plain_terms():
    a = {"n": 1, "x": describe(torch.zeros(2, 3, dtype=torch.bfloat16))}
    b = {"n": 2, "x": describe(torch.zeros(2, 4))}
    assert disagreement_message("op", _prints(a, b)) == (
        "op: ranks disagree on their arguments (every rank must pass the same):\n"
        "  n: rank 0 has 1, rank 1 has 2\n"
        "  x dtype: rank 0 has bfloat16, rank 1 has float32\n"
        "  x shape: rank 0 has (2, 3), rank 1 has (2, 4)"
    )
    assert disagreement_message("op", _prints(a, a)) is None
    msg = disagreement_message("op", _prints({"x": None}, a))
    assert "  x: rank 0 has None, rank 1 has {device cpu, dtype bfloat16, shape (2, 3)}" in msg
    assert "  n: rank 0 has no such field, rank 1 has 1" in msg


def test_a_rank_error_is_named_with_its_rank():
    msg = disagreement_message("op", _prints({"n": 1}, {"n": 1}, {}, error_on=2))
    assert msg == "op: rank 2 of 3 rejected its arguments: ValueError: bad"


def test_different_operations_are_named():
    prints = [json.loads(_fingerprint(op, {}, None)) for op in ("ring_attention", "ulysses_attention")]
    assert disagreement_message("x", prints) == (
        "ranks are in different calls:\n  operation: rank 0 has ring_attention, rank 1 has ulysses_attention"
    )


@pytest.mark.parametrize("mine,theirs,same", [
    ([1.0, 2.0], [1.0, 2.0 + 1e-12], True),
    ([1.0], [1.0 + 1e-3], False),
    ([float("nan"), 3.0], [float("nan"), 3.0], True),  # NaN inputs are not the check's business
    ([float("nan")], [1.0], False),
    ([0.0], [1e-300], False),  # relative only: no absolute slack around zero
])
def test_checksums_compare_with_relative_tolerance(mine, theirs, same):
    msg = disagreement_message("op", _prints({"sum": Checksum(mine)}, {"sum": Checksum(theirs)}))
    assert (msg is None) == same
    if not same:
        assert msg.endswith(f"  sum: rank 0 has {_show_checksum(mine)}, rank 1 has {_show_checksum(theirs)}")


def _show_checksum(values):
    return repr(values[0]) if len(values) == 1 else "(" + ", ".join(map(repr, values)) + ")"


def _checksum_agreement(rank_offset):
    """agree() over 3 ranks where each rank's checksum is off by rank * rank_offset."""
    from ringsp.parallel.agreement import agree

    rank = dist.get_rank()
    try:
        agree(None, "checksums", {"shape": [1, 2], "sum": Checksum([2.0 + rank * rank_offset])}, cache=False)
    except ValueError as exc:
        return str(exc)
    return "ok"


def test_checksums_within_tolerance_agree_across_ranks():
    # The hashes differ (so the fingerprints are exchanged), but the values are close.
    assert run_distributed(3, _checksum_agreement, 1e-12) == ["ok"] * 3
    messages = run_distributed(3, _checksum_agreement, 1e-3)
    assert len(set(messages)) == 1 and "  sum: rank 0 has 2.0, rank 1 has 2.001, rank 2 has 2.002" in messages[0]
