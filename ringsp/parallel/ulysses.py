"""Ulysses attention: all-to-all from sequence shards to head shards, attention over the
whole sequence for a slice of the heads, and back. Head counts the degree does not divide
are padded with empty (zero) heads, dropped again on the way back.

q, k and v travel in ONE all-to-all, packed token-major ([u, B, S, 3, H/u, D]) so that on
arrival q, k and v of the whole sequence are strided views of the receive buffer (for
B = 1): the kernels read them in place, with no re-layout copy.

`sp_pass` is the shared body of Ulysses, ring and USP: Ulysses over `uly_group`, then a
ring over `ring_group` (either may be `groups.SINGLE`).
"""
import math

import torch
import torch.nn.functional as F

from .attention_args import prepare
from .comm import all_to_all
from .gather import all_gather_cat
from .groups import SINGLE, size_rank
from .ring import ring_pass


def _pad_heads(t, heads):
    return t if t.shape[2] == heads else F.pad(t, (0, 0, 0, heads - t.shape[2]))


def seq_to_heads(q, k, v, group):
    """[B, S, H, D] sequence shards -> (q, k, v) [B, u*S, H/u, D]: the u consecutive shards of
    the group for this rank's slice of the (padded) heads (views of one buffer when B = 1)."""
    u, _ = size_rank(group)
    B, S, H, D = q.shape
    local_heads = math.ceil(H / u)
    send = q.new_empty((u, B, S, 3, local_heads, D))
    by_head = send.permute(3, 1, 2, 0, 4, 5)  # [3, B, S, u, H/u, D], a view of send
    for i, t in enumerate((q, k, v)):
        by_head[i].copy_(_pad_heads(t, u * local_heads).view(B, S, u, local_heads, D))
    recv = all_to_all(send, group)  # [u (sequence chunk), B, S, 3, H/u, D]
    whole = recv.transpose(0, 1).reshape(B, u * S, 3, local_heads, D)  # a view when B = 1
    return whole[:, :, 0], whole[:, :, 1], whole[:, :, 2]


def heads_to_seq(out_h, group, num_heads):
    """Inverse of seq_to_heads for the output: [B, u*S, H/u, D] -> [B, S, H, D]."""
    u, _ = size_rank(group)
    B, L, local_heads, D = out_h.shape
    S = L // u
    send = out_h.reshape(B, u, S, local_heads, D).transpose(0, 1)
    recv = all_to_all(send, group)  # [u (head slice), B, S, H/u, D]
    out = recv.permute(1, 2, 0, 3, 4).reshape(B, S, u * local_heads, D)
    return out if out.shape[2] == num_heads else out[:, :, :num_heads].contiguous()


def _joint_heads(joint, group):
    """This rank's head slice of the (replicated) joint tensors."""
    if joint is None:
        return None
    u, idx = size_rank(group)
    local_heads = math.ceil(joint[0].shape[2] / u)
    sl = slice(idx * local_heads, (idx + 1) * local_heads)
    return tuple(_pad_heads(t, u * local_heads)[:, :, sl].contiguous() for t in joint[:3]) + (joint[3],)


def sp_pass(a, uly_group, ring_group):
    """Ulysses inside, ring across: this rank's output shard (and replicated joint_out)."""
    u, _ = size_rank(uly_group)
    heads = a.q.shape[2]
    if u == 1:
        q_h, kv_h = a.q, (a.k, a.v)
    else:
        q_h, k_h, v_h = seq_to_heads(a.q, a.k, a.v, uly_group)
        kv_h = (k_h, v_h)
    out_h, joint_h = ring_pass(q_h, kv_h, ring_group, a.seq_len, a.scale, _joint_heads(a.joint, uly_group),
                               a.precision)
    out = out_h if u == 1 else heads_to_seq(out_h, uly_group, heads)
    if a.joint is None:
        return out
    joint_out = joint_h if u == 1 else all_gather_cat(joint_h, uly_group, dim=2)[:, :, :heads].contiguous()
    return out, joint_out


def ulysses_attention(q, k, v, group=None, seq_len=None, *, joint_q=None, joint_k=None, joint_v=None,
                      joint_len=None, scale=None, precision=None):
    """Ulysses attention over `group` (None = WORLD; group rank order = sequence order).
    Arguments and result as for ring_attention."""
    a = prepare("ulysses_attention", group, size_rank(group)[0], q, k, v, seq_len, scale,
                joint_q, joint_k, joint_v, joint_len, precision=precision)
    return sp_pass(a, group, SINGLE)
