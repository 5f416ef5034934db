"""The 8-bit precisions (ringsp_kernels.fp8) on the CPU: the quantised math of fp8_reference
against float64 attention, ring chains mixing quantised and native blocks in one state,
argument and device errors, the fake kernels, and -- in Triton's interpreter -- the Triton
kernels against the reference."""
import os
import random

import pytest
import torch

import ringsp_kernels as rk
from ringsp_kernels import fp8_reference as fr

# Accuracy against float64 on randn inputs: (min cosine, max relative error, max |lse error|).
# "int8" is held to the gate (what SageAttention 1.0.6 reaches). "fp8" cannot be:
# e4m3 keeps 3 mantissa bits, so each of Q, K, P, V rounded costs ~2.5% relative error on
# random attention whatever the scaling (measured: 4.8-5.6e-2 over seeds); its bound sits above
# that spread. The lower bounds prove the reference really quantises.
GATES = {"int8": (0.9999, 1.5e-2, 1e-2), "fp8": (0.998, 6.5e-2, 5e-2)}
FLOORS = {"int8": 5e-3, "fp8": 3e-2}
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def rand(*shape, seed, dtype=torch.bfloat16):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def with_channel_outliers(k):
    """Every 8th channel of K offset by +-30 for all keys: the case smoothing exists for."""
    off = torch.zeros(k.shape[-1])
    off[::8] = 30.0
    off[8::16] = -30.0
    return (k.float() + off).to(k.dtype)


def assert_within(precision, out, lse, ref_out, ref_lse):
    cos_min, rel_max, lse_max = GATES[precision]
    cos, rel = fr.accuracy(out, ref_out)
    lse_err = (lse.double() - ref_lse).abs().max().item()
    assert cos >= cos_min and rel <= rel_max and lse_err <= lse_max, (precision, cos, rel, lse_err)
    return rel


@pytest.mark.parametrize("outliers", [False, True], ids=["randn", "k-outliers"])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_reference_accuracy_against_float64(precision, D, outliers):
    seed = D + outliers
    q, k, v = rand(1, 64, 2, D, seed=seed), rand(1, 512, 2, D, seed=seed + 1), rand(1, 512, 2, D, seed=seed + 2)
    if outliers:
        k = with_channel_outliers(k)
    out, lse = fr.attn_q8_reference(q, k, v, precision=precision)
    assert out.dtype == q.dtype and lse.dtype == torch.float32
    rel = assert_within(precision, out, lse, *rk.reference_attention(q, k, v))
    assert rel >= FLOORS[precision]


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_smoothing_k_is_what_keeps_channel_outliers_accurate(precision):
    q, v = rand(1, 64, 2, 64, seed=5), rand(1, 512, 2, 64, seed=7)
    k = with_channel_outliers(rand(1, 512, 2, 64, seed=6))
    ref_out, ref_lse = rk.reference_attention(q, k, v)
    smooth = assert_within(precision, *fr.attn_q8_reference(q, k, v, precision=precision), ref_out, ref_lse)
    raw = fr.accuracy(fr.attn_q8_reference(q, k, v, precision=precision, smooth=False)[0], ref_out)[1]
    assert raw > GATES[precision][1] and smooth < raw / 4, (smooth, raw)


def test_reference_rejects_unknown_precision():
    q = rand(1, 4, 1, 16, seed=0)
    with pytest.raises(ValueError, match="precision"):
        fr.attn_q8_reference(q, q, q, precision="fp4")


def _native_step(q, k, v, acc, lse, kv_len):
    rk.attn_step_(q, k, v, acc, lse, kv_len=kv_len)


def _quantised_step(precision):
    def step(q, k, v, acc, lse, kv_len):
        fr.step_q8_reference_(q, k, v, acc, lse, kv_len=kv_len, precision=precision)
    return step


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mix", [("fp8", "native", "int8"), ("int8", "native")], ids=["fp8+native+int8", "int8+native"])
def test_ring_chain_mixing_precisions_equals_full_attention(mix, seed):
    """Blocks of one ring in random order, each step in its own precision, one state: the
    result is attention over all keys within the gate of the least precise step. Includes
    an empty block and a padded block whose padding holds NaN."""
    rng = random.Random(seed)
    D, S = rng.choice([64, 128]), 600
    q, k, v = rand(1, 48, 2, D, seed=seed), rand(1, S, 2, D, seed=seed + 10), rand(1, S, 2, D, seed=seed + 20)
    cuts = sorted(rng.sample(range(1, S), 3))
    bounds = list(zip([0, cuts[0]] + cuts, [cuts[0]] + cuts + [S]))  # the second block is empty
    rng.shuffle(bounds)
    steps = {"native": _native_step, "fp8": _quantised_step("fp8"), "int8": _quantised_step("int8")}
    acc, lse = rk.init_state(q)
    for i, (a, b) in enumerate(bounds):
        pad = 5  # every block carries padding past kv_len, as a ring's last shard does
        kb = torch.cat([k[:, a:b], torch.full((1, pad, 2, D), float("nan"), dtype=k.dtype)], 1)
        vb = torch.cat([v[:, a:b], torch.full((1, pad, 2, D), float("nan"), dtype=v.dtype)], 1)
        steps[mix[i % len(mix)]](q, kb, vb, acc, lse, b - a)
    worst = "fp8" if "fp8" in mix else "int8"
    assert_within(worst, rk.finalize(acc, lse, q.dtype), lse, *rk.reference_attention(q, k, v))


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_reference_step_from_the_empty_state_is_attn_fwd(precision):
    q, k, v = rand(1, 16, 2, 64, seed=3), rand(1, 200, 2, 64, seed=4), rand(1, 200, 2, 64, seed=5)
    acc, lse = rk.init_state(q)
    fr.step_q8_reference_(q, k, v, acc, lse, kv_len=150, precision=precision)
    out, lse_fwd = fr.attn_q8_reference(q, k, v, kv_len=150, precision=precision)
    torch.testing.assert_close(acc.to(q.dtype), out)
    torch.testing.assert_close(lse, lse_fwd)
    fr.step_q8_reference_(q, k[:, :0], v[:, :0], acc, lse, precision=precision)  # an empty block: no change
    torch.testing.assert_close(lse, lse_fwd)


def test_precision_argument_errors_and_native_names():
    q, k, v = rand(1, 8, 2, 16, seed=1), rand(1, 8, 2, 16, seed=2), rand(1, 8, 2, 16, seed=3)
    native = rk.attn_fwd(q, k, v)
    for name in ("native", "bf16"):
        out, lse = rk.attn_fwd(q, k, v, precision=name)
        assert torch.equal(out, native[0]) and torch.equal(lse, native[1])
    with pytest.raises(ValueError, match="precision"):
        rk.attn_fwd(q, k, v, precision="fp4")
    with pytest.raises(TypeError, match="precision"):
        rk.attn_fwd(q, k, v, precision=8)
    with pytest.raises(ValueError, match="precision='fp16'"):  # a dtype that is not q's: never converted
        rk.attn_fwd(q, k, v, precision="fp16")
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        rk.attn_fwd(q.float(), k.float(), v.float(), precision="fp8")
    with pytest.raises(ValueError, match="q must be"):  # the ordinary checks still run first
        rk.attn_fwd(q[0], k, v, precision="fp8")
    acc, lse = rk.init_state(q)
    with pytest.raises(ValueError, match="precision"):
        rk.attn_step_(q, k, v, acc, lse, precision="e4m3")


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_cpu_tensors_raise_instead_of_changing_precision(precision):
    q = rand(1, 8, 2, 16, seed=1)
    acc, lse = rk.init_state(q)
    with pytest.raises(ValueError, match="CUDA"):
        rk.attn_fwd(q, q, q, precision=precision)
    with pytest.raises(ValueError, match="CUDA"):
        rk.attn_step_(q, q, q, acc, lse, precision=precision)
    with pytest.raises(ValueError, match="CUDA"):  # the op itself, called by name
        torch.ops.ringsp.attn_fwd_q8(q, q, q, None, None, precision)
    assert torch.equal(lse, torch.full_like(lse, float("-inf")))  # the state was not touched


def test_fake_kernels_give_shapes():
    q, k = torch.empty(2, 5, 3, 64, device="meta", dtype=torch.bfloat16), torch.empty(2, 9, 3, 64, device="meta",
                                                                                       dtype=torch.bfloat16)
    out, lse = torch.ops.ringsp.attn_fwd_q8(q, k, k, None, None, "fp8")
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (2, 3, 5) and lse.dtype == torch.float32
    acc, st = torch.empty(q.shape, device="meta"), torch.empty(2, 3, 5, device="meta")
    assert torch.ops.ringsp.attn_step_q8_(q, k, k, acc, st, 0.1, 7, "int8") is None


interpreted = pytest.mark.skipif(not INTERPRETED, reason="Triton interpreter tests (CPU machines)")


if INTERPRETED:
    import triton
    import triton.language as tl

    from ringsp_kernels.cuda.triton_fp8 import _to_fp8

    @triton.jit
    def _cast_kernel(X, Y, N: tl.constexpr):
        tl.store(Y + tl.arange(0, N), _to_fp8(tl.load(X + tl.arange(0, N)), True))


@interpreted
def test_interpreted_fp8_rounding_matches_torch_on_the_whole_grid():
    grid = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    grid = grid[torch.isfinite(grid)].sort().values
    mids = (grid[1:] + grid[:-1]) / 2  # ties: round to even
    x = torch.cat([grid, mids, mids * (1 + 2e-7), mids * (1 - 2e-7), rand(300, seed=0, dtype=torch.float32) * 40])
    x = torch.cat([x, torch.zeros(2048 - x.numel())])
    y = torch.empty(2048, dtype=torch.float8_e4m3fn)
    _cast_kernel[(1,)](x, y, 2048)
    assert torch.equal(y.float(), x.to(torch.float8_e4m3fn).float())


@interpreted
@pytest.mark.parametrize("precision,dtype", [("fp8", torch.float16), ("fp8", torch.bfloat16), ("int8", torch.float16)],
                         ids=["fp8-fp16", "fp8-bf16", "int8-fp16"])  # bf16 tl.dot is wrong in the interpreter
def test_interpreted_kernel_matches_reference(precision, dtype):
    from ringsp_kernels.cuda import triton_fp8

    B, Sq, Sk, H, D, kv_len = 2, 37, 90, 2, 40, 77
    q, k, v = rand(B, Sq, H, D, seed=1, dtype=dtype), rand(B, Sk, H, D, seed=2, dtype=dtype), rand(B, Sk, H, D, seed=3,
                                                                                                   dtype=dtype)
    k = with_channel_outliers(k)
    k[:, kv_len:] = float("nan")
    v[:, kv_len:] = float("nan")
    int8, bn = precision == "int8", 32  # the interpreter's tile: (16, 32)
    tol = 1e-4 if dtype == torch.float16 else 8e-3  # interpreter's bf16 store truncates
    out, lse = torch.empty_like(q), torch.empty(B, H, Sq)
    triton_fp8.attend(q, k, v, out, lse, D ** -0.5, kv_len, int8, has_state=False)
    ref_out, ref_lse = fr.attn_q8_reference(q, k, v, kv_len=kv_len, precision=precision, block_n=bn)
    assert fr.accuracy(out, ref_out)[1] < tol and (lse - ref_lse).abs().max() < 1e-4
    triton_fp8.attend(q, k, v, out, lse, -0.3, kv_len, int8, has_state=False)  # the general max path
    ref_out, ref_lse = fr.attn_q8_reference(q, k, v, scale=-0.3, kv_len=kv_len, precision=precision, block_n=bn)
    assert fr.accuracy(out, ref_out)[1] < tol and (lse - ref_lse).abs().max() < 1e-4

    acc, st = rk.init_state(q)
    ref_acc, ref_st = rk.init_state(q)
    rk.attn_step_(q, k[:, 50:], v[:, 50:], acc, st, kv_len=kv_len - 50)  # a native block first
    rk.attn_step_(q, k[:, 50:], v[:, 50:], ref_acc, ref_st, kv_len=kv_len - 50)
    for a, b in [(0, 20), (20, 50)]:
        triton_fp8.attend(q, k[:, a:], v[:, a:], acc, st, 0.2, b - a, int8, has_state=True)
        fr.step_q8_reference_(q, k[:, a:], v[:, a:], ref_acc, ref_st, scale=0.2, kv_len=b - a, precision=precision,
                              block_n=bn)
    assert fr.accuracy(acc, ref_acc)[1] < 1e-4 and (st - ref_st).abs().max() < 1e-4


@interpreted
@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_interpreted_block_quantises_to_the_same_bytes_on_every_rank(precision):
    """Ranks quantise a KV block themselves (no scales travel with it), so the bytes must not
    depend on where the block lives: the owner's strided view of its projection and a peer's
    contiguous received copy, whose padding past kv_len holds something else."""
    from ringsp_kernels.cuda import triton_fp8

    kv_len = 70
    owner_k = with_channel_outliers(rand(1, 96, 3, 48, seed=5, dtype=torch.float16))
    owner_v = rand(1, 96, 3, 48, seed=6, dtype=torch.float16)
    owner_k, owner_v = (torch.cat([t, t[..., :8]], -1)[..., :48] for t in (owner_k, owner_v))  # strided views
    peer_k, peer_v = owner_k.contiguous(), owner_v.contiguous()
    peer_k[:, kv_len:], peer_v[:, kv_len:] = float("nan"), -7.0
    int8 = precision == "int8"
    a, b = (triton_fp8.prepare_kv(k, v, kv_len, int8) for k, v in ((owner_k, owner_v), (peer_k, peer_v)))
    for name in ("k8", "kscale", "mu", "v8t", "vscale"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.equal(x.view(torch.uint8) if x.dtype == torch.float8_e4m3fn else x,
                           y.view(torch.uint8) if y.dtype == torch.float8_e4m3fn else y), name
    assert a.kscale.abs().sum() > 0 and a.k8.view(torch.uint8).any()  # something was quantised


@interpreted
@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_interpreted_q_prepass_is_the_references_q_rounding(precision):
    """The Hopper 8-bit kernel's Q side (triton_fp8.quantise_q): Q rounded per row, its scale
    x qk_scale (x K's block scale for fp8) and q.mu x qk_scale, as fp8_reference quantises
    and shifts."""
    import types

    from ringsp_kernels.cuda import triton_fp8

    B, Sq, H, D = 2, 37, 3, 64
    q = rand(B, Sq, H, D + 8, seed=7, dtype=torch.float16)[..., :D]  # a strided view
    q[0, 5] = 0.0  # an all-zero row: scale 1, not 0/0
    kv = types.SimpleNamespace(mu=rand(B * H, D, seed=8, dtype=torch.float32), int8=precision == "int8",
                               kscale=rand(B * H, seed=9, dtype=torch.float32).abs() + 0.5)
    lse = torch.empty(B, H, Sq)
    qk_scale = 0.18
    q8, row_a, shift = triton_fp8.quantise_q(q, kv, qk_scale, lse)
    qf = q.float().transpose(1, 2)
    ref8, sq = fr.quantise_q(qf, precision)
    assert q8.dtype == (torch.int8 if kv.int8 else torch.float8_e4m3fn) and q8.is_contiguous()
    assert torch.equal(q8.transpose(1, 2).float(), ref8)
    want_a = sq * qk_scale * (1.0 if kv.int8 else kv.kscale.view(B, H, 1))
    torch.testing.assert_close(row_a, want_a, rtol=1e-6, atol=0)
    ref_shift = (qf * kv.mu.view(B, H, 1, D)).sum(-1) * qk_scale
    torch.testing.assert_close(shift, ref_shift, rtol=1e-5, atol=1e-5)
