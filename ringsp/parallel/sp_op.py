"""The SP attention of a block (and the sequence gather) as single opaque torch ops.

`torch.compile` cannot trace process-group objects, the ring's side streams or the
cross-rank argument check, so a processor calling `usp_attention` broke the graph in every
block. Registered with torch.library, the whole SP attention - argument checks and rank
agreement, Ulysses all-to-all, ring exchange, merges - is ONE node of a compiled graph:
Dynamo and Inductor see only its fake implementation (output shapes), and at run time its
eager body does exactly what `usp_attention` does. Process groups travel by name (a string
is a valid op argument, a group is not) and are looked up inside. The ops are tagged
`cudagraph_unsafe`, so Inductor's graph partitioning keeps them out of captured CUDA graphs:
the code between two attentions is captured, the attention runs eagerly (piecewise graphs).

    groups = SPGroups.of(ctx)                        # once, outside any compiled region
    out = sp_attention(q, k, v, groups, seq_len)
    out, joint_out = sp_attention(q, k, v, groups, seq_len, joint=(jq, jk, jv), joint_len=lens)
    full = sp_gather(x_local, groups, dim=1, seq_len=S)

`joint_len` is an int (every row) or a CPU int64 tensor [B] of valid joint tokens per row:
rows with different counts attend in separate passes inside the op. A tensor keeps the
counts out of the compiled graph's guards (an int read there is specialised: one recompile
per prompt length), and on the host they cost no device sync.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .attention_args import prepare
from .mesh import ParallelContext
from .sharding import gather_sequence
from .ulysses import sp_pass

# Without the tag (older torch), Inductor would capture the collectives into CUDA graphs.
CUDAGRAPH_UNSAFE = hasattr(torch.Tag, "cudagraph_unsafe")
_TAGS = (torch.Tag.cudagraph_unsafe,) if CUDAGRAPH_UNSAFE else ()
_OP_NAME = "usp_attention"  # the name rank-agreement errors carry, as for the eager function


@dataclass(frozen=True)
class SPGroups:
    """The process groups of an SP context, by name ("" = None: the default group, as everywhere
    in this layer)."""
    sp: str
    ulysses: str
    ring: str

    @classmethod
    def of(cls, ctx):
        if not isinstance(ctx, ParallelContext):
            raise TypeError(f"ctx must be a ParallelContext (from init_parallel), got {type(ctx).__name__}")
        return cls(_name(ctx.sp_group), _name(ctx.ulysses_group), _name(ctx.ring_group))


def _name(group):
    return "" if group is None else group.group_name


def _group(name):
    return None if name == "" else dist.distributed_c10d._resolve_process_group(name)


def _size(group):
    return dist.get_world_size(group)


# ------------------------------------------------------------------------------ public wrappers


def sp_attention(q, k, v, groups, seq_len=None, *, joint=None, joint_len=None, scale=None, precision=None):
    """usp_attention over the groups of `groups` (an SPGroups) as one torch op.

    q/k/v: this rank's shard [B, S_local, H, D]; seq_len: the true global length (None = unpadded).
    joint: replicated (joint_q, joint_k, joint_v) [B, T, H, D] or None; joint_len: None (all
    valid), an int, or a CPU int64 tensor [B] of valid joint tokens per row. precision: None
    (q's dtype) or "fp8" / "int8" (8-bit attention inside; see usp_attention).
    Returns out, or (out, joint_out) with joint."""
    if not isinstance(groups, SPGroups):
        raise TypeError(f"groups must be an SPGroups (SPGroups.of(ctx)), got {type(groups).__name__}")
    names = (groups.sp, groups.ulysses, groups.ring)
    if joint is None:
        if joint_len is not None:
            raise ValueError("joint_len was given without joint tensors")
        return torch.ops.ringsp.sp_attention(q, k, v, seq_len, scale, precision, *names)
    if not isinstance(joint, (tuple, list)) or len(joint) != 3:
        raise TypeError("joint must be a (joint_q, joint_k, joint_v) tuple")
    lens, count = (joint_len, None) if isinstance(joint_len, torch.Tensor) else (None, joint_len)
    if lens is not None and isinstance(q, torch.Tensor):
        _check_lens(lens, q.shape[0])  # here too: under torch.compile, at trace time
    return torch.ops.ringsp.sp_joint_attention(q, k, v, *joint, lens, count, seq_len, scale, precision, *names)


def sp_gather(x_local, groups, dim=1, seq_len=None):
    """gather_sequence over the SP group of `groups` as one torch op (a new tensor)."""
    if not isinstance(groups, SPGroups):
        raise TypeError(f"groups must be an SPGroups (SPGroups.of(ctx)), got {type(groups).__name__}")
    return torch.ops.ringsp.sp_gather(x_local, dim, seq_len, groups.sp)


# ------------------------------------------------------------------------------ the ops


def _attend(q, k, v, joint, seq_len, scale, precision, names, extra=None):
    sp, uly, ring = (_group(n) for n in names)
    config = {"ulysses_degree": _size(uly), "ring_degree": _size(ring), **(extra or {})}
    joint = joint or (None, None, None, None)
    a = prepare(_OP_NAME, sp, _size(sp), q, k, v, seq_len, scale, *joint, extra=config, precision=precision)
    return sp_pass(a, uly, ring)


@torch.library.custom_op("ringsp::sp_attention", mutates_args=(), tags=_TAGS)
def _sp_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_len: Optional[int],
                     scale: Optional[float], precision: Optional[str], sp_group: str, ulysses_group: str,
                     ring_group: str) -> torch.Tensor:
    out = _attend(q, k, v, None, seq_len, scale, precision, (sp_group, ulysses_group, ring_group))
    return _unaliased([out], (q, k, v))[0]


@_sp_attention_op.register_fake
def _(q, k, v, seq_len, scale, precision, sp_group, ulysses_group, ring_group):
    return q.new_empty(q.shape)


@torch.library.custom_op("ringsp::sp_joint_attention", mutates_args=(), tags=_TAGS)
def _sp_joint_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, joint_q: torch.Tensor,
                           joint_k: torch.Tensor, joint_v: torch.Tensor, joint_lens: Optional[torch.Tensor],
                           joint_len: Optional[int], seq_len: Optional[int], scale: Optional[float],
                           precision: Optional[str], sp_group: str, ulysses_group: str,
                           ring_group: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = (sp_group, ulysses_group, ring_group)
    joint = (joint_q, joint_k, joint_v)
    if joint_lens is None:
        out, joint_out = _attend(q, k, v, joint + (joint_len,), seq_len, scale, precision, names)
    else:
        _check_lens(joint_lens, q.shape[0])
        out, joint_out = _attend_rows(q, k, v, joint, joint_lens.tolist(), seq_len, scale, precision, names)
    # joint_out first: where the two are views of one buffer (a ring of one), the smaller is copied
    joint_out, out = _unaliased([joint_out, out], (q, k, v) + joint)
    return out, joint_out


@_sp_joint_attention_op.register_fake
def _(q, k, v, joint_q, joint_k, joint_v, joint_lens, joint_len, seq_len, scale, precision, sp_group,
      ulysses_group, ring_group):
    return q.new_empty(q.shape), joint_q.new_empty(joint_q.shape)


def _check_lens(lens, batch):
    """joint_len as a tensor: a CPU integer tensor [B] (its values are range-checked per count
    by the attention's own argument checks, which every rank agrees on)."""
    if lens.device.type != "cpu" or lens.dtype.is_floating_point or lens.dtype == torch.bool:
        raise TypeError(f"joint_len as a tensor must be a CPU integer tensor, got {lens.dtype} on {lens.device}")
    if lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(f"joint_len as a tensor must be [B={batch}], got shape {tuple(lens.shape)}")


_rows_cache = {}  # (counts, device) -> {count: row index tensor}: the host-to-device copy once


def _rows_by_count(counts, device):
    key = (tuple(counts), str(device))
    if key not in _rows_cache:
        if len(_rows_cache) >= 16:
            _rows_cache.pop(next(iter(_rows_cache)))
        by_count = {}
        for row, n in enumerate(counts):
            by_count.setdefault(n, []).append(row)
        _rows_cache[key] = {n: torch.tensor(rows, device=device) for n, rows in sorted(by_count.items())}
    return _rows_cache[key]


def _attend_rows(q, k, v, joint, counts, seq_len, scale, precision, names):
    """One SP attention per distinct valid count: the joint mask is a valid prefix per call."""
    extra = {"joint_lens": tuple(counts)}  # every rank must group its rows the same way
    if len(set(counts)) == 1:
        return _attend(q, k, v, joint + (counts[0],), seq_len, scale, precision, names, extra)
    out, joint_out = torch.empty_like(q), torch.empty_like(joint[0])
    for n, rows in _rows_by_count(counts, q.device).items():
        pick = [t.index_select(0, rows) for t in (q, k, v) + tuple(joint)]
        o, jo = _attend(*pick[:3], tuple(pick[3:]) + (n,), seq_len, scale, precision, names, extra)
        out.index_copy_(0, rows, o)
        joint_out.index_copy_(0, rows, jo)
    return out, joint_out


def _unaliased(outputs, inputs):
    """The outputs, contiguous (as the fake kernels make them), each copied where it shares
    memory with an input or an earlier output: an op's outputs must alias nothing."""
    taken = {t.untyped_storage().data_ptr() for t in inputs}
    fresh = []
    for t in outputs:
        ptr = t.untyped_storage().data_ptr()
        t = t.clone(memory_format=torch.contiguous_format) if ptr in taken else t.contiguous()
        taken.add(t.untyped_storage().data_ptr())
        fresh.append(t)
    return fresh


@torch.library.custom_op("ringsp::sp_gather", mutates_args=(), tags=_TAGS)
def _sp_gather_op(x: torch.Tensor, dim: int, seq_len: Optional[int], sp_group: str) -> torch.Tensor:
    out = gather_sequence(x, _group(sp_group), dim=dim, seq_len=seq_len)
    return _unaliased([out], (x,))[0]  # a world of one returns a view of x


@_sp_gather_op.register_fake
def _(x, dim, seq_len, sp_group):
    dim = dim % x.dim()
    shape = list(x.shape)
    shape[dim] = seq_len if seq_len is not None else _size(_group(sp_group)) * shape[dim]
    return x.new_empty(shape)
