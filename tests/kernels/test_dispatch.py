"""The dispatch tables, the timing rules and the cached launcher, without a GPU."""
import json
import os
import random

import pytest

from ringsp_kernels import dispatch
from ringsp_kernels.cuda import timing

DEV = "NVIDIA H200"
T = {"path": "triton", "config": [128, 128, 8, 3, False]}
C = {"path": "cudnn", "config": [128, 64, 8, 3, True]}
V = {"torch": "t", "triton": "x", "cudnn": 1}  # the software versions whose disk cache is used


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "SHIPPED", str(tmp_path / "shipped.json"))
    dispatch.reset(cache_dir=str(tmp_path / "cache"))
    yield
    dispatch.reset()


def key(Sq=4096, Sk=4096, H=12, D=128, op="step", dtype="bfloat16", B=1, dev=DEV):
    return dispatch.class_key(dev, dtype, D, H, B, Sq, Sk, op)


class Counter:
    def __init__(self, entry):
        self.entry, self.calls = entry, 0

    def __call__(self):
        self.calls += 1
        return dict(self.entry)


def test_keys_bucket_sizes_and_round_trip():
    assert key(Sq=3000, Sk=2049) == key(Sq=4096, Sk=4096)
    assert key(Sq=3000) == key(Sq=2049) != key(Sq=2048)
    fields = dispatch.parse_key(key(Sq=100, Sk=7, H=5, D=64, op="fwd", B=3))
    assert fields == {"device": DEV, "dtype": "bfloat16", "op": "fwd", "D": 64, "H": 5, "B": 4, "Sq": 128, "Sk": 8}
    import torch

    assert dispatch.class_key(DEV, torch.float16, 64, 2, 1, 1, 1, "fwd") == key(1, 1, 2, 64, "fwd", "float16")
    for bad in ("x|y", key().replace("D128", "Dx"), key().replace("|step", "|bwd")):
        with pytest.raises(ValueError):
            dispatch.parse_key(bad)
    with pytest.raises(ValueError, match="op"):
        dispatch.class_key(DEV, "bfloat16", 128, 1, 1, 1, 1, "back")


def test_a_class_is_measured_once_then_read_from_disk_in_a_new_process():
    m = Counter(C)
    assert dispatch.resolve(key(Sq=3000), V, m)["path"] == "cudnn"
    assert dispatch.resolve(key(Sq=4000), V, m)["path"] == "cudnn"  # same class: no new timing
    assert m.calls == 1 and dispatch.stats["measured"] == 1
    cache_dir = dispatch.cache_dir()
    dispatch.reset(cache_dir=cache_dir)  # a new process: memory gone, disk cache stays
    assert dispatch.resolve(key(Sq=3000), V, m)["path"] == "cudnn" and m.calls == 1
    assert dispatch.stats["disk"] == 1
    dispatch.reset(cache_dir=cache_dir)  # other versions: another file, measured again
    dispatch.resolve(key(Sq=3000), dict(V, torch="t2"), m)
    assert m.calls == 2


def test_corrupt_or_foreign_cache_files_are_ignored_and_rewritten(caplog):
    dispatch.resolve(key(), V, Counter(T))
    path = dispatch.cache_path(V)
    for junk in ("{not json", json.dumps([1, 2]), json.dumps({"format": 99, "entries": {}}),
                 json.dumps({"format": 1, "entries": {key(): {"path": "gpu", "config": [1]}, "bad": T}})):
        with open(path, "w") as f:
            f.write(junk)
        dispatch.reset(cache_dir=dispatch.cache_dir())
        m = Counter(C)
        assert dispatch.resolve(key(), V, m)["path"] == "cudnn" and m.calls == 1
        assert dispatch.read_table(path)[key()]["path"] == "cudnn"  # rewritten, valid again
    assert "ignored" in caplog.text or "dropped" in caplog.text


def test_unwritable_cache_keeps_the_choice_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    dispatch.reset(cache_dir=str(blocker / "sub"))  # a folder below a file cannot be made
    m = Counter(T)
    dispatch.resolve(key(), V, m)
    dispatch.resolve(key(), V, m)
    assert m.calls == 1


def test_shipped_table_is_used_and_disk_cache_wins_over_it():
    dispatch.write_table(dispatch.SHIPPED, {key(): C, key(Sq=64): C})
    dispatch.write_table(dispatch.cache_path(V), {key(Sq=64): T})
    m = Counter(T)
    assert dispatch.resolve(key(), V, m)["path"] == "cudnn"
    assert dispatch.resolve(key(Sq=64), V, m)["path"] == "triton"
    assert m.calls == 0 and dispatch.stats["shipped"] == 1 and dispatch.stats["disk"] == 1


def test_an_entry_measured_before_a_candidate_existed_is_measured_again_in_local_mode():
    """A shipped entry timed without the hopper path (measured before it was a candidate) is
    passed over where hopper can run: measured again, with it, and saved; where it cannot
    run, or nothing may be timed, or the table is the group's agreed one, it serves as is."""
    old = dict(C, ms={"triton:128,128,8,3,0": 2.0, "cudnn": 1.0})
    dispatch.write_table(dispatch.SHIPPED, {key(): old, key(Sq=64): old})
    m = Counter(dict(T, ms={"triton:128,128,8,3,0": 2.0, "cudnn": 1.0, "hopper": 0.9}, paths=["cudnn", "hopper"]))
    assert dispatch.resolve(key(), V, m, wanted={"cudnn"})["path"] == "cudnn" and m.calls == 0
    assert dispatch.resolve(key(Sq=64), V, None, wanted={"hopper"})["path"] == "cudnn"  # nothing may be timed
    assert dispatch.resolve(key(Sq=64), V, m, wanted={"cudnn", "hopper"})["path"] == "triton" and m.calls == 1
    dispatch.reset(cache_dir=dispatch.cache_dir())  # a new process: the re-measured entry is on disk
    assert dispatch.resolve(key(Sq=64), V, m, wanted={"cudnn", "hopper"})["path"] == "triton" and m.calls == 1
    assert dispatch.knows({"paths": ["fa4"], "ms": {}}, {"fa4"})  # tried, if not timed: not again
    dispatch.install(dispatch.snapshot(V))
    assert dispatch.resolve(key(), V, m, wanted={"hopper"})["path"] == "cudnn" and m.calls == 1
    dispatch.uninstall()


def test_snapshot_install_round_trip_and_consistent_mode_never_measures():
    dispatch.write_table(dispatch.SHIPPED, {key(dev="A100"): T})
    dispatch.resolve(key(), V, Counter(C))
    snap = json.loads(json.dumps(dispatch.snapshot(V)))  # survives pickling / JSON transport
    assert set(snap["entries"]) == {key(), key(dev="A100")}
    dispatch.reset(cache_dir=dispatch.cache_dir() + "-other-rank")
    dispatch.install(snap)
    assert dispatch.consistent() and dispatch.fingerprint() is not None
    never = Counter(T)
    assert dispatch.resolve(key(), V, never)["path"] == "cudnn"
    far = dispatch.resolve(key(Sq=64, Sk=64), V, never)  # missing: nearest class, no timing
    assert never.calls == 0 and far["path"] == "cudnn" and far["source"].startswith("nearest")
    assert dispatch.snapshot(V)["entries"][key()] == snap["entries"][key()]
    dispatch.uninstall()
    assert not dispatch.consistent() and dispatch.fingerprint() is None


def test_install_rejects_malformed_snapshots():
    for bad in (None, {}, {"format": 2, "entries": {}}, {"format": 1, "entries": {"k": T}},
                {"format": 1, "entries": {key(): {"path": "triton", "config": [1, 2]}}}):
        with pytest.raises(ValueError):
            dispatch.install(bad)
    assert not dispatch.consistent()


def test_fallback_is_a_pure_function_of_key_and_table():
    table = {key(Sq=1024, Sk=1024): T, key(Sq=32768, Sk=32768): C,
             key(Sq=32768, Sk=32768, D=64): T, key(Sq=1024, dev="A100"): C}
    items = list(table.items())
    for _ in range(5):  # the table's order does not matter
        random.shuffle(items)
        assert dispatch.fallback(key(Sq=16384, Sk=16384), dict(items))["path"] == "cudnn"
        assert dispatch.fallback(key(Sq=2048, Sk=1024), dict(items))["path"] == "triton"
    other = dispatch.fallback(key(D=256), table)  # no class of this head dim: the default
    assert other == {"path": "triton", "config": dispatch.default_config(256), "source": "default"}
    assert dispatch.valid_entry(other)


def test_without_a_measure_the_fallback_is_not_remembered():
    dispatch.write_table(dispatch.SHIPPED, {key(Sq=1024): C})
    assert dispatch.resolve(key(Sq=64), V)["path"] == "cudnn"  # capture / forced: no timing
    m = Counter(T)
    assert dispatch.resolve(key(Sq=64), V, m)["path"] == "triton" and m.calls == 1


def test_record_writes_the_table_and_the_cache(tmp_path):
    out = tmp_path / "table.json"
    dispatch.write_table(str(out), {key(dev="A100"): C})
    dispatch.write_table(str(out), {}, meta={"A100": {"date": 1}})
    merged = dispatch.record({key(): T}, V, meta={DEV: {"date": 2}}, path=str(out))
    assert set(merged) == {key(), key(dev="A100")}
    assert json.loads(out.read_text())["meta"] == {"A100": {"date": 1}, DEV: {"date": 2}}
    assert dispatch.read_table(dispatch.cache_path(V))[key()] == T
    with pytest.raises(ValueError):
        dispatch.record({key(): {"path": "x"}}, V)


def test_on_change_listeners_fire():
    seen = []
    remove = dispatch.on_change(lambda: seen.append(1))
    try:
        dispatch.install({"format": 1, "entries": {}})
        dispatch.uninstall()
    finally:
        remove()
    assert len(seen) == 2


# --- timing rules ----------------------------------------------------------------------

def test_settled_and_prune():
    assert timing.settled([1.0, 1.01, 0.99, 1.0, 1.0], [2.0, 2.1, 1.9, 2.0, 2.0])
    assert not timing.settled([1.0, 1.5, 0.7, 1.2, 0.9], [1.1, 1.6, 0.8, 1.3, 1.0])  # noise > gap
    assert timing.settled([1.0, 1.001, 0.999], [1.002, 1.003, 1.001])  # a tie within 1 %: either will do
    s = {"a": [1.0, 1.0, 1.01], "b": [1.5, 1.5, 1.52], "c": [1.02, 0.98, 1.0]}
    assert timing.prune(s) == ["b"] and timing.ranked(s)[0] in ("a", "c")


def test_compare_finds_the_faster_and_drops_failing_candidates():
    import time as _t

    def slow():
        _t.sleep(0.002)

    def fast():
        _t.sleep(0.0005)

    def broken():
        raise RuntimeError("config refused")

    samples = timing.compare({"slow": slow, "fast": fast, "broken": broken}, cuda=False, budget_s=0.5,
                             sample_ms=1.0)
    assert "broken" not in samples and timing.ranked(samples)[0] == "fast"
    with pytest.raises(RuntimeError):
        timing.compare({"broken": broken}, cuda=False)


# --- the cached launcher's calling convention -------------------------------------------

class FakeCompiled:
    def __init__(self):
        self.calls, self.function, self.packed_metadata = [], "fn-handle", "packed"

    def run(self, *a):
        self.calls.append(a)

    def launch_metadata(self, grid, stream, *args):
        return ("meta", grid, len(args))


class FakeJit:
    arg_names = ["X", "n", "stride", "BLOCK", "FLAG"]

    def __init__(self):
        self.compiled, self.jit_calls = FakeCompiled(), []

    def __getitem__(self, grid):
        def call(*args, **kw):
            self.jit_calls.append((grid, args, kw))
            return self.compiled
        return call


def test_cached_kernel_calls_the_launcher_with_all_bound_args(monkeypatch):
    from ringsp_kernels.cuda import fast_launch

    class Chain:
        calls = []

    class Knobs:
        launch_enter_hook = Chain()
        launch_exit_hook = None

    monkeypatch.setattr(fast_launch, "ENABLED", True)
    monkeypatch.setattr(fast_launch, "_RUNTIME", Knobs)
    jit = FakeJit()
    ck = fast_launch.CachedKernel(jit)
    made = []

    def make():
        made.append(1)
        return {"FLAG": True, "BLOCK": 64}, {"num_warps": 4}

    ck.launch("k", (3, 2, 1), ("x", 7, 16), make, stream=99)  # first: through the JIT
    assert jit.jit_calls == [((3, 2, 1), ("x", 7, 16), {"FLAG": True, "BLOCK": 64, "num_warps": 4})]
    ck.launch("k", (5, 2, 1), ("y", 8, 16), make, stream=99)
    assert made == [1] and ck.fast_calls == 1
    assert jit.compiled.calls == [(5, 2, 1, 99, "fn-handle", "packed", None, None, None, "y", 8, 16, 64, True)]
    Chain.calls = [print]  # a profiler's hook: metadata is built and the hooks passed on
    ck.launch("k", (5, 2, 1), ("y", 8, 16), make, stream=99)
    assert jit.compiled.calls[-1][6] == ("meta", (5, 2, 1), 5) and jit.compiled.calls[-1][7] is Knobs.launch_enter_hook


def test_cached_kernel_falls_back_to_the_jit_when_disabled(monkeypatch):
    from ringsp_kernels.cuda import fast_launch

    monkeypatch.setattr(fast_launch, "ENABLED", False)
    jit = FakeJit()
    ck = fast_launch.CachedKernel(jit)
    for _ in range(3):
        ck.launch("k", (1, 1, 1), ("x", 1, 2), lambda: ({"FLAG": 0, "BLOCK": 8}, {}), stream=0)
    assert len(jit.jit_calls) == 3 and not jit.compiled.calls and ck.fast_calls == 0
    # constexprs that do not cover the signature: no direct call either
    monkeypatch.setattr(fast_launch, "ENABLED", True)
    ck = fast_launch.CachedKernel(jit)
    for _ in range(2):
        ck.launch("k", (1, 1, 1), ("x", 1, 2), lambda: ({"BLOCK": 8}, {}), stream=0)
    assert len(jit.jit_calls) == 5 and ck.fast_calls == 0


def test_cache_dir_follows_the_environment(ringsp_env, monkeypatch, tmp_path):
    dispatch.reset()
    ringsp_env.set("RINGSP_CACHE_DIR", str(tmp_path / "x"))
    assert dispatch.cache_dir() == str(tmp_path / "x")
    ringsp_env.unset("RINGSP_CACHE_DIR")
    ringsp_env.set("XDG_CACHE_HOME", str(tmp_path))
    assert dispatch.cache_dir() == os.path.join(str(tmp_path), "ringsp")


def test_tune_measures_missing_classes_and_writes_the_table(monkeypatch, tmp_path, capsys):
    """The tune command's bookkeeping (the timing itself needs a GPU): classes already in the
    disk cache are reused, the rest measured, and all of them land in --out."""
    import torch

    from ringsp_kernels.cuda import ops as cuda
    from ringsp_kernels.cuda import tune

    measured = []

    def fake_measure(shape):
        B, Sq, Sk, H, D, op = shape
        measured.append(shape)
        return dispatch.class_key(DEV, torch.bfloat16, D, H, B, Sq, Sk, op), dict(C, ms={"cudnn": 1.0})

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "device_name", lambda index: DEV)
    monkeypatch.setattr(cuda, "versions", lambda: V)
    monkeypatch.setattr(tune, "measure", fake_measure)
    dispatch.write_table(dispatch.cache_path(V), {key(Sq=1000, Sk=1000, H=4, op="fwd"): T})
    out = tmp_path / "table.json"
    args = ["--set", "", "--shape", "1,1000,1000,4,128,fwd", "--shape", "1,1000,1000,4,128,step",
            "--shape", "1,1001,1001,4,128,step", "--out", str(out)]
    assert tune.main(args) == 0
    assert measured == [(1, 1000, 1000, 4, 128, "step")]  # fwd was cached; 1001 is the same class
    table = dispatch.read_table(str(out))
    assert table[key(Sq=1000, Sk=1000, H=4, op="fwd")] == T and table[key(Sq=1000, Sk=1000, H=4)]["path"] == "cudnn"
    assert "1 measured, 1 from the cache" in capsys.readouterr().out
    assert len(tune.ring_classes()) == 18 and all(c[4] == 128 for c in tune.ring_classes())


def test_choose_takes_the_fastest_path_this_process_can_run():
    entry = {"path": "fa4", "config": [128, 128, 8, 3, True],
             "ms": {"triton:128,128,8,3,1": 2.9, "triton:128,64,8,3,1": 2.7, "cudnn": 2.8, "fa4": 2.4}}
    assert dispatch.choose(entry, {"triton", "cudnn", "fa4"}) == "fa4"
    assert dispatch.choose(entry, {"triton", "cudnn"}) == "triton"  # the best Triton config is faster
    assert dispatch.choose(dict(entry, ms={**entry["ms"], "cudnn": 2.5}), {"triton", "cudnn"}) == "cudnn"
    assert dispatch.choose(entry, {"triton"}) == "triton"
    # an entry without timings (an older table) whose path cannot run: Triton
    assert dispatch.choose({"path": "fa4", "config": [64, 64, 4, 2, False]}, {"triton", "cudnn"}) == "triton"
    assert dispatch.path_of("triton:128,64,8,3,1") == "triton" and dispatch.path_of("cudnn") == "cudnn"
    assert dispatch.valid_entry(entry)


def test_a_table_naming_fa4_loads_and_resolves_without_fa4(tmp_path):
    entry = {"path": "fa4", "config": [128, 128, 8, 3, True], "ms": {"triton:128,128,8,3,1": 3.0, "cudnn": 2.0, "fa4": 1.0}}
    dispatch.write_table(dispatch.SHIPPED, {key(): entry})
    got = dispatch.resolve(key(), V)
    assert got["path"] == "fa4" and dispatch.choose(got, {"triton", "cudnn"}) == "cudnn"


def test_the_fallback_carries_the_nearest_timings_for_choose():
    entry = {"path": "fa4", "config": [128, 128, 8, 3, True], "ms": {"triton:128,128,8,3,1": 3.0, "cudnn": 2.0, "fa4": 1.0}}
    got = dispatch.fallback(key(Sq=8192, Sk=8192), {key(Sq=16384, Sk=16384): entry})
    assert got["path"] == "fa4" and got["ms"] == entry["ms"]
    assert dispatch.choose(got, {"triton", "cudnn"}) == "cudnn"


def test_the_old_tune_command_still_runs_with_a_deprecation_warning():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ringsp_kernels.tune", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "python -m ringsp_kernels.cuda.tune" in run.stdout and "deprecated" in run.stderr
