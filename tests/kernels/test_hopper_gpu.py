"""The hopper path's tile configs against float64 attention on an
sm90 GPU: forward and resumed ring steps, NaN-filled padding, blocks shorter than a tile, more
than one batch, a strided state. Skipped elsewhere. The worst errors are
printed (pytest -s) and, with RINGSP_ERR_LOG=file, appended as JSON lines."""
import pytest
import torch

from ringsp_kernels.cuda import hopper

from .test_ops_gpu import assert_rows_close, padded_blocks, rand, reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0) or hopper.why_unavailable(),
    reason="needs an sm90 GPU and Triton's Gluon")]

VARIANTS = [hopper.Config(), hopper.Config(stages=3), hopper.Config(block_n=64, stages=3)]
CASES = [  # B, Sq, Sk, H, D, kv_len
    (1, 1000, 1024, 2, 128, 777),
    (2, 300, 500, 3, 128, None),
    (1, 70, 40, 1, 128, 13),
    (2, 1000, 3001, 5, 64, 2999),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("config", VARIANTS, ids=str)
def test_variant_fwd_and_resumed_chain(config, case, dtype):
    B, Sq, Sk, H, D, kv_len = case
    g = torch.Generator(device="cuda").manual_seed(Sq * 7 + Sk)
    q, k, v = rand((B, Sq, H, D), dtype, g), rand((B, Sk, H, D), dtype, g), rand((B, Sk, H, D), dtype, g)
    n = Sk if kv_len is None else kv_len
    k[:, n:], v[:, n:] = float("nan"), float("nan")
    ref_out, ref_lse = reference(q, k, v, n)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((B, H, Sq), float("nan"), device="cuda")
    hopper.launch(q, k, v, out, lse, D ** -0.5, n, False, config)
    assert_rows_close(out, lse, ref_out, ref_lse, dtype, f"hopper {config} fwd {case}")

    cuts = [0, n // 3, n // 3, 2 * n // 3 + 1, n]  # includes an empty block
    acc = torch.zeros(B, Sq, H, D, device="cuda")
    st = torch.full((B, H, Sq), float("-inf"), device="cuda")
    for kb, vb, valid in reversed(padded_blocks(k, v, cuts, n // 3 + 7)):
        if valid:
            hopper.launch(q, kb, vb, acc, st, D ** -0.5, valid, True, config)
    assert_rows_close(acc.to(dtype), st, ref_out, ref_lse, dtype, f"hopper {config} chain {case}")


def test_a_strided_state():
    g = torch.Generator(device="cuda").manual_seed(3)
    B, S, H, D = 1, 700, 4, 128
    q, k, v = (rand((B, S, H, D), torch.bfloat16, g) for _ in range(3))
    wide = torch.zeros(B, S, H, 2 * D, device="cuda")
    acc = wide[..., :D]  # not one [B*S, H*D] tensor: the state is addressed through its strides
    st = torch.full((B, H, S), float("-inf"), device="cuda")
    for a, b in ((0, 300), (300, S)):
        hopper.launch(q, k[:, a:b], v[:, a:b], acc, st, D ** -0.5, b - a, True, hopper.Config())
    assert_rows_close(acc.to(torch.bfloat16), st, *reference(q, k, v), torch.bfloat16, "hopper strided state")
    assert (wide[..., D:] == 0).all()


# the 8-bit precisions on the same kernel (hopper.launch_q8): the kernel implements
# fp8_reference's schemes (same rounding; what differs is float32 summation order and exp2),
# and each scheme holds its accuracy gate against float64 (test_fp8_gpu.py's tolerances)
Q8_CASES = [  # B, Sq, Sk, H, D, kv_len
    (1, 1000, 1024, 2, 128, 777),
    (2, 300, 500, 3, 128, None),
    (1, 70, 40, 1, 128, 13),
    (2, 1000, 3001, 5, 64, 2999),
]
Q8_VARIANTS = {"int8": [hopper.Config(), hopper.Config(block_n=64, stages=3)],
               "fp8": [hopper.Config(block_n=64, stages=3), hopper.Config()]}


def _q8_inputs(case, seed):
    B, Sq, Sk, H, D, kv_len = case
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = rand((B, Sq, H, D), torch.bfloat16, g), rand((B, Sk, H, D), torch.bfloat16, g), \
        rand((B, Sk, H, D), torch.bfloat16, g)
    off = torch.zeros(D, device="cuda")
    off[::8] = 20.0  # channel offsets common to all keys: what K's smoothing removes
    k = (k.float() + off).to(torch.bfloat16)
    n = Sk if kv_len is None else kv_len
    k[:, n:], v[:, n:] = float("nan"), float("nan")
    return q, k, v, n


@pytest.mark.parametrize("case", Q8_CASES, ids=str)
@pytest.mark.parametrize("precision,config", [(p, c) for p, cs in Q8_VARIANTS.items() for c in cs], ids=str)
def test_q8_fwd_and_chain_match_the_scheme_and_its_gate(precision, config, case):
    from ringsp_kernels import fp8_reference as fr

    from .test_fp8_gpu import GATES, KERNEL_TOL, LSE_TOL

    q, k, v, n = _q8_inputs(case, seed=case[1] + case[2])
    B, Sq, _, H, D, _ = case
    out = torch.full_like(q, float("nan"))
    lse = torch.full((B, H, Sq), float("nan"), device="cuda")
    hopper.launch_q8(q, k, v, out, lse, D ** -0.5, n, False, precision, config)
    ref_out, ref_lse = fr.attn_q8_reference(q, k, v, kv_len=n, precision=precision, block_n=config.block_n)
    err, lse_err = fr.accuracy(out, ref_out)[1], (lse - ref_lse).abs().max().item()
    cos, rel = fr.accuracy(out, reference(q, k, v, n)[0])
    print(f"hopper {precision} {config} {case}: vs scheme rel {err:.2e} lse {lse_err:.1e}; "
          f"vs float64 cos {cos:.6f} rel {rel:.2e}")
    assert err < KERNEL_TOL[precision] and lse_err < LSE_TOL
    assert cos >= GATES[precision][0] and rel <= GATES[precision][1], (cos, rel)

    # a ring's blocks in reverse order, a native step among them: one state
    acc = torch.zeros(B, Sq, H, D, device="cuda")
    st = torch.full((B, H, Sq), float("-inf"), device="cuda")
    ref_acc, ref_st = acc.clone(), st.clone()
    cuts = [0, n // 3, 2 * n // 3 + 1, n]
    for i, (a, b) in enumerate(reversed(list(zip(cuts, cuts[1:])))):
        if b == a:
            continue
        kb, vb = k[:, a:b].contiguous(), v[:, a:b].contiguous()
        if i == 1:
            hopper.launch(q, kb, vb, acc, st, D ** -0.5, b - a, True)
            hopper.launch(q, kb, vb, ref_acc, ref_st, D ** -0.5, b - a, True)
        else:
            hopper.launch_q8(q, kb, vb, acc, st, D ** -0.5, b - a, True, precision, config)
            fr.step_q8_reference_(q, kb, vb, ref_acc, ref_st, kv_len=b - a, precision=precision,
                                  block_n=config.block_n)
    assert fr.accuracy(acc, ref_acc)[1] < KERNEL_TOL[precision] and (st - ref_st).abs().max() < LSE_TOL


def test_a_negative_scale_is_not_a_wrong_max():
    """The softmax max of the scaled scores, not the scaled max of the raw ones, when scale < 0."""
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (rand((1, 300, 2, 128), torch.bfloat16, g) for _ in range(3))
    out, lse = hopper.attn_fwd(q, k, v, -0.1, 300)
    assert_rows_close(out, lse, *reference(q, k, v, 300, scale=-0.1), torch.bfloat16, "hopper scale < 0")


def test_a_repeated_launch_takes_the_cached_path_with_the_same_result(monkeypatch):
    """With hopper.CACHED_LAUNCH the second launch of a key goes straight to the compiled
    kernel's launcher (fast_launch.CachedKernel): same output, bit for bit, as the JIT's."""
    from ringsp_kernels.cuda import fast_launch

    monkeypatch.setattr(hopper, "CACHED_LAUNCH", True)
    g = torch.Generator(device="cuda").manual_seed(11)
    q, k, v = (rand((1, 500, 2, 128), torch.bfloat16, g) for _ in range(3))
    first = hopper.attn_fwd(q, k, v, 128 ** -0.5, 480)
    calls = hopper._KERNEL.fast_calls
    again = hopper.attn_fwd(q, k, v, 128 ** -0.5, 480)
    assert hopper._KERNEL.fast_calls == calls + fast_launch.ENABLED
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert_rows_close(*again, *reference(q, k, v, 480), torch.bfloat16, "hopper cached launch")
    states = []
    for _ in range(2):  # a ring step of the same shape twice: the second one cached
        acc = torch.zeros(1, 500, 2, 128, device="cuda")
        st = torch.full((1, 2, 500), float("-inf"), device="cuda")
        hopper.attn_step_(q, k[:, :250], v[:, :250], acc, st, 128 ** -0.5, 250)
        hopper.attn_step_(q, k[:, 250:], v[:, 250:], acc, st, 128 ** -0.5, 230)
        states.append((acc, st))
    assert torch.equal(states[0][0], states[1][0]) and torch.equal(states[0][1], states[1][1])
    assert_rows_close(states[1][0].to(torch.bfloat16), states[1][1], *reference(q, k, v, 480), torch.bfloat16,
                      "hopper cached steps")
