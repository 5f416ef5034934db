"""init_parallel: the mesh's groups and ranks, and ranks that disagree on the config."""
import datetime

import pytest
import torch
import torch.distributed as dist

from ringsp.parallel import ParallelConfig, init_parallel
from ringsp.parallel.mesh import _to_timedelta, mesh_ranks
from tests.mp_pool import run_distributed


def test_mesh_ranks_layout():
    groups = mesh_ranks(ParallelConfig(ulysses_degree=2, ring_degree=2, cfg_degree=2), list(range(8)))
    assert groups["sp"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert groups["ulysses"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert groups["ring"] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert groups["cfg"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert mesh_ranks(ParallelConfig(1, 3), [5, 6, 7])["ring"] == [[5, 6, 7]]


def _describe_context(u, r, cfg):
    from ringsp.parallel import init_parallel

    ctx = init_parallel(ParallelConfig(u, r, cfg), timeout=30)
    ranks = {name: dist.get_process_group_ranks(getattr(ctx, f"{name}_group"))
             for name in ("sp", "ulysses", "ring", "cfg")}
    positions = (ctx.sp_rank, ctx.ulysses_rank, ctx.ring_rank, ctx.cfg_rank)
    degrees = (ctx.ulysses_degree, ctx.ring_degree, ctx.cfg_degree, ctx.sp_degree)
    t = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(t, group=ctx.ring_group)  # the groups work
    return ranks, positions, degrees, ctx.device.type, t.item()


def test_init_parallel_builds_the_mesh():
    results = run_distributed(4, _describe_context, 1, 2, 2)
    ranks, positions, degrees, device, ring_sum = results[3]
    assert ranks == {"sp": [2, 3], "ulysses": [3], "ring": [2, 3], "cfg": [1, 3]}
    assert positions == (1, 0, 1, 1) and degrees == (1, 2, 2, 2) and device == "cpu"
    assert ring_sum == 5.0
    ranks, positions, _, _, _ = run_distributed(4, _describe_context, 2, 2, 1)[1]
    assert ranks == {"sp": [0, 1, 2, 3], "ulysses": [0, 1], "ring": [1, 3], "cfg": [1]}
    assert positions == (1, 1, 0, 0)


def _init_with(configs):
    from ringsp.parallel import init_parallel

    try:
        init_parallel(configs[dist.get_rank()])
    except ValueError as exc:
        return str(exc)
    return "no error"


def test_ranks_with_different_configs_fail_on_every_rank():
    messages = run_distributed(2, _init_with, [ParallelConfig(2, 1), ParallelConfig(1, 2)])
    assert all("ulysses_degree: rank 0 has 2, rank 1 has 1" in m for m in messages), messages


def test_config_for_another_world_size_fails_on_every_rank():
    messages = run_distributed(2, _init_with, [ParallelConfig(2, 2)] * 2)
    assert all("needs 4 ranks but the group has 2" in m for m in messages)


def test_init_parallel_argument_errors():
    from ringsp.parallel import init_parallel

    with pytest.raises(TypeError, match="ParallelConfig"):
        init_parallel((2, 1))
    with pytest.raises(RuntimeError, match="initialised"):
        init_parallel(ParallelConfig())
    assert _to_timedelta(5) == datetime.timedelta(seconds=5)
    with pytest.raises(TypeError, match="timeout"):
        _to_timedelta(-1)


def _init_each_then_mixed(configs):
    from ringsp.parallel import init_parallel

    for cfg in configs:  # every rank sees both configs verified first
        init_parallel(cfg)
    return _init_with(configs)


def test_configs_seen_before_still_fail_when_mixed():
    """init_parallel never trusts an earlier verification: two configs that each passed
    before must still be caught when ranks pass different ones."""
    messages = run_distributed(2, _init_each_then_mixed, [ParallelConfig(2, 1), ParallelConfig(1, 2)])
    assert all("ulysses_degree: rank 0 has 2, rank 1 has 1" in m for m in messages), messages


def _kernel_choices_after_init(world):
    """Ranks start with different local kernel choices; after init_parallel every rank runs
    with rank 0's table."""
    from ringsp_kernels import backends, dispatch

    rank = dist.get_rank()
    key = dispatch.class_key("NVIDIA H200", torch.bfloat16, 128, 24, 1, 2048, 2048, "step")
    dispatch.reset()
    dispatch.install({"format": dispatch.FORMAT, "entries": {
        key: {"path": "cudnn" if rank == 0 else "triton", "config": dispatch.default_config(128)}}})
    init_parallel(ParallelConfig(ulysses_degree=world))
    choice = dispatch.lookup(key, backends.versions())["path"]
    fp = dispatch.fingerprint()
    dispatch.reset()
    return choice, fp


def test_init_parallel_gives_every_rank_rank0s_kernel_choices():
    results = run_distributed(3, _kernel_choices_after_init, 3)
    assert {choice for choice, _ in results} == {"cudnn"} and len({fp for _, fp in results}) == 1


def _init_with_fa4_on_rank(fa4_rank):
    """One rank can run the FlashAttention-4 path, the others cannot."""
    from ringsp_kernels.cuda import fa4

    saved = fa4.available, fa4.version  # pool workers live on: put them back
    if dist.get_rank() == fa4_rank:
        fa4.available, fa4.version = (lambda: True), (lambda: "4.0.0b36")
    try:
        init_parallel(ParallelConfig(ulysses_degree=dist.get_world_size()), timeout=30)
    except ValueError as e:
        return str(e)
    finally:
        fa4.available, fa4.version = saved
    return "no error"


def test_ranks_that_differ_in_the_fa4_path_fail_fast():
    """Rank 0's kernel table may name FA4; a rank that cannot run it would choose another
    kernel, and its replicated text outputs would differ: every rank refuses at init."""
    messages = run_distributed(2, _init_with_fa4_on_rank, 1)
    assert all("FlashAttention-4 path: rank 0 has unavailable, rank 1 has 4.0.0b36" in m for m in messages), messages


def _tuned_choice_after_init(cache_dir):
    """Only rank 0's machine was tuned: its disk cache holds an entry written the way
    `python -m ringsp_kernels.cuda.tune` writes it (for this process's software versions).
    Each rank starts fresh, as a new process would, with a cache folder of its own."""
    from ringsp_kernels import backends, dispatch
    from ringsp_kernels.cuda import ops as cuda

    rank = dist.get_rank()
    key = dispatch.class_key("NVIDIA H200", torch.bfloat16, 128, 24, 1, 2048, 2048, "step")
    tuned = {"path": "cudnn", "config": [32, 32, 2, 2, False], "ms": {"cudnn": 1.0, "triton:32,32,2,2,0": 2.0}}
    dispatch.reset(cache_dir=f"{cache_dir}/rank{rank}")
    if rank == 0:
        dispatch.record({key: tuned}, cuda.versions())  # tune's call
        dispatch.reset(cache_dir=f"{cache_dir}/rank0")  # a later process: only the file is left
    try:
        init_parallel(ParallelConfig(ulysses_degree=dist.get_world_size()), timeout=30)
        return dispatch.lookup(key, backends.versions())
    finally:
        dispatch.reset()


def test_a_tuned_entry_of_rank0s_disk_cache_reaches_every_rank(tmp_path):
    """The per-machine dispatch cache is read with the software versions known (they are
    data passed to every cache read), so an SP run uses what the user tuned, on every rank."""
    for entry in run_distributed(2, _tuned_choice_after_init, str(tmp_path)):
        assert entry["path"] == "cudnn" and entry["config"] == [32, 32, 2, 2, False], entry


def _init_with_environment(name, value, on_rank):
    """Rank `on_rank` was started with `name=value` in its environment, the others without."""
    import os

    import ringsp_kernels as rk

    before = os.environ.get(name)
    if dist.get_rank() == on_rank:
        os.environ[name] = value
    rk.clear_caches()  # the settings are read once per process: read them as a new process would
    try:
        init_parallel(ParallelConfig(ulysses_degree=dist.get_world_size()), timeout=30)
    except ValueError as e:
        return str(e)
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before
        rk.clear_caches()
    return "no error"


@pytest.mark.parametrize("name,value,default", [("RINGSP_CHECK_EVERY_CALL", "1", "0"),
                                                ("RINGSP_CUDA_ATTN", "triton", "auto")])
def test_ranks_whose_settings_differ_fail_on_every_rank(name, value, default):
    messages = run_distributed(2, _init_with_environment, name, value, 1)
    assert all(f"{name}: rank 0 has {default}, rank 1 has {value}" in m for m in messages), messages
