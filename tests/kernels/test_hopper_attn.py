"""The candidate Hopper kernels (ringsp_kernels/hopper_attn.py) against the
float64 reference: attn_fwd, kv_len padding with NaN-filled padded keys, state rows that have
seen no key, 4-step chains. Without a GPU the Triton variants run in the interpreter (fp16 /
fp32, tiny tiles); the GPU tests (bf16/fp16, all variants) need a Hopper GPU."""
import pytest
import torch

from ringsp_kernels import hopper_attn
from ringsp_kernels.reference import reference_attention

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
TRITON_VARIANTS = [("persist", None), ("pipe", None), ("split", 3)]


def rel_err(a, b):
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


def make(B, Sq, Sk, H, D, dtype, device, seed, kv_len=None):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, s, H, D, generator=g).to(device=device, dtype=dtype) for s in (Sq, Sk, Sk))
    if kv_len is not None:  # padding past kv_len must get no weight, even NaN
        k[:, kv_len:] = float("nan")
        v[:, kv_len:] = float("nan")
    return q, k, v


def run_fwd(q, k, v, kv_len, variant, splits):
    B, Sq, H, _ = q.shape
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    lse = torch.full((B, H, Sq), float("nan"), device=q.device)
    hopper_attn.launch(q, k, v, out, lse, q.shape[-1] ** -0.5, kv_len, False, variant=variant, splits=splits)
    return out, lse


def run_chain(q, k, v, cuts, variant, splits, acc=None, lse=None):
    """Steps over k/v[:, a:b] for consecutive cuts, from (acc, lse) or the empty state."""
    B, Sq, H, _ = q.shape
    if acc is None:
        acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full((B, H, Sq), float("-inf"), device=q.device)
    for a, b in zip(cuts, cuts[1:]):
        hopper_attn.launch(q, k[:, a:b], v[:, a:b], acc, lse, q.shape[-1] ** -0.5, b - a, True,
                           variant=variant, splits=splits)
    return acc, lse


def check(out, lse, ref_out, ref_lse, tol):
    assert torch.isfinite(out).all() and not torch.isnan(lse).any()
    assert rel_err(out, ref_out) < tol
    assert (lse.double().cpu() - ref_lse).abs().max().item() < tol


def fwd_padding_chain_case(variant, splits, dtype, device, B, Sq, Sk, H, D, tol, seed=0):
    kv_len = Sk - 3
    q, k, v = make(B, Sq, Sk, H, D, dtype, device, seed, kv_len)
    ref_out, ref_lse = reference_attention(q, k, v, kv_len=kv_len)
    out, lse = run_fwd(q, k, v, kv_len, variant, splits)
    check(out, lse, ref_out, ref_lse, tol)
    # 4 steps over uneven blocks, one of them empty, the last one padded
    cuts = [0, kv_len // 3, kv_len // 3, 2 * kv_len // 3 + 1]
    acc, st = run_chain(q, k, v, cuts, variant, splits)
    last = cuts[-1]
    hopper_attn.launch(q, k[:, last:], v[:, last:], acc, st, D ** -0.5, kv_len - last, True,
                       variant=variant, splits=splits)
    check(acc, st, ref_out, ref_lse, tol)


def empty_rows_case(variant, splits, dtype, device, B, Sq, Sk, H, D, tol, seed=1):
    """Rows whose state has lse = -inf hold garbage in acc (here NaN) that must be ignored;
    the other rows carry a real earlier block."""
    q, k, v = make(B, Sq, 2 * Sk, H, D, dtype, device, seed)
    acc, lse = run_chain(q, k, v, [0, Sk], variant, splits)
    fresh = torch.zeros(Sq, dtype=torch.bool)
    fresh[::3] = True
    acc[:, fresh.to(device)] = float("nan")
    lse[:, :, fresh.to(device)] = float("-inf")
    run_chain(q, k, v, [Sk, 2 * Sk], variant, splits, acc, lse)
    ref_all, ref_lse_all = reference_attention(q, k, v)
    ref_new, ref_lse_new = reference_attention(q, k[:, Sk:], v[:, Sk:])
    sel = fresh.view(1, Sq, 1, 1)
    ref_out = torch.where(sel, ref_new, ref_all)
    ref_lse = torch.where(fresh.view(1, 1, Sq), ref_lse_new, ref_lse_all)
    check(acc, lse, ref_out, ref_lse, tol)


# --- interpreter (no GPU): Triton variants in fp16 / fp32 -----------------------------------

interp = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run without a GPU")


@interp
@pytest.mark.parametrize("variant,splits", TRITON_VARIANTS, ids=[v for v, _ in TRITON_VARIANTS])
def test_interpreted_fwd_padding_and_chain(variant, splits):
    fwd_padding_chain_case(variant, splits, torch.float16, "cpu", 2, 37, 53, 2, 32, 3e-3)


@interp
def test_interpreted_float32_and_empty_state_rows():
    empty_rows_case("persist", None, torch.float32, "cpu", 1, 21, 19, 2, 16, 1e-5)
    empty_rows_case("split", 2, torch.float32, "cpu", 1, 21, 40, 1, 16, 1e-5)


def test_choose_splits():
    assert hopper_attn.choose_splits(3000, 64, 132) == 1  # tiles fill the SMs many times over
    assert hopper_attn.choose_splits(72, 56, 132) > 1  # 3-head shard: half the SMs idle
    assert hopper_attn.choose_splits(72, 1, 132) == 1  # one KV block: nothing to split
    s = hopper_attn.choose_splits(10, 7, 132)
    assert 1 <= s <= 3  # never a split of under two blocks


def test_bad_inputs_name_the_argument():
    q = torch.zeros(1, 4, 2, 16)
    k = torch.zeros(1, 5, 2, 16)
    out, lse = torch.zeros(1, 4, 2, 16), torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="kv_len"):
        hopper_attn.launch(q, k, k, out, lse, 0.25, 6, False)
    with pytest.raises(ValueError, match="variant"):
        hopper_attn.launch(q, k, k, out, lse, 0.25, 5, False, variant="nope")
    with pytest.raises(ValueError, match="lse"):
        hopper_attn.launch(q, k, k, out, torch.zeros(1, 4, 2), 0.25, 5, False)
    with pytest.raises(TypeError, match="acc"):
        hopper_attn.launch(q, k, k, out.half(), lse, 0.25, 5, True)


# --- GPU (Hopper) --------------------------------------------------------------------------

gpu = pytest.mark.skipif(not HOPPER, reason="needs a Hopper GPU")
GPU_VARIANTS = TRITON_VARIANTS


@gpu
@pytest.mark.parametrize("variant,splits", GPU_VARIANTS, ids=[v for v, _ in GPU_VARIANTS])
@pytest.mark.parametrize("D", [64, 128])
def test_gpu_fwd_padding_and_chain(variant, splits, D):
    fwd_padding_chain_case(variant, splits, torch.bfloat16, "cuda", 1, 777, 1000, 3, D, 1e-2)


@gpu
@pytest.mark.parametrize("variant,splits", [("persist", None), ("split", 2)], ids=["persist", "split"])
def test_gpu_empty_state_rows_fp16(variant, splits):
    empty_rows_case(variant, splits, torch.float16, "cuda", 1, 300, 260, 2, 128, 1e-2)
