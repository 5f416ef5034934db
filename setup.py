"""Builds csrc/ into ringsp_kernels._C: the op schemas (TORCH_LIBRARY(ringsp)) and CPU kernels;
where the CANN toolkit is found, also the AscendC merge kernel of csrc/ascend/.

Install with `pip install --no-build-isolation -e .` so the build uses the torch already
installed (an isolated build would fetch a different torch, whose ABI the extension
would then not match).
"""
import glob
import os
import subprocess

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension


class BuildExt(BuildExtension.with_options(use_ninja=True)):
    def run(self):
        super().run()
        if os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME"):
            out = os.path.dirname(os.path.abspath(self.get_ext_fullpath("ringsp_kernels._C")))
            subprocess.check_call(["bash", "csrc/ascend/build.sh", out])


setup(
    ext_modules=[
        CppExtension(
            "ringsp_kernels._C",
            sorted(glob.glob("csrc/*.cpp")),  # not recursive: csrc/ascend/ is built by CANN's tools
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
