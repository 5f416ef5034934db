"""A rank that dies mid-run ends `ringsp generate` within seconds with a non-zero exit naming
it and leaves no process behind; --timeout bounds how long a rank stuck outside any
collective can hold the others.

One real run of `ringsp generate` (two spawned gloo processes of the built-in tiny model, one
made to fail by tests/cli/faulty_run.py); the other cases run the same supervisor
(ringsp.cli.supervise) and process-group set-up (launch.init_group) over ranks that only
all-reduce, which start in a fraction of the time."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ringsp.cli import launch
from ringsp.cli.args import parse_request
from ringsp.cli.supervise import GRACE_S, STOP_S, RankFailure, WorkerFailure, run_ranks

DRIVER = os.path.join(os.path.dirname(__file__), "faulty_run.py")
# From the fault to the launcher's exit: the peers' grace period, SIGTERM then SIGKILL, and
# interpreter teardown on a loaded 2-core machine.
ENDS_WITHIN_S = GRACE_S + STOP_S + 20


def _alive(pid):
    """True if `pid` runs (a zombie, already ended but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _check_nothing_left(pids_dir):
    ranks = sorted(pids_dir.glob("*.pid"))
    assert [p.name for p in ranks] == ["0.pid", "1.pid"]  # both ranks got as far as the fault
    deadline = time.monotonic() + 5  # the kernel may take a moment to tear a killed process down
    left = [int(p.read_text()) for p in ranks]
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _alive(pid)]
        time.sleep(0.1)
    assert left == [], f"processes left behind: {left}"


def _since_fault(pids_dir):
    return time.time() - float((pids_dir / "fault.time").read_text())


@pytest.mark.timeout(300)
def test_a_rank_that_exits_ends_ringsp_generate(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])  # this checkout's ringsp
    proc = subprocess.run(
        [sys.executable, DRIVER, "1:exit", str(tmp_path), "generate", "--model", "tiny-wan", "--device", "cpu",
         "--num-gpus", "2", "--ring-degree", "2", "--steps", "2", "--no-output"],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert (tmp_path / "fault.time").exists(), proc.stderr[-3000:]
    pid = (tmp_path / "1.pid").read_text()
    # named first: the rank that died; rank 0's "connection reset" follows, without its traceback
    assert last.startswith(f"ringsp generate: error: rank 1 (pid {pid}) exited with code 3 without a Python "
                           "error"), proc.stderr[-3000:]
    assert _since_fault(tmp_path) < ENDS_WITHIN_S
    assert "Traceback" not in proc.stderr
    assert "leaked semaphore" not in proc.stderr  # a rank stopped by SIGTERM held no multiprocessing lock
    _check_nothing_left(tmp_path)


# ------------------------------------------------------------------------------ light ranks


def _all_reducing_rank(local_rank, request, port, fault, pids_dir):
    """Joins the group and builds the parallel context as a ringsp rank does, then
    all-reduces until the fault ends the run."""
    import torch
    import torch.distributed as dist

    from ringsp.cli.worker import _parallel_context

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)
    launch.init_group(request, local_rank)
    ctx = _parallel_context(request)
    groups = (dist.group.WORLD, ctx.sp_group, ctx.ulysses_group, ctx.ring_group, ctx.cfg_group)
    timeouts = [g._get_backend(torch.device("cpu")).options._timeout.total_seconds() for g in groups]
    (pids_dir / f"{local_rank}.timeouts").write_text(json.dumps(timeouts))
    x = torch.ones(4)
    dist.all_reduce(x)  # mid-run: the group works before the fault
    (pids_dir / f"{local_rank}.pid").write_text(str(os.getpid()))
    rank, how = fault.split(":")
    if local_rank == int(rank):
        (pids_dir / "fault.time").write_text(repr(time.time()))
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)  # "hang": stuck outside any collective
    while True:
        dist.all_reduce(x)


def _supervised(tmp_path, fault, timeout_s=60):
    request = parse_request(["--model", "tiny-wan", "--device", "cpu", "--num-gpus", "2", "--no-output",
                             "--timeout", str(timeout_s)], env={})
    assert request.timeout_s == timeout_s
    with pytest.raises(WorkerFailure) as info:
        run_ranks(_all_reducing_rank, (request, launch.free_port(), fault, tmp_path), 2)
    for rank in (0, 1):  # the default group and every group of the mesh (new ring / cfg groups) got --timeout
        assert json.loads((tmp_path / f"{rank}.timeouts").read_text()) == [timeout_s] * 5
    return info.value


@pytest.mark.timeout(120)
def test_a_rank_killed_by_a_signal_is_named_first(tmp_path):
    failure = _supervised(tmp_path, "0:kill")
    assert _since_fault(tmp_path) < ENDS_WITHIN_S
    pid = int((tmp_path / "0.pid").read_text())
    assert str(failure).startswith(f"rank 0 (pid {pid}) was killed by signal SIGKILL"), str(failure)
    assert failure.failures[0].died and failure.traceback is None
    _check_nothing_left(tmp_path)


@pytest.mark.timeout(120)
def test_timeout_ends_a_run_held_by_a_stuck_rank(tmp_path):
    failure = _supervised(tmp_path, "1:hang", timeout_s=2)
    # rank 0 gave up waiting for rank 1 after --timeout; rank 1, stuck, was stopped
    assert _since_fault(tmp_path) < 2 + ENDS_WITHIN_S
    assert [f.rank for f in failure.failures] == [0] and failure.stopped == [1], str(failure)
    assert not failure.failures[0].died and "Traceback" in failure.traceback
    assert str(failure).endswith("; rank 1 stopped by ringsp")
    _check_nothing_left(tmp_path)


def test_headlines_say_how_a_rank_ended():
    trace = "Traceback (most recent call last):\n  File 'x', line 1\nValueError: ranks disagree on seed\n"
    assert RankFailure(2, 11, -9, None).headline() == "rank 2 (pid 11) was killed by signal SIGKILL"
    assert RankFailure(1, 12, 3, None).headline() == "rank 1 (pid 12) exited with code 3 without a Python error"
    assert RankFailure(0, 13, 1, trace).headline() == "rank 0 (pid 13) raised ValueError: ranks disagree on seed"
    failure = WorkerFailure([RankFailure(0, 13, 1, trace)], stopped=[1, 2])
    assert str(failure) == "rank 0 (pid 13) raised ValueError: ranks disagree on seed; ranks 1, 2 stopped by ringsp"
    assert failure.traceback == trace


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeout_must_be_positive_and_finite(value):
    from ringsp.cli.args import UsageError

    with pytest.raises(UsageError, match="--timeout must be a finite number of seconds > 0"):
        parse_request(["--model", "tiny-wan", "--device", "cpu", "--no-output", "--timeout", value], env={})


def _faulty_generate(tmp_path, fault, *options, **popen):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    argv = [sys.executable, DRIVER, fault, str(tmp_path), "generate", "--model", "tiny-wan", "--device", "cpu",
            "--num-gpus", "2", "--ring-degree", "2", "--no-output", *options]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


@pytest.mark.timeout(300)
def test_a_rank_that_raises_is_named_first_and_its_peer_fails_together(tmp_path):
    proc = _faulty_generate(tmp_path, "1:raise", "--steps", "2")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr[-3000:]
    pids = {r: (tmp_path / f"{r}.pid").read_text() for r in (0, 1)}
    last = stderr.strip().splitlines()[-1]
    # the cause first, with its traceback; its peer raised PeerFailure naming it (fail_together in the
    # worker), not a "connection closed" of its own
    assert last == (f"ringsp generate: error: rank 1 (pid {pids[1]}) raised ValueError: fault injected on rank 1; "
                    f"rank 0 (pid {pids[0]}) raised ringsp.parallel.fail_together.PeerFailure: rank 1 failed inside "
                    "a fail_together region: ValueError: fault injected on rank 1"), stderr[-3000:]
    assert "Traceback of rank 1:" in stderr
    assert _since_fault(tmp_path) < ENDS_WITHIN_S
    _check_nothing_left(tmp_path)


@pytest.mark.timeout(300)
def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    proc = _faulty_generate(tmp_path, "-:none", "--steps", "2000")  # denoising lasts minutes
    deadline = time.monotonic() + 200
    while len(list(tmp_path.glob("*.pid"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    ranks = [int((tmp_path / f"{r}.pid").read_text()) for r in (0, 1)]
    time.sleep(1.0)  # mid-denoise
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    left = ranks
    while left and time.monotonic() < sent + 10:
        left = [pid for pid in left if _alive(pid)]
        time.sleep(0.1)
    assert left == [], f"ranks left running 10 s after SIGTERM: {left}"
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    # (after rank 0's progress bar, which a stopped rank ends without a newline)
    assert stderr.rstrip().endswith("ringsp generate: stopped by SIGTERM; ranks 0, 1 stopped by ringsp"), stderr[-3000:]
