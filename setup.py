"""Builds csrc/ into ringsp_kernels._C: the op schemas (TORCH_LIBRARY(ringsp)) and CPU kernels.

Install with `pip install --no-build-isolation -e .` so the build uses the torch already
installed (an isolated build would fetch a different torch, whose ABI the extension
would then not match).
"""
import glob

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

setup(
    ext_modules=[
        CppExtension(
            "ringsp_kernels._C",
            sorted(glob.glob("csrc/*.cpp")),
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
