"""USP attention (and through it every u x r layout) against the float64 reference."""
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.mp_pool import run_distributed
from tests.parallel.helpers import context, joint_reference, max_error, random_tensors, shards

CONFIGS = [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (4, 1), (1, 4), (2, 2)]
TOL = 1e-5


def _usp_case(u, r, B, H, S, D, seed, T=None, joint_len=None, dtype=torch.float32):
    from ringsp.parallel import usp_attention

    ctx = context(u, r)
    q, k, v = random_tensors(seed, *[(B, S, H, D)] * 3, dtype=dtype)
    joint = random_tensors(seed + 1, *[(B, T, H, D)] * 3, dtype=dtype) if T else [None] * 3
    ref, ref_joint = joint_reference(q, k, v, *joint, joint_len)
    res = usp_attention(*shards(ctx, q, k, v), ctx, seq_len=S, joint_q=joint[0], joint_k=joint[1],
                        joint_v=joint[2], joint_len=joint_len)
    out, joint_out = res if T else (res, None)
    assert out.shape == (B, -(-S // (u * r)), H, D) and out.dtype == dtype
    err = max_error(out, ref, ctx.sp_rank, u * r)
    joint_err = (joint_out.double() - ref_joint).abs().max().item() if T else 0.0
    return err, joint_err


@pytest.mark.parametrize("u,r", CONFIGS)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(B=st.integers(1, 2), H=st.integers(1, 5), S=st.integers(1, 29), D=st.sampled_from([16, 64]),
       seed=st.integers(0, 2**16))
@example(B=1, H=3, S=3, D=16, seed=1)    # H not divisible by u, S < world
@example(B=2, H=5, S=13, D=64, seed=2)   # uneven S
def test_usp_matches_reference(u, r, B, H, S, D, seed):
    for err, _ in run_distributed(u * r, _usp_case, u, r, B, H, S, D, seed):
        assert err < TOL


@pytest.mark.parametrize("u,r", CONFIGS[1:])
@settings(max_examples=3, deadline=None, derandomize=True)
@given(H=st.integers(1, 5), S=st.integers(1, 23), T=st.integers(1, 9), data=st.data())
def test_usp_joint_matches_reference(u, r, H, S, T, data):
    joint_len = data.draw(st.integers(0, T))
    for err, joint_err in run_distributed(u * r, _usp_case, u, r, 1, H, S, 16, 7, T, joint_len):
        assert err < TOL and joint_err < TOL


def test_usp_bf16_close_to_reference():
    for err, joint_err in run_distributed(4, _usp_case, 2, 2, 1, 3, 21, 64, 3, 5, 4, torch.bfloat16):
        assert err < 3e-2 and joint_err < 3e-2


def _usp_rejects_bad_ctx():
    from ringsp.parallel import usp_attention

    q = torch.randn(1, 2, 1, 16)
    try:
        usp_attention(q, q, q, ctx="not a context")
    except TypeError as exc:
        return str(exc)


def test_usp_rejects_a_non_context():
    assert all("ParallelContext" in msg for msg in run_distributed(2, _usp_rejects_bad_ctx))


def _precision_case(u, r, precision):
    """8-bit attention needs a CUDA GPU: on CPU every rank raises the same error, before any
    collective of the attention (no rank is left waiting); the native names pass through."""
    from ringsp.parallel import usp_attention

    ctx = context(u, r)
    q, k, v = shards(ctx, *random_tensors(3, *[(1, 8, 2, 16)] * 3, dtype=torch.bfloat16))
    try:
        out = usp_attention(q, k, v, ctx, precision=precision)
    except ValueError as exc:
        return str(exc)
    return out.dtype


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_8bit_precision_on_cpu_fails_on_every_rank(precision):
    for msg in run_distributed(2, _precision_case, 1, 2, precision):
        assert isinstance(msg, str) and f"precision={precision!r} needs a CUDA GPU" in msg, msg


def test_native_precision_names_run_native():
    assert run_distributed(2, _precision_case, 2, 1, "bf16") == [torch.bfloat16] * 2


def _joint_out(u, r):
    from ringsp.parallel import usp_attention

    ctx = context(u, r)
    q, k, v = shards(ctx, *random_tensors(11, *[(1, 13, 4, 16)] * 3))
    jq, jk, jv = random_tensors(12, *[(1, 5, 4, 16)] * 3)
    return usp_attention(q, k, v, ctx, seq_len=13, joint_q=jq, joint_k=jk, joint_v=jv, joint_len=4)[1]


@pytest.mark.parametrize("u,r", [(1, 3), (3, 1), (2, 2)])
def test_replicated_text_output_is_bitwise_identical_on_every_rank(u, r):
    outs = run_distributed(u * r, _joint_out, u, r)
    assert all(torch.equal(o, outs[0]) for o in outs)
