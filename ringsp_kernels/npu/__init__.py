"""The Ascend NPU wing of the ops: torch_npu's fused attention (fusion.py for
npu_fusion_attention, fused_infer.py for npu_fused_infer_attention_score), the merge
(merge.py: the AscendC kernel of csrc/ascend/ or tensor ops), and the op implementations
bound to torch_npu's PrivateUse1 key (backend.py). Importing it imports no torch_npu; the
registration is harmless without it, since no tensor can reach the key then.

Written against the documented torch_npu / CANN interfaces and tested on CPU against
stand-ins of those contracts only: nothing here has run on an NPU (docs/npu.md).
"""
from .. import backends
from . import backend

BACKEND = backends.register(backends.Backend(
    name="npu", device_type="npu", dispatch_key=backend.DISPATCH_KEY,
    ops={"attn_fwd": backend.attn_fwd, "attn_step_": backend.attn_step_, "merge_": backend.merge_}))
