"""Running the spawned ranks of a `ringsp generate` run and ending them together.

    run_ranks(fn, args, nprocs)   # fn(local_rank, *args) in each process; WorkerFailure if any failed

When one rank dies (killed by the OOM killer, a segfault, os._exit), its peers soon fail
too ("Connection closed by peer") or wait in a collective until the group's timeout.
torch.multiprocessing's own join reports whichever failed process it looks at first, which
may be such a peer. Here every failure within a short grace period is collected, the ranks
that died without a Python error are named first (they are the cause), and the ranks still
running are stopped (SIGTERM, then SIGKILL), so no process outlives the launcher. The same
stop ends every rank when the launcher itself is interrupted (Ctrl-C) or sent SIGTERM /
SIGHUP (a job scheduler, a closed terminal); the signals then raise LauncherStopped.
"""
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass

# After the first failure, how long the other ranks get to end on their own (a peer's
# error names what it saw) before they are stopped.
GRACE_S = 2.0
# How long a rank may take to stop after SIGTERM before it is killed.
STOP_S = 5.0
_TERMINATION = (signal.SIGTERM, signal.SIGHUP)
_PEER_FAILURE = "ringsp.parallel.fail_together.PeerFailure:"  # how torch's error file names it


@dataclass
class RankFailure:
    rank: int
    pid: int
    exitcode: int
    traceback: str | None  # the rank's Python traceback if it raised; None if it died

    @property
    def died(self):
        """True if the rank ended without a Python error (a signal, os._exit, a crash)."""
        return self.traceback is None

    @property
    def peer_failure(self):
        """True if the rank raised because another one failed (ringsp.PeerFailure)."""
        return self.traceback is not None and _last_line(self.traceback).startswith(_PEER_FAILURE)

    def headline(self):
        if self.exitcode < 0:
            how = f"was killed by signal {_signal_name(-self.exitcode)}"
        elif self.traceback is None:
            how = f"exited with code {self.exitcode} without a Python error"
        else:
            how = f"raised {_last_line(self.traceback)}"
        return f"rank {self.rank} (pid {self.pid}) {how}"


class WorkerFailure(RuntimeError):
    """Ranks of a spawned run failed: `failures` lists them, causes (ranks that died) first;
    str() is one line naming them; `traceback` is the Python traceback of the first one, if
    it raised (a peer's "connection reset" after a rank died would only distract)."""

    def __init__(self, failures, stopped):
        self.failures, self.stopped = list(failures), list(stopped)
        parts = [f.headline() for f in self.failures]
        if self.stopped:
            parts.append(f"rank{'s' if len(self.stopped) > 1 else ''} {', '.join(map(str, self.stopped))} "
                         "stopped by ringsp")
        super().__init__("; ".join(parts))

    @property
    def traceback(self):
        return self.failures[0].traceback if self.failures else None


class LauncherStopped(Exception):
    """The launcher was sent SIGTERM / SIGHUP (a job scheduler, a closed terminal): its
    ranks were stopped. `signal_name`, `stopped` (the ranks still running then)."""

    def __init__(self, signum):
        self.signum, self.signal_name, self.stopped = signum, _signal_name(signum), []
        super().__init__(signum)

    def __str__(self):
        ranks = f"; ranks {', '.join(map(str, self.stopped))} stopped by ringsp" if self.stopped else ""
        return f"stopped by {self.signal_name}{ranks}"


def run_ranks(fn, args, nprocs):
    """Spawns `nprocs` processes running fn(local_rank, *args) and waits for all of them;
    raises WorkerFailure if any failed, LauncherStopped on SIGTERM / SIGHUP (KeyboardInterrupt
    on Ctrl-C). Returns or raises only when no process it started is left."""
    import torch.multiprocessing as mp

    termination = _Termination()
    try:
        context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
        procs = context.processes
        try:
            termination.arm()  # raises now if a signal came while the processes started
            _wait(procs)
        except LauncherStopped as exc:
            exc.stopped = [i for i, p in enumerate(procs) if p.is_alive()]
            raise
        finally:  # a failure, a signal, or KeyboardInterrupt in the launcher: no rank outlives it
            termination.disarm()  # a second signal must not cut the stopping short
            stopped = stop_processes(procs)
            failures = [read_failure(i, p, context.error_files[i]) for i, p in enumerate(procs)
                        if i not in stopped and p.exitcode not in (None, 0)]
            _remove(context.error_files)
    finally:
        termination.restore()
    if failures:  # causes first: ranks that died, then ranks that raised of their own accord
        raise WorkerFailure(sorted(failures, key=lambda f: (not f.died, f.peer_failure, f.rank)), stopped)


class _Termination:
    """SIGTERM / SIGHUP in the launcher (their default ends it at once and leaves its ranks
    running): noted while the ranks start, LauncherStopped once armed, ignored while the
    ranks are being stopped, the previous handlers back at the end. Main thread only."""

    def __init__(self):
        self.pending, self.armed, self.previous = None, False, {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in _TERMINATION}

    def _handle(self, signum, frame):
        if self.armed:
            raise LauncherStopped(signum)
        self.pending = signum

    def arm(self):
        self.armed = True
        if self.pending is not None:
            raise LauncherStopped(self.pending)

    def disarm(self):
        for s in self.previous:
            signal.signal(s, signal.SIG_IGN)

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _wait(procs):
    """Returns when every process has ended, or GRACE_S after the first one failed."""
    pending = {p.sentinel: p for p in procs}
    deadline = None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = multiprocessing.connection.wait(list(pending), timeout)
        if not ready:
            return
        for sentinel in ready:
            proc = pending.pop(sentinel)
            proc.join()
            if proc.exitcode != 0 and deadline is None:
                deadline = time.monotonic() + GRACE_S


def stop_processes(procs):
    """SIGTERM to the processes still running, SIGKILL after STOP_S; returns their indices."""
    alive = [i for i, p in enumerate(procs) if p.is_alive()]
    for i in alive:
        procs[i].terminate()
    deadline = time.monotonic() + STOP_S
    for i in alive:
        procs[i].join(max(0.0, deadline - time.monotonic()))
        if procs[i].is_alive():  # stuck in C++ (a collective) where Python cannot handle SIGTERM
            procs[i].kill()
            procs[i].join()
    return alive


def read_failure(index, proc, error_file):
    trace = None
    try:
        with open(error_file, "rb") as f:  # written by torch's wrapper when fn raised
            trace = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    return RankFailure(rank=index, pid=proc.pid, exitcode=proc.exitcode, traceback=trace)


def _remove(paths):
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _last_line(trace):
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "an error"
