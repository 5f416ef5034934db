"""The server's side of the worker processes: start them, send one request at a time, follow
their progress, and notice a dead or hung worker within seconds.

    pool = WorkerPool(config, warmup_steps=2)   # config: the engine's GenerateRequest
    pool.start(); pool.wait_ready()              # WorkersDown if a worker failed to load
    report = pool.run(run_id, request, on_mark)  # RunFailed: that request failed, the workers serve on
    pool.stop()                                  # no process left

Once a worker has died (its rank and how: killed by a signal, exited, raised), made no
progress for the group's timeout, or raised while its peers stayed inside the request, the
pool is down for good: the other workers are stopped, the running request and every later
call raise WorkersDown with that reason (the HTTP server answers 503 with it).
"""
import multiprocessing.connection
import threading
import time
from dataclasses import dataclass, field

from ringsp.cli.launch import free_port
from ringsp.cli.supervise import read_failure, stop_processes

from .rank import RUN, STOP, serve_rank

# How often the monitor looks at the clock when no message comes (hang and grace checks).
POLL_S = 0.25
# After one rank's run raised, how long its peers get to leave the request too before the
# workers are taken for stuck (they wait inside a collective for the rank that left).
FAIL_TOGETHER_S = 10.0
# On stop(): how long the running request may still take before the workers are stopped.
DRAIN_S = 10.0


class WorkersDown(RuntimeError):
    """The workers cannot serve any more; str() says which rank and why."""


class RunFailed(RuntimeError):
    """One request failed on the workers (its error as str()); they serve on."""


@dataclass
class _Run:
    run_id: str
    on_mark: object
    last_t: float
    marks: dict = field(default_factory=dict)   # rank -> number of progress marks
    where: dict = field(default_factory=dict)   # rank -> (kind, what) of its last mark
    seen: dict = field(default_factory=dict)    # rank -> ("waiting" | "busy", where) of its main thread
    raised: dict = field(default_factory=dict)  # rank -> error text (its own report)
    raised_t: float | None = None
    report: dict | None = None
    failure: str | None = None

    @property
    def finished(self):
        return self.report is not None or self.failure is not None


def _rank_entry(local_rank, rank_fn, config, port, jobs, events, warmup_steps):
    rank_fn(local_rank, config, port, jobs if local_rank == 0 else None, events[local_rank], warmup_steps)


class WorkerPool:
    def __init__(self, config, warmup_steps=0, rank_fn=serve_rank, hang_s=None, fail_together_s=FAIL_TOGETHER_S):
        self.config, self.warmup_steps, self.rank_fn = config, warmup_steps, rank_fn
        self.hang_s = config.timeout_s if hang_s is None else hang_s
        self.fail_together_s = fail_together_s
        self.state = "starting"          # starting -> ready -> (down | stopping) -> stopped
        self.reason = None
        self.tokenizer = None
        self._cond = threading.Condition()
        self._run = None
        self._ready = set()
        self._procs = []
        self._stopper = None

    # ------------------------------------------------------------------ life cycle
    def start(self):
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        n = self.config.num_gpus
        jobs_in, self._jobs = ctx.Pipe(duplex=False)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        self._readers = {reader: rank for rank, (reader, _) in enumerate(pipes)}
        writers = [writer for _, writer in pipes]
        self._context = mp.start_processes(
            _rank_entry, args=(self.rank_fn, self.config, free_port(), jobs_in, writers, self.warmup_steps),
            nprocs=n, join=False, start_method="spawn")
        self._procs = self._context.processes
        for conn in [jobs_in] + writers:  # the workers hold their own copies
            conn.close()
        self._monitor_thread = threading.Thread(target=self._monitor, name="ringsp-workers", daemon=True)
        self._monitor_thread.start()

    def wait_ready(self, timeout=None):
        """Returns once every worker has loaded and warmed up; WorkersDown if one failed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.state != "starting", timeout):
                raise TimeoutError(f"the workers did not get ready within {timeout} s")
            if self.state != "ready":
                raise WorkersDown(self.reason or "the workers were stopped while loading")

    def stop(self, drain_s=DRAIN_S):
        """Lets the running request finish (up to drain_s), then ends every worker."""
        with self._cond:
            if self.state == "stopped":
                return
            if self.state != "down":
                self.state = "stopping"
            self._cond.notify_all()
        try:
            self._jobs.send((STOP,))
        except (OSError, ValueError):  # rank 0 is gone already
            pass
        if self._stopper is not None:  # the pool went down: its stopper is at work
            self._stopper.join()
        deadline = time.monotonic() + drain_s
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        stop_processes(self._procs)
        with self._cond:
            self.state = "stopped"
            self.reason = self.reason or "the server stopped"
            self._cond.notify_all()
        if self._procs:
            self._monitor_thread.join(5)
        self._jobs.close()

    def pids(self):
        return [p.pid for p in self._procs]

    # ------------------------------------------------------------------ requests
    def run(self, run_id, request, on_mark=None):
        """Runs one request on every worker and returns rank 0's report. on_mark(rank, kind,
        what) gets each rank's progress marks (from the monitor thread)."""
        with self._cond:
            if self.state != "ready":
                raise WorkersDown(self.reason or f"the workers are {self.state}")
            run = self._run = _Run(run_id, on_mark or (lambda *a: None), time.monotonic())
            try:
                self._jobs.send((RUN, run_id, request))
            except (OSError, ValueError) as exc:
                self._run = None
                raise WorkersDown(f"rank 0 takes no requests ({exc})") from None
            self._cond.wait_for(lambda: run.finished or self.state not in ("ready", "stopping"))
            self._run = None
            if run.report is not None:
                return run.report
            if run.failure is not None:  # its own error, even when the workers went down with it
                raise RunFailed(run.failure)
            raise WorkersDown(self.reason)

    # ------------------------------------------------------------------ monitor
    def _monitor(self):
        sentinels = {p.sentinel: i for i, p in enumerate(self._procs)}
        readers = dict(self._readers)
        while sentinels or readers:
            ready = multiprocessing.connection.wait(list(readers) + list(sentinels), POLL_S)
            # messages first: a worker's last words come before the end of its process
            for obj in sorted(ready, key=lambda o: o not in readers):
                if obj in readers:
                    try:
                        message = obj.recv()
                    except (EOFError, OSError):
                        readers.pop(obj)
                        continue
                    self._message(message)
                else:
                    self._ended(sentinels.pop(obj))
            self._watch()
        for reader in self._readers:
            reader.close()

    def _message(self, message):
        kind, rank = message[0], message[1]
        with self._cond:
            if kind == "ready":
                self._ready.add(rank)
                if rank == 0:
                    self.tokenizer = message[2]
                if len(self._ready) == len(self._procs) and self.state == "starting":
                    self.state = "ready"
                self._cond.notify_all()
                return
            run = self._run
            if run is None or message[2] != run.run_id:
                return
            if kind == "mark":
                run.marks[rank] = run.marks.get(rank, 0) + 1
                run.where[rank] = message[3:5]
                run.last_t = time.monotonic()
                run.on_mark(rank, *message[3:5])
            elif kind == "where":
                run.seen[rank] = message[3]
            elif kind == "error":
                run.raised[rank] = message[3]
                run.raised_t = run.raised_t or time.monotonic()
            elif kind == "done":
                run.report = message[3]
            elif kind == "failed":
                run.failure = message[3]
                if message[4]:  # the failure left the process groups out of step: the workers end
                    self._down_locked(f"{message[3]} (in request {run.run_id}); after a failure inside "
                                      "ringsp.fail_together the process groups are out of step, so the workers "
                                      "stopped")
            self._cond.notify_all()

    def _ended(self, index):
        proc = self._procs[index]
        proc.join()
        with self._cond:
            if self.state in ("stopping", "stopped") and proc.exitcode == 0:
                return
            if self.state in ("down", "stopped"):
                return
            failures = [read_failure(i, p, self._context.error_files[i]) for i, p in enumerate(self._procs)
                        if p.exitcode not in (None, 0)]
            failures.sort(key=lambda f: (not f.died, f.peer_failure, f.rank))
            where = "while loading" if self.state == "starting" else "while serving"
            self._down_locked(f"{'; '.join(f.headline() for f in failures)} ({where})")

    def _watch(self):
        with self._cond:
            run = self._run
            if run is None or run.finished or self.state not in ("ready", "stopping"):
                return
            now = time.monotonic()
            if run.raised and now - run.raised_t > self.fail_together_s:
                rank, error = next(iter(sorted(run.raised.items())))
                others = [r for r in range(len(self._procs)) if r not in run.raised]
                self._down_locked(f"rank {rank} raised {error} in request {run.run_id}, and {_ranks(others)} "
                                  f"did not leave it within {self.fail_together_s:g} s (waiting inside a "
                                  "collective)")
            elif now - run.last_t > self.hang_s:
                self._down_locked(self._hang_reason(run))

    def _hang_reason(self, run):
        head = f"no progress in request {run.run_id} for {self.hang_s:g} s"
        busy = sorted(r for r, (state, _) in run.seen.items() if state == "busy")
        waiting = sorted(r for r, (state, _) in run.seen.items() if state == "waiting")
        if busy and waiting:  # the ranks inside a collective wait for the ones that are not
            stuck = "; ".join(f"rank {r} is at {run.seen[r][1]}" for r in busy)
            verb = "waits" if len(waiting) == 1 else "wait"
            return (f"{head}: {stuck}, while {_ranks(waiting)} {verb} in torch.distributed "
                    f"({run.seen[waiting[0]][1]}): hung")
        if run.seen:
            return f"{head}: " + "; ".join(f"rank {r} {state} at {at}" for r, (state, at) in
                                            sorted(run.seen.items())) + ": hung"
        return f"{head} (no rank reported where it was): hung"

    def _down_locked(self, reason):
        self.state, self.reason = "down", reason
        self._cond.notify_all()
        # Stopping takes seconds (SIGTERM, then SIGKILL): not under the lock, not in the monitor.
        self._stopper = threading.Thread(target=stop_processes, args=(self._procs,), daemon=True)
        self._stopper.start()


def _ranks(ranks):
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
