"""The hopper path without a GPU: who may use it, which layouts its TMA descriptors read, and
that the Gluon kernel compiles for sm90 (Triton compiles ahead of time for a target it is
given: the kernel's source, layouts and resource use are checked here; its numbers only on a
GPU, tests/kernels/test_hopper_gpu.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ringsp_kernels.cuda import hopper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_not_usable_off_an_sm90_gpu():
    q = torch.zeros(1, 8, 2, 128, dtype=torch.bfloat16)
    assert not hopper.usable(q)  # a CPU tensor


def test_layouts_the_descriptors_read():
    t = torch.zeros(2, 10, 3, 64, dtype=torch.bfloat16)
    assert hopper.rows_ok(t) and hopper.keys_ok(t)
    packed = torch.zeros(1, 10, 3, 4, 64, dtype=torch.bfloat16)[:, :, 1]  # q/k/v interleaved: rows of 3*H*D
    assert hopper.rows_ok(packed) and hopper.keys_ok(packed)
    assert not hopper.rows_ok(t.transpose(1, 2).contiguous().transpose(1, 2))  # heads outermost
    assert not hopper.keys_ok(torch.zeros(1, 10, 3, 128, dtype=torch.bfloat16)[..., :64])  # D not packed
    batches = torch.zeros(2, 12, 3, 64, dtype=torch.bfloat16)[:, 1:11]  # batches apart: keys yes, rows no
    assert hopper.keys_ok(batches) and not hopper.rows_ok(batches)


gluon = pytest.importorskip("triton.experimental.gluon")


def aot(*args):
    """tests.kernels.hopper_aot's JSON line for `args`, in a process of its own (the tests'
    TRITON_INTERPRET=1 would hand the compiler interpreted functions)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "tests.kernels.hopper_aot", *map(str, args)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    if "ptxas" in run.stderr and run.returncode:
        pytest.skip(f"no ptxas for this platform: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("D,block_n,stages,has_state", [(128, 128, 2, 1), (64, 128, 3, 0)])
def test_the_kernel_compiles_for_sm90_with_wgmma_and_fits_shared_memory(D, block_n, stages, has_state):
    got = aot("library", D, block_n, stages, has_state)
    assert got["wgmma"] and got["tma"] and got["setmaxnreg"], got
    assert got["shared"] <= 232448, got  # sm90's opt-in shared memory per block


@pytest.mark.slow
def test_the_int8_variant_compiles_to_an_integer_qk_and_a_16_bit_pv():
    got = aot("library-int8", 128, 128, 2, 1)
    assert got["int8_wgmma"] and got["bf16_wgmma"] and not got["fp8_wgmma"] and got["setmaxnreg"], got
    assert got["shared"] <= 232448, got


@pytest.mark.slow
@pytest.mark.parametrize("D,block_n,stages,has_state", [(128, 64, 3, 1), (64, 128, 2, 0)])
def test_the_fp8_variant_compiles_to_e4m3_products_only(D, block_n, stages, has_state):
    got = aot("library-fp8", D, block_n, stages, has_state)
    assert got["fp8_wgmma"] and not got["bf16_wgmma"] and not got["int8_wgmma"] and got["tma"], got
    assert got["shared"] <= 232448, got


def test_the_automatic_choice_leaves_the_path_out_until_it_is_cleared(monkeypatch):
    import dataclasses

    from ringsp_kernels.cuda import ops, paths

    q = torch.zeros(1, 8, 2, 128, dtype=torch.bfloat16)
    monkeypatch.setitem(paths.VENDOR, "hopper", dataclasses.replace(paths.VENDOR["hopper"], usable=lambda q: True))
    assert ("hopper" in ops.usable_paths(q)) == hopper.AUTO
    assert "hopper" in ops.usable_paths(q, forced=True)
