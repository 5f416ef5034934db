"""The 8-bit precisions on a GPU: the Triton kernels (triton_fp8.py) against fp8_reference
(the same quantised math in float32 torch ops, on the GPU) and against float64 attention.
Skipped without CUDA, and per precision without its tensor cores."""
import pytest
import torch

import ringsp_kernels as rk
from ringsp_kernels import fp8_reference as fr

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
PRECISIONS = ["fp8", "int8"]
# kernel vs reference: both quantise identically; what differs is float32 summation order,
# exp2's approximation and (fp8) the tensor core's reduced-precision accumulation, each of
# which can flip the rounding of a few P elements by one e4m3 step
KERNEL_TOL = {"fp8": 2e-2, "int8": 4e-3}
LSE_TOL = 2e-3
GATES = {"int8": (0.9999, 1.5e-2), "fp8": (0.998, 6.5e-2)}  # as tests/kernels/test_fp8.py


def need(precision):
    from ringsp_kernels.cuda.q8 import MIN_CAPABILITY

    if torch.cuda.get_device_capability() < MIN_CAPABILITY[precision]:
        pytest.skip(f"{precision} needs compute capability {MIN_CAPABILITY[precision]}")


def rand(B, S, H, D, seed, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(B, S, H, D, device="cuda", generator=g, dtype=dtype)


def qkv(B, Sq, Sk, H, D, kv_len, seed, dtype=torch.bfloat16, outliers=True):
    q, k, v = rand(B, Sq, H, D, seed, dtype), rand(B, Sk, H, D, seed + 1, dtype), rand(B, Sk, H, D, seed + 2, dtype)
    if outliers:  # channel offsets common to all keys: what K's smoothing removes
        off = torch.zeros(D, device="cuda")
        off[::8] = 20.0
        k = (k.float() + off).to(dtype)
    if kv_len is not None and kv_len < Sk:  # padding may hold anything: it must not leak
        k[:, kv_len:] = float("nan")
        v[:, kv_len:] = float("nan")
    return q, k, v


def block_n(q, k, v, precision, has_state):
    """BLOCK_N of the config the dispatch chose for this call's class (the reference's
    rounding depends on the key tile size)."""
    from ringsp_kernels.cuda import q8

    return q8.block(q, k, v, None, k.shape[1], precision, has_state)[1]


def rel(a, b):
    return fr.accuracy(a, b)[1]


SHAPES = [  # B, Sq, Sk, H, D, kv_len
    (1, 2048, 2048, 4, 128, None),
    (2, 1000, 3001, 3, 64, 2999),
    (1, 777, 130, 6, 128, 129),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_attn_fwd_matches_reference(precision, shape):
    need(precision)
    B, Sq, Sk, H, D, kv_len = shape
    dtype = torch.bfloat16  # fp16: test_narrow_head_dim_in_fp16 (each dtype is another compile)
    q, k, v = qkv(*shape, seed=Sq + Sk, dtype=dtype)
    out, lse = rk.attn_fwd(q, k, v, kv_len=kv_len, precision=precision)
    assert out.dtype == dtype and out.shape == q.shape and lse.shape == (B, H, Sq)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    ref_out, ref_lse = fr.attn_q8_reference(q, k, v, kv_len=kv_len, precision=precision, block_n=block_n(q, k, v, precision, False))
    assert rel(out, ref_out) < KERNEL_TOL[precision]
    assert (lse - ref_lse).abs().max() < LSE_TOL


@pytest.mark.parametrize("D", [128, 64])
def test_step_chain_mixing_precisions_matches_reference(D):
    """A ring's blocks in reverse order -- an empty one and a padded one among them -- each
    step in its own precision, against the same chain of reference steps."""
    for p in PRECISIONS:
        need(p)
    B, Sq, S, H = 1, 1500, 5000, 4
    q, k, v = qkv(B, Sq, S, H, D, None, seed=D)
    cuts = [0, 1200, 1200, 2500, 4100, S]
    precisions = [None, "fp8", "int8", "fp8", "int8"]
    acc, lse = rk.init_state(q)
    ref_acc, ref_lse = rk.init_state(q)
    for (a, b), p in zip(reversed(list(zip(cuts, cuts[1:]))), precisions):
        kb, vb = k[:, a:b + 64].clone(), v[:, a:b + 64].clone()  # 64 keys of padding past kv_len
        kb[:, b - a:] = float("nan")
        vb[:, b - a:] = float("nan")
        rk.attn_step_(q, kb, vb, acc, lse, kv_len=b - a, precision=p)
        if p is None:
            rk.attn_step_(q, kb, vb, ref_acc, ref_lse, kv_len=b - a)
        elif b > a:
            fr.step_q8_reference_(q, kb, vb, ref_acc, ref_lse, kv_len=b - a, precision=p, block_n=block_n(q, kb, vb, p, True))
    assert rel(acc, ref_acc) < KERNEL_TOL["fp8"] and (lse - ref_lse).abs().max() < LSE_TOL
    assert_gate("fp8", rk.finalize(acc, lse, q.dtype), q, k, v)


def assert_gate(precision, out, q, k, v, rows=256):
    """out against float64 attention on a subsample of query rows."""
    idx = torch.linspace(0, q.shape[1] - 1, min(rows, q.shape[1]), device=q.device).long()
    qs = q[:, idx].double()
    s = torch.einsum("bqhd,bkhd->bhqk", qs, k.double()) * q.shape[-1] ** -0.5
    ref = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v.double())
    cos, err = fr.accuracy(out[:, idx], ref)
    cos_min, rel_max = GATES[precision]
    assert cos >= cos_min and err <= rel_max, (precision, cos, err)


@pytest.mark.parametrize("outliers", [False, True], ids=["randn", "k-outliers"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_accuracy_against_float64(precision, outliers):
    need(precision)
    q, k, v = qkv(1, 4096, 4096, 4, 128, None, seed=7, outliers=outliers)
    assert_gate(precision, rk.attn_fwd(q, k, v, precision=precision)[0], q, k, v)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_config_matches_reference(precision):
    """Autotuning keeps the fastest config whatever it computes: each must be right."""
    need(precision)
    from ringsp_kernels.cuda import triton_fp8

    B, Sq, Sk, H, D = 1, 600, 1100, 2, 128
    q, k, v = qkv(B, Sq, Sk, H, D, 1030, seed=3)
    acc0, lse0 = rk.init_state(q)
    rk.attn_step_(q, k[:, :500], v[:, :500], acc0, lse0)
    from triton.runtime.errors import OutOfResources

    ran = 0
    for cfg in triton_fp8.CONFIGS + [triton_fp8.FALLBACK]:
        acc, lse = acc0.clone(), lse0.clone()
        try:
            triton_fp8.attend(q, k, v, acc, lse, 0.1, 1030, precision == "int8", has_state=True, block=cfg)
        except OutOfResources:  # autotuning skips such a config too
            continue
        ran += 1
        ref_acc, ref_lse = acc0.clone(), lse0.clone()
        fr.step_q8_reference_(q, k, v, ref_acc, ref_lse, scale=0.1, kv_len=1030, precision=precision, block_n=cfg[1])
        assert rel(acc, ref_acc) < KERNEL_TOL[precision], cfg
        assert (lse - ref_lse).abs().max() < LSE_TOL, cfg
    assert ran >= 2


@pytest.mark.parametrize("precision", PRECISIONS)
def test_narrow_head_dim_fp16_strided_views(precision):
    need(precision)
    from ringsp_kernels.cuda import triton_fp8

    q, k, v = qkv(2, 300, 200, 3, 40, 190, seed=11, dtype=torch.float16)  # D=40: zero-padded to 64
    q = torch.cat([q, q[..., :8]], -1)[..., :40]  # a slice of a wider projection
    k = k.transpose(1, 2).contiguous().transpose(1, 2)  # heads outermost
    out, lse = torch.empty_like(q), torch.empty(2, 3, 300, device="cuda")
    triton_fp8.attend(q, k, v, out, lse, 40 ** -0.5, 190, precision == "int8", has_state=False,
                      block=triton_fp8.FALLBACK)
    ref_out, ref_lse = fr.attn_q8_reference(q, k, v, kv_len=190, precision=precision, block_n=triton_fp8.FALLBACK[1])
    assert rel(out, ref_out) < KERNEL_TOL[precision] and (lse - ref_lse).abs().max() < LSE_TOL


@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_blocks(precision):
    need(precision)
    q, k, v = qkv(1, 100, 50, 2, 64, None, seed=1)
    out, lse = rk.attn_fwd(q, k, v, kv_len=0, precision=precision)
    assert (out == 0).all() and (lse == float("-inf")).all()
    acc, st = rk.init_state(q)
    rk.attn_step_(q, k, v, acc, st, precision=precision)
    before = acc.clone(), st.clone()
    rk.attn_step_(q, k[:, :0], v[:, :0], acc, st, precision=precision)
    rk.attn_step_(q, k, v, acc, st, kv_len=0, precision=precision)
    assert torch.equal(acc, before[0]) and torch.equal(st, before[1])
