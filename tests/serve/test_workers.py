"""ringsp.serve.workers over the real rank loop (ringsp.serve.rank) with fake engines
(tests/serve/fake_ranks.py): one request at a time, a request that fails on every rank
leaves the workers serving, and a dead, hung or lone failing rank turns the pool down
within seconds, naming the rank and why, with no process left."""
import dataclasses
import time

import pytest

from ringsp.cli.args import parse_request
from ringsp.serve.workers import RunFailed, WorkerPool, WorkersDown

from .fake_ranks import fake_rank
from .server import alive

HANG_S = 3.0
FAIL_TOGETHER_S = 2.0


def _pool():
    config = parse_request(["--model", "tiny-wan", "--device", "cpu", "--num-gpus", "2", "--no-output",
                            "--timeout", "60"], env={})
    pool = WorkerPool(config, rank_fn=fake_rank, hang_s=HANG_S, fail_together_s=FAIL_TOGETHER_S)
    pool.start()
    pool.wait_ready(timeout=120)
    return pool, config


def _ask(pool, config, prompt, marks=None):
    on_mark = (lambda *m: marks.append(m)) if marks is not None else None
    return pool.run(prompt, dataclasses.replace(config, prompt=prompt), on_mark)


@pytest.mark.timeout(180)
def test_requests_run_one_at_a_time_and_a_failure_on_every_rank_is_survived():
    pool, config = _pool()
    try:
        marks = []
        assert _ask(pool, config, "ok", marks)["prompt"] == "ok"
        expected = [(r, "stage", "Denoising") for r in (0, 1)] + [(r, "step", 1) for r in (0, 1)]
        assert sorted(marks) == sorted(expected)
        with pytest.raises(RunFailed, match=r"rank 0: ValueError: fault on rank 0; rank 1: ValueError: fault on rank 1"):
            _ask(pool, config, "raise:all")
        assert pool.state == "ready"
        assert _ask(pool, config, "ok")["prompt"] == "ok"  # the workers serve on
    finally:
        pids = pool.pids()
        pool.stop()
    assert pool.state == "stopped" and alive(pids) == []


@pytest.mark.timeout(180)
def test_a_failure_inside_fail_together_fails_the_request_then_stops_the_workers():
    pool, config = _pool()
    pids = pool.pids()
    try:
        start = time.monotonic()
        with pytest.raises(RunFailed, match=r"rank 1: MemoryError: out of memory on rank 1") as info:
            _ask(pool, config, "guard:1")
        assert "rank 0: PeerFailure: rank 1 failed inside a fail_together region" in str(info.value)
        assert time.monotonic() - start < 20
        assert pool.state == "down" and "process groups are out of step" in pool.reason
        with pytest.raises(WorkersDown, match="out of step"):
            _ask(pool, config, "ok")
    finally:
        pool.stop()
    assert alive(pids) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault, reason", [
    ("exit:1", r"rank 1 \(pid \d+\) exited with code 3 without a Python error \(while serving\)"),
    ("hang:1", r"no progress in request hang:1 for 3 s: rank 1 is at fake_ranks\.py:\d+ \(run\), while rank 0 "
               r"waits in torch\.distributed \(all_reduce\): hung"),
    ("raise:1", r"rank 1 raised ValueError: fault on rank 1 in request raise:1, and rank 0 did not leave it within "
                r"2 s"),
])
def test_a_dead_hung_or_lone_failing_rank_turns_the_pool_down(fault, reason):
    pool, config = _pool()
    pids = pool.pids()
    try:
        start = time.monotonic()
        with pytest.raises(WorkersDown, match=reason):
            _ask(pool, config, fault)
        assert time.monotonic() - start < HANG_S + 5
        assert pool.state == "down"
        with pytest.raises(WorkersDown, match=reason):  # and stays down
            _ask(pool, config, "ok")
    finally:
        pool.stop()
    assert alive(pids) == []
