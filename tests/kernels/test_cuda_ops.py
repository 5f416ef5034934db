"""The CUDA wing's choice of path per shape (ringsp_kernels/cuda/ops.py, paths.py) without a
GPU: a stub path stands in for a vendor kernel and the Triton kernels run in the interpreter.

A path that fails on a shape its class chose: in local mode the shape runs Triton from then
on (with a warning); in consistent mode (after init_parallel's install) the failure raises,
naming the shape and the path -- one rank must never switch its kernel alone."""
import logging
import os

import pytest
import torch

import ringsp_kernels as rk

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # CPU tensors: the Triton fallback runs interpreted only
    pytest.skip("runs the Triton kernels in Triton's interpreter (CPU machines)", allow_module_level=True)

from ringsp_kernels import dispatch  # noqa: E402
from ringsp_kernels.cuda import ops, paths  # noqa: E402


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Stub:
    """A path's kernel: refuses every call (like an OOM or FA4's input asserts), or computes
    attention with the C++ CPU kernel."""

    def __init__(self, fails):
        self.fails, self.calls = fails, 0

    def __call__(self, q, k, v, scale, kv_len):
        self.calls += 1
        if self.fails:
            raise RuntimeError("stub refused this shape")
        return rk.attn_fwd(q, k, v, scale, kv_len)


@pytest.fixture
def stub_path(monkeypatch):
    """Registers path "stub" and makes every shape's plan choose it."""
    def use(fails, step=None):
        fn = Stub(fails)
        monkeypatch.setitem(paths.VENDOR, "stub", paths.Path("stub", lambda q: True, fn, step))
        monkeypatch.setattr(ops, "_make_plan", lambda *a: (("stub", None), True))
        return fn

    rk.clear_caches()
    yield use
    rk.clear_caches()


def _inputs():
    q, k, v = rand(1, 8, 2, 16, seed=1), rand(1, 12, 2, 16, seed=2), rand(1, 12, 2, 16, seed=3)
    return q, k, v, rk.reference_attention(q, k, v, kv_len=10)


def test_a_failing_path_is_demoted_to_triton_in_local_mode(stub_path, caplog):
    stub = stub_path(fails=True)
    q, k, v, (ref, ref_lse) = _inputs()
    with caplog.at_level(logging.WARNING, logger="ringsp"):
        out, lse = ops.attn_fwd(q, k, v, None, 10)
    assert "stub attention failed for q (1, 8, 2, 16)" in caplog.text and "using the Triton kernel" in caplog.text
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)
    ops.attn_fwd(q, k, v, None, 10)
    assert stub.calls == 1  # this shape runs Triton from now on
    acc, st = rk.init_state(q)
    ops.attn_step_(q, k, v, acc, st, None, 10)
    assert stub.calls == 2  # the step is a plan of its own: tried, demoted, computed by Triton
    torch.testing.assert_close(acc.double(), ref, atol=1e-5, rtol=1e-5)


def test_a_failing_path_raises_in_consistent_mode(stub_path):
    stub = stub_path(fails=True)
    q, k, v, _ = _inputs()
    dispatch.install({"format": dispatch.FORMAT, "entries": {}})  # what init_parallel does on every rank
    acc, st = rk.init_state(q)
    for _ in range(2):  # and again: nothing switched silently after the first failure
        with pytest.raises(RuntimeError, match=r"stub attention failed for q \(1, 8, 2, 16\).*"
                                               r"RINGSP_CUDA_ATTN=triton on every rank"):
            ops.attn_fwd(q, k, v, None, 10)
        with pytest.raises(RuntimeError, match="stub attention failed .* op step"):
            ops.attn_step_(q, k, v, acc, st, None, 10)
    assert stub.calls == 4
    assert torch.isneginf(st).all() and not acc.any()  # the state is untouched


def test_a_path_runs_with_the_merge_or_its_own_step(stub_path):
    """A path gives out + LSE (merged by the Triton merge) or a step of its own (a fused-state
    kernel such as a Hopper kernel): both serve attn_fwd and attn_step_."""
    q, k, v, (ref, ref_lse) = _inputs()
    stub = stub_path(fails=False)
    out, lse = ops.attn_fwd(q, k, v, None, 10)
    acc, st = rk.init_state(q)
    ops.attn_step_(q, k, v, acc, st, None, 10)
    assert stub.calls == 2
    for got, got_lse in ((out, lse), (acc, st)):
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_lse.double(), ref_lse, atol=1e-5, rtol=1e-5)
    steps = []
    rk.clear_caches()
    stub_path(fails=False, step=lambda *a: steps.append(a) or rk.attn_step_(*a))
    acc, st = rk.init_state(q)
    ops.attn_step_(q, k, v, acc, st, None, 10)
    assert len(steps) == 1
    torch.testing.assert_close(acc.double(), ref, atol=1e-5, rtol=1e-5)
