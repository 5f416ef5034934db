"""ringsp_bench.dit_forward: its argument handling and inputs, and whole runs on CPU/gloo with the
tiny FLUX.1 and LTX-Video models (the real run needs a GPU; this checks the script, not the speed)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("diffusers")

from ringsp_bench import dit_forward as bench  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_sizes_and_bad_arguments():
    args = bench.parse_args([])
    assert (args.model, args.dtype, args.iters, args.text_len) == ("flux.1-dev", "bf16", 5, 512)
    assert bench.parse_args(["--model", "ltx-video"]).text_len == 128
    assert bench.pixel_size(args, "flux") == (1024, 1024) and bench.pixel_size(args, "ltx") == (512, 768, 97)
    assert bench.family_of("tiny-ltx-video") == "ltx" and bench.family_of("flux.1-dev") == "flux"
    for argv in (["--iters", "0"], ["--compile", "all"], ["--device", "tpu"], ["--text-len", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    with pytest.raises(SystemExit):
        bench.family_of("wan2.1-t2v-1.3b")
    with pytest.raises(SystemExit):
        bench.pixel_size(bench.parse_args(["--size", "512,768"]), "ltx")


def test_published_shapes_make_the_published_token_counts():
    import torch

    from ringsp.models import configs

    for name, size, text_len, tokens in (("flux.1-dev", (1024, 1024), 512, 4096), ("ltx-video", (512, 768, 97), 128,
                                                                                   13 * 16 * 24)):
        family = bench.family_of(name)
        cfg = configs.transformer_config(name)
        inputs, seq_len = bench.make_inputs(family, cfg, size, text_len, None, torch.float32, torch.device("meta"), 0)
        assert seq_len == tokens and inputs["hidden_states"].shape == (1, tokens, cfg["in_channels"])
        assert inputs["encoder_hidden_states"].shape[1] == text_len


@pytest.mark.parametrize("model, size, world", [("tiny-flux", "48,80", 1), ("tiny-ltx-video", "96,160,17", 2)])
def test_whole_run_on_cpu(tmp_path, model, size, world):
    out = tmp_path / "forward.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", RINGSP_COMPILE_BACKEND="aot_eager",
               PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)] \
        if world > 1 else [sys.executable]
    cmd = launcher + ["-m", "ringsp_bench.dit_forward", "--device", "cpu", "--model", model, "--size", size,
                      "--text-len", "7", "--iters", "1", "--warmup", "0", "--dtype", "fp32", "--skip-diffusers-cp",
                      "--json", str(out)]
    if world == 1:
        cmd.append("--compile")
    proc = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "dit_forward" and report["world_size"] == world
    rows = report["results"]
    assert all("error" not in r for r in rows), rows
    ringsp_rows = [r for r in rows if r["impl"] == "ringsp"]
    assert len(ringsp_rows) == 2  # world 1: eager and compiled; world 2: u2r1 and u1r2
    assert all(r["max_rel_err"] < 1e-4 for r in ringsp_rows)
    assert [r["impl"] for r in rows].count("diffusers-1gpu") == (2 if world == 1 else 1)
