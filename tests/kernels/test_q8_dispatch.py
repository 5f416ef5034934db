"""The 8-bit kernel's config comes from the dispatch tables (ringsp_kernels/cuda/q8.py), not
from a per-process autotuner: measured once per class in local mode, rank 0's table in
consistent mode (never timed there), so ranks run the same key tile size, which the
kernel's rounding depends on. Without a GPU: a stub device name and a stub measurement."""
import logging

import pytest
import torch

pytest.importorskip("triton")

from triton.runtime.errors import OutOfResources  # noqa: E402

from ringsp_kernels import dispatch  # noqa: E402
from ringsp_kernels.cuda import ops, q8, triton_fp8  # noqa: E402

DEV = "Stub GPU"


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "SHIPPED", str(tmp_path / "shipped.json"))
    monkeypatch.setattr(ops, "device_name", lambda index: DEV)
    monkeypatch.setattr(q8, "capturing", lambda: False)
    dispatch.reset(cache_dir=str(tmp_path / "cache"))
    q8._PLANS.clear()
    yield
    dispatch.reset()
    q8._PLANS.clear()


class Measure:
    """Stands in for q8.measure_class: counts its calls, returns `config`."""

    def __init__(self, config):
        self.config, self.calls = list(config), []

    def __call__(self, q, k, v, scale, kv_len, precision, has_state):
        self.calls.append((tuple(q.shape), precision, has_state))
        return {"path": "triton", "config": self.config + [False], "ms": {"triton:x": 1.0}}


def qkv(Sq=300, Sk=500, H=3, D=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, n, H, D, generator=g, dtype=torch.float16) for n in (Sq, Sk, Sk))


def block(q, k, v, precision="fp8", has_state=True):
    return q8.block(q, k, v, 0.125, k.shape[1], precision, has_state)


def test_q8_ops_are_dispatch_classes_with_their_own_default():
    key = dispatch.class_key(DEV, torch.bfloat16, 128, 24, 1, 1786, 1786, "int8_step")
    assert dispatch.parse_key(key)["op"] == "int8_step"
    native = dispatch.class_key(DEV, torch.bfloat16, 128, 24, 1, 1786, 1786, "step")
    table = {native: {"path": "cudnn", "config": [64, 64, 4, 2, True]}}
    # a native class is never the nearest of an 8-bit one: another kernel's configs
    assert dispatch.fallback(key, table)["config"] == dispatch.Q8_DEFAULT
    assert tuple(dispatch.Q8_DEFAULT[:4]) in triton_fp8.CONFIGS
    with pytest.raises(ValueError, match="op must be one of"):
        dispatch.class_key(DEV, torch.bfloat16, 128, 24, 1, 8, 8, "fp4_step")


def test_local_mode_measures_a_class_once_then_reads_the_disk_cache(monkeypatch):
    m = Measure([64, 128, 4, 3])
    monkeypatch.setattr(q8, "measure_class", m)
    q, k, v = qkv()
    assert block(q, k, v) == (64, 128, 4, 3)
    q2, k2, v2 = qkv(Sq=290, Sk=510, seed=1)  # same size class: no new measurement
    assert block(q2, k2, v2) == (64, 128, 4, 3)
    assert block(q, k, v, "fp8", has_state=False) == (64, 128, 4, 3)  # fwd is a class of its own
    assert block(q, k, v, "int8") == (64, 128, 4, 3)
    assert [c[1:] for c in m.calls] == [("fp8", True), ("fp8", False), ("int8", True)]
    cache = dispatch.cache_dir()
    dispatch.reset(cache_dir=cache)  # a new process: the disk cache answers
    q8._PLANS.clear()
    assert block(q, k, v) == (64, 128, 4, 3) and len(m.calls) == 3


def test_consistent_mode_runs_rank_zeros_choice_and_never_measures(monkeypatch):
    q, k, v = qkv()
    key = dispatch.class_key(DEV, q.dtype, 64, 3, 1, 300, 500, "fp8_step")
    snap = {"format": dispatch.FORMAT, "entries": {key: {"path": "triton", "config": [64, 128, 4, 3, False]}}}
    m = Measure([128, 128, 8, 3])
    monkeypatch.setattr(q8, "measure_class", m)
    choices = []
    for _rank in range(2):  # what init_parallel does on each rank, in turn
        dispatch.install(snap)
        choices.append((block(q, k, v), block(q, k, v, "fp8", has_state=False), block(q, k, v, "int8")))
    assert choices[0] == choices[1]
    assert choices[0][0] == (64, 128, 4, 3)  # rank 0's measured entry
    # no class of their op in the table: the default, not the fp8 step's config
    assert choices[0][1] == choices[0][2] == tuple(dispatch.Q8_DEFAULT[:4])
    assert m.calls == []


def test_consistent_mode_takes_the_nearest_class_of_the_same_op(monkeypatch):
    q, k, v = qkv()
    near = dispatch.class_key(DEV, q.dtype, 64, 3, 1, 1024, 512, "fp8_step")
    far = dispatch.class_key(DEV, q.dtype, 64, 3, 1, 8192, 8192, "fp8_step")
    monkeypatch.setattr(q8, "measure_class", Measure([128, 128, 8, 3]))
    dispatch.install({"format": dispatch.FORMAT, "entries": {
        near: {"path": "triton", "config": [64, 128, 4, 3, False]},
        far: {"path": "triton", "config": [128, 128, 8, 3, False]}}})
    assert block(q, k, v) == (64, 128, 4, 3)


class Kernel:
    """Stands in for triton_fp8.attend: configs other than `compiles` fail to compile."""

    def __init__(self, compiles):
        self.compiles, self.calls = tuple(compiles), []

    def __call__(self, q, k, v, acc, lse, scale, kv_len, int8, has_state, block=None):
        self.calls.append(tuple(block))
        if tuple(block) != self.compiles:
            raise OutOfResources(300000, 232448, "shared memory")


def test_a_config_that_does_not_compile_falls_back_in_local_mode(monkeypatch, caplog):
    kern = Kernel(triton_fp8.FALLBACK)
    monkeypatch.setattr(triton_fp8, "attend", kern)
    monkeypatch.setattr(q8, "measure_class", Measure([128, 128, 8, 3]))
    q, k, v = qkv()
    acc, lse = torch.zeros(q.shape), torch.zeros(1, 3, 300)
    cfg = block(q, k, v)
    with caplog.at_level(logging.WARNING, logger="ringsp"):
        q8.run_planned(q, k, v, acc, lse, 0.125, 500, "fp8", True, cfg)
    assert kern.calls == [(128, 128, 8, 3), triton_fp8.FALLBACK]
    assert "does not compile" in caplog.text
    assert block(q, k, v) == triton_fp8.FALLBACK  # this shape keeps the fallback


def test_a_config_that_does_not_compile_raises_in_consistent_mode(monkeypatch):
    monkeypatch.setattr(triton_fp8, "attend", Kernel(triton_fp8.FALLBACK))
    q, k, v = qkv()
    dispatch.install({"format": dispatch.FORMAT, "entries": {}})
    acc, lse = torch.zeros(q.shape), torch.zeros(1, 3, 300)
    with pytest.raises(RuntimeError, match="agreed kernel table"):
        q8.run_planned(q, k, v, acc, lse, 0.125, 500, "int8", True, block(q, k, v, "int8"))


def test_tune_measures_the_8bit_classes_of_each_shape():
    from ringsp_kernels.cuda import tune

    shapes = [(1, 64, 64, 2, 128, "fwd"), (1, 64, 16, 2, 128, "step"), (1, 8, 8, 2, 64, "int8_fwd")]
    assert tune.with_precisions(shapes, []) == shapes
    assert tune.with_precisions(shapes, ["fp8"]) == [(1, 64, 64, 2, 128, "fp8_fwd"), (1, 64, 16, 2, 128, "fp8_step"),
                                                     (1, 8, 8, 2, 64, "int8_fwd")]
    assert tune._parse_shape("1,64,64,2,128,int8_step") == (1, 64, 64, 2, 128, "int8_step")
    with pytest.raises(Exception, match="--precision takes"):
        tune._parse_precisions("fp8,fp4")


@pytest.fixture
def hopper_int8(monkeypatch):
    """The Hopper kernel's int8 variant as a usable, cleared candidate whose launch is `fn`."""
    from ringsp_kernels.cuda import hopper

    def use(fn):
        monkeypatch.setitem(hopper.AUTO_Q8, "int8", True)
        monkeypatch.setattr(hopper, "usable", lambda q: True)
        monkeypatch.setattr(hopper, "launch_q8", fn)
    return use


def test_the_hopper_int8_kernel_is_measured_and_chosen_where_it_is_faster(monkeypatch, hopper_int8):
    import time

    calls = []
    hopper_int8(lambda *a: calls.append(a))
    monkeypatch.setattr(triton_fp8, "attend", lambda *a: time.sleep(0.002))
    q, k, v = qkv()
    entry = q8.measure_class(q, k, v, 0.125, 500, "int8", True)
    assert entry["path"] == "hopper" and calls
    assert tuple(entry["config"][:4]) in triton_fp8.CONFIGS  # the Triton kernel's best, for who cannot run hopper
    assert set(entry["ms"]) == {ops.cfg_name(c) for c in triton_fp8.CONFIGS} | {"hopper"}
    assert q8.usable_paths(q, "fp8") == {"triton"}  # fp8's Hopper variant is not cleared
    assert calls[0][-1] == "int8"


def test_a_table_choosing_hopper_runs_triton_where_hopper_is_not_cleared(monkeypatch):
    q, k, v = qkv()
    key = dispatch.class_key(DEV, q.dtype, 64, 3, 1, 300, 500, "int8_step")
    entry = {"path": "hopper", "config": [64, 128, 4, 3, False], "ms": {"hopper": 1.0, "triton:64,128,4,3": 2.0}}
    dispatch.install({"format": dispatch.FORMAT, "entries": {key: entry}})
    assert q8.plan(q, k, v, 0.125, 500, "int8", True) == ("triton", (64, 128, 4, 3))  # AUTO_Q8 is off


def test_a_hopper_int8_kernel_that_does_not_compile(monkeypatch, hopper_int8, caplog):
    def refuse(*a):
        raise OutOfResources(300000, 232448, "shared memory")

    hopper_int8(refuse)
    q, k, v = qkv()
    acc, lse = torch.zeros(q.shape), torch.zeros(1, 3, 300)
    with caplog.at_level(logging.WARNING, logger="ringsp"):
        assert not q8._hopper_ran(q, k, v, acc, lse, 0.125, 500, "int8", True, (64, 128, 4, 3))
    assert "using the Triton 8-bit kernel" in caplog.text
    assert q8.plan(q, k, v, 0.125, 500, "int8", True) == ("triton", (64, 128, 4, 3))
    dispatch.install({"format": dispatch.FORMAT, "entries": {}})
    with pytest.raises(RuntimeError, match="agreed kernel table"):
        q8._hopper_ran(q, k, v, acc, lse, 0.125, 500, "int8", True, (64, 128, 4, 3))
