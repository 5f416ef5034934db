"""StageTimer: stages and back-to-back steps, synchronised at every boundary."""
import pytest

from ringsp.cli.timing import STAGES, StageTimer


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_stages_and_steps_are_measured_between_syncs():
    clock, syncs = FakeClock(), []
    timer = StageTimer(sync=lambda: syncs.append(clock.now), clock=clock)
    with timer.stage("TextEncoding"):
        clock.now += 1.5
    with timer.stage("Denoising"):
        clock.now += 0.25  # loop set-up: inside the stage, in no step
        for dt in (1.0, 2.0, 0.5):
            clock.now += dt
            timer.step_done()
        clock.now += 0.125
    assert timer.stages == {"TextEncoding": 1.5, "Denoising": 3.875}
    assert timer.steps == [1.25, 2.0, 0.5]  # the first step starts at the stage start
    assert sum(timer.steps) <= timer.stages["Denoising"]
    assert len(syncs) == 2 * 2 + 3  # both ends of each stage, and each step end


def test_misuse_is_refused():
    timer = StageTimer()
    with pytest.raises(RuntimeError, match="outside a timed stage"):
        timer.step_done()
    with timer.stage("Decoding"):
        pass
    with pytest.raises(ValueError, match="already timed"):
        with timer.stage("Decoding"):
            pass


def test_a_failing_stage_still_records_its_time_without_waiting_for_peers():
    syncs = []
    timer = StageTimer(sync=lambda: syncs.append(1))
    with pytest.raises(KeyError):
        with timer.stage("InputValidation"):
            raise KeyError("x")
    assert "InputValidation" in timer.stages
    assert len(syncs) == 1  # only on entry: a barrier after an error would wait for dead or stuck peers
    assert STAGES[0] == "InputValidation" and STAGES[-1] == "Decoding"


def test_listener_hears_stage_starts_and_step_ends_outside_the_times():
    clock, heard = FakeClock(), []

    def listener(kind, what):
        heard.append((kind, what))
        clock.now += 100.0  # a slow listener: none of it may land in a stage or a step

    timer = StageTimer(clock=clock, listener=listener)
    with timer.stage("Denoising"):
        for dt in (1.0, 2.0):
            clock.now += dt
            timer.step_done()
    assert heard == [("stage", "Denoising"), ("step", 1), ("step", 2)]
    assert timer.steps == [1.0, 2.0]
