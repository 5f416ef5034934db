"""The CPU attention kernel (csrc/flash_cpu.cpp) at the sizes where its tiling shows:
query tiles of 128 rows grouped into chunks, key blocks of 512 cut into 64-wide panels,
bf16 on AMX or in float32, the vectorised exp rows; checked against the float64
reference. test_ops.py covers the op contract at small sizes."""
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

import ringsp_kernels as rk

# float32 goes through float32 products and a ~1 ulp exp: hold it tighter than test_ops.
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rand(*shape, dtype=torch.float32, seed=0, mul=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * mul).to(dtype)


def assert_matches_reference(out, lse, q, k, v, dtype, scale=None, kv_len=None):
    ref_out, ref_lse = rk.reference_attention(q, k, v, scale=scale, kv_len=kv_len)
    torch.testing.assert_close(out.double(), ref_out, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(lse.double(), ref_lse, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """The chunking of query rows into tasks depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


EDGE_CASES = [
    # Sq, Sk, D, kv_len: one past a tile and a block; padding across blocks; a head dim
    # with a partial 64-panel; a single key; odd head dim (bf16 leaves AMX); one query.
    (129, 513, 64, None),
    (300, 1100, 128, 1030),
    (257, 64, 40, None),
    (70, 1025, 66, 1),
    (130, 600, 7, None),
    (1, 777, 128, 777),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("Sq,Sk,D,kv_len", EDGE_CASES)
def test_fwd_across_tile_and_block_edges(threads, dtype, Sq, Sk, D, kv_len):
    q = rand(2, Sq, 2, D, dtype=dtype, seed=1, mul=3.0)  # peaky rows: most weights underflow
    k, v = rand(2, Sk, 2, D, dtype=dtype, seed=2), rand(2, Sk, 2, D, dtype=dtype, seed=3)
    if kv_len is not None:  # padding must not leak, even inside a block that is used
        k[:, kv_len:], v[:, kv_len:] = float("nan"), float("nan")
    out, lse = rk.attn_fwd(q, k, v, kv_len=kv_len)
    assert_matches_reference(out, lse, q, k, v, dtype, kv_len=kv_len)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_step_chain_over_big_blocks_into_strided_state(dtype):
    B, Sq, H, D, S = 1, 300, 3, 64, 1500
    q, k, v = rand(B, Sq, H, D, dtype=dtype, seed=4), rand(B, S, H, D, dtype=dtype, seed=5), rand(B, S, H, D, dtype=dtype, seed=6)
    acc = torch.zeros(B, H, Sq, D).transpose(1, 2)  # [B, Sq, H, D] view, head-major storage
    lse = torch.full((B, Sq, H), float("-inf")).permute(0, 2, 1)
    for a, b in ((700, 1500), (700, 700), (0, 700)):  # out of order, with an empty block
        rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse)
    assert_matches_reference(acc, lse, q, k, v, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_strided_and_expanded_inputs(dtype):
    """Inputs read in place (unit-stride rows) and inputs that must be copied agree."""
    B, Sq, Sk, H, D = 1, 200, 600, 2, 64
    q = rand(B, H, Sq, D, dtype=dtype, seed=7).transpose(1, 2)
    k = rand(B, Sk, H, 2 * D, dtype=dtype, seed=8)[..., ::2]  # element stride 2
    v = rand(B, 1, H, D, dtype=dtype, seed=9).expand(B, Sk, H, D)  # row stride 0
    out, lse = rk.attn_fwd(q, k, v, scale=-0.2)  # a negative scale flips which key is largest
    assert_matches_reference(out, lse, q, k, v, dtype, scale=-0.2)
    out, lse = rk.attn_fwd(q.contiguous(), k.contiguous(), v.contiguous(), scale=0.0)
    assert_matches_reference(out, lse, q, k, v, dtype, scale=0.0)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_bf16_without_amx_path_matches_too():
    """With oneDNN off, bf16 runs through float32 tile products instead of AMX."""
    q, k, v = rand(1, 260, 2, 128, dtype=torch.bfloat16, seed=10), rand(1, 900, 2, 128, dtype=torch.bfloat16, seed=11), rand(1, 900, 2, 128, dtype=torch.bfloat16, seed=12)
    with torch.backends.mkldnn.flags(enabled=False):
        out, lse = rk.attn_fwd(q, k, v)
    assert_matches_reference(out, lse, q, k, v, torch.bfloat16)


PORTABLE_SCRIPT = textwrap.dedent(
    """
    import torch, ringsp_kernels as rk
    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, 2e-5), (torch.bfloat16, 3e-2)):
        q, k, v = (torch.randn(1, s, 2, 64, generator=g).to(dtype) for s in (150, 700, 700))
        out, lse = rk.attn_fwd(q, k, v * 2)
        ref_out, ref_lse = rk.reference_attention(q, k, v * 2)
        torch.testing.assert_close(out.double(), ref_out, atol=tol, rtol=tol)
        torch.testing.assert_close(lse.double(), ref_lse, atol=tol, rtol=tol)
    print("portable ok")
    """
)


def test_portable_row_code():
    """The exp rows without AVX-512 intrinsics (what AVX2-only CPUs run)."""
    env = dict(os.environ, RINGSP_CPU_NO_AVX512="1")
    done = subprocess.run([sys.executable, "-c", PORTABLE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "portable ok" in done.stdout, done.stderr[-2000:]


def best_time(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def test_speed_is_in_torch_sdpa_league():
    """A loose guard against falling back to scalar code (which ran ~15x slower than
    torch's SDPA): at least a fifth of SDPA's speed on the same tensors."""
    q, k, v = (rand(1, 1024, 4, 64, seed=s) for s in (13, 14, 15))
    ours = best_time(lambda: rk.attn_fwd(q, k, v))
    sdpa = best_time(lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))
    assert ours < 5 * sdpa, f"ringsp {ours * 1e3:.1f} ms vs sdpa {sdpa * 1e3:.1f} ms"
