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
