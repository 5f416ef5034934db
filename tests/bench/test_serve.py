"""ringsp_bench.serve's figures from the server's timings (the server itself is tested in
tests/serve): overhead = latency - stage total - queued, the first-step ratio, percentiles,
and the request body as ringsp generate's flags."""
import pytest

from ringsp_bench.serve import generate_flags, parse_args, percentile, step_ratio, summarise


def _timings(total, queued, save, steps):
    return {"total_s": total, "queued_s": queued, "save_s": save, "denoise_step_s": steps}


def test_overhead_and_first_step_ratio():
    runs = [(1.0, [_timings(0.8, 0.0, 0.05, [0.3, 0.1, 0.1])]), (2.0, [_timings(0.8, 1.0, 0.05, [0.1, 0.1, 0.1])])]
    out = summarise(runs, wall_s=2.0)
    first, second = out["requests"]
    assert first["overhead_s"] == pytest.approx(0.2) and first["overhead_pct"] == pytest.approx(20.0)
    assert first["overhead_without_save_pct"] == pytest.approx(15.0)
    assert second["overhead_s"] == pytest.approx(0.2)  # the second waited 1 s in the queue: not overhead
    assert first["first_step_ratio"] == pytest.approx(3.0) and out["first_step_ratio_max"] == pytest.approx(3.0)
    assert out["requests_per_s"] == 1.0 and out["latency_p50_s"] in (1.0, 2.0)


def test_helpers():
    assert step_ratio([0.5]) is None and step_ratio([0.2, 0.1, 0.3]) == pytest.approx(1.0)
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([5, 1, 3, 2, 4], 95) == 5
    flags = generate_flags({"prompt": "a", "seed": 3, "size": "80x48", "num_inference_steps": 2, "num_frames": 5})
    assert flags == ["--prompt", "a", "--seed", "3", "--steps", "2", "--num-frames", "5", "--width", "80",
                     "--height", "48"]
    args = parse_args(["--k", "3", "--", "--model", "tiny-wan"])
    assert args.k == 3 and args.flags == ["--model", "tiny-wan"]
    with pytest.raises(SystemExit):
        parse_args(["--k", "1"])
