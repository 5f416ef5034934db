"""ringsp.fail_together: a rank that raises inside a guarded region makes every rank of the
group raise within seconds, naming its error; clean regions pass and cost no collective.

The failing cases leave their process groups out of step on purpose (the peers' collectives
stay half matched), so they run in a pool that is torn down afterwards."""
import time

import pytest
import torch
import torch.distributed as dist

from tests.mp_pool import discard_pool, run_distributed
from tests.parallel.helpers import context, joint_reference, max_error, random_tensors, shards

FAIL_WITHIN_S = 10.0  # the bound: every rank raises this soon after the failure
TOL = 1e-5


def _outcome(fn):
    """(exception type, message, time.time() when it surfaced) of fn(), or None if it returned."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - every rank reports what it raised
        return type(exc).__name__, str(exc), time.time()
    return None


def _fails_mid_forward(u, r, where):
    """Rank 1 raises between two SP attention calls ("forward": its peers go on into the
    second call's collectives) or after the last one ("end": its peers reach the exit)."""
    import ringsp
    from ringsp.parallel import usp_attention

    ctx = context(u, r)
    q, k, v = shards(ctx, *random_tensors(3, *[(1, 23, 3, 16)] * 3))
    failed_at = []

    def region():
        with ringsp.fail_together(ctx.sp_group):
            usp_attention(q, k, v, ctx, seq_len=23)  # the forward's first collectives match
            if dist.get_rank() == 1 and where == "forward":
                failed_at.append(time.time())
                raise ValueError("a bad hook on rank 1")
            usp_attention(q, k, v, ctx, seq_len=23)
            if dist.get_rank() == 1:
                failed_at.append(time.time())
                raise ValueError("a bad hook on rank 1")

    outcome = _outcome(region)
    again = _outcome(lambda: ringsp.fail_together(ctx.sp_group).__enter__())  # the groups are out of step now
    return outcome, failed_at, again


@pytest.mark.timeout(180)
@pytest.mark.parametrize("u,r,where", [(1, 3, "forward"), (3, 1, "forward"), (1, 3, "end")],
                         ids=["ring-mid-forward", "ulysses-mid-forward", "ring-after-last-collective"])
def test_a_rank_raising_inside_the_guard_makes_every_rank_raise(u, r, where):
    try:
        results = run_distributed(3, _fails_mid_forward, u, r, where, timeout=60)
    finally:
        discard_pool(3)
    failed_at = results[1][1][0]
    for rank, (outcome, _, again) in enumerate(results):
        assert outcome is not None, f"rank {rank} did not raise"
        name, message, when = outcome
        if rank == 1:  # its own error, unchanged
            assert (name, message) == ("ValueError", "a bad hook on rank 1")
        else:  # the failing rank and its error are named
            assert name == "PeerFailure" and message == ("rank 1 failed inside a fail_together region: "
                                                         "ValueError: a bad hook on rank 1"), outcome
        assert when - failed_at < FAIL_WITHIN_S, (rank, when - failed_at)
        assert again is not None and again[0] == "RuntimeError" and "out of step" in again[1], again


def _clean_regions(u, r, count):
    """`count` guarded regions of joint USP attention; (max error, store keys left)."""
    import ringsp
    from ringsp.parallel import usp_attention
    from ringsp.parallel.fail_together import _PREFIX, _counters

    ctx = context(u, r)
    q, k, v = random_tensors(5, *[(1, 19, 4, 16)] * 3)
    jq, jk, jv = random_tensors(6, *[(1, 4, 4, 16)] * 3)
    ref, ref_joint = joint_reference(q, k, v, jq, jk, jv, 3)
    err = 0.0
    for _ in range(count):
        with ringsp.fail_together(ctx.sp_group) as guard:
            out, joint_out = usp_attention(*shards(ctx, q, k, v), ctx, seq_len=19, joint_q=jq, joint_k=jk,
                                           joint_v=jv, joint_len=3)
        err = max(err, max_error(out, ref, ctx.sp_rank, u * r), (joint_out.double() - ref_joint).abs().max().item())
    store = (ctx.sp_group or dist.group.WORLD).get_group_store()
    last = _counters[ctx.sp_group or dist.group.WORLD] - 1
    kept = [i for i in range(last + 1) if store.check([f"{_PREFIX}{i}/done"])]
    return err, kept, guard.region is not None


def test_clean_guarded_regions_pass_and_leave_few_keys():
    for err, kept, guarded in run_distributed(4, _clean_regions, 2, 2, 5):
        assert err < TOL and guarded
        assert len(kept) <= 2  # the store keeps the last two regions' keys only


def _no_extra_collectives():
    """Inside a guard, attention calls issue exactly the collectives they issue outside it."""
    import ringsp
    from ringsp.parallel import usp_attention

    ctx = context(1, 2)
    q, k, v = shards(ctx, *random_tensors(8, *[(1, 16, 2, 16)] * 3))
    usp_attention(q, k, v, ctx, seq_len=16)  # the argument agreement happens once, here
    calls = []
    originals = {name: getattr(dist, name) for name in ("batch_isend_irecv", "all_gather", "all_reduce", "barrier")}
    for name, fn in originals.items():
        setattr(dist, name, lambda *a, _n=name, _f=fn, **kw: calls.append(_n) or _f(*a, **kw))
    try:
        usp_attention(q, k, v, ctx, seq_len=16)
        bare = list(calls)
        calls.clear()
        with ringsp.fail_together(ctx.sp_group):
            for _ in range(3):
                usp_attention(q, k, v, ctx, seq_len=16)
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return bare, calls


def test_the_guard_adds_no_collective_per_attention_call():
    for bare, guarded in run_distributed(2, _no_extra_collectives):
        assert bare and guarded == bare * 3


def test_without_a_process_group_the_guard_is_a_no_op():
    import ringsp

    with ringsp.fail_together() as guard:
        x = torch.ones(2)
    assert guard.region is None and x.sum() == 2
    with pytest.raises(ValueError, match="a local error"):
        with ringsp.fail_together():
            raise ValueError("a local error")


def test_bad_guard_arguments():
    import ringsp

    with pytest.raises(ValueError, match="timeout_s and poll_s must be > 0"):
        ringsp.fail_together(timeout_s=0)
