"""ringsp.cli.launch: the torchrun path (each process one rank, rank 0 alone reports), and
--compare-single failing loudly when the results differ (after the report is written), and NaN / Inf
in the result named by the stage that produced it."""
import json
import os
import subprocess
import sys

import pytest

from ringsp.cli.args import parse_request
from ringsp.cli.launch import finish
from ringsp.cli.report import check_report
from ringsp.cli.worker import run_rank

from .conftest import SIZE

SIZE_ARGS = ["--height", str(SIZE["height"]), "--width", str(SIZE["width"]), "--num-frames", str(SIZE["num_frames"])]


def test_runs_under_torchrun(tiny_model_dir, tmp_path):
    report_path = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ringsp",
         "generate", "--model-path", tiny_model_dir, "--device", "cpu", "--ulysses-degree", "2", "--steps", "2",
         *SIZE_ARGS, "--no-output", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Stage time breakdown") == 1  # rank 0 only
    report = json.loads(report_path.read_text())
    assert check_report(report) == []
    assert report["parallel"]["launcher"] == "torchrun" and report["parallel"]["ulysses_degree"] == 2
    assert report["parallel"]["sequence_parallel_transformer"] is True


def test_compare_single_fails_on_a_difference(tiny_model_dir, capsys):
    request = parse_request(["--model-path", tiny_model_dir, "--device", "cpu", "--steps", "1", *SIZE_ARGS,
                             "--no-output", "--compare-single"], env={})
    outcome = run_rank(request, distributed=False, quiet=True, keep_tensors=True)
    outcome.frames = outcome.frames + 0.01  # what a wrong shard would do
    assert finish(request, outcome) == 1
    assert "DIFFERS FROM" in capsys.readouterr().out
    assert outcome.report["sp_check"]["equal"] is False
    assert outcome.report["sp_check"]["max_abs_diff_frames"] > 0.009


def _single_run(tiny_model_dir, tmp_path, *extra):
    request = parse_request(["--model-path", tiny_model_dir, "--device", "cpu", "--steps", "1", *SIZE_ARGS,
                             "--output", str(tmp_path / "v.mp4"), "--json", str(tmp_path / "r.json"), *extra],
                            env={})
    return request, run_rank(request, distributed=False, keep_tensors=True)


def test_compare_single_that_raises_keeps_the_sp_report_and_output(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from ringsp.cli import launch

    request, outcome = _single_run(tiny_model_dir, tmp_path, "--compare-single", "--fps", "10")

    def broken(*args):
        raise MemoryError("no room for the reference run")

    monkeypatch.setattr(launch, "compare_with_single", broken)
    assert finish(request, outcome) == 1
    out = capsys.readouterr().out
    assert out.index("Stage time breakdown") < out.index("SP check FAILED: the single-process run raised MemoryError")
    report = json.loads((tmp_path / "r.json").read_text())
    assert check_report(report) == [] and report["output"]["written"] and (tmp_path / "v.mp4").stat().st_size > 0
    import imageio.v2 as imageio

    assert imageio.get_reader(str(tmp_path / "v.mp4")).get_meta_data()["fps"] == 10 == report["request"]["fps"]
    assert report["sp_check"] == {"reference": "the same generation in a single process", "equal": False,
                                  "error": "MemoryError: no room for the reference run"}


def test_a_failed_comparison_still_writes_the_report(tiny_model_dir, tmp_path, capsys):
    request, outcome = _single_run(tiny_model_dir, tmp_path, "--compare-single")
    outcome.latents[0, 0, 0, 0, 0] = float("nan")  # NaN differs from everything, also under max()
    assert finish(request, outcome) == 1
    assert json.loads((tmp_path / "r.json").read_text())["sp_check"]["equal"] is False
    assert "DIFFERS FROM" in capsys.readouterr().out


@pytest.mark.parametrize("stage", ["Denoising", "Decoding"])
def test_nan_in_the_result_is_named_by_stage_and_fails_the_run(tiny_model_dir, tmp_path, monkeypatch, capsys, stage):
    from ringsp.cli import generation

    if stage == "Denoising":
        denoise = generation._denoise
        monkeypatch.setattr(generation, "_denoise", lambda *a: denoise(*a) * float("nan"))
    else:
        decode = generation._decode
        monkeypatch.setattr(generation, "_decode", lambda *a: decode(*a).clone().fill_(float("nan")))
    request, outcome = _single_run(tiny_model_dir, tmp_path)
    assert finish(request, outcome) == 1
    first = outcome.report["nonfinite"][0]
    assert first["stage"] == stage and first["tensor"] == ("latents" if stage == "Denoising" else "frames")
    assert f"ERROR: the {stage} stage produced non-finite" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nonfinite"] == outcome.report["nonfinite"] and check_report(report) == []


def test_find_nonfinite_counts_and_orders_by_stage():
    import torch

    from ringsp.cli.nonfinite import describe_nonfinite, find_nonfinite

    latents, frames = torch.zeros(2, 3), torch.zeros(4)
    assert find_nonfinite(latents, frames) == [] and describe_nonfinite([]) is None
    latents[0, 1], latents[1, 2], frames[0] = float("nan"), float("-inf"), float("nan")
    found = find_nonfinite(latents, frames)
    assert found == [{"stage": "Denoising", "tensor": "latents", "nan": 1, "inf": 1, "values": 6},
                     {"stage": "Decoding", "tensor": "frames", "nan": 1, "inf": 0, "values": 4}]
    assert describe_nonfinite(found).startswith("the Denoising stage produced non-finite latents: 1 NaN and 1 Inf")
