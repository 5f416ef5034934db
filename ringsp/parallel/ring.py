"""Ring attention: KV blocks travel the ring while each rank attends its queries to them.

Double-buffered: step i+1's block is in flight while step i's `attn_step_` runs; the
online-softmax merge happens inside the kernel, so no partial outputs are kept. A block
whose keys are all padding (kv_len 0) is neither sent nor received nor attended to; both
ends of a transfer know this from the block index alone.
"""
import torch
import torch.distributed as dist

import ringsp_kernels as rk

from .attention_args import prepare
from .comm import RingExchange, debug
from .layout import block_kv_len


def _group_size_rank(group):
    return (1, 0) if group is None else (dist.get_world_size(group), dist.get_rank(group))


def ring_pass(q, kv, group, seq_len, scale=None, joint=None):
    """Attention of q [B, L, H, D] over the ring's blocks; kv [2, B, L, H, D] is this rank's
    block (ring position = rank in `group`; group None = a ring of one). Block j's valid keys
    are block_kv_len(seq_len, j, L). joint = (joint_q, joint_k, joint_v, joint_len) with the
    same heads as q, identical on every rank. Returns (out, joint_out or None) in q's dtype."""
    size, rank = _group_size_rank(group)
    kv = kv.contiguous()  # P2P needs it; a no-op for the stacked / all-to-all buffers
    block = q.shape[1]
    kv_len = [block_kv_len(seq_len, j, block) for j in range(size)]
    acc, lse = rk.init_state(q)
    text_partial = _text_partial(joint, kv, kv_len[rank], scale)
    exchange = RingExchange(group, q.device) if size > 1 else None
    buffers = (kv, torch.empty_like(kv)) if size > 1 else (kv,)
    cur = kv
    for step in range(size):
        src = (rank - step) % size  # the block held at this step
        handle = None
        if step < size - 1 and not debug.skip_transfers:
            nxt = buffers[(step + 1) % 2]
            handle = exchange.start(cur, nxt, send=kv_len[src] > 0, recv=kv_len[(src - 1) % size] > 0)
        if step == 0 and joint is not None:  # image queries over the text keys, once
            rk.attn_step_(q, joint[1], joint[2], acc, lse, scale, joint[3])
        if kv_len[src] > 0 and not debug.skip_compute:
            rk.attn_step_(q, cur[0], cur[1], acc, lse, scale, kv_len[src])
        if handle is not None:
            exchange.wait(handle)
            cur = nxt
    out = rk.finalize(acc, lse, q.dtype)
    if joint is None:
        return out, None
    return out, _joint_out(joint, text_partial, group, scale)


def _text_partial(joint, kv, own_kv_len, scale):
    """The text queries' state over this rank's own image block (shared later)."""
    if joint is None:
        return None
    acc, lse = rk.init_state(joint[0])
    rk.attn_step_(joint[0], kv[0], kv[1], acc, lse, scale, own_kv_len)
    return acc, lse


def _joint_out(joint, partial, group, scale):
    """Text queries over the text keys plus every rank's image block, each exactly once."""
    joint_q, joint_k, joint_v, joint_len = joint
    acc, lse = rk.init_state(joint_q)
    rk.attn_step_(joint_q, joint_k, joint_v, acc, lse, scale, joint_len)
    size, _ = _group_size_rank(group)
    if size == 1:
        rk.merge_(acc, lse, partial[0], partial[1])
    else:
        accs = [torch.empty_like(partial[0]) for _ in range(size)]
        lses = [torch.empty_like(partial[1]) for _ in range(size)]
        dist.all_gather(accs, partial[0], group=group)
        dist.all_gather(lses, partial[1], group=group)
        for blk_acc, blk_lse in zip(accs, lses):
            rk.merge_(acc, lse, blk_acc, blk_lse)
    return rk.finalize(acc, lse, joint_q.dtype)


def ring_attention(q, k, v, group=None, seq_len=None, *, joint_q=None, joint_k=None, joint_v=None,
                   joint_len=None, scale=None):
    """Ring attention over `group` (None = WORLD; group rank order = sequence order).

    q/k/v: this rank's shard [B, S_local, H, D]; seq_len: the true global length when the
    shards were padded at the end (None = world * S_local). Returns this rank's shard of
    the output, or (out, joint_out) when joint tensors (replicated text tokens
    [B, T, H, D], the first joint_len of them valid) are given.
    """
    group = group or dist.group.WORLD
    a = prepare("ring_attention", group, dist.get_world_size(group), q, k, v, seq_len, scale,
                joint_q, joint_k, joint_v, joint_len)
    out, joint_out = ring_pass(a.q, torch.stack([a.k, a.v]), group, a.seq_len, a.scale, a.joint)
    return out if a.joint is None else (out, joint_out)
