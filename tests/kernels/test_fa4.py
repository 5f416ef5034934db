"""The optional FlashAttention-4 path (ringsp_kernels/cuda/fa4.py) without a GPU: availability,
the shapes it is offered, and how the CUDA dispatcher uses it (with a stand-in FA4).
The numerics of the real FA4 path are checked on the GPU in test_ops_gpu.py."""
import sys
import types

import pytest
import torch

import ringsp_kernels as rk
from ringsp_kernels.cuda import fa4


@pytest.fixture
def fresh_fa4():
    rk.clear_caches()  # forgets what an earlier import attempt found
    yield fa4
    rk.clear_caches()


def test_turned_off_by_the_environment(fresh_fa4, ringsp_env):
    ringsp_env.set("RINGSP_FA4", "0")
    assert fa4._load() is None and "RINGSP_FA4=0" in fa4._state["error"]
    assert fa4.version() is None


def test_a_missing_package_is_a_reason_not_an_exception(fresh_fa4, monkeypatch, ringsp_env):
    ringsp_env.unset("RINGSP_FA4")
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # import fails
    assert fa4._load() is None and "cannot be imported" in fa4._state["error"]
    assert not fa4.available()
    assert fa4.why_unavailable()


def test_the_internal_forward_is_preferred_and_the_public_one_is_the_fallback(fresh_fa4, monkeypatch, ringsp_env):
    ringsp_env.unset("RINGSP_FA4")
    internal = object()
    mod = types.SimpleNamespace(_flash_attn_fwd=internal, flash_attn_func=object())
    monkeypatch.setitem(sys.modules, "flash_attn.cute", types.SimpleNamespace(interface=mod))
    monkeypatch.setitem(sys.modules, "flash_attn.cute.interface", mod)
    assert fa4._load() is internal and not fa4._state["public"]
    rk.clear_caches()
    public = types.SimpleNamespace(flash_attn_func=object())
    monkeypatch.setitem(sys.modules, "flash_attn.cute", types.SimpleNamespace(interface=public))
    monkeypatch.setitem(sys.modules, "flash_attn.cute.interface", public)
    assert fa4._load() is public.flash_attn_func and fa4._state["public"]


@pytest.mark.parametrize("major,head_dim,ok", [(9, 128, True), (9, 64, True), (9, 256, True), (9, 8, True),
                                               (9, 264, False), (9, 100, False), (10, 128, True), (10, 256, False),
                                               (8, 128, False), (12, 64, False)])
def test_head_dims_offered_per_architecture(major, head_dim, ok):
    assert fa4.head_dim_ok(major, head_dim) is ok


def test_cpu_tensors_never_take_the_fa4_path():
    assert not fa4.usable(torch.randn(1, 8, 2, 64, dtype=torch.bfloat16))


def test_attention_without_fa4_raises_a_clear_error(fresh_fa4, ringsp_env):
    ringsp_env.set("RINGSP_FA4", "0")
    q = torch.randn(1, 4, 2, 64)
    with pytest.raises(RuntimeError, match="FA4 attention path is unavailable"):
        fa4.attention(q, q, q, 0.125, 4)


def test_attention_slices_padding_and_returns_fa4s_tensors(fresh_fa4, monkeypatch):
    seen = {}

    def fake_fwd(q, k, v, softmax_scale, return_lse):
        seen.update(k=k.shape, v=v.shape, scale=softmax_scale, lse=return_lse)
        out = torch.full_like(q, 2.0)
        return out, torch.zeros(q.shape[0], q.shape[2], q.shape[1]), None, None, None

    fa4._state.update(fwd=fake_fwd, public=False)
    q, k = torch.randn(1, 5, 2, 64), torch.randn(1, 9, 2, 64)
    out, lse = fa4.attention(q, k, k, 0.3, 7)
    assert seen == {"k": (1, 7, 2, 64), "v": (1, 7, 2, 64), "scale": 0.3, "lse": True}
    assert out.shape == q.shape and lse.shape == (1, 2, 5)


def test_forcing_fa4_where_it_cannot_run_names_the_reason(monkeypatch):
    cuda = pytest.importorskip("ringsp_kernels.cuda.ops")
    monkeypatch.setattr(fa4, "available", lambda: False)
    monkeypatch.setattr(fa4, "why_unavailable", lambda: "flash-attn-4 cannot be imported (test)")
    with pytest.raises(ValueError, match="RINGSP_CUDA_ATTN=fa4: flash-attn-4 cannot be imported"):
        cuda.set_forced("fa4")
    with pytest.raises(ValueError, match="must be one of"):
        cuda.set_forced("flash")
    cuda.set_forced("auto")
