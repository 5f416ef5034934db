"""Test-wide set-up. Without CUDA, Triton kernels run in its interpreter, which must be
chosen before triton is first imported."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
