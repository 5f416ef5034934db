#!/usr/bin/env bash
# Builds the AscendC fused merge into OUT_DIR (default: ringsp_kernels/, where
# ringsp_kernels/npu/backend.py looks for _ascend_C.so). Needs the CANN toolkit (source its
# set_env.sh first), cmake, and torch + torch_npu in $PYTHON.
#
#   bash csrc/ascend/build.sh [OUT_DIR]
#   SOC_VERSION=Ascend910B3 bash csrc/ascend/build.sh   # where no NPU is visible to ask
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT_DIR=$(mkdir -p "${1:-$ROOT/ringsp_kernels}" && cd "${1:-$ROOT/ringsp_kernels}" && pwd)
PYTHON=${PYTHON:-python3}
BUILD_DIR=${RINGSP_ASCEND_BUILD_DIR:-$ROOT/build/ascend}

CANN=${ASCEND_HOME_PATH:-${ASCEND_TOOLKIT_HOME:-}}
if [ -z "$CANN" ]; then
  echo "build.sh: CANN toolkit not found (ASCEND_HOME_PATH / ASCEND_TOOLKIT_HOME unset); source <cann>/set_env.sh" >&2
  exit 2
fi

# Path queries run without torch's device auto-loading, so a build host without an NPU
# driver works too; only the SoC query below needs the device.
py() { TORCH_DEVICE_BACKEND_AUTOLOAD=0 "$PYTHON" -c "$1"; }
SOC=${SOC_VERSION:-$("$PYTHON" -c 'import torch, torch_npu; print(torch.npu.get_device_name(0))' 2>/dev/null || true)}
if [ -z "$SOC" ]; then
  echo "build.sh: cannot ask the NPU for its SoC; set SOC_VERSION (e.g. Ascend910B3)" >&2
  exit 2
fi
TORCH_PREFIX=$(py 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_NPU_PATH=$(py 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torch_npu").origin))')
# Build the host op with the C++ standard torch's own extension builder uses.
CXX_STD=$(py 'import inspect, re, torch.utils.cpp_extension as c
found = [int(s) for s in re.findall(r"-std=c\+\+(\d+)", inspect.getsource(c))]
print(max(found) if found else 17)')

echo "build.sh: SoC $SOC, CANN $CANN, C++$CXX_STD -> $OUT_DIR"
cmake -S "$HERE" -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  -DSOC_VERSION="$SOC" \
  -DASCEND_CANN_PACKAGE_PATH="$CANN" \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DTORCH_NPU_PATH="$TORCH_NPU_PATH" \
  -DRINGSP_CXX_STANDARD="$CXX_STD" \
  -DRINGSP_OUT_DIR="$OUT_DIR"
cmake --build "$BUILD_DIR" -j "$(nproc)"
cmake --install "$BUILD_DIR"
