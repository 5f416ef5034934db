"""Ascend NPU backend of the ringsp ops, bound to the PrivateUse1 dispatch key (torch_npu's
"npu" device) through the Backend the wing registers.

attn_fwd   = torch_npu.npu_fusion_attention, LSE from its softmax max/sum (fusion.py), or with
             RINGSP_NPU_ATTN=fused_infer npu_fused_infer_attention_score, which returns the
             LSE itself (fused_infer.py), for the shapes it documents
merge_     = the AscendC fused merge (csrc/ascend/) or the tensor-op fallback (merge.py)
attn_step_ = attn_fwd on the block + merge_ (torch_npu's attention cannot take a running
             state, so the block output is rounded to q's dtype once before the merge)
init_state / finalize are device-independent compositions and need nothing here.

Nothing imports torch_npu until an op runs on an NPU tensor. The lookups below,
`fusion_attention`, `fused_infer_attention` and `merge_kernel`, are the only places the
hardware enters, so tests replace them with stand-ins.
"""
import glob
import logging
import os

import torch

from .. import caches, settings
from . import fused_infer
from . import fusion as npu_attention
from . import merge as npu_merge

log = logging.getLogger("ringsp")
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ringsp_kernels/, where setup.py builds
DISPATCH_KEY = "PrivateUse1"
LIBRARY_ENV = "RINGSP_ASCEND_LIB"  # explicit path to the built _ascend_C library (ringsp_kernels.settings)
DEFAULT_VECTOR_CORES = 40  # Atlas A2 (910B3/B4) when torch_npu does not report the count

_kernel = {}  # "op": the loaded kernel op or None, looked up once per process
_cores = {}  # device -> vector core count
_announced = set()  # (path, detail) pairs already logged
for _name, _cache in (("AscendC merge library", _kernel), ("NPU vector cores", _cores),
                      ("NPU announcements", _announced)):
    caches.register(_name, _cache.clear)


def fusion_attention():
    """torch_npu.npu_fusion_attention."""
    import torch_npu

    return torch_npu.npu_fusion_attention


def fused_infer_attention():
    """(torch_npu.npu_fused_infer_attention_score, the name of its scale argument)."""
    import torch_npu

    fn = torch_npu.npu_fused_infer_attention_score
    return fn, fused_infer.scale_keyword(_schema_arguments("npu_fused_infer_attention_score"))


def _schema_arguments(op_name):
    """The argument names of torch_npu's op `op_name` (its schema under torch.ops.npu), or ()."""
    try:
        return tuple(a.name for a in getattr(torch.ops.npu, op_name).default._schema.arguments)
    except (AttributeError, RuntimeError):
        return ()


def ascend_library_path():
    """The built AscendC op library: $RINGSP_ASCEND_LIB, else _ascend_C*.so in ringsp_kernels/."""
    explicit = settings.current().ascend_lib
    if explicit:
        return explicit
    found = sorted(glob.glob(os.path.join(_HERE, "_ascend_C*.so")))
    return found[0] if found else None


def _load_merge_kernel():
    path = ascend_library_path()
    if path is None:
        return None
    try:
        import torch_npu  # noqa: F401  (the library links against it)

        torch.ops.load_library(path)
        return torch.ops.ringsp.npu_merge_rows_
    except (ImportError, OSError, RuntimeError, AttributeError) as err:
        log.warning("ringsp NPU: could not load the AscendC merge library %s (%s)", path, err)
        return None


def merge_kernel():
    """torch.ops.ringsp.npu_merge_rows_ where the AscendC library was built, else None."""
    if "op" not in _kernel:
        _kernel["op"] = _load_merge_kernel()
    return _kernel["op"]


def vector_cores(device):
    """Vector (AIV) cores of the device: the kernel's block_dim upper bound."""
    key = str(device)
    if key not in _cores:
        try:
            import torch_npu

            props = torch_npu.npu.get_device_properties(device)
            _cores[key] = int(getattr(props, "vector_core_num", 0)) or DEFAULT_VECTOR_CORES
        except (ImportError, AttributeError, RuntimeError, AssertionError):
            _cores[key] = DEFAULT_VECTOR_CORES
    return _cores[key]


def _announce(path, detail):
    """Logs which merge (or attention fallback) runs, once per distinct choice."""
    if path == "skipped" or (path, str(detail)) in _announced:
        return
    _announced.add((path, str(detail)))
    if path == "ascendc":
        log.info("ringsp NPU merge: AscendC fused kernel (%s)", detail)
    elif path == "fusion-attention":
        log.info("ringsp NPU attention: npu_fusion_attention (%s)", detail)
    else:
        log.warning("ringsp NPU merge: torch tensor-op fallback, slower (%s)", detail)


def attn_fwd(q, k, v, scale=None, kv_len=None):
    if settings.current().npu_attn == "fused_infer":
        unfit = fused_infer.unfit_reason(q)
        if unfit is None:
            fn, scale_name = fused_infer_attention()
            return fused_infer.attn_fwd(fn, q, k, v, scale, kv_len, scale_name)
        _announce("fusion-attention", f"npu_fused_infer_attention_score cannot take this shape: {unfit}")
    return npu_attention.attn_fwd(fusion_attention(), q, k, v, scale, kv_len)


def merge_(acc, lse, out_blk, lse_blk):
    kernel = merge_kernel()
    cores = vector_cores(acc.device) if kernel is not None else 1
    _announce(*npu_merge.merge_(acc, lse, out_blk, lse_blk, kernel=kernel, num_cores=cores))


def attn_step_(q, k, v, acc, lse, scale=None, kv_len=None):
    if (k.shape[1] if kv_len is None else kv_len) == 0:  # an empty block changes nothing
        return
    out_blk, lse_blk = attn_fwd(q, k, v, scale, kv_len)
    merge_(acc, lse, out_blk, lse_blk)
