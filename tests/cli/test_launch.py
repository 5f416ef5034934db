"""ringsp.cli.launch: the torchrun path (each process one rank, rank 0 alone reports), and
--compare-single failing loudly when the results differ."""
import json
import os
import subprocess
import sys

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
