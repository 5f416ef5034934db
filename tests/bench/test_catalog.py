"""`ringsp-bench` / `python -m ringsp_bench`: lists the benchmark modules, runs one as `python -m` would."""
import json
import os
import subprocess
import sys

import pytest

from ringsp_bench import catalog


def test_alone_it_lists_every_runnable_module(capsys):
    assert catalog.main([]) == 0
    out = capsys.readouterr().out
    for name in ("attn_kernels", "e2e_generate", "gen_baselines", "wan_forward", "worst_errors"):
        assert f"  {name} " in out
    assert "catalog" not in out and "__main__" not in out
    assert "Kernel benchmark: ringsp's fused ring-step kernels" in out  # the docstring's first sentence


def test_an_unknown_name_is_refused(capsys):
    assert catalog.main(["kernels"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'kernels'" in err and "attn_kernels" in err


# runpy warns that this module is already imported (other tests did); `ringsp-bench` itself starts fresh
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")
def test_it_runs_the_module_with_its_arguments_and_exit_code(tmp_path, capsys):
    bad = {"schema": "ringsp.baseline/1", "generated_by": "someone else"}
    (tmp_path / "x.json").write_text(json.dumps(bad))
    argv = list(sys.argv)
    with pytest.raises(SystemExit) as exc:
        catalog.main(["gen_baselines", "--check", "--out", str(tmp_path)])
    assert exc.value.code == 1 and "BAD" in capsys.readouterr().out
    assert sys.argv == argv  # restored


def test_python_m_ringsp_bench_from_the_checkout():
    root = os.path.dirname(os.path.dirname(os.path.abspath(catalog.__file__)))
    proc = subprocess.run([sys.executable, "-m", "ringsp_bench", "gen_baselines", "--check"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK ")
