"""ringsp_bench.warm_start on CPU: two real runs of a tiny model share one cache folder."""
import statistics

import pytest

from ringsp_bench import warm_start


def test_two_runs_of_a_tiny_model(tmp_path):
    out = warm_start.main(["--json", str(tmp_path / "w.json"), "--", "--model", "tiny-wan", "--device", "cpu",
                           "--steps", "3", "--no-output"])
    assert len(out["runs"]) == 2
    for run in out["runs"]:
        assert len(run["step_s"]) == 3 and all(s > 0 for s in run["step_s"])
        assert run["first_over_later"] == run["step_s"][0] / statistics.median(run["step_s"][1:])
    assert (tmp_path / "w.json").exists()


def test_refuses_one_run():
    with pytest.raises(SystemExit):
        warm_start.main(["--runs", "1"])


def test_a_failing_command_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="failed"):
        warm_start.main(["--", "--model", "no-such-model"])
