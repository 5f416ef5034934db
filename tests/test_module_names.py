"""No module of the repository takes the name of a package the environment provides.

bench/kernels.py once did: bench scripts put their folder first on the module search path, and from then on
transformers' `import kernels` (Hugging Face's package) got the benchmark module, failing every
model test that ran after a bench test. Both checks here fail on that layout."""
import importlib.metadata
import importlib.util
import os
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import ringsp_bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# published names a module here must never take, installed here or not
FORBIDDEN = {"kernels", "utils", "timing", "common", "bench", "util", "helpers", "benchmark", "benchmarks"}


def _top_level_modules():
    """What `import NAME` could find at the repository root: modules and regular packages."""
    names = set()
    for entry in os.listdir(ROOT):
        path = os.path.join(ROOT, entry)
        if entry.endswith(".py"):
            names.add(entry[:-3])
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            names.add(entry)
    return names


def _installed_top_levels():
    """Top-level import names of the installed distributions other than ringsp."""
    return {name for name, dists in importlib.metadata.packages_distributions().items()
            if any(d.lower() != "ringsp" for d in dists)}


def test_no_module_shares_a_published_or_installed_name():
    bench_modules = {m.name for m in pkgutil.iter_modules(ringsp_bench.__path__)}
    taken = FORBIDDEN | _installed_top_levels()
    assert {"ringsp", "ringsp_kernels", "ringsp_bench"} <= _top_level_modules()
    assert _top_level_modules() & taken == set()
    assert bench_modules & taken == set()  # relative imports today, but a script run by path would expose them
    # bench/ holds records only: no code there that a path entry could turn into top-level modules
    assert [f for _, _, files in os.walk(os.path.join(ROOT, "bench")) for f in files if f.endswith(".py")] == []


# A stand-in `kernels` first on the path: it marks the module, then runs the environment's own
# `kernels` (Hugging Face's, which transformers imports when it is installed; REAL is where this
# process finds it) in its place, so the libraries work as usual and the mark shows which
# `kernels` everybody got.
_STUB = '''
import importlib.util, os, sys
REAL = {real!r}
RINGSP_STUB = True
if REAL is not None:
    _spec = importlib.util.spec_from_file_location(__name__, REAL, submodule_search_locations=[os.path.dirname(REAL)])
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
    _real.RINGSP_STUB = True
'''

_PROBE = '''
import importlib, pkgutil, sys

import pytest
import torch

import ringsp_bench
import tests

for info in pkgutil.iter_modules(ringsp_bench.__path__):
    if info.name != "__main__":
        importlib.import_module("ringsp_bench." + info.name)
for info in pkgutil.walk_packages(tests.__path__, "tests."):
    try:
        importlib.import_module(info.name)
    except pytest.skip.Exception:  # a test module for an absent optional package
        pass
from ringsp.models.pipelines import build_dummy_pipeline

pipe, _ = build_dummy_pipeline("tiny-wan", dtype=torch.float32, device="cpu")
import kernels

assert getattr(kernels, "RINGSP_STUB", False), f"`kernels` is {kernels.__file__}, not the environment's"
print("tiny-wan built with", type(pipe.text_encoder).__name__, "and the environment's kernels")
'''


def test_a_package_named_kernels_survives_every_module(tmp_path):
    pytest.importorskip("diffusers")
    (tmp_path / "kernels").mkdir()
    real = importlib.util.find_spec("kernels")
    (tmp_path / "kernels" / "__init__.py").write_text(_STUB.format(real=real.origin if real else None))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_PROBE)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tiny-wan built with UMT5EncoderModel" in proc.stdout
