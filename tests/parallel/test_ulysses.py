"""ulysses_attention alone and its all-to-all layout transforms."""
import pytest
import torch
import torch.distributed as dist
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.mp_pool import run_distributed
from tests.parallel.helpers import joint_reference, max_error, random_tensors, shards

TOL = 1e-5


def _ulysses_case(world, B, H, S, D, seed, T=None, joint_len=None):
    from ringsp.parallel import ulysses_attention

    q, k, v = random_tensors(seed, *[(B, S, H, D)] * 3)
    joint = random_tensors(seed + 1, *[(B, T, H, D)] * 3) if T else [None] * 3
    ref, ref_joint = joint_reference(q, k, v, *joint, joint_len)
    res = ulysses_attention(*shards(None, q, k, v), seq_len=S, joint_q=joint[0], joint_k=joint[1],
                            joint_v=joint[2], joint_len=joint_len)
    out, joint_out = res if T else (res, None)
    joint_err = (joint_out.double() - ref_joint).abs().max().item() if T else 0.0
    return max_error(out, ref, dist.get_rank(), world), joint_err


@pytest.mark.parametrize("world", [2, 3, 4])
@settings(max_examples=4, deadline=None, derandomize=True)
@given(B=st.integers(1, 2), H=st.integers(1, 7), S=st.integers(1, 30), D=st.sampled_from([16, 64]),
       seed=st.integers(0, 2**16))
@example(B=1, H=1, S=5, D=16, seed=0)  # fewer heads than ranks: mostly empty heads
def test_ulysses_matches_reference(world, B, H, S, D, seed):
    for err, _ in run_distributed(world, _ulysses_case, world, B, H, S, D, seed):
        assert err < TOL


@pytest.mark.parametrize("world,H,T,joint_len", [(2, 3, 4, 3), (3, 4, 2, 0), (4, 2, 5, 5)])
def test_ulysses_joint_matches_reference(world, H, T, joint_len):
    for err, joint_err in run_distributed(world, _ulysses_case, world, 2, H, 11, 16, 9, T, joint_len):
        assert err < TOL and joint_err < TOL


def _layout_round_trip(H):
    """seq_to_heads gives rank i head slice i of the whole sequence; heads_to_seq inverts it."""
    from ringsp.parallel.ulysses import heads_to_seq, seq_to_heads

    world, rank = dist.get_world_size(), dist.get_rank()
    q, k, v = random_tensors(5, *[(2, 4 * world, H, 8)] * 3)
    q_h, _, v_h = seq_to_heads(*shards(None, q, k, v), dist.group.WORLD)
    per = -(-H // world)
    heads = slice(rank * per, min((rank + 1) * per, H))
    n = max(0, heads.stop - heads.start)
    ok = torch.equal(q_h[:, :, :n], q[:, :, heads]) and torch.equal(v_h[:, :, :n], v[:, :, heads])
    ok = ok and bool((q_h[:, :, n:] == 0).all())  # padding heads are empty
    back = heads_to_seq(q_h, dist.group.WORLD, H)
    return ok and torch.equal(back, shards(None, q)[0])


@pytest.mark.parametrize("world,H", [(2, 4), (3, 4), (4, 2)])
def test_ulysses_layout_round_trip(world, H):
    assert all(run_distributed(world, _layout_round_trip, H))
