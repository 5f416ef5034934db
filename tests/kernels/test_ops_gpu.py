"""The CUDA backend at real sizes in bf16/fp16 (Triton and cuDNN+merge paths), against
float32 attention on the GPU. Skipped without CUDA."""
import pytest
import torch

import ringsp_kernels as rk

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPES = [  # B, Sq, Sk, H, D, kv_len
    (1, 4096, 4096, 12, 128, None),
    (2, 1000, 3001, 5, 64, 2999),
    (1, 777, 130, 24, 128, 129),
    (1, 2048, 8192, 4, 128, None),
]


def reference(q, k, v, kv_len=None):
    k, v = (k, v) if kv_len is None else (k[:, :kv_len], v[:, :kv_len])
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    s = (qf @ kf.transpose(-1, -2)) * q.shape[-1] ** -0.5
    lse = torch.logsumexp(s, -1)
    return (torch.softmax(s, -1) @ vf).transpose(1, 2), lse


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(params=["triton", "cudnn", "auto"])
def path(request, monkeypatch):
    monkeypatch.setenv("RINGSP_CUDA_ATTN", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fwd_and_step_chain(shape, dtype, path):
    B, Sq, Sk, H, D, kv_len = shape
    g = torch.Generator(device="cuda").manual_seed(Sq + Sk)
    q, k, v = (torch.randn(B, s, H, D, device="cuda", generator=g, dtype=dtype) for s in (Sq, Sk, Sk))
    ref_out, ref_lse = reference(q, k, v, kv_len)
    out, lse = rk.attn_fwd(q, k, v, kv_len=kv_len)
    assert rel_err(out, ref_out) < 1e-2 and (lse - ref_lse).abs().max() < 2e-2

    n = Sk if kv_len is None else kv_len
    cuts = [0, n // 3, n // 3, 2 * n // 3 + 1, n]  # includes an empty block
    acc, lse = rk.init_state(q)
    for a, b in reversed(list(zip(cuts, cuts[1:]))):
        rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse)
    assert rel_err(rk.finalize(acc, lse, dtype), ref_out) < 1e-2
    assert (lse - ref_lse).abs().max() < 2e-2


def test_merge_on_gpu():
    q, k, v = (torch.randn(1, s, 8, 128, device="cuda", dtype=torch.bfloat16) for s in (1500, 3000, 3000))
    acc, lse = rk.init_state(q)
    rk.merge_(acc, lse, *rk.attn_fwd(q, k[:, 1000:], v[:, 1000:]))
    rk.merge_(acc, lse, *rk.attn_fwd(q, k[:, :1000], v[:, :1000]))
    ref_out, ref_lse = reference(q, k, v)
    assert rel_err(acc, ref_out) < 1e-2 and (lse - ref_lse).abs().max() < 2e-2


def test_compiled_ring_step_on_gpu():
    q, k, v = (torch.randn(1, 1024, 4, 64, device="cuda", dtype=torch.float16) for _ in range(3))

    def two_steps(q, k, v):
        acc, lse = rk.init_state(q)
        rk.attn_step_(q, k[:, :512], v[:, :512], acc, lse)
        rk.attn_step_(q, k[:, 512:], v[:, 512:], acc, lse)
        return rk.finalize(acc, lse, q.dtype)

    out = torch.compile(two_steps, fullgraph=False)(q, k, v)
    assert rel_err(out, reference(q, k, v)[0]) < 1e-2
