"""ringsp_bench.wan_forward: its helpers, and one whole run on CPU/gloo with a tiny model
(the real run needs GPUs; this checks the script, not the speed)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("diffusers")

from ringsp_bench import wan_forward as bench  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))


def test_defaults_and_shapes():
    args = bench.parse_args([])
    assert (args.model, args.text_len, args.dtype) == ("wan2.1-t2v-1.3b", 512, "bf16")
    assert bench.shapes(args) == [("480p", (21, 60, 104)), ("720p", (21, 90, 160))]
    assert bench.shapes(bench.parse_args(["--latent", "3,6,10"])) == [("latent3,6,10", (3, 6, 10))]
    with pytest.raises(SystemExit):
        bench.shapes(bench.parse_args(["--resolutions", "1080p"]))


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--dtype", "fp8"], ["--text-len", "0"], ["--device", "tpu"],
                                  ["--skip-eager"], ["--device", "cpu", "--cuda-graphs"], ["--compile", "all"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_variants_and_compile_speedups():
    assert bench.variants(bench.parse_args([])) == [(None, False)]
    assert bench.variants(bench.parse_args(["--compile"])) == [(None, False), ("regional", False)]
    assert bench.variants(bench.parse_args(["--compile", "full", "--cuda-graphs", "--skip-eager"])) == [
        ("full", False), ("full", True)]
    rows = [{"impl": "ringsp", "ulysses": 1, "ring": 1, "compile": None, "median_ms": 6.0},
            {"impl": "ringsp", "ulysses": 1, "ring": 1, "compile": "regional", "median_ms": 4.0},
            {"impl": "ringsp", "ulysses": 2, "ring": 1, "compile": "regional", "median_ms": 4.0}]
    bench.add_compile_speedups(rows)
    assert rows[1]["speedup_vs_eager"] == 1.5
    assert "speedup_vs_eager" not in rows[0] and "speedup_vs_eager" not in rows[2]  # eager; no eager twin


def test_attention_precisions():
    assert bench.parse_args([]).attention_precision == [None]
    assert bench.parse_args(["--attention-precision", "native,int8,fp8"]).attention_precision == [None, "int8", "fp8"]
    assert bench.parse_args(["--attention-precision", "bf16,native"]).attention_precision == [None]
    for bad in ("fp4", ",", "int8,fp16"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--attention-precision", bad])


def test_one_ringsp_row_per_precision_with_its_deviation_from_the_baseline(tmp_path):
    """World of one on CPU: a ringsp row per precision, each with its max and mean deviation
    from diffusers' own forward; the 8-bit one records why it cannot run here (CUDA and 16-bit inputs only)."""
    out = tmp_path / "wan.json"
    cmd = [sys.executable, "-m", "ringsp_bench.wan_forward", "--device", "cpu", "--model", "tiny-t2v",
           "--latent", "3,6,10", "--text-len", "8", "--iters", "1", "--warmup", "0", "--dtype", "fp32",
           "--skip-diffusers-cp", "--attention-precision", "native,int8", "--json", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29533")
    proc = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {(r["impl"], r.get("attention_precision")): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("diffusers-1gpu", None), ("ringsp", None), ("ringsp", "int8")}
    native = rows[("ringsp", None)]
    assert 0 < native["mean_rel_err"] <= native["max_rel_err"] < 1e-4
    assert "precision='int8'" in rows[("ringsp", "int8")]["error"]  # fp32 on a CPU: refused, named
    assert "ringsp[int8]" in proc.stdout


def test_factor_pairs():
    assert bench.factor_pairs(1) == [(1, 1)]
    assert bench.factor_pairs(4) == [(4, 1), (2, 2), (1, 4)]


def test_whole_run_on_cpu(tmp_path):
    out = tmp_path / "wan.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # `-m` from the checkout: its ringsp_bench and ringsp
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ringsp_bench.wan_forward",
           "--device", "cpu", "--model", "tiny-t2v", "--latent", "3,6,10", "--text-len", "8",
           "--iters", "1", "--warmup", "0", "--dtype", "fp32", "--compile", "--json", str(out)]
    env["RINGSP_COMPILE_BACKEND"] = "aot_eager"  # the compiled rows without Inductor's C++ build
    proc = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["versions"]["torch"]
    rows = {(r["impl"], r["ulysses"], r["ring"], r["compile"]): r for r in report["results"]}
    impls = {("diffusers-1gpu", 1, 1), ("ringsp", 2, 1), ("ringsp", 1, 2), ("diffusers-cp", 2, 1),
             ("diffusers-cp", 1, 2)}
    assert set(rows) == {impl + (mode,) for impl in impls for mode in (None, "regional")}
    for split in ((2, 1), (1, 2)):
        for mode in (None, "regional"):
            row = rows[("ringsp", *split, mode)]
            assert row["seq_len"] == 45 and row["max_rel_err"] < 1e-4 and row["median_ms"] > 0
            assert "accelerator" in rows[("diffusers-cp", *split, mode)]["error"]  # no diffusers CP on CPU
        compiled = rows[("ringsp", *split, "regional")]
        assert compiled["compile_s"] > 0 and compiled["speedup_vs_eager"] > 0 and not compiled["cuda_graphs"]
    assert rows[("diffusers-1gpu", 1, 1, "regional")]["compile_s"] > 0  # diffusers compiled the same way


def test_without_cuda_it_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    out = tmp_path / "skip.json"
    assert bench.main(["--json", str(out)]) == 0
    assert "CUDA" in json.loads(out.read_text())["skipped"]
