"""Loads the C++ library that defines the `ringsp` op schemas and their CPU kernels.

The installed extension (`ringsp_kernels/_C*.so`, built by setup.py) is preferred; a
source checkout without it is compiled once with torch's JIT loader, with a log line,
so the ops never silently fall back to something slower or different.
"""
import glob
import logging
import os

import torch

log = logging.getLogger("ringsp")
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ringsp_kernels/, where setup.py builds


def _installed_library():
    found = sorted(glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd")))
    return found[0] if found else None


def _jit_build():
    from torch.utils.cpp_extension import load

    sources = sorted(glob.glob(os.path.join(_HERE, os.pardir, "csrc", "*.cpp")))
    if not sources:
        raise ImportError(
            "ringsp_kernels: the C++ ops library is not built and csrc/ is not beside the package; "
            "reinstall with `pip install --no-build-isolation .`"
        )
    log.warning("ringsp_kernels: compiling the C++ ops library (one-time JIT build of csrc/)")
    load(
        name="ringsp_kernels_C",
        sources=sources,
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
    )


def load_ops_library():
    if hasattr(torch.ops.ringsp, "attn_fwd"):  # already registered in this process
        return
    path = _installed_library()
    if path is not None:
        torch.ops.load_library(path)
    else:
        _jit_build()
