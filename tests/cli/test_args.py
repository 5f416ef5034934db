"""Argument checks of `ringsp generate`: every mistake is one line, exit code 2, no traceback,
before any process starts; good arguments fill in the degrees and model defaults."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from ringsp.cli.args import UsageError, parse_request
from ringsp.cli.main import main

TINY = ["--model", "tiny-wan", "--device", "cpu", "--no-output"]


def usage_error(capsys, argv, *expected):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("ringsp generate: error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["--num-gpus", "2", "--ulysses-degree", "2", "--ring-degree", "2"], ["must equal the number of GPUs"]),
    (["--num-gpus", "4", "--ring-degree", "3"], ["--ring-degree 3", "--num-gpus 4"]),
    (["--num-gpus", "3", "--cfg-parallel"], ["odd"]),
    (["--cfg-parallel", "--guidance-scale", "1.0"], ["--cfg-parallel needs classifier-free guidance"]),
    (["--num-gpus", "0"], ["--num-gpus must be >= 1"]),
    (["--ulysses-degree", "-2"], ["--ulysses-degree must be >= 1"]),
    (["--height", "40"], ["--height 40", "multiple of 16"]),
    (["--width", "0"], ["--width 0"]),
    (["--num-frames", "8"], ["--num-frames 8", "4k+1"]),
    (["--steps", "0"], ["--steps must be >= 1"]),
    (["--guidance-scale", "-1"], ["--guidance-scale must be >= 0"]),
    (["--json", "report.txt"], ["--json", ".json"]),
    (["--height", "abc"], ["argument --height: invalid int value"]),
    (["--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, expected):
    usage_error(capsys, TINY + argv, *expected)


def test_output_checks(capsys):
    usage_error(capsys, TINY[:-1] + ["--output", "video.txt"], "--output", ".mp4")
    usage_error(capsys, TINY + ["--output", "v.mp4"], "not allowed with argument")


def test_published_model_needs_dummy_weights(capsys):
    usage_error(capsys, ["--model", "wan2.1-t2v-1.3b"], "--dummy-weights")


def test_unknown_command(capsys):
    usage_error(capsys, ["frobnicate"], "unknown command 'frobnicate'")


def test_output_under_a_file_is_refused(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    usage_error(capsys, TINY[:-1] + ["--output", str(blocker / "v.mp4")], "cannot create it")


def test_cuda_requested_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    usage_error(capsys, ["--model", "tiny-wan", "--device", "cuda"], "CUDA is not available")


def test_more_gpus_than_present(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    usage_error(capsys, ["--model", "tiny-wan", "--device", "cuda", "--num-gpus", "4"], "needs 4 GPUs", "2 are present")


def test_torchrun_world_size_must_match():
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(UsageError, match="does not match torchrun's WORLD_SIZE=2"):
        parse_request(TINY + ["--num-gpus", "4"], env=env)
    req = parse_request(TINY + ["--ring-degree", "2"], env=env)
    assert (req.num_gpus, req.ulysses_degree, req.ring_degree, req.under_torchrun) == (2, 1, 2, True)


# ------------------------------------------------------------------------------ model dirs


def _copy_dir(tiny_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def test_missing_model_dir(capsys, tmp_path):
    usage_error(capsys, ["--model-path", str(tmp_path / "nope")], "is not a directory")


def test_dir_without_model_index(capsys, tmp_path):
    usage_error(capsys, ["--model-path", str(tmp_path)], "model_index.json")


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "model_index.json").write_text("{not json"), "malformed model_index.json"),
    (lambda d: (d / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"})), "'FluxPipeline'"),
    (lambda d: (d / "vae" / "config.json").unlink(), "missing vae/config.json"),
    (lambda d: (d / "transformer" / "config.json").write_text("[1, 2]"), "not a JSON object"),
    (lambda d: (d / "transformer" / "config.json").write_text(json.dumps({"patch_size": [2, 2]})),
     "malformed transformer/vae config"),
])
def test_malformed_model_dir(capsys, tiny_model_dir, tmp_path, damage, expected):
    model = _copy_dir(tiny_model_dir, tmp_path)
    damage(model)
    usage_error(capsys, ["--model-path", str(model)], expected)


def test_model_dir_with_dummy_weights_is_refused(capsys, tiny_model_dir):
    usage_error(capsys, ["--model-path", tiny_model_dir, "--dummy-weights"], "--dummy-weights")


# ------------------------------------------------------------------------------ good arguments


@pytest.mark.parametrize("argv, degrees", [
    ([], (1, 1, 1, 1)),
    (["--num-gpus", "4"], (4, 4, 1, 1)),  # Ulysses by default
    (["--num-gpus", "4", "--ring-degree", "2"], (4, 2, 2, 1)),
    (["--num-gpus", "6", "--ulysses-degree", "3"], (6, 3, 2, 1)),
    (["--ulysses-degree", "2", "--ring-degree", "3"], (6, 2, 3, 1)),  # the count follows the degrees
    (["--num-gpus", "4", "--cfg-parallel"], (4, 2, 1, 2)),
    (["--ring-degree", "2", "--cfg-parallel"], (4, 1, 2, 2)),
])
def test_degrees_are_filled_in(argv, degrees):
    req = parse_request(TINY + argv, env={})
    assert (req.num_gpus, req.ulysses_degree, req.ring_degree, req.cfg_degree) == degrees


def test_defaults_come_from_the_model():
    req = parse_request(["--model", "wan2.2-ti2v-5b", "--dummy-weights", "--device", "cpu"], env={})
    assert (req.height, req.width, req.num_frames, req.max_sequence_length) == (704, 1280, 121, 512)
    assert req.dtype == "float32" and req.output == os.path.join("outputs", "wan2.2-ti2v-5b_u1r1.mp4")
    with pytest.raises(UsageError, match="multiple of 32"):  # VAE stride 16 x patch 2
        parse_request(["--model", "wan2.2-ti2v-5b", "--dummy-weights", "--device", "cpu", "--height", "720"], env={})


def test_model_dir_sizes(tiny_model_dir):
    req = parse_request(["--model-path", tiny_model_dir, "--device", "cpu", "--height", "48", "--width", "80",
                         "--num-frames", "5"], env={})
    assert req.model_path == tiny_model_dir and req.model_name is None
    assert (req.height, req.width, req.num_frames, req.steps) == (48, 80, 5, 50)


def test_no_arguments_is_the_demo():
    req = parse_request([], env={})
    assert req.demo and req.compare_single and req.model_name == "tiny-wan"
    assert (req.device, req.num_gpus, req.ring_degree) == ("cpu", 2, 2)


def test_python_m_ringsp_reports_usage_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ringsp", "generate", "--num-gpus", "2", "--ulysses-degree", "3"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ringsp generate: error: ") and "Traceback" not in proc.stderr
    assert proc.stdout == ""
