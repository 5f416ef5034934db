"""init_parallel: the process groups of a ParallelConfig, held in a ParallelContext.

Rank layout inside the parent group (group rank i): cfg index i // sp, SP rank i % sp;
inside an SP world, Ulysses groups are consecutive ranks (SP rank p belongs to Ulysses
group p // u at position p % u) and each ring joins the ranks at one Ulysses position
(ring position p // u). SP rank order is sequence order: shard p holds tokens
[p * S_local, (p + 1) * S_local).
"""
import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

import ringsp_kernels as rk

from .agreement import agree
from .config import ParallelConfig
from .comm import ring_exchange
from .devices import compute_device

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True, eq=False)
class ParallelContext:
    config: ParallelConfig
    group: object            # the parent group (None = WORLD)
    rank: int                # rank in the parent group
    world_size: int
    device: torch.device     # where this rank computes (CPU for gloo)
    sp_group: object         # this rank's sequence-parallel world (u x r ranks)
    sp_rank: int
    ulysses_group: object
    ulysses_rank: int
    ring_group: object
    ring_rank: int
    cfg_group: object        # the ranks with this SP rank in every cfg half
    cfg_rank: int

    @property
    def ulysses_degree(self):
        return self.config.ulysses_degree

    @property
    def ring_degree(self):
        return self.config.ring_degree

    @property
    def cfg_degree(self):
        return self.config.cfg_degree

    @property
    def sp_degree(self):
        return self.config.sp_degree


def mesh_ranks(config, parent_ranks):
    """Ranks (global) of every group of the mesh, in creation order:
    {'sp': [...], 'ulysses': [...], 'ring': [...], 'cfg': [...]}, each a list of rank lists."""
    u, r, c, sp = config.ulysses_degree, config.ring_degree, config.cfg_degree, config.sp_degree
    at = lambda ci, j, a: parent_ranks[ci * sp + j * u + a]  # noqa: E731
    return {
        "sp": [[at(ci, j, a) for j in range(r) for a in range(u)] for ci in range(c)],
        "ulysses": [[at(ci, j, a) for a in range(u)] for ci in range(c) for j in range(r)],
        "ring": [[at(ci, j, a) for j in range(r)] for ci in range(c) for a in range(u)],
        "cfg": [[at(ci, j, a) for ci in range(c)] for j in range(r) for a in range(u)],
    }


def _to_timedelta(timeout):
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, datetime.timedelta):
        return timeout
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return datetime.timedelta(seconds=timeout)
    raise TypeError(f"timeout must be a datetime.timedelta or positive seconds, got {timeout!r}")


def init_parallel(config, group=None, timeout=None):
    """Builds the Ulysses / ring / SP / cfg groups of `config` over `group` (default WORLD).

    Collective: every rank of `group` must call it. Ranks with different configs, or a
    config whose world size differs from the group's, raise ValueError on every rank.
    New groups get `timeout` (default 10 min) so a dead peer ends in an error.
    """
    if not isinstance(config, ParallelConfig):
        raise TypeError(f"config must be a ParallelConfig, got {type(config).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("init_parallel needs torch.distributed to be initialised first")
    timeout = _to_timedelta(timeout)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    error = None
    if config.world_size != world:
        error = ValueError(f"config {config} needs {config.world_size} ranks but the group has {world}")
    fields = {"ulysses_degree": config.ulysses_degree, "ring_degree": config.ring_degree,
              "cfg_degree": config.cfg_degree, "world_size": world,
              # the RINGSP_* switches and the kernel paths each rank can run: ranks that differ
              # would choose different kernels or checks, so every rank refuses here
              **rk.agreed_fields()}
    agree(group, "init_parallel", fields, error, cache=False)  # rare: always exchange
    parent_ranks = dist.get_process_group_ranks(group or dist.group.WORLD)
    me = parent_ranks[rank]
    mine = {}
    for kind, rank_lists in mesh_ranks(config, parent_ranks).items():
        for ranks in rank_lists:  # every rank creates every group, in the same order
            pg = _new_group(ranks, group, parent_ranks, timeout)
            if me in ranks:
                mine[kind] = (pg, ranks.index(me))
    ctx = ParallelContext(
        config=config, group=group, rank=rank, world_size=world, device=compute_device(group),
        sp_group=mine["sp"][0], sp_rank=mine["sp"][1],
        ulysses_group=mine["ulysses"][0], ulysses_rank=mine["ulysses"][1],
        ring_group=mine["ring"][0], ring_rank=mine["ring"][1],
        cfg_group=mine["cfg"][0], cfg_rank=mine["cfg"][1],
    )
    _share_kernel_choices(group, world)
    _warm_up(ctx)
    return ctx


def _share_kernel_choices(group, world):
    """Every rank runs with rank 0's table of kernel choices (path and Triton config per
    shape class, including its machine's tuned disk cache): a choice timed on each rank
    alone could differ, and then so would the replicated text outputs, which every rank
    computes itself."""
    if world == 1:
        return
    box = [rk.choices_snapshot() if dist.get_rank(group) == 0 else None]
    dist.broadcast_object_list(box, group=group, group_src=0)
    rk.install_choices(box[0])


def _warm_up(ctx):
    """One tiny collective per group, and one ring exchange, in the same order on every
    rank: backends that create communicators lazily (NCCL, HCCL) do it here, with every
    member present, not inside the first ring step of a forward."""
    token = torch.zeros(1, device=ctx.device)
    for pg in (ctx.sp_group, ctx.ulysses_group, ctx.ring_group, ctx.cfg_group):
        if dist.get_world_size(pg) > 1:
            dist.all_reduce(token, group=pg)
    if ctx.ring_degree > 1:
        exchange = ring_exchange(ctx.ring_group, ctx.device)
        exchange.wait(exchange.start(token.clone(), torch.empty_like(token)))


def _new_group(ranks, parent, parent_ranks, timeout):
    if list(ranks) == list(parent_ranks):
        return parent or dist.group.WORLD
    backend = None if parent is None else dist.get_backend(parent)  # None: the default group's
    return dist.new_group(ranks, timeout=timeout, backend=backend)
