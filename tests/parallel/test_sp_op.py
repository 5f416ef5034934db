"""The SP attention and gather as torch ops (ringsp.parallel.sp_op): against the float64
reference (uneven lengths, padded heads, per-row joint lengths including 0), torch's own op
checks (schema, fake kernels, AOT dispatch), a compiled caller without graph breaks, and
bad arguments."""
import pytest
import torch

from tests.mp_pool import run_distributed
from tests.parallel.helpers import context, joint_reference, max_error, random_tensors, shards

TOL = 1e-5


def _op_cases(u, r):
    """(output error, joint error) per case: no joint, int joint_len, per-row lengths, compiled."""
    from ringsp.parallel.sp_op import SPGroups, sp_attention

    ctx = context(u, r)
    groups = SPGroups.of(ctx)
    world = u * r
    B, S, H, D, T = 3, 11, 3, 8, 5
    q, k, v = random_tensors(7, *[(B, S, H, D)] * 3)
    jq, jk, jv = random_tensors(8, *[(B, T, H, D)] * 3)
    local = shards(ctx, q, k, v)
    results = []
    ref, _ = joint_reference(q, k, v)
    results.append((max_error(sp_attention(*local, groups, S), ref, ctx.sp_rank, world), 0.0))
    ref, ref_joint = joint_reference(q, k, v, jq, jk, jv, 2)
    out, joint_out = sp_attention(*local, groups, S, joint=(jq, jk, jv), joint_len=2)
    results.append((max_error(out, ref, ctx.sp_rank, world), (joint_out.double() - ref_joint).abs().max().item()))
    lens = torch.tensor([5, 2, 0])  # one attention per distinct count inside the op
    run = lambda *t: sp_attention(*t, groups, S, joint=(jq, jk, jv), joint_len=lens)  # noqa: E731
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    for fn in (run, compiled):
        out, joint_out = fn(*local)
        errors = []
        for row, n in enumerate(lens.tolist()):
            pick = [t[row:row + 1] for t in (q, k, v, jq, jk, jv)]
            ref, ref_joint = joint_reference(*pick, n)
            errors.append((max_error(out[row:row + 1], ref, ctx.sp_rank, world),
                           (joint_out[row:row + 1].double() - ref_joint).abs().max().item()))
        results.append(tuple(max(e) for e in zip(*errors)))
    return results


@pytest.mark.parametrize("u,r", [(2, 1), (1, 3), (2, 2)])
def test_ops_match_the_reference(u, r):
    for rank_results in run_distributed(u * r, _op_cases, u, r):
        assert len(rank_results) == 4
        for err, joint_err in rank_results:
            assert err < TOL and joint_err < TOL, rank_results


def _opchecks():
    """torch.library.opcheck on every op (every rank runs the same calls: collectives match)."""
    from ringsp.parallel.sp_op import SPGroups

    ctx = context(1, 2)
    g = SPGroups.of(ctx)
    q, k, v = random_tensors(3, *[(2, 4, 3, 8)] * 3)
    jq, jk, jv = random_tensors(4, *[(2, 5, 3, 8)] * 3)
    ops = torch.ops.ringsp
    calls = [
        (ops.sp_attention.default, (q, k, v, 7, None, None, g.sp, g.ulysses, g.ring)),
        (ops.sp_joint_attention.default, (q, k, v, jq, jk, jv, torch.tensor([5, 1]), None, 7, 0.3, None, g.sp,
                                          g.ulysses, g.ring)),
        (ops.sp_joint_attention.default, (q, k, v, jq, jk, jv, None, 3, None, None, "native", g.sp, g.ulysses,
                                          g.ring)),
        (ops.sp_gather.default, (q, 1, 7, g.sp)),
    ]
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    return [torch.library.opcheck(op, args, test_utils=tests) for op, args in calls]


def test_torch_op_checks_pass():
    for rank_results in run_distributed(2, _opchecks):
        for result in rank_results:
            assert set(result.values()) == {"SUCCESS"}, result


def _gather_round_trip():
    from ringsp.parallel import shard_sequence
    from ringsp.parallel.sp_op import SPGroups, sp_gather

    ctx = context(3, 1)
    [x] = random_tensors(5, (2, 7, 4))
    full = sp_gather(shard_sequence(x, ctx, dim=1), SPGroups.of(ctx), dim=1, seq_len=7)
    padded = sp_gather(shard_sequence(x, ctx, dim=1), SPGroups.of(ctx), dim=-2)
    return torch.equal(full, x), tuple(padded.shape)


def test_gather_op_round_trip():
    assert run_distributed(3, _gather_round_trip) == [(True, (2, 9, 4))] * 3


def _bad_calls():
    from ringsp.parallel.sp_op import SPGroups, sp_attention

    ctx = context(2, 1)
    g = SPGroups.of(ctx)
    q, k, v = random_tensors(3, *[(2, 4, 3, 8)] * 3)
    joint = tuple(random_tensors(4, *[(2, 5, 3, 8)] * 3))
    calls = {
        "groups": lambda: sp_attention(q, k, v, ctx),
        "lens_float": lambda: sp_attention(q, k, v, g, joint=joint, joint_len=torch.tensor([1.0, 2.0])),
        "lens_shape": lambda: sp_attention(q, k, v, g, joint=joint, joint_len=torch.tensor([1, 2, 3])),
        "lens_range": lambda: sp_attention(q, k, v, g, joint=joint, joint_len=torch.tensor([1, 6])),
        "len_without_joint": lambda: sp_attention(q, k, v, g, joint_len=3),
        "joint_pair": lambda: sp_attention(q, k, v, g, joint=joint[:2]),
        "seq_len": lambda: sp_attention(q, k, v, g, 99),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = None
        except (TypeError, ValueError) as exc:
            out[name] = (type(exc).__name__, str(exc))
    return out


def test_bad_arguments_raise_naming_them():
    for out in run_distributed(2, _bad_calls):
        expected = {"groups": ("TypeError", "SPGroups"), "lens_float": ("TypeError", "integer"),
                    "lens_shape": ("ValueError", "[B=2]"), "lens_range": ("ValueError", "joint_len=6"),
                    "len_without_joint": ("ValueError", "joint_len"), "joint_pair": ("TypeError", "joint"),
                    "seq_len": ("ValueError", "seq_len=99")}
        for name, (kind, text) in expected.items():
            assert out[name] is not None and out[name][0] == kind and text in out[name][1], (name, out[name])
