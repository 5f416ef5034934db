"""ringsp_bench.e2e_generate: its argument handling and command lines (a whole CPU run is made by
tests/bench/test_baselines.py, which turns its output into baselines)."""
import sys

import pytest

from ringsp_bench import e2e_generate as e2e


def test_defaults():
    args = e2e.parse_args([])
    assert (args.model, args.height, args.width, args.num_frames, args.steps) == ("wan2.1-t2v-1.3b", 480, 832, 81, 4)
    assert args.config_list == [(1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 2, 1), (4, 1, 1)]


@pytest.mark.parametrize("argv", [["--configs", "u0r1"], ["--configs", "2x2"], ["--configs", ""], ["--steps", "0"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        e2e.parse_args(argv)


def test_generate_command_line():
    args = e2e.parse_args(["--configs", "u1r2c2"])
    argv = e2e.generate_argv(args, args.config_list[0], "r.json")
    assert argv[:4] == [sys.executable, "-m", "ringsp", "generate"]
    text = " ".join(argv)
    for part in ("--model wan2.1-t2v-1.3b --dummy-weights", "--num-gpus 4", "--ulysses-degree 1", "--ring-degree 2",
                 "--cfg-parallel", "--json r.json", "--warmup-steps 1"):
        assert part in text


def test_compile_options_are_passed_on():
    args = e2e.parse_args(["--configs", "u1r1", "--compile", "--cuda-graphs"])
    text = " ".join(e2e.generate_argv(args, args.config_list[0], "r.json"))
    assert "--compile regional" in text and "--cuda-graphs" in text
    args = e2e.parse_args(["--configs", "u1r1", "--compile", "full"])
    assert "--compile full" in " ".join(e2e.generate_argv(args, args.config_list[0], "r.json"))
    assert "--compile" not in " ".join(e2e.generate_argv(e2e.parse_args([]), (1, 1, 1), "r.json"))


def test_configs_beyond_the_devices_are_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(e2e, "available_processes", lambda device: 2)
    args = e2e.parse_args(["--device", "cpu", "--configs", "u4r1"])
    assert e2e.run_config(args, (4, 1, 1), str(tmp_path)) == {"config": "u4r1", "skipped": "needs 4 cpu devices"}


def test_without_cuda_it_says_so(monkeypatch, tmp_path, capsys):
    import json

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "e.json"
    assert e2e.main(["--json", str(out)]) == 0
    assert "CUDA is not available" in capsys.readouterr().out
    assert json.loads(out.read_text())["skipped"] == "CUDA is not available"
