import time

import pytest

from tests.mp_pool import run_distributed


def _rank_and_sum(offset):
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(dist.get_rank() + offset)])
    dist.all_reduce(t)
    return dist.get_rank(), dist.get_world_size(), t.item(), torch.get_num_threads()


def _fail_on_rank_one():
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise ValueError("bad value on purpose")
    return "ok"


def _hang_on_rank_one():
    import torch.distributed as dist

    if dist.get_rank() == 1:
        time.sleep(60)
    return "ok"


def test_results_come_back_by_rank():
    out = run_distributed(2, _rank_and_sum, 10)
    assert out == [(0, 2, 21.0, 1), (1, 2, 21.0, 1)]


def test_exception_is_reraised_with_rank_and_traceback():
    with pytest.raises(ValueError, match="bad value on purpose") as info:
        run_distributed(2, _fail_on_rank_one)
    assert any("rank 1" in note for note in info.value.__notes__)
    assert "_fail_on_rank_one" in str(info.value.__cause__)
    assert run_distributed(2, _rank_and_sum, 0)[0][2] == 1.0  # the pool still works


def test_hang_times_out_and_pool_is_rebuilt():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[1\]"):
        run_distributed(2, _hang_on_rank_one, timeout=2)
    assert time.monotonic() - start < 15
    assert run_distributed(2, _rank_and_sum, 1)[1][2] == 3.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        run_distributed(0, _rank_and_sum, 0)
    with pytest.raises(ValueError, match="backend"):
        run_distributed(2, _rank_and_sum, 0, backend="mpi")
    with pytest.raises(TypeError, match="picklable"):
        run_distributed(2, lambda: 1)
