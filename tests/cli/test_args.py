"""Argument checks of `ringsp generate`: every mistake is one line, exit code 2, no traceback,
before any process starts; good arguments fill in the degrees and model defaults."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from ringsp.cli.args import UsageError, describe_request, parse_request
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
    (lambda d: (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"})),
     "'StableDiffusion3Pipeline'"),
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
    assert req.output == os.path.join("outputs", "tiny-wan_u1r2.mp4") and req.json_path is None


@pytest.mark.parametrize("argv,output,json_path", [
    (["--no-output"], None, None),
    (["--json", "r.json"], os.path.join("outputs", "tiny-wan_u1r2.mp4"), "r.json"),
    (["--output", "v.mp4", "--json=r.json"], "v.mp4", "r.json"),
    (["--no-out", "--json", "r.json"], None, "r.json"),  # argparse's abbreviation of --no-output
])
def test_output_flags_alone_keep_the_demo(argv, output, json_path):
    req = parse_request(argv, env={})
    assert req.demo and req.compare_single and req.model_name == "tiny-wan"
    assert (req.device, req.num_gpus, req.ring_degree, req.vae_min_parallel_pixels) == ("cpu", 2, 2, 0)
    assert (req.output, req.json_path) == (output, json_path)
    line = describe_request(req)  # the demo's first line names what the flags changed
    assert "--num-gpus 2 --ulysses-degree 1 --ring-degree 2" in line and "--compare-single" in line
    assert line.endswith(("--no-output" if output is None else f"--output {output}")
                         + (f" --json {json_path}" if json_path else ""))


@pytest.mark.parametrize("argv", [["--steps", "2"], ["--model", "tiny-wan"], ["--device", "cpu", "--no-output"],
                                  ["--seed", "0"]])
def test_any_other_flag_is_not_the_demo(argv):
    req = parse_request(argv, env={})
    assert not req.demo and not req.compare_single and req.num_gpus == 1


def test_demo_arguments_are_still_checked():
    with pytest.raises(UsageError, match="--json"):
        parse_request(["--json", "report.txt"], env={})
    with pytest.raises(UsageError):
        parse_request(["--output", "v.mp4", "--no-output"], env={})


def test_python_m_ringsp_reports_usage_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ringsp", "generate", "--num-gpus", "2", "--ulysses-degree", "3"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ringsp generate: error: ") and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------------------------------ Qwen-Image


QWEN = ["--model", "tiny-qwen-image", "--device", "cpu", "--no-output"]
QWEN_EDIT = ["--model", "tiny-qwen-image-edit", "--device", "cpu", "--no-output"]


def test_edit_needs_an_image(capsys):
    usage_error(capsys, QWEN_EDIT, "edits an input image", "--image PATH")


def test_bad_image_paths(capsys, tmp_path):
    usage_error(capsys, QWEN_EDIT + ["--image", str(tmp_path / "nope.png")], "--image", "no such file")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    usage_error(capsys, QWEN_EDIT + ["--image", str(broken)], "cannot read it as an image")
    usage_error(capsys, QWEN_EDIT + ["--image", str(tmp_path)], "is not a file")


@pytest.mark.parametrize("argv, expected", [
    (QWEN + ["--height", "40"], ["--height 40", "multiple of 16", "VAE stride 8 x patch size 2"]),
    (QWEN + ["--width", "8"], ["--width 8"]),
    (QWEN + ["--num-frames", "5"], ["makes one image"]),
    (QWEN + ["--max-sequence-length", "2048"], ["at most 1024"]),
    (QWEN + ["--steps", "1"], ["at least 2 steps"]),
    (QWEN + ["--warmup-steps", "1"], ["--warmup-steps 1"]),
    (QWEN + ["--image", "x.png"], ["--image is for edit models"]),
    (QWEN + ["--image-area", "4096"], ["--image-area is for edit models"]),
    (["--model", "qwen-image"], ["--dummy-weights"]),
    (QWEN + ["--full-text-encoder"], ["--full-text-encoder applies to the published models"]),
])
def test_qwen_bad_arguments(capsys, argv, expected):
    usage_error(capsys, argv, *expected)


def test_qwen_output_must_be_png(capsys):
    usage_error(capsys, QWEN[:-1] + ["--output", "image.mp4"], "--output", ".png")


def test_edit_image_area_and_size_checks(capsys, input_image):
    usage_error(capsys, QWEN_EDIT + ["--image", input_image, "--image-area", "0"], "--image-area must be >= 1")
    usage_error(capsys, QWEN_EDIT + ["--image", input_image, "--image-area", "64"], "under 32 pixels")
    usage_error(capsys, QWEN_EDIT + ["--image", input_image, "--height", "50"], "--height 50")


def test_qwen_defaults():
    req = parse_request(QWEN[:-1], env={})
    assert (req.height, req.width, req.num_frames, req.steps, req.guidance_scale) == (48, 80, 1, 4, 4.0)
    assert req.media == "image" and req.output == os.path.join("outputs", "tiny-qwen-image_u1r1.png")
    assert req.image is None and req.params().image is None
    big = parse_request(["--model", "qwen-image", "--dummy-weights", "--device", "cpu"], env={})
    assert (big.height, big.width, big.steps, big.max_sequence_length) == (1024, 1024, 50, 512)


def test_edit_size_follows_the_input_image(input_image):
    # 72 x 40 pixels at about 64 x 64 (tiny's image area) -> 96 x 32, rounded as diffusers does
    req = parse_request(QWEN_EDIT + ["--image", input_image], env={})
    assert (req.width, req.height, req.image_area) == (96, 32, 64 * 64)
    assert req.image == input_image and len(req.image_digest) == 64
    req = parse_request(QWEN_EDIT + ["--image", input_image, "--image-area", str(48 * 48), "--height", "48"], env={})
    assert (req.width, req.height, req.image_area) == (64, 48, 48 * 48)
    assert req.params().image == input_image and req.params().image_area == 48 * 48


def test_qwen_model_dirs(qwen_model_dir, qwen_edit_model_dir, input_image, capsys):
    req = parse_request(["--model-path", qwen_model_dir, "--device", "cpu", "--height", "32", "--width", "48"], env={})
    assert (req.media, req.model_name, req.steps, req.guidance_scale) == ("image", None, 50, 4.0)
    usage_error(capsys, ["--model-path", qwen_edit_model_dir, "--device", "cpu"], "edits an input image")
    req = parse_request(["--model-path", qwen_edit_model_dir, "--device", "cpu", "--image", input_image], env={})
    assert (req.width, req.height, req.image_area) == (1376, 768, 1024 * 1024)  # diffusers' 1024 x 1024 area


@pytest.mark.parametrize("key, what", [("guidance_embeds", "guidance-distilled"), ("zero_cond_t", "Edit-2511"),
                                       ("in_channels", "packed")])
def test_unsupported_qwen_transformers(capsys, qwen_model_dir, tmp_path, key, what):
    model = _copy_dir(qwen_model_dir, tmp_path)
    config = json.loads((model / "transformer" / "config.json").read_text())
    config[key] = 12 if key == "in_channels" else True
    (model / "transformer" / "config.json").write_text(json.dumps(config))
    usage_error(capsys, ["--model-path", str(model)], what)


@pytest.mark.parametrize("seed, ok", [("0", True), (str(2**64 - 1), True), (str(2**64), False), ("-1", False)])
def test_seed_is_what_torch_generator_takes(capsys, seed, ok):
    if ok:
        request = parse_request(TINY + ["--seed", seed], env={})
        torch.Generator().manual_seed(request.seed)  # what the latents are drawn with
    else:
        usage_error(capsys, TINY + ["--seed", seed], "--seed must be from 0 to 2**64 - 1", f"got {seed}")


def test_an_existing_output_is_refused_unless_overwrite(capsys, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"an earlier video")
    argv = TINY[:-1] + ["--output", str(video)]
    usage_error(capsys, argv, f"--output {str(video)!r} exists; pass --overwrite")
    assert parse_request(argv + ["--overwrite"], env={}).output == str(video)
    link = tmp_path / "link.mp4"
    link.symlink_to(tmp_path / "elsewhere.mp4")  # dangling: still refused, even with --overwrite
    usage_error(capsys, TINY[:-1] + ["--output", str(link), "--overwrite"], "is a symbolic link")


def test_an_existing_default_output_moves_to_the_next_free_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = parse_request(TINY[:-1], env={}).output
    assert first == os.path.join("outputs", "tiny-wan_u1r1.mp4")
    os.makedirs("outputs")
    for name in (first, os.path.join("outputs", "tiny-wan_u1r1-2.mp4")):
        with open(name, "wb") as f:
            f.write(b"an earlier video")
    assert parse_request(TINY[:-1], env={}).output == os.path.join("outputs", "tiny-wan_u1r1-3.mp4")


def test_the_frame_rate_is_the_models_unless_fps_is_given(capsys):
    ti2v = ["--model", "wan2.2-ti2v-5b", "--dummy-weights", "--device", "cpu", "--no-output"]
    assert parse_request(ti2v, env={}).fps == 24  # Wan2.2-TI2V-5B's published frame rate
    assert parse_request(TINY, env={}).fps == 16
    assert parse_request(["--model", "wan2.1-t2v-1.3b", "--dummy-weights", "--device", "cpu", "--no-output"],
                         env={}).fps == 16
    assert parse_request(ti2v + ["--fps", "12.5"], env={}).fps == 12.5
    usage_error(capsys, TINY + ["--fps", "0"], "--fps must be a finite number > 0")
    usage_error(capsys, ["--model", "tiny-qwen-image", "--device", "cpu", "--no-output", "--fps", "8"],
                "--fps is for video models")


def test_a_ti2v_model_dir_gets_24_fps(tiny_model_dir, tmp_path):
    ti2v = tmp_path / "ti2v"
    shutil.copytree(tiny_model_dir, ti2v)
    index = json.loads((ti2v / "model_index.json").read_text())
    index["expand_timesteps"] = True  # what marks a Wan2.2-TI2V-5B directory
    (ti2v / "model_index.json").write_text(json.dumps(index))
    assert parse_request(["--model-path", str(ti2v), "--device", "cpu", "--no-output"], env={}).fps == 24
    assert parse_request(["--model-path", tiny_model_dir, "--device", "cpu", "--no-output"], env={}).fps == 16


@pytest.mark.parametrize("argv, field", [
    (["--num-frames", "8"], "num_frames"), (["--height", "40"], "height"), (["--steps", "0"], "steps"),
    (["--guidance-scale", "-1"], "guidance_scale"), (["--seed", "-3"], "seed"),
])
def test_checks_name_the_field_as_their_caller_calls_it(argv, field):
    from ringsp.cli.args import build_parser, model_of, request_from_args

    args = build_parser().parse_args(TINY + argv)
    with pytest.raises(UsageError) as info:
        request_from_args(args, model_of(args), {}, name=lambda f: f"<{f}>")
    assert info.value.field == field
    assert f"<{field}>" in str(info.value) and "--" not in str(info.value)
