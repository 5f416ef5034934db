"""The ops contract, for every backend present, against a float64 reference."""
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ringsp_kernels as rk
from tests.kernels.backends import TritonBackend, available

BACKENDS = available()
TOL = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

backend_param = pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)


def rand(*shape, dtype=torch.float32, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**31))
    return torch.randn(*shape, generator=g).to(dtype)


def assert_close(out, lse, ref_out, ref_lse, dtype):
    tol = TOL[dtype]
    assert torch.isfinite(out).all() or not torch.isfinite(ref_out).all()
    torch.testing.assert_close(out.double(), ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(lse.double(), ref_lse, atol=tol, rtol=tol)


def pick_dtype(draw, backend):
    return draw(st.sampled_from(backend.dtypes))


@st.composite
def attn_case(draw, backend):
    dtype = pick_dtype(draw, backend)
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    Sq, Sk = draw(st.integers(1, 70)), draw(st.integers(0, 70))
    D = draw(st.sampled_from([16, 40, 64]))
    kv_len = draw(st.one_of(st.none(), st.integers(0, Sk)))
    scale = draw(st.one_of(st.none(), st.floats(0.05, 0.5)))
    return dtype, B, H, Sq, Sk, D, kv_len, scale


@backend_param
@SETTINGS
@given(data=st.data())
def test_attn_fwd_matches_reference(backend, data):
    dtype, B, H, Sq, Sk, D, kv_len, scale = data.draw(attn_case(backend))
    q, k, v = rand(B, Sq, H, D, dtype=dtype), rand(B, Sk, H, D, dtype=dtype), rand(B, Sk, H, D, dtype=dtype)
    if kv_len is not None and kv_len < Sk:  # padding may hold anything: it must not leak
        k[:, kv_len:] = float("nan")
        v[:, kv_len:] = float("nan")
    out, lse = backend.attn_fwd(q, k, v, scale=scale, kv_len=kv_len)
    assert out.dtype == dtype and out.shape == q.shape and lse.shape == (B, H, Sq)
    assert_close(out, lse, *rk.reference_attention(q, k, v, scale=scale, kv_len=kv_len), dtype)


@backend_param
@SETTINGS
@given(data=st.data())
def test_step_chain_over_random_blocks_in_random_order(backend, data):
    dtype = pick_dtype(data.draw, backend)
    B, H, D = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)), data.draw(st.sampled_from([16, 64]))
    Sq, S = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 90))
    cuts = sorted(data.draw(st.lists(st.integers(0, S), max_size=4)))  # repeated cuts = empty blocks
    bounds = list(zip([0] + cuts, cuts + [S]))
    order = data.draw(st.permutations(bounds))
    q, k, v = rand(B, Sq, H, D, dtype=dtype), rand(B, S, H, D, dtype=dtype), rand(B, S, H, D, dtype=dtype)
    acc, lse = rk.init_state(q)
    for a, b in order:
        backend.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse)
    assert_close(rk.finalize(acc, lse, dtype), lse, *rk.reference_attention(q, k, v), dtype)


@backend_param
def test_step_with_padded_blocks_and_scale(backend):
    """Ring steps whose blocks carry padding (kv_len) and a custom scale."""
    dtype, B, Sq, H, D, blk = torch.float32, 2, 33, 2, 64, 19
    valid = [19, 7, 0, 12]
    q = rand(B, Sq, H, D, seed=1)
    ks = [rand(B, blk, H, D, seed=10 + i) for i in range(4)]
    vs = [rand(B, blk, H, D, seed=20 + i) for i in range(4)]
    acc, lse = rk.init_state(q)
    for k, v, n in zip(ks, vs, valid):
        backend.attn_step_(q, k, v, acc, lse, scale=0.3, kv_len=n)
    k_all = torch.cat([k[:, :n] for k, n in zip(ks, valid)], 1)
    v_all = torch.cat([v[:, :n] for v, n in zip(vs, valid)], 1)
    assert_close(rk.finalize(acc, lse, dtype), lse, *rk.reference_attention(q, k_all, v_all, scale=0.3), dtype)


@backend_param
def test_merge_of_two_fwd_results(backend):
    dtype = torch.float16 if torch.float16 in backend.dtypes else torch.float32
    q, k, v = rand(2, 45, 3, 64, dtype=dtype), rand(2, 70, 3, 64, dtype=dtype), rand(2, 70, 3, 64, dtype=dtype)
    acc, lse = rk.init_state(q)
    for a, b in ((30, 70), (0, 30)):
        backend.merge_(acc, lse, *backend.attn_fwd(q, k[:, a:b], v[:, a:b]))
    assert_close(rk.finalize(acc, lse, dtype), lse, *rk.reference_attention(q, k, v), dtype)


@backend_param
def test_rows_without_keys_and_minus_inf_lse(backend):
    """A row that has seen no key has lse -inf and output 0; merging or stepping an empty
    block leaves any state unchanged; merging into a -inf row takes the block as it is."""
    q, k, v = rand(1, 9, 2, 16), rand(1, 12, 2, 16), rand(1, 12, 2, 16)
    out, lse = backend.attn_fwd(q, k[:, :0], v[:, :0])
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    out, lse = backend.attn_fwd(q, k, v, kv_len=0)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()

    acc, lse = rk.init_state(q)
    backend.attn_step_(q, k[:, :5], v[:, :5], acc, lse)
    acc[:, :4], lse[:, :, :4] = 0.0, float("-inf")  # rows 0-3 fresh, 4-8 have seen keys
    before = acc.clone(), lse.clone()
    backend.merge_(acc, lse, *backend.attn_fwd(q, k[:, :0], v[:, :0]))
    backend.attn_step_(q, k, v, acc, lse, kv_len=0)
    assert torch.equal(acc, before[0]) and torch.equal(lse, before[1])

    o2, l2 = backend.attn_fwd(q, k[:, 5:], v[:, 5:])
    backend.merge_(acc, lse, o2, l2)
    ref_fresh = rk.reference_attention(q[:, :4], k[:, 5:], v[:, 5:])
    ref_seen = rk.reference_attention(q[:, 4:], k, v)
    assert_close(acc[:, :4], lse[:, :, :4], *ref_fresh, torch.float32)
    assert_close(acc[:, 4:], lse[:, :, 4:], *ref_seen, torch.float32)


@backend_param
def test_non_contiguous_inputs_and_state(backend):
    B, S, H, D = 2, 24, 3, 16
    q = rand(B, H, S, D, seed=3).transpose(1, 2)  # [B, S, H, D] view of a [B, H, S, D] tensor
    k = rand(B, H, 2 * S, D, seed=4).transpose(1, 2)[:, ::2]
    v = rand(B, S, H, 2 * D, seed=5)[..., :D]
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    ref = rk.reference_attention(q, k, v)
    assert_close(*backend.attn_fwd(q, k, v), *ref, torch.float32)
    acc = torch.zeros(B, H, S, D).transpose(1, 2)
    lse = torch.full((B, S, H), float("-inf")).permute(0, 2, 1)
    backend.attn_step_(q, k[:, :10], v[:, :10], acc, lse)
    backend.attn_step_(q, k[:, 10:], v[:, 10:], acc, lse)
    assert_close(acc, lse, *ref, torch.float32)


def test_finalize_casts_and_init_state_shapes():
    q = rand(2, 5, 3, 16, dtype=torch.bfloat16)
    acc, lse = rk.init_state(q)
    assert acc.dtype == lse.dtype == torch.float32
    assert acc.shape == q.shape and lse.shape == (2, 3, 5) and torch.isneginf(lse).all()
    assert rk.finalize(acc, lse, torch.bfloat16).dtype == torch.bfloat16


q0 = rand(1, 4, 2, 16)
kv0 = rand(1, 6, 2, 16)
acc0, lse0 = rk.init_state(q0)

BAD_CALLS = [
    (lambda: rk.attn_fwd(q0[0], kv0, kv0), ValueError, "q must be"),
    (lambda: rk.attn_fwd(q0, kv0, rand(1, 7, 2, 16)), ValueError, "same shape"),
    (lambda: rk.attn_fwd(q0, rand(2, 6, 2, 16), rand(2, 6, 2, 16)), ValueError, "batch"),
    (lambda: rk.attn_fwd(q0, rand(1, 6, 3, 16), rand(1, 6, 3, 16)), ValueError, "heads"),
    (lambda: rk.attn_fwd(q0, rand(1, 6, 2, 8), rand(1, 6, 2, 8)), ValueError, "head dim"),
    (lambda: rk.attn_fwd(q0, kv0.half(), kv0.half()), TypeError, "dtype"),
    (lambda: rk.attn_fwd(q0.double(), kv0.double(), kv0.double()), TypeError, "dtype"),
    (lambda: rk.attn_fwd(rand(1, 4, 2, 300), rand(1, 6, 2, 300), rand(1, 6, 2, 300)), ValueError, "head dim"),
    (lambda: rk.attn_fwd(q0, kv0, kv0, kv_len=7), ValueError, "kv_len"),
    (lambda: rk.attn_fwd(q0, kv0, kv0, kv_len=-1), ValueError, "kv_len"),
    (lambda: rk.attn_fwd(q0, kv0, kv0, kv_len=2.0), TypeError, "kv_len"),
    (lambda: rk.attn_fwd(q0, kv0, kv0, scale="x"), TypeError, "scale"),
    (lambda: rk.attn_fwd(q0, kv0.to("meta"), kv0), ValueError, "k is on meta"),
    (lambda: rk.attn_step_(q0, kv0, kv0, acc0.half(), lse0), TypeError, "acc"),
    (lambda: rk.attn_step_(q0, kv0, kv0, acc0[:, :3], lse0), ValueError, "acc"),
    (lambda: rk.attn_step_(q0, kv0, kv0, acc0, lse0.transpose(1, 2)), ValueError, "lse"),
    (lambda: rk.merge_(acc0, lse0, q0, lse0.double()), TypeError, "lse_blk"),
    (lambda: rk.merge_(acc0, lse0, q0[:, :2], lse0[..., :2]), ValueError, "acc"),
    (lambda: rk.merge_(acc0, lse0, q0, [0.0]), TypeError, "lse_blk"),
    (lambda: rk.finalize(acc0, lse0), TypeError, "dtype"),
    (lambda: rk.finalize(acc0, lse0, torch.int8), TypeError, "dtype"),
]


@pytest.mark.parametrize("call,exc,match", BAD_CALLS)
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_ops_are_registered_with_fake_kernels_and_compile():
    """The ops are reachable by name, trace with fake tensors and run under torch.compile."""
    for name in ("attn_fwd", "attn_step_", "merge_", "init_state", "finalize"):
        assert hasattr(torch.ops.ringsp, name)
    q, k, v = (torch.empty(1, 8, 2, 64, device="meta") for _ in range(3))
    out, lse = torch.ops.ringsp.attn_fwd(q, k, v, None, None)
    assert out.shape == q.shape and lse.shape == (1, 2, 8)

    def ring_two_blocks(q, k, v):
        acc, lse = torch.ops.ringsp.init_state(q)
        torch.ops.ringsp.attn_step_(q, k[:, :5], v[:, :5], acc, lse, None, None)
        torch.ops.ringsp.attn_step_(q, k[:, 5:], v[:, 5:], acc, lse, None, None)
        return torch.ops.ringsp.finalize(acc, lse, q.dtype)

    q, k, v = rand(1, 8, 2, 16), rand(1, 11, 2, 16), rand(1, 11, 2, 16)
    compiled = torch.compile(ring_two_blocks, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v).double(), rk.reference_attention(q, k, v)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(TritonBackend not in BACKENDS, reason="needs the Triton interpreter")
def test_tensor_descriptor_path_on_ring_blocks():
    """The TMA (tensor descriptor) loads, run in the interpreter: K/V blocks sliced out of a
    longer sequence (B=1), a packed [B, S, 2, H, D] KV buffer, and padding in the last block."""
    from ringsp_kernels.cuda import triton_attn

    S, H, D = 70, 2, 16
    q = rand(1, 33, H, D, dtype=torch.float16)
    kv = rand(1, S, 2, H, D, dtype=torch.float16)  # k and v interleaved per token
    k, v = kv[:, :, 0], kv[:, :, 1]
    acc, lse = rk.init_state(q)
    blocks = [(0, 17), (17, 40), (40, S)]
    for a, b in blocks:
        assert triton_attn.desc_layout_ok(k[:, a:b], v[:, a:b])
        n = b - a - (5 if b == S else 0)
        triton_attn.launch(q, k[:, a:b], v[:, a:b], acc, lse, D ** -0.5, n, True, use_desc=True)
    assert_close(acc, lse, *rk.reference_attention(q, k[:, :S - 5], v[:, :S - 5]), torch.float16)
    assert not triton_attn.desc_layout_ok(rand(2, S, H, D)[:, :10], rand(2, S, H, D)[:, :10])
