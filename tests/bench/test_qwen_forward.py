"""ringsp_bench.qwen_forward: its helpers, and one whole run on CPU/gloo with a tiny model
(the real run needs GPUs; this checks the script, not the speed)."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")

from ringsp.models import configs  # noqa: E402
from ringsp.models.qwen import qwen_token_count  # noqa: E402

from ringsp_bench import qwen_forward as bench  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))


def test_defaults_and_shapes():
    args = bench.parse_args([])
    assert (args.model, args.text_len, args.text_valid, args.dtype) == ("qwen-image", 256, 200, "bf16")
    assert bench.shapes(args) == [("1328", (83, 83)), ("1024", (64, 64))]
    assert bench.shapes(bench.parse_args(["--grid", "5,7"])) == [("grid5,7", (5, 7))]
    with pytest.raises(SystemExit):
        bench.shapes(bench.parse_args(["--resolutions", "720"]))


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--text-valid", "300"], ["--text-valid", "-1"],
                                  ["--dtype", "fp8"], ["--device", "tpu"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_inputs_match_the_published_shapes():
    cfg = configs.transformer_config("qwen-image")
    args = bench.parse_args(["--text-len", "16", "--text-valid", "11"])
    # Built on the meta device: the real sizes without the memory.
    inputs, seq_len = bench.make_inputs(cfg, (83, 83), args, torch.bfloat16, torch.device("meta"))
    assert seq_len == 6889 == qwen_token_count(inputs["img_shapes"])
    assert inputs["hidden_states"].shape == (1, 6889, 64)
    assert inputs["encoder_hidden_states"].shape == (1, 16, 3584)
    assert inputs["encoder_hidden_states_mask"].shape == (1, 16)


def test_mask_edit_and_layered_inputs():
    cfg = configs.transformer_config("tiny-qwen")
    args = bench.parse_args(["--text-len", "8", "--text-valid", "5", "--edit"])
    inputs, seq_len = bench.make_inputs(cfg, (3, 4), args, torch.float32, torch.device("cpu"))
    assert seq_len == 24 and inputs["img_shapes"] == [[(1, 3, 4), (1, 3, 4)]]  # target + reference
    assert inputs["encoder_hidden_states_mask"].tolist() == [[1] * 5 + [0] * 3]
    unpadded, _ = bench.make_inputs(cfg, (3, 4), bench.parse_args(["--text-len", "8", "--text-valid", "8"]),
                                    torch.float32, torch.device("cpu"))
    assert unpadded["encoder_hidden_states_mask"] is None and "additional_t_cond" not in unpadded
    layered, _ = bench.make_inputs(configs.transformer_config("tiny-qwen-layered"), (3, 4), args, torch.float32,
                                   torch.device("cpu"))
    assert layered["additional_t_cond"].tolist() == [0]


def test_finish_row_records_the_grid():
    row = bench.finish_row({"impl": "ringsp", "times_ms": [4.0, 2.0, 3.0]}, "1024", (64, 64), 4096, 6.0)
    assert row["grid"] == [64, 64] and "latent" not in row
    assert row["median_ms"] == 3.0 and row["speedup_vs_1gpu"] == 2.0


def test_a_wan_config_is_refused():
    with pytest.raises(SystemExit, match="Qwen"):
        bench.build_transformer("tiny-t2v", None, torch.float32, torch.device("cpu"), 0)


def test_whole_run_on_cpu(tmp_path):
    out = tmp_path / "qwen.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # `-m` from the checkout: its ringsp_bench and ringsp
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ringsp_bench.qwen_forward",
           "--device", "cpu", "--model", "tiny-qwen", "--grid", "5,7", "--text-len", "8",
           "--text-valid", "5", "--edit", "--iters", "1", "--warmup", "0", "--dtype", "fp32", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["versions"]["torch"] and report["text_valid"] == 5
    rows = {(r["impl"], r["ulysses"], r["ring"]): r for r in report["results"]}
    assert set(rows) == {("diffusers-1gpu", 1, 1), ("ringsp", 2, 1), ("ringsp", 1, 2),
                         ("diffusers-cp", 2, 1), ("diffusers-cp", 1, 2)}
    for split in ((2, 1), (1, 2)):
        row = rows[("ringsp", *split)]
        assert row["seq_len"] == 70 and row["max_rel_err"] < 1e-4 and row["median_ms"] > 0
        assert "accelerator" in rows[("diffusers-cp", *split)]["error"]  # no diffusers CP on CPU


def test_without_cuda_it_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    out = tmp_path / "skip.json"
    assert bench.main(["--json", str(out)]) == 0
    assert "CUDA" in json.loads(out.read_text())["skipped"]
