"""shard_sequence / gather_sequence: split a sequence across the SP world and put it back."""
import torch
import torch.distributed as dist

from .agreement import agree, describe
from .fail_together import wait
from .layout import check_seq_len, shard_len
from .mesh import ParallelContext


def sp_group_and_rank(ctx_or_group):
    """(group, rank, world) of the SP world: a ParallelContext's, or a plain process group."""
    if isinstance(ctx_or_group, ParallelContext):
        return ctx_or_group.sp_group, ctx_or_group.sp_rank, ctx_or_group.sp_degree
    if ctx_or_group is None or isinstance(ctx_or_group, dist.ProcessGroup):
        return ctx_or_group, dist.get_rank(ctx_or_group), dist.get_world_size(ctx_or_group)
    raise TypeError(f"ctx must be a ParallelContext or a ProcessGroup, got {type(ctx_or_group).__name__}")


def _check_dim(x, dim, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for {name} with shape {tuple(x.shape)}")
    return dim % x.dim()


def shard_sequence(x, ctx, dim=1):
    """This rank's shard of x along `dim` (local: no communication). The sequence is padded
    with zeros at its end to a multiple of the SP world size; shards follow SP-rank order."""
    dim = _check_dim(x, dim, "x")
    _, rank, world = sp_group_and_rank(ctx)
    seq_len = x.shape[dim]
    if seq_len == 0:
        raise ValueError(f"x has an empty sequence (dim {dim} of shape {tuple(x.shape)})")
    local = shard_len(seq_len, world)
    start = rank * local
    piece = x.narrow(dim, min(start, seq_len), max(0, min(local, seq_len - start)))
    if piece.shape[dim] == local:
        return piece.contiguous()
    pad_shape = list(x.shape)
    pad_shape[dim] = local - piece.shape[dim]
    return torch.cat([piece, x.new_zeros(pad_shape)], dim=dim)


def gather_sequence(x_local, ctx, dim=1, seq_len=None):
    """The whole sequence from every rank's shard (collective over the SP world), cut to
    seq_len (None keeps the padding)."""
    group, _, world = sp_group_and_rank(ctx)
    error = None
    try:
        dim = _check_dim(x_local, dim, "x_local")
        seq_len = check_seq_len(seq_len, x_local.shape[dim], world)
    except (TypeError, ValueError) as exc:
        error = exc
    agree(group, "gather_sequence", {"x_local": describe(x_local), "dim": dim, "seq_len": seq_len}, error)
    if world == 1:
        return x_local.narrow(dim, 0, seq_len)
    x_local = x_local.contiguous()
    parts = [torch.empty_like(x_local) for _ in range(world)]
    wait(dist.all_gather(parts, x_local, group=group, async_op=True))
    return torch.cat(parts, dim=dim).narrow(dim, 0, seq_len)
