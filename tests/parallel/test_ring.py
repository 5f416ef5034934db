"""ring_attention alone, over WORLD and over a subgroup, against the float64 reference."""
import pytest
import torch.distributed as dist
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.mp_pool import run_distributed
from tests.parallel.helpers import joint_reference, max_error, random_tensors, shards

TOL = 1e-5


def _ring_case(world, B, H, S, D, seed, T=None, joint_len=None):
    from ringsp.parallel import ring_attention

    q, k, v = random_tensors(seed, *[(B, S, H, D)] * 3)
    joint = random_tensors(seed + 1, *[(B, T, H, D)] * 3) if T else [None] * 3
    ref, ref_joint = joint_reference(q, k, v, *joint, joint_len)
    res = ring_attention(*shards(None, q, k, v), None, seq_len=S, joint_q=joint[0], joint_k=joint[1],
                         joint_v=joint[2], joint_len=joint_len)
    out, joint_out = res if T else (res, None)
    joint_err = (joint_out.double() - ref_joint).abs().max().item() if T else 0.0
    return max_error(out, ref, dist.get_rank(), world), joint_err


@pytest.mark.parametrize("world", [2, 3, 4])
@settings(max_examples=4, deadline=None, derandomize=True)
@given(B=st.integers(1, 2), H=st.integers(1, 4), S=st.integers(1, 30), D=st.sampled_from([16, 64]),
       seed=st.integers(0, 2**16))
@example(B=1, H=2, S=2, D=16, seed=0)  # S < world: some ranks hold only padding
def test_ring_matches_reference(world, B, H, S, D, seed):
    for err, _ in run_distributed(world, _ring_case, world, B, H, S, D, seed):
        assert err < TOL


@pytest.mark.parametrize("world,S,T,joint_len", [(2, 9, 4, 2), (3, 5, 3, 0), (4, 17, 6, 6), (4, 3, 3, 2)])  # last: rank 3 holds only padding
def test_ring_joint_matches_reference(world, S, T, joint_len):
    for err, joint_err in run_distributed(world, _ring_case, world, 1, 3, S, 16, 5, T, joint_len):
        assert err < TOL and joint_err < TOL


def _ring_on_subgroup(S):
    """Ranks {1, 3} of 4 form a ring; the others do not take part."""
    from ringsp.parallel import ring_attention

    sub = dist.new_group([1, 3])
    if dist.get_rank() not in (1, 3):
        return 0.0
    q, k, v = random_tensors(11, *[(1, S, 2, 16)] * 3)
    ref, _ = joint_reference(q, k, v)
    out = ring_attention(*shards(sub, q, k, v), sub, seq_len=S)
    return max_error(out, ref, dist.get_rank(sub), 2)


def test_ring_on_a_subgroup():
    assert max(run_distributed(4, _ring_on_subgroup, 7)) < TOL
