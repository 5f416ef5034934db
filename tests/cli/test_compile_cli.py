"""`ringsp generate --compile` / `--cuda-graphs` on the CPU: the compiled SP run equals the
single-process eager run, the compile warm-up is reported outside the stage times, and CUDA
graphs are refused where they cannot run."""
import json

import pytest

from ringsp.cli.main import main
from ringsp.cli.report import check_report

from .conftest import SIZE

SIZE_ARGS = ["--height", str(SIZE["height"]), "--width", str(SIZE["width"]), "--num-frames", str(SIZE["num_frames"])]


def _run(argv, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    code = main([*argv, "--device", "cpu", "--steps", "2", *SIZE_ARGS, "--no-output", "--json", str(report_path)])
    return code, capsys.readouterr().out, json.loads(report_path.read_text())


def test_compiled_two_process_run_equals_single_process(tiny_model_dir, tmp_path, capsys, ringsp_env):
    # aot_eager: the whole compile path (Dynamo, fake kernels, functionalisation) without
    # Inductor's C++ build; the spawned workers inherit the variable.
    ringsp_env.set("RINGSP_COMPILE_BACKEND", "aot_eager")
    code, out, report = _run(["--model-path", tiny_model_dir, "--num-gpus", "2", "--ring-degree", "2", "--compile",
                              "--compare-single"], tmp_path, capsys)
    assert code == 0, out
    assert "SP check: the 2-process result equals the single-process result" in out
    assert "(compile warm-up: torch.compile regional, 2 untimed steps" in out
    assert check_report(report) == []
    assert report["compile"]["mode"] == "regional" and not report["compile"]["cuda_graphs"]
    assert report["compile"]["warmup_s"] > 0 and report["denoise"]["steps"] == 2
    assert report["sp_check"]["max_abs_diff_latents"] < 1e-4


@pytest.mark.slow
def test_inductor_compiled_run_on_cpu(tiny_model_dir, tmp_path, capsys, ringsp_env):
    """Inductor's own CPU code generation, one process, the whole transformer compiled."""
    ringsp_env.unset("RINGSP_COMPILE_BACKEND")
    code, out, report = _run(["--model-path", tiny_model_dir, "--compile", "full", "--compare-single"],
                             tmp_path, capsys)
    assert code == 0, out
    assert "(compile warm-up: torch.compile full, 2 untimed steps" in out
    assert report["compile"]["mode"] == "full" and report["sp_check"]["max_abs_diff_latents"] < 1e-4


@pytest.mark.parametrize("device", ["cpu"])
def test_cuda_graphs_are_refused_off_cuda(device, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny-wan", "--device", device, "--cuda-graphs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cuda-graphs needs --device cuda" in err


def test_8bit_attention_is_refused_off_cuda(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny-wan", "--device", "cpu", "--attention-precision", "fp8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--attention-precision fp8 needs --device cuda" in err
