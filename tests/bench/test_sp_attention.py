"""ringsp_bench.sp_attention on CPU: argument parsing and its pure helpers (the run needs GPUs)."""

import pytest

from ringsp_bench import sp_attention as bench


def test_defaults():
    args = bench.parse_args([])
    assert args.seq == [32760, 75600] and (args.heads, args.head_dim, args.batch, args.dtype) == (12, 128, 1, "bf16")
    assert bench.parse_args(["--seq", "100", "--json", "x.json"]).seq == [100]


@pytest.mark.parametrize("argv", [["--heads", "0"], ["--seq", "0"], ["--dtype", "fp8"], ["--iters", "0"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_layouts():
    assert bench.layouts(1) == [("single", 1, 1)]
    assert bench.layouts(2) == [("ring", 1, 2), ("ulysses", 2, 1)]
    assert bench.layouts(4) == [("ring", 1, 4), ("ulysses", 4, 1), ("usp", 2, 2)]


def test_efficiency_and_comm_hidden():
    assert bench.efficiency(8.0, 4, 2.0) == 1.0 and bench.efficiency(None, 4, 2.0) is None
    assert bench.comm_hidden(10.0, 10.0, 4.0) == 1.0      # transfers fully overlapped
    assert bench.comm_hidden(14.0, 10.0, 4.0) == 0.0      # fully exposed
    assert bench.comm_hidden(12.0, 10.0, 4.0) == 0.5
    assert bench.comm_hidden(12.0, 10.0, 0.0) is None


def test_table_and_versions():
    row = dict(seq_len=100, impl="ringsp ring", layout="1x2", time_ms=1.5, efficiency=0.9, comm_hidden=None,
               max_abs_err=1e-3)
    table = bench.format_table([row])
    assert "ringsp ring" in table and "1.500" in table and " - " in table
    assert bench.versions()["torch"]


def test_main_without_cuda_exits_cleanly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert bench.main([]) == 2


def _one_phase_passes():
    """The benchmark's one-phase ring loops on gloo (a ring over WORLD, no Ulysses): compute
    only attends to the rank's own block, transfers only attends to nothing, and the library's
    own pass after them is exact."""
    import torch.distributed as dist

    from ringsp.parallel.attention_args import prepare
    from ringsp.parallel.groups import SINGLE
    from ringsp.parallel.ulysses import sp_pass
    from tests.parallel.helpers import joint_reference, max_error, random_tensors, shards

    q, k, v = random_tensors(3, *[(1, 8, 2, 16)] * 3)
    local = shards(None, q, k, v)
    own, _ = joint_reference(*local)  # attention over this rank's own block only
    a = prepare("ring_attention", None, dist.get_world_size(), *local, None, None, None, None, None, None)
    compute_only, transfers_only = (bench.sp_pass_with(loop, a, SINGLE, None) for loop in bench.one_phase_loops())
    full = sp_pass(a, SINGLE, None)  # nothing stays switched: the library's pass is the real one
    ref, _ = joint_reference(q, k, v)
    return ((compute_only.double() - own).abs().max().item(), transfers_only.abs().max().item(),
            max_error(full, ref, dist.get_rank(), dist.get_world_size()))


def test_one_phase_loops_skip_transfers_or_compute():
    from tests.mp_pool import run_distributed

    for own_err, no_compute_max, full_err in run_distributed(2, _one_phase_passes):
        assert own_err < 1e-5 and no_compute_max == 0.0 and full_err < 1e-5
