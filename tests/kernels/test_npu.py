"""The Ascend NPU backend (ringsp_kernels/npu/: backend, fusion, fused_infer, merge).

No NPU here: the backend's logic runs on CPU tensors with its two hardware lookups replaced,
torch_npu.npu_fusion_attention by `standin_fusion_attention` (the documented contract in
plain torch, itself checked against the float64 reference) and the AscendC kernel op by
either `EmulatedMergeKernel` (the kernel's tiling and block-wise GM access, in torch) or
`CpuModelKernel` (csrc/ascend/merge_kernel.cpp itself, built with g++ against a checked CPU
model of the AscendC API). Tests that need the real device are skipped with that reason.
"""
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import warnings
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ringsp_kernels as rk
from ringsp_kernels import checks, registry
from ringsp_kernels.npu import backend as npu
from ringsp_kernels.npu import fused_infer
from ringsp_kernels.npu import fusion as npu_attention
from ringsp_kernels.npu import merge as npu_merge
from tests.kernels import test_ops as contract

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
NO_MASK_TOKENS = 2147483647
ASCEND_SRC = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "csrc", "ascend")
HEADER = os.path.join(ASCEND_SRC, "merge_tiling.h")


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


# --- the stand-in for torch_npu.npu_fusion_attention -----------------------------------


def standin_fusion_attention(
    query, key, value, head_num, input_layout, pse=None, padding_mask=None, atten_mask=None, scale=1.0,
    keep_prob=1.0, pre_tockens=NO_MASK_TOKENS, next_tockens=NO_MASK_TOKENS, inner_precise=0, prefix=None,
    actual_seq_qlen=None, actual_seq_kvlen=None, sparse_mode=0, gen_mask_parallel=True, sync=False,
):
    """npu_fusion_attention's documented contract for BSND without dropout, computed in float32
    like the device. Options ringsp never uses are refused rather than modelled."""
    if input_layout != "BSND":
        raise NotImplementedError(f"stand-in models BSND only, got {input_layout}")
    for name, val in (("pse", pse), ("padding_mask", padding_mask), ("prefix", prefix),
                      ("actual_seq_qlen", actual_seq_qlen), ("actual_seq_kvlen", actual_seq_kvlen)):
        if val is not None:
            raise NotImplementedError(f"stand-in does not model {name}")
    if keep_prob != 1.0 or sparse_mode != 0 or (pre_tockens, next_tockens) != (NO_MASK_TOKENS,) * 2:
        raise NotImplementedError("stand-in models keep_prob=1, sparse_mode=0, no band")
    B, Sq, N, D = query.shape
    assert query.dtype in (torch.float16, torch.bfloat16, torch.float32)
    assert key.dtype == value.dtype == query.dtype and key.shape == value.shape
    assert key.shape[0] == B and key.shape[2:] == (N, D) and N == head_num
    assert B >= 1 and Sq >= 1 and key.shape[1] >= 1 and 1 <= N <= 256 and 1 <= D <= 768
    assert query.is_contiguous() and key.is_contiguous() and value.is_contiguous()
    s = torch.einsum("bqnd,bknd->bnqk", query.float(), key.float()) * scale
    if atten_mask is not None:
        Sk = key.shape[1]
        assert atten_mask.dtype in (torch.bool, torch.uint8)
        assert tuple(atten_mask.shape) in ((Sq, Sk), (1, 1, Sq, Sk), (B, 1, Sq, Sk), (B, N, Sq, Sk))
        s = s.masked_fill(atten_mask.bool(), float("-inf"))  # True = masked out
    mx = s.amax(-1, keepdim=True)
    p = torch.exp(s - mx)
    total = p.sum(-1, keepdim=True)
    out = torch.einsum("bnqk,bknd->bqnd", p / total, value.float()).to(query.dtype)
    stat = lambda t: t.expand(B, N, Sq, npu_attention.STAT_WIDTH).contiguous()  # noqa: E731
    return out, stat(mx), stat(total), torch.empty(0, dtype=query.dtype), 0, 0, 0


@SETTINGS
@given(
    B=st.integers(1, 2), N=st.integers(1, 3), Sq=st.integers(1, 20), Sk=st.integers(1, 20),
    D=st.sampled_from([8, 16, 64]), scale=st.floats(0.05, 1.0), seed=st.integers(0, 2**16),
)
def test_standin_matches_reference(B, N, Sq, Sk, D, scale, seed):
    q, k, v = rand(B, Sq, N, D, seed=seed), rand(B, Sk, N, D, seed=seed + 1), rand(B, Sk, N, D, seed=seed + 2)
    out, smax, ssum, *_ = standin_fusion_attention(q, k, v, N, "BSND", scale=scale)
    ref_out, ref_lse = rk.reference_attention(q, k, v, scale=scale)
    assert smax.shape == ssum.shape == (B, N, Sq, 8) and smax.dtype == ssum.dtype == torch.float32
    assert torch.equal(smax, smax[..., :1].expand_as(smax))  # replicated
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close((smax[..., 0] + ssum[..., 0].log()).double(), ref_lse, atol=2e-5, rtol=2e-5)


def test_standin_mask_hides_keys_like_kv_len():
    """atten_mask True = masked out, every documented shape: equal to cutting the keys."""
    B, Sq, Sk, N, D, n = 2, 7, 11, 3, 16, 6
    q, k, v = rand(B, Sq, N, D, seed=1), rand(B, Sk, N, D, seed=2), rand(B, Sk, N, D, seed=3)
    ref_out, ref_lse = rk.reference_attention(q, k, v, kv_len=n)
    cols = torch.arange(Sk) >= n
    for shape in ((Sq, Sk), (1, 1, Sq, Sk), (B, 1, Sq, Sk), (B, N, Sq, Sk)):
        mask = cols.expand(*shape[:-2], Sq, Sk).reshape(shape)
        out, smax, ssum, *_ = standin_fusion_attention(q, k, v, N, "BSND", atten_mask=mask, scale=D**-0.5)
        torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close((smax[..., 0] + ssum[..., 0].log()).double(), ref_lse, atol=2e-5, rtol=2e-5)


def test_standin_refuses_what_it_does_not_model():
    q = rand(1, 4, 2, 16)
    for kwargs in ({"input_layout": "BNSD"}, {"keep_prob": 0.9}, {"sparse_mode": 2}, {"actual_seq_kvlen": [4]}):
        args = {"head_num": 2, "input_layout": "BSND", **kwargs}
        with pytest.raises(NotImplementedError):
            standin_fusion_attention(q, q, q, **args)


# --- the stand-in for torch_npu.npu_fused_infer_attention_score ---------------------------


def standin_fused_infer_attention(
    query, key, value, *, pse_shift=None, atten_mask=None, actual_seq_lengths=None, actual_seq_lengths_kv=None,
    num_heads=1, scale=1.0, pre_tokens=NO_MASK_TOKENS, next_tokens=NO_MASK_TOKENS, input_layout="BSH",
    num_key_value_heads=0, sparse_mode=0, inner_precise=0, block_size=0, antiquant_mode=0,
    softmax_lse_flag=False, **unmodelled,
):
    """npu_fused_infer_attention_score's documented contract (op-plugin docs) for BSND,
    unmasked, more than one query row (its PromptFlashAttention branch), computed in float32.
    Options ringsp never uses are refused rather than modelled."""
    if input_layout != "BSND":
        raise NotImplementedError(f"stand-in models BSND only, got {input_layout}")
    for name, val in (("pse_shift", pse_shift), ("atten_mask", atten_mask), ("actual_seq_lengths", actual_seq_lengths),
                      ("actual_seq_lengths_kv", actual_seq_lengths_kv), *unmodelled.items()):
        if val is not None:
            raise NotImplementedError(f"stand-in does not model {name}")
    if sparse_mode != 0 or (pre_tokens, next_tokens) != (NO_MASK_TOKENS,) * 2 or block_size or antiquant_mode:
        raise NotImplementedError("stand-in models sparse_mode=0, no band, no paging, no quantisation")
    B, Sq, N, D = query.shape
    assert query.dtype in (torch.float16, torch.bfloat16)  # float32 is not among its query types
    assert key.dtype == value.dtype == query.dtype and key.shape == value.shape
    assert key.shape[0] == B and key.shape[2:] == (N, D) and N == num_heads and num_key_value_heads in (0, N)
    assert 2 <= Sq and B <= 65536 and N <= 256 and D <= 512 and D % 16 == 0 and key.shape[1] >= 1
    assert query.is_contiguous() and key.is_contiguous() and value.is_contiguous()
    s = torch.einsum("bqnd,bknd->bnqk", query.float(), key.float()) * scale
    lse = torch.logsumexp(s, -1, keepdim=True)
    out = torch.einsum("bnqk,bknd->bqnd", torch.exp(s - lse), value.float()).to(query.dtype)
    return out, (lse if softmax_lse_flag else torch.zeros(1))


def standin_fused_infer_scale_value(query, key, value, *, scale_value=1.0, **kwargs):
    """The same kernel as torch_npu 6.0 spells it: the scale is `scale_value`."""
    return standin_fused_infer_attention(query, key, value, scale=scale_value, **kwargs)


@SETTINGS
@given(
    B=st.integers(1, 2), N=st.integers(1, 3), Sq=st.integers(2, 20), Sk=st.integers(1, 20),
    D=st.sampled_from([16, 64]), scale=st.floats(0.05, 1.0), seed=st.integers(0, 2**16),
)
def test_fused_infer_standin_matches_reference(B, N, Sq, Sk, D, scale, seed):
    q, k, v = (rand(B, S, N, D, dtype=torch.float16, seed=seed + i) for i, S in enumerate((Sq, Sk, Sk)))
    out, lse = standin_fused_infer_attention(q, k, v, num_heads=N, input_layout="BSND", scale=scale,
                                             softmax_lse_flag=True)
    ref_out, ref_lse = rk.reference_attention(q, k, v, scale=scale)
    assert lse.shape == (B, N, Sq, 1) and lse.dtype == torch.float32 and out.dtype == torch.float16
    torch.testing.assert_close(out.double(), ref_out, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse[..., 0].double(), ref_lse, atol=2e-5, rtol=2e-5)
    assert standin_fused_infer_attention(q, k, v, num_heads=N, input_layout="BSND")[1].shape == (1,)


class RecordingFIA:
    def __init__(self, fn=standin_fused_infer_attention):
        self.fn, self.calls = fn, []

    def __call__(self, q, k, v, **kwargs):
        self.calls.append((q, k, v, kwargs))
        return self.fn(q, k, v, **kwargs)


def test_fused_infer_passes_the_documented_arguments_and_returns_its_lse():
    q, k, v = (rand(2, S, 3, 16, dtype=torch.bfloat16, seed=i) for i, S in enumerate((5, 9, 9)))
    fia = RecordingFIA()
    out, lse = fused_infer.attn_fwd(fia, q, k, v, kv_len=6)
    (cq, ck, cv, kwargs), = fia.calls
    assert kwargs == {"num_heads": 3, "input_layout": "BSND", "scale": 16**-0.5, "sparse_mode": 0,
                      "softmax_lse_flag": True}
    assert ck.shape[1] == cv.shape[1] == 6 and cq.is_contiguous() and ck.is_contiguous()
    ref_out, ref_lse = rk.reference_attention(q, k, v, kv_len=6)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=1e-4)
    old = RecordingFIA(standin_fused_infer_scale_value)  # the 6.0 releases' name of the scale
    fused_infer.attn_fwd(old, q, k, v, scale=0.3, scale_name=fused_infer.scale_keyword(("query", "scale_value")))
    assert old.calls[0][3]["scale_value"] == 0.3
    assert fused_infer.scale_keyword(("query", "scale", "input_layout")) == "scale"
    assert fused_infer.scale_keyword(()) == "scale"


@pytest.mark.parametrize("shape,dtype,why", [((1, 4, 2, 64), torch.float32, "float16 or bfloat16"),
                                             ((1, 1, 2, 64), torch.float16, "single query row"),
                                             ((1, 4, 2, 40), torch.float16, "head dim 40"),
                                             ((1, 4, 2, 528), torch.bfloat16, "head dim 528"),
                                             ((1, 4, 257, 16), torch.float16, "heads")])
def test_fused_infer_names_the_shapes_it_cannot_take(shape, dtype, why):
    q = torch.zeros(shape, dtype=dtype)
    assert why in fused_infer.unfit_reason(q)
    with pytest.raises(ValueError, match="cannot take"):
        fused_infer.attn_fwd(RecordingFIA(), q, q, q)
    assert fused_infer.unfit_reason(torch.zeros(1, 4, 2, 64, dtype=torch.bfloat16)) is None


def test_fused_infer_without_keys_never_calls_the_kernel():
    fia = RecordingFIA()
    q = rand(1, 5, 2, 16, dtype=torch.float16)
    out, lse = fused_infer.attn_fwd(fia, q, q[:, :0], q[:, :0])
    assert not fia.calls and not out.any() and torch.isneginf(lse).all()


@pytest.mark.parametrize("lse", [torch.zeros(1), torch.zeros(2, 3, 5), torch.zeros(2, 3, 5, 1, dtype=torch.float16)])
def test_fused_infer_lse_of_another_contract_fails_loudly(lse):
    with pytest.raises(RuntimeError, match="contract may have changed"):
        fused_infer.lse_of(lse, (2, 3, 5))


# --- npu_attention: arguments, LSE, kv_len, empty blocks ---------------------------------


class RecordingFA:
    """The stand-in, recording how it was called."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, **kwargs):
        self.calls.append((q, k, v, kwargs))
        return standin_fusion_attention(q, k, v, **kwargs)


def test_attn_fwd_passes_the_documented_arguments():
    q, k, v = rand(2, 5, 3, 16, seed=1), rand(2, 9, 3, 16, seed=2), rand(2, 9, 3, 16, seed=3)
    fa = RecordingFA()
    npu_attention.attn_fwd(fa, q, k, v, kv_len=6)
    (cq, ck, cv, kwargs), = fa.calls
    assert kwargs == {"head_num": 3, "input_layout": "BSND", "scale": 16**-0.5, "keep_prob": 1.0, "sparse_mode": 0}
    assert ck.shape[1] == cv.shape[1] == 6 and cq.is_contiguous() and ck.is_contiguous()
    npu_attention.attn_fwd(fa, q, k, v, scale=0.3)
    assert fa.calls[-1][3]["scale"] == 0.3 and fa.calls[-1][1].shape[1] == 9


def test_keys_in_use_cuts_without_copy_at_batch_one():
    k, v = rand(1, 9, 2, 16), rand(1, 9, 2, 16)
    kk, vv = npu_attention.keys_in_use(k, v, 4)
    assert kk.shape[1] == 4 and kk.is_contiguous() and kk.data_ptr() == k.data_ptr()
    assert npu_attention.keys_in_use(k, v, 9) == (k, v)


@pytest.mark.parametrize("Sq,Sk,kv_len", [(5, 0, None), (5, 7, 0), (0, 7, None)])
def test_attn_fwd_without_keys_or_rows_never_calls_the_kernel(Sq, Sk, kv_len):
    fa = RecordingFA()
    q, k = rand(2, Sq, 3, 16), rand(2, Sk, 3, 16)
    out, lse = npu_attention.attn_fwd(fa, q, k, k, kv_len=kv_len)
    assert not fa.calls and out.shape == q.shape and lse.shape == (2, 3, Sq)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()


def test_attn_fwd_refuses_more_heads_than_the_kernel_takes():
    q = torch.zeros(1, 1, 257, 1)
    with pytest.raises(ValueError, match="257 heads"):
        npu_attention.attn_fwd(RecordingFA(), q, q, q)


def test_lse_from_softmax_stats_uses_max_plus_log_sum():
    s = rand(2, 3, 5, 7, seed=4).double() * 3
    mx = s.amax(-1, keepdim=True)
    total = torch.exp(s - mx).sum(-1, keepdim=True)
    rep = lambda t: t.expand(2, 3, 5, 8).float().contiguous()  # noqa: E731
    lse = npu_attention.lse_from_softmax_stats(rep(mx), rep(total), (2, 3, 5))
    torch.testing.assert_close(lse.double(), torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape,dtype", [((2, 3, 5), torch.float32), ((2, 3, 5, 1), torch.float32),
                                         ((2, 5, 3, 8), torch.float32), ((2, 3, 5, 8), torch.float16)])
def test_lse_from_unexpected_stats_layout_fails_loudly(shape, dtype):
    t = torch.ones(shape, dtype=dtype)
    with pytest.raises(RuntimeError, match="contract may have changed"):
        npu_attention.lse_from_softmax_stats(t, t, (2, 3, 5))


# --- npu_merge: the branch-free arithmetic, tiling, dispatch ------------------------------


@SETTINGS
@given(data=st.data())
def test_merge_weights_match_float64_logaddexp(data):
    n = data.draw(st.integers(1, 40))
    finite = st.floats(-80, 80, allow_nan=False)
    values = st.one_of(finite, st.just(float("-inf")))
    la = torch.tensor(data.draw(st.lists(values, min_size=n, max_size=n)))
    lb = torch.tensor(data.draw(st.lists(values, min_size=n, max_size=n)))
    w_acc, w_blk, new = npu_merge.merge_weights(la, lb)
    npu_merge.restore_neg_inf_(new)
    la64, lb64 = la.double(), lb.double()
    ref = torch.logaddexp(la64, lb64)
    seen = torch.isfinite(ref)
    assert torch.equal(torch.isneginf(new), ~seen)  # -inf exactly where neither side has a key
    torch.testing.assert_close(new[seen].double(), ref[seen], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(w_acc[seen].double(), torch.exp(la64 - ref)[seen], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w_blk[seen].double(), torch.exp(lb64 - ref)[seen], atol=1e-6, rtol=1e-5)
    assert (w_acc[torch.isneginf(la) & seen] == 0).all() and (w_blk[torch.isneginf(lb) & seen] == 0).all()
    assert (w_acc[~seen] == 1).all() and (w_blk[~seen] == 0).all()  # an unseen row keeps acc


@SETTINGS
@given(
    rows=st.integers(1, 5000), D=st.sampled_from([8, 16, 64, 128, 256, 512, 2048]),
    elem=st.sampled_from([2, 4]), cores=st.integers(1, 48),
)
def test_tiling_covers_rows_once_within_ub(rows, D, elem, cores):
    t = npu_merge.merge_tiling(rows, D, elem, cores)
    if t is None:  # only when not even ROW_ALIGN rows fit
        assert npu_merge.ub_bytes(npu_merge.ROW_ALIGN, D, elem) > npu_merge.UB_BUDGET
        return
    assert t.tile_rows % npu_merge.ROW_ALIGN == 0 and 0 < t.tile_rows <= npu_merge.MAX_TILE_ROWS
    assert t.rows_per_core % npu_merge.ROW_ALIGN == 0 and t.tile_rows <= t.rows_per_core
    assert npu_merge.ub_bytes(t.tile_rows, D, elem) <= npu_merge.UB_BUDGET
    assert 1 <= t.used_cores <= cores
    assert (t.used_cores - 1) * t.rows_per_core < rows <= t.used_cores * t.rows_per_core


def test_tiling_uses_the_ub_for_the_common_head_dims():
    """Wan/Qwen head dim 128 in bf16: the largest multiple of 8 rows that fits."""
    t = npu_merge.merge_tiling(40 * 9450, 128, 2, 40)
    assert t.tile_rows == 48 and npu_merge.ub_bytes(56, 128, 2) > npu_merge.UB_BUDGET


def test_python_mirrors_the_kernel_header():
    text = open(HEADER).read()
    defined = {m[0]: m[1] for m in re.findall(r"#define RINGSP_(\w+) \(?([\d *]+)\)?", text)}
    for name in ("ROW_ALIGN", "UB_BUDGET", "BUFFER_NUM", "ROW_VECTORS", "MAX_TILE_ROWS"):
        assert eval(defined[name]) == getattr(npu_merge, name), name  # plain integer products
    enum = dict(re.findall(r"RINGSP_MERGE_(F32|F16|BF16) = (\d)", text))
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    assert {names[d]: str(v) for d, v in npu_merge.KERNEL_DTYPES.items()} == enum


@pytest.mark.parametrize("D,dtype,fits", [(64, torch.float16, True), (128, torch.bfloat16, True),
                                          (40, torch.float32, True), (40, torch.float16, False),
                                          (12, torch.float32, False), (64, torch.float64, False)])
def test_kernel_takes_only_whole_32_byte_rows(D, dtype, fits):
    assert (npu_merge.kernel_unfit_reason(D, dtype) is None) == fits


class EmulatedMergeKernel:
    """torch.ops.ringsp.npu_merge_rows_ in torch: the host checks of merge_op.cpp, then each
    core's tiles exactly as merge_kernel.cpp walks them, reading and writing lse in whole
    32-byte blocks (an index past the buffer would be an out-of-bounds GM access)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, acc, lse_rows, out_blk, lse_blk_rows, tiling):
        self.calls += 1
        t = npu_merge.MergeTiling(*tiling)
        rows, D = acc.shape[0] * acc.shape[1] * acc.shape[2], acc.shape[3]
        assert acc.is_contiguous() and out_blk.is_contiguous() and out_blk.shape == acc.shape
        assert acc.dtype == lse_rows.dtype == lse_blk_rows.dtype == torch.float32
        assert (t.total_rows, t.head_dim) == (rows, D) and lse_rows.shape == lse_blk_rows.shape
        assert lse_rows.numel() >= npu_merge.align_rows(rows)
        assert torch.isneginf(lse_rows[rows:]).all() and torch.isneginf(lse_blk_rows[rows:]).all()  # padding
        assert npu_merge.kernel_unfit_reason(D, out_blk.dtype) is None
        assert npu_merge.ub_bytes(t.tile_rows, D, out_blk.element_size()) <= npu_merge.UB_BUDGET
        acc2, out2 = acc.view(rows, D), out_blk.view(rows, D)
        written = torch.zeros(rows, dtype=torch.int64)
        for core in range(t.used_cores):
            first = core * t.rows_per_core
            count = max(0, min(t.rows_per_core, rows - first))
            for r0 in range(first, first + count, t.tile_rows):
                n = min(t.tile_rows, first + count - r0)
                blocks = slice(r0, r0 + npu_merge.align_rows(n))
                assert r0 % npu_merge.ROW_ALIGN == 0 and blocks.stop <= lse_rows.numel()
                w_acc, w_blk, new = npu_merge.merge_weights(lse_rows[blocks], lse_blk_rows[blocks])
                acc2[r0 : r0 + n] = acc2[r0 : r0 + n] * w_acc[:n, None] + out2[r0 : r0 + n].float() * w_blk[:n, None]
                lse_rows[blocks] = new
                written[r0 : r0 + n] += 1
        assert (written == 1).all()


class NpuBackend:
    """The registered NPU ops (ringsp_kernels.npu) on CPU tensors, after the public checks,
    with the hardware lookups replaced. This one merges with the tensor-op fallback."""

    name = "npu-tensor-ops"
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    kernel = None
    cores = 1
    ub_budget = npu_merge.UB_BUDGET
    npu_attn = "fusion"  # RINGSP_NPU_ATTN
    fia = RecordingFIA()

    @classmethod
    @contextmanager
    def device(cls):
        before = rk.settings.override(npu_attn=cls.npu_attn)
        try:
            with mock.patch.multiple(npu, fusion_attention=lambda: standin_fusion_attention,
                                     fused_infer_attention=lambda: (cls.fia, "scale"),
                                     merge_kernel=lambda: cls.kernel, vector_cores=lambda device: cls.cores):
                with mock.patch.object(npu_merge, "UB_BUDGET", cls.ub_budget):
                    yield
        finally:
            rk.settings.restore(before)

    @classmethod
    def attn_fwd(cls, q, k, v, scale=None, kv_len=None):
        kv_len = checks.check_qkv(q, k, v, scale, kv_len)
        with cls.device():
            return npu.attn_fwd(q, k, v, scale, kv_len)

    @classmethod
    def attn_step_(cls, q, k, v, acc, lse, scale=None, kv_len=None):
        kv_len = checks.check_qkv(q, k, v, scale, kv_len)
        checks.check_state(q, acc, lse)
        with cls.device():
            npu.attn_step_(q, k, v, acc, lse, scale, kv_len)

    @classmethod
    def merge_(cls, acc, lse, out_blk, lse_blk):
        checks.check_merge(acc, lse, out_blk, lse_blk)
        with cls.device():
            npu.merge_(acc, lse, out_blk, lse_blk)


class NpuKernelBackend(NpuBackend):
    """Merges through the emulated AscendC kernel on 3 cores with a small UB, so that shapes
    the kernel takes run in several tiles per core, with tails."""

    name = "npu-ascendc-emulated"
    kernel = EmulatedMergeKernel()
    cores = 3
    ub_budget = 16 * 1024


class CpuModelKernel:
    """torch.ops.ringsp.npu_merge_rows_ backed by the kernel source itself: merge_kernel.cpp
    compiled with g++ against csrc/ascend/cpu_model (a checked CPU model of the AscendC API)."""

    def __init__(self, binary, workdir):
        self.binary, self.dir, self.calls = str(binary), workdir, 0

    def __call__(self, acc, lse_rows, out_blk, lse_blk_rows, tiling):
        self.calls += 1
        meta = [npu_merge.KERNEL_DTYPES[out_blk.dtype], *tiling, lse_rows.numel()]
        (self.dir / "meta.txt").write_text(" ".join(map(str, meta)))
        raw = out_blk.view(torch.int16) if out_blk.dtype == torch.bfloat16 else out_blk
        for name, t in (("acc", acc), ("out", raw), ("lse", lse_rows), ("lse_blk", lse_blk_rows)):
            t.numpy().tofile(self.dir / f"{name}.bin")
        run = subprocess.run([self.binary, str(self.dir)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        for name, t in (("acc", acc), ("lse", lse_rows)):
            t.copy_(torch.from_file(str(self.dir / f"{name}.bin"), size=t.numel()).view_as(t))


class NpuFusedInferBackend(NpuBackend):
    """RINGSP_NPU_ATTN=fused_infer: npu_fused_infer_attention_score where its documented
    limits take the shape (16-bit, head dim a multiple of 16, Sq >= 2), npu_fusion_attention
    for the rest."""

    name = "npu-fused-infer"
    npu_attn = "fused_infer"
    fia = RecordingFIA()


class NpuCpuModelBackend(NpuKernelBackend):
    name = "npu-ascendc-cpu-model"
    kernel = None  # set by the cpu_model fixture


@pytest.fixture(scope="module")
def cpu_model(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot compile the AscendC kernel on its CPU model")
    work = tmp_path_factory.mktemp("ascendc_cpu_model")
    model = os.path.join(ASCEND_SRC, "cpu_model")
    cmd = [gxx, "-std=c++17", "-O1", "-I", model, os.path.join(model, "run_merge.cpp"), "-o", str(work / "run_merge")]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr
    return CpuModelKernel(work / "run_merge", work)


@pytest.fixture(params=[NpuBackend, NpuKernelBackend, NpuCpuModelBackend, NpuFusedInferBackend],
                ids=lambda b: b.name)
def backend(request):
    if request.param is NpuCpuModelBackend:
        NpuCpuModelBackend.kernel = request.getfixturevalue("cpu_model")
    return request.param


@pytest.fixture(autouse=True)
def quiet_announcements():
    rk.clear_caches()  # among them the choices already announced
    yield
    rk.clear_caches()


# --- the ops contract of tests/kernels/test_ops.py, run through the NPU backend ------------


def test_contract_attn_fwd(backend):
    contract.test_attn_fwd_matches_reference(backend=backend)


def test_contract_step_chain_in_random_order(backend):
    contract.test_step_chain_over_random_blocks_in_random_order(backend=backend)


@pytest.mark.parametrize("case", ["test_step_with_padded_blocks_and_scale", "test_merge_of_two_fwd_results",
                                  "test_rows_without_keys_and_minus_inf_lse", "test_non_contiguous_inputs_and_state"])
def test_contract_cases(backend, case):
    getattr(contract, case)(backend=backend)


def test_the_fused_infer_setting_chooses_that_kernel_where_it_fits(caplog):
    fia = NpuFusedInferBackend.fia
    before = len(fia.calls)
    q = rand(2, 7, 3, 64, dtype=torch.bfloat16, seed=4)
    NpuFusedInferBackend.attn_fwd(q, q, q)
    assert len(fia.calls) == before + 1
    NpuBackend.attn_fwd(q, q, q)  # the default setting: npu_fusion_attention
    assert len(fia.calls) == before + 1
    with caplog.at_level(logging.INFO, logger="ringsp"):
        for _ in range(2):
            NpuFusedInferBackend.attn_fwd(q.float(), q.float(), q.float())  # float32: the other kernel
    assert len(fia.calls) == before + 1
    assert [r.getMessage() for r in caplog.records] == [
        "ringsp NPU attention: npu_fusion_attention (npu_fused_infer_attention_score cannot take this shape: "
        "it takes float16 or bfloat16, q is torch.float32)"]


def test_emulated_kernel_really_runs_for_shapes_it_takes():
    before = NpuKernelBackend.kernel.calls
    q = rand(2, 37, 3, 64, dtype=torch.float16, seed=5)
    acc, lse = rk.init_state(q)
    NpuKernelBackend.merge_(acc, lse, *NpuKernelBackend.attn_fwd(q, q, q))
    assert NpuKernelBackend.kernel.calls == before + 1
    q40 = rand(2, 5, 3, 40, dtype=torch.float16)  # 80-byte rows: tensor ops instead
    acc, lse = rk.init_state(q40)
    NpuKernelBackend.merge_(acc, lse, *NpuKernelBackend.attn_fwd(q40, q40, q40))
    assert NpuKernelBackend.kernel.calls == before + 1


@pytest.mark.parametrize("kernel_backend", ["emulated", "cpu-model"])
@pytest.mark.parametrize("dtype,D,S,ub", [(torch.bfloat16, 64, 29, 16 * 1024), (torch.float16, 128, 61, None),
                                          (torch.float32, 32, 203, None), (torch.float16, 16, 1, 16 * 1024)])
def test_kernel_and_fallback_agree_on_a_mixed_state(request, kernel_backend, dtype, D, S, ub):
    """Rows fresh on either side, on both, or neither: the kernel path (host preparation +
    kernel) and the tensor-op fallback give the same state."""
    kernel = NpuKernelBackend.kernel if kernel_backend == "emulated" else request.getfixturevalue("cpu_model")
    B, H = 2, 3
    acc, lse = rand(B, S, H, D, seed=6), rand(B, H, S, seed=7) * 4
    out_blk, lse_blk = rand(B, S, H, D, dtype=dtype, seed=8), rand(B, H, S, seed=9) * 4
    lse[:, :, ::3] = float("-inf")  # acc of those rows holds finite garbage: it must not count
    lse_blk[:, :, ::4] = float("-inf")
    want_acc, want_lse = acc.clone(), lse.clone()
    npu_merge.merge_tensor_ops_(want_acc, want_lse, out_blk, lse_blk)
    assert torch.equal(want_acc[:, 0], acc[:, 0])  # neither side has a key: acc as it was
    calls = kernel.calls
    with mock.patch.object(npu_merge, "UB_BUDGET", ub or npu_merge.UB_BUDGET):
        path, _ = npu_merge.merge_(acc, lse, out_blk, lse_blk, kernel=kernel, num_cores=5)
    assert path == "ascendc" and kernel.calls == calls + 1
    torch.testing.assert_close(acc, want_acc, atol=1e-6, rtol=1e-6)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(want_lse))
    assert torch.isneginf(lse[:, :, 0]).all()  # row 0: neither side has a key
    torch.testing.assert_close(lse, want_lse, atol=1e-6, rtol=1e-6)


def test_the_choice_of_merge_is_logged_once(caplog):
    q = rand(1, 6, 2, 64, dtype=torch.float16)
    with caplog.at_level(logging.INFO, logger="ringsp"):
        for backend, words in ((NpuBackend, "tensor-op fallback"), (NpuKernelBackend, "AscendC fused kernel")):
            caplog.clear()
            for _ in range(3):
                acc, lse = rk.init_state(q)
                backend.attn_step_(q, q, q, acc, lse)
            assert [r.getMessage() for r in caplog.records if words in r.getMessage()] != []
            assert len(caplog.records) == 1


# --- loading and registration ---------------------------------------------------------------


def test_library_lookup_and_a_missing_library(monkeypatch, tmp_path, caplog, ringsp_env):
    ringsp_env.unset(npu.LIBRARY_ENV)
    monkeypatch.setattr(npu, "_HERE", str(tmp_path))
    assert npu.ascend_library_path() is None  # not built: the fallback merge, no error
    (tmp_path / "_ascend_C.so").write_bytes(b"")
    assert npu.ascend_library_path() == str(tmp_path / "_ascend_C.so")
    ringsp_env.set(npu.LIBRARY_ENV, str(tmp_path / "missing.so"))  # forgets the library looked up, too
    assert npu.ascend_library_path() == str(tmp_path / "missing.so")
    with caplog.at_level(logging.WARNING, logger="ringsp"):
        assert npu.merge_kernel() is None
    assert "missing.so" in caplog.text


def test_register_binds_the_npu_dispatch_key():
    registry.bind_backends()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a kernel is registered over another
        registry.bind_backends()
    for name in ("attn_fwd", "attn_step_", "merge_"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ringsp::{name}", "PrivateUse1"), name


# --- on a real Ascend NPU (skipped elsewhere) ------------------------------------------------


def _npu_available():
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401

    return torch.npu.is_available()


needs_npu = pytest.mark.skipif(not _npu_available(), reason="needs torch_npu and an Ascend NPU (none here)")
NPU_TOL = {torch.float32: 2e-3, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@needs_npu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_npu_fusion_attention_keeps_its_documented_contract(dtype):
    import torch_npu

    q, k, v = (rand(2, s, 4, 128, dtype=dtype, seed=i).npu() for i, s in enumerate((40, 72, 72)))
    out, smax, ssum, *_ = torch_npu.npu_fusion_attention(q, k, v, 4, "BSND", scale=128**-0.5, keep_prob=1.0)
    assert smax.shape == ssum.shape == (2, 4, 40, 8) and smax.dtype == torch.float32
    assert torch.equal(smax, smax[..., :1].expand_as(smax)) and torch.equal(ssum, ssum[..., :1].expand_as(ssum))
    ref_out, ref_lse = rk.reference_attention(q.cpu(), k.cpu(), v.cpu())
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=NPU_TOL[dtype], rtol=NPU_TOL[dtype])
    lse = (smax[..., 0] + ssum[..., 0].log()).cpu().double()
    torch.testing.assert_close(lse, ref_lse, atol=NPU_TOL[dtype], rtol=NPU_TOL[dtype])


@needs_npu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_npu_fused_infer_attention_keeps_its_documented_contract(dtype):
    q, k, v = (rand(2, s, 4, 128, dtype=dtype, seed=i).npu() for i, s in enumerate((40, 72, 72)))
    fn, scale_name = npu.fused_infer_attention()
    out, lse = fn(q, k, v, **fused_infer.fia_arguments(q, None, scale_name))
    assert lse.shape == (2, 4, 40, 1) and lse.dtype == torch.float32
    ref_out, ref_lse = rk.reference_attention(q.cpu(), k.cpu(), v.cpu())
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=NPU_TOL[dtype], rtol=NPU_TOL[dtype])
    torch.testing.assert_close(lse[..., 0].cpu().double(), ref_lse, atol=NPU_TOL[dtype], rtol=NPU_TOL[dtype])


@needs_npu
@pytest.mark.parametrize("npu_attn", ["fusion", "fused_infer"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [64, 128])
def test_npu_ring_steps_match_reference(dtype, D, npu_attn, ringsp_env):
    ringsp_env.set("RINGSP_NPU_ATTN", npu_attn)
    registry.bind_backends()
    q, k, v = (rand(2, s, 5, D, dtype=dtype, seed=i) for i, s in enumerate((67, 150, 150)))
    valid = [(0, 50, 50), (50, 100, 31), (100, 150, 0)]  # (start, end, kv_len) with padding
    acc, lse = rk.init_state(q.npu())
    for a, b, n in valid:
        rk.attn_step_(q.npu(), k[:, a:b].npu(), v[:, a:b].npu(), acc, lse, kv_len=n)
    keep = torch.cat([torch.arange(a, a + n) for a, _, n in valid])
    ref_out, ref_lse = rk.reference_attention(q, k[:, keep], v[:, keep])
    tol = NPU_TOL[dtype]
    torch.testing.assert_close(rk.finalize(acc, lse, dtype).cpu().double(), ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(lse.cpu().double(), ref_lse, atol=tol, rtol=tol)


@needs_npu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("S", [1, 29, 1000])
def test_npu_ascendc_merge_matches_tensor_ops(dtype, S):
    kernel = npu.merge_kernel()
    if kernel is None:
        pytest.skip("the AscendC library is not built (csrc/ascend/build.sh)")
    B, H, D = 2, 5, 128
    acc, lse = rand(B, S, H, D, seed=1), rand(B, H, S, seed=2)
    out_blk, lse_blk = rand(B, S, H, D, dtype=dtype, seed=3), rand(B, H, S, seed=4)
    lse[:, :, ::3], lse_blk[:, :, ::4] = float("-inf"), float("-inf")
    want_acc, want_lse = acc.clone(), lse.clone()
    npu_merge.merge_tensor_ops_(want_acc, want_lse, out_blk, lse_blk)
    got_acc, got_lse = acc.npu(), lse.npu()
    path, _ = npu_merge.merge_(got_acc, got_lse, out_blk.npu(), lse_blk.npu(), kernel=kernel,
                               num_cores=npu.vector_cores(got_acc.device))
    assert path == "ascendc"
    torch.testing.assert_close(got_acc.cpu(), want_acc, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.isneginf(got_lse.cpu()), torch.isneginf(want_lse))
    torch.testing.assert_close(got_lse.cpu(), want_lse, atol=1e-5, rtol=1e-5)
