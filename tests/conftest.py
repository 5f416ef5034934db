"""Test-wide set-up. Without CUDA, Triton kernels run in its interpreter, which must be
chosen before triton is first imported."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def ringsp_env(monkeypatch):
    """Sets or unsets environment variables for one test (child processes inherit them). The
    ops layer reads RINGSP_* once per process, so each change is followed by
    ringsp_kernels.clear_caches(), and so is the test's end: later reads see the environment
    monkeypatch restores."""
    import ringsp_kernels as rk

    class Env:
        def set(self, name, value):
            monkeypatch.setenv(name, value)
            rk.clear_caches()

        def unset(self, name):
            monkeypatch.delenv(name, raising=False)
            rk.clear_caches()

    yield Env()
    rk.clear_caches()
