"""StageTimer: wall-clock seconds of the generation stages and of each denoising step.

Every boundary is synchronised: the device's queued work is waited for and, in a process
group, every rank passes a barrier, so a stage's time on rank 0 is the time the whole
group spent in it (a rank that is slower makes everyone's stage longer, as it does in
the real run). All ranks must enter and leave the same stages in the same order.
"""
import contextlib
import time

import torch

STAGES = ("InputValidation", "TextEncoding", "LatentPreparation", "TimestepPreparation", "Denoising", "Decoding")


def make_sync(device=None, group=None, distributed=False):
    """A function that waits for `device`'s queued work and, if distributed, for all ranks."""
    device = torch.device(device) if device is not None else torch.device("cpu")

    def sync():
        if device.type != "cpu":
            torch.get_device_module(device).synchronize(device)
        if distributed:
            import torch.distributed as dist

            from ringsp.parallel.fail_together import wait

            wait(dist.barrier(group=group, async_op=True))

    return sync


class StageTimer:
    """Collects {stage: seconds} and the per-step times of the Denoising stage.

        timer = StageTimer(sync)
        with timer.stage("TextEncoding"): ...
        with timer.stage("Denoising"):
            for ...: ...; timer.step_done()
    """

    def __init__(self, sync=None, clock=time.perf_counter, listener=None):
        self._sync = sync or (lambda: None)
        self._clock = clock
        # listener("stage", name) as a stage starts, listener("step", number) as step `number` (from 1)
        # ends: ringsp serve's progress reports. Called after the sync and outside every step's time
        # (a step-end call is inside the Denoising stage: it must be cheap, as a pipe send is).
        self._listener = listener or (lambda kind, what: None)
        self.stages = {}
        self.steps = []
        self._last_mark = None

    @contextlib.contextmanager
    def stage(self, name):
        if name in self.stages:
            raise ValueError(f"stage {name!r} was already timed")
        self._sync()
        self._listener("stage", name)
        start = self._clock()
        self._last_mark = start
        try:
            yield
        except BaseException:
            # No barrier on the way out of an error: the peers may be dead or stuck, and
            # waiting for them would only add a whole group timeout before the error shows.
            self._end(name, start)
            raise
        self._sync()
        self._end(name, start)

    def _end(self, name, start):
        self.stages[name] = self._clock() - start
        self._last_mark = None

    def step_done(self):
        """Ends one denoising step: steps are back-to-back intervals inside their stage, so
        their sum never exceeds the stage's time."""
        if self._last_mark is None:
            raise RuntimeError("step_done() called outside a timed stage")
        self._sync()
        now = self._clock()
        self.steps.append(now - self._last_mark)
        self._listener("step", len(self.steps))
        self._last_mark = self._clock()
