"""Jobs and the one queue in front of the workers.

A Job is one HTTP request: one run per image (n of them) or one video. The Dispatcher keeps
the jobs that wait (at most max_queue: QueueFull beyond, the client gets 429) and feeds them
to the WorkerPool one at a time, in the order they came. A failed run fails its job and the
next job runs; workers that went down fail the running job and every waiting one.
"""
import collections
import dataclasses
import os
import threading
import time
import uuid

from .workers import RunFailed, WorkersDown

STATUSES = ("queued", "in_progress", "completed", "failed")


class QueueFull(RuntimeError):
    """429: max_queue jobs are waiting already."""


class Unavailable(RuntimeError):
    """503: the workers are loading, down or stopping (str() says which, and why)."""


class Job:
    def __init__(self, kind, checked, output_dir, prefix):
        self.id = f"{prefix}_{uuid.uuid4().hex}"
        self.kind, self.seed, self.size = kind, checked.seed, checked.size
        self.num_frames, self.fps = checked.num_frames, checked.fps
        suffix = ".mp4" if kind == "video" else ".png"
        # The output files are named by the server's own id: no client string becomes a path.
        paths = [os.path.join(output_dir, f"{self.id}_{i}{suffix}") for i in range(len(checked.requests))]
        self.requests = [dataclasses.replace(r, output=p) for r, p in zip(checked.requests, paths)]
        self.status, self.progress, self.error = "queued", 0, None
        self.unavailable = False  # failed because the workers went down or the server stopped (503)
        self.created_at, self.started_at, self.finished_at = time.time(), None, None
        self.reports = []
        self._steps_total = sum(r.steps for r in self.requests)
        self._steps_before = 0
        self._lock = threading.Lock()
        self._callbacks = []

    @property
    def outputs(self):
        return [r.output for r in self.requests]

    @property
    def finished(self):
        return self.status in ("completed", "failed")

    def on_finished(self, fn):
        """fn(job) once the job has completed or failed (now, if it has)."""
        with self._lock:
            if not self.finished:
                self._callbacks.append(fn)
                return
        fn(self)

    def mark(self, rank, kind, what):
        """A worker's progress mark: rank 0's step ends move the progress (0-99 until done)."""
        if rank == 0 and kind == "step":
            self.progress = min(99, int(100 * (self._steps_before + what) / max(1, self._steps_total)))

    def _start(self):
        self.status, self.started_at = "in_progress", time.time()

    def _run_done(self, report):
        self.reports.append(report)
        self._steps_before += report["denoise"]["steps"]

    def _finish(self, status, error=None):
        with self._lock:
            self.status, self.error, self.finished_at = status, error, time.time()
            if status == "completed":
                self.progress = 100
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def timings(self, index=0):
        """The stage time table of run `index` (as ringsp generate reports it), with the time
        the job waited in the queue and when it was accepted, started and finished."""
        report = self.reports[index]
        keep = ("stages_s", "total_s", "denoise_step_s", "denoise", "save_s")
        out = {k: report[k] for k in keep}
        out.update(queued_s=self.started_at - self.created_at, accepted_at=self.created_at,
                   started_at=self.started_at, finished_at=self.finished_at)
        return out


class Dispatcher:
    def __init__(self, pool, max_queue):
        self.pool, self.max_queue = pool, max_queue
        self._waiting = collections.deque()
        self._cond = threading.Condition()
        self._closed = None  # why no more jobs are taken
        self.running = None
        self._thread = threading.Thread(target=self._loop, name="ringsp-dispatch", daemon=True)
        self._thread.start()

    def submit(self, job):
        with self._cond:
            if self._closed is not None:
                raise Unavailable(self._closed)
            if self.pool.state != "ready":
                raise Unavailable(unavailable_reason(self.pool))
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (--max-queue "
                                f"{self.max_queue}); try again later")
            self._waiting.append(job)
            self._cond.notify_all()

    def queued(self):
        return len(self._waiting)

    @property
    def closed(self):
        """Why no more jobs are taken (None while they are)."""
        return self._closed

    def close(self, reason):
        """Takes no more jobs and fails the waiting ones with `reason`; the running one goes on."""
        with self._cond:
            self._closed = self._closed or reason
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._cond.notify_all()
        for job in waiting:
            job.unavailable = True
            job._finish("failed", reason)

    def join(self, timeout=None):
        self._thread.join(timeout)

    def _loop(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._closed is not None)
                if not self._waiting:
                    return
                job = self.running = self._waiting.popleft()
            self._run(job)
            self.running = None

    def _run(self, job):
        job._start()
        try:
            for i, request in enumerate(job.requests):
                report = self.pool.run(f"{job.id}/{i}", request, job.mark)
                if not report.get("output", {}).get("written", False):
                    raise RunFailed(f"the result could not be written: {report.get('output', {}).get('error')}")
                job._run_done(report)
        except RunFailed as exc:
            job._finish("failed", str(exc))
        except WorkersDown as exc:
            reason = f"the workers are down: {exc}"
            job.unavailable = True
            job._finish("failed", reason)
            self.close(reason)
        else:
            job._finish("completed")


def unavailable_reason(pool):
    if pool.state == "starting":
        return "the model is loading"
    if pool.state == "down":
        return f"the workers are down: {pool.reason}"
    return "the server is stopping"
