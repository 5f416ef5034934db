"""`ringsp generate` end to end, in process (main(argv)): from a --model-path directory in one
process and in two spawned gloo processes (Wan videos, Qwen-Image / Edit PNGs), and the
no-argument demo."""
import json

import imageio.v2 as imageio
import pytest

from ringsp.cli.main import main
from ringsp.cli.report import check_report
from ringsp.cli.timing import STAGES

from .conftest import SIZE

SIZE_ARGS = ["--height", str(SIZE["height"]), "--width", str(SIZE["width"]), "--num-frames", str(SIZE["num_frames"])]


def _read_video(path):
    frames = imageio.mimread(path)
    return len(frames), frames[0].shape


def test_single_process_from_model_path(tiny_model_dir, tmp_path, capsys):
    video, report_path = tmp_path / "out" / "v.mp4", tmp_path / "r.json"
    code = main(["generate", "--model-path", tiny_model_dir, "--device", "cpu", "--steps", "2", *SIZE_ARGS,
                 "--output", str(video), "--json", str(report_path)])
    assert code == 0
    out = capsys.readouterr().out
    for name in STAGES + ("Total", "Peak memory per rank", "n/a"):
        assert name in out
    report = json.loads(report_path.read_text())
    assert check_report(report) == []
    assert report["denoise"]["steps"] == 2 and report["parallel"]["launcher"] == "single process"
    assert report["memory"]["per_rank"][0]["peak_rss_gib"] > 0
    assert _read_video(str(video)) == (SIZE["num_frames"], (SIZE["height"], SIZE["width"], 3))


def test_two_processes_cfg_parallel_from_model_path(tiny_model_dir, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    code = main(["--model-path", tiny_model_dir, "--device", "cpu", "--steps", "2", *SIZE_ARGS, "--num-gpus", "2",
                 "--cfg-parallel", "--no-output", "--json", str(report_path), "--compare-single"])
    assert code == 0
    assert "SP check: the 2-process result equals the single-process result" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert check_report(report) == []
    assert report["parallel"]["cfg_degree"] == 2 and len(report["memory"]["per_rank"]) == 2
    assert report["sp_check"]["equal"] and report["sp_check"]["max_abs_diff_latents"] < 1e-4


def test_no_arguments_runs_the_checked_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "No model or run arguments given: running the built-in demo" in out
    assert "SP check: the 2-process result equals the single-process result" in out
    assert "| u1r2 (s) |" in out
    assert _read_video(str(tmp_path / "outputs" / "tiny-wan_u1r2.mp4")) == (9, (48, 80, 3))


def test_broken_weights_are_a_usage_error(tiny_model_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SystemExit) as exc:
        main(["--model-path", str(model), "--device", "cpu"])
    assert exc.value.code == 2
    assert "unreadable weights file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Qwen-Image


def _read_png(path):
    import numpy as np
    import PIL.Image

    with PIL.Image.open(path) as img:
        return img.format, np.asarray(img.convert("RGB"))


def test_qwen_edit_from_model_path_writes_png(qwen_edit_model_dir, input_image, tmp_path, capsys):
    image, report_path = tmp_path / "out" / "edited.png", tmp_path / "r.json"
    code = main(["generate", "--model-path", qwen_edit_model_dir, "--image", input_image, "--image-area", "2304",
                 "--prompt", "add a hat", "--device", "cpu", "--steps", "2", "--output", str(image),
                 "--json", str(report_path)])
    assert code == 0
    out = capsys.readouterr().out
    for name in STAGES + ("Total", "Peak memory per rank", "64x32, image", f"Image written to {image}"):
        assert name in out
    report = json.loads(report_path.read_text())
    assert check_report(report) == [] and report["request"]["media"] == "image"
    fmt, pixels = _read_png(image)
    assert fmt == "PNG" and pixels.shape == (32, 64, 3) and pixels.std() > 1  # the resized input's size


def test_qwen_two_processes_cfg_parallel(qwen_model_dir, tmp_path, capsys):
    image = tmp_path / "q.png"
    code = main(["--model-path", qwen_model_dir, "--device", "cpu", "--steps", "2", "--height", "48", "--width", "80",
                 "--num-gpus", "2", "--cfg-parallel", "--compare-single", "--output", str(image)])
    assert code == 0
    assert "SP check: the 2-process result equals the single-process result" in capsys.readouterr().out
    assert _read_png(image)[1].shape == (48, 80, 3)
