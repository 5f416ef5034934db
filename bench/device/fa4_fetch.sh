#!/usr/bin/env bash
# Here (the machine with the package registry, not the GPU machine): fetches flash-attn-4 and
# its CuTe DSL for the GPU image (Python 3.12, x86-64, CUDA 13) into .fa4/ for bench/device/fa4.sh.
# The 92 MB compiler library is repacked as a tar.xz (63 MB) and split in two parts, so that
# each device call carries less than 64 MiB: .fa4/a (part 0) and .fa4/b (part 1 + wheels).
# Takes ~4 min (xz on 2 cores). Usage (repo root): bash bench/device/fa4_fetch.sh
set -euo pipefail
grep -q "^/.fa4/" .git/info/exclude || echo "/.fa4/" >> .git/info/exclude
tmp=$(mktemp -d)
pip_dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" "$@"; }
pip_dl flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 "apache-tvm-ffi<0.2,>=0.1.11" \
  torch-c-dlpack-ext quack-kernels==0.6.5
mkdir -p "$tmp/libs" .fa4/a .fa4/b
(cd "$tmp/libs" && python3 -m zipfile -e "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl . \
  && tar -cf - --exclude='*/stubs/aarch64*' --exclude='*/stubs/*qnx*' . | xz -9e -T2 > "$tmp/libs_cu13.tar.xz")
split -b 32000000 -d -a 1 "$tmp/libs_cu13.tar.xz" "$tmp/libs_cu13.tar.xz.part"
mv "$tmp/libs_cu13.tar.xz.part0" .fa4/a/
mv "$tmp/libs_cu13.tar.xz.part1" .fa4/b/
rm "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl
mv "$tmp"/*.whl .fa4/b/
rm -rf "$tmp"
du -sh .fa4/a .fa4/b
