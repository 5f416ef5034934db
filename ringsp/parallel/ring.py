"""Ring attention: KV blocks travel the ring while each rank attends its queries to them.

Double-buffered: step i+1's block is in flight while step i's `attn_step_` runs; the
online-softmax merge happens inside the kernel, so no partial outputs are kept. A block
whose keys are all padding (kv_len 0) is neither sent nor received nor attended to; both
ends of a transfer know this from the block index alone.

Replicated joint (text) tokens: with a ring of one, image and text queries attend to image
and text keys in ONE attention call. On a longer ring, every rank computes the text queries'
state over its own image block first and starts gathering those states before the ring
loop, so the gather runs under the ring's compute; the text queries' result merges the
gathered states in rank order on every rank, so it is the same on every rank.

8-bit attention (`precision`), one rule at every ring size: the image-key steps are
quantised, the text keys are a block of their own attended natively, never quantised with
image keys under one scale (a ring of one then takes two steps instead of one call).
"""
import torch
import torch.distributed as dist

import ringsp_kernels as rk

from .attention_args import prepare
from .comm import ring_exchange
from .fail_together import wait
from .groups import size_rank
from .layout import block_kv_len


class RingLoop:
    """One rank's ring loop over `size` blocks, in three phases per step (begin: start the
    next block's transfer; attend: the step on the current block; end: wait and swap), so
    that a test can drive the ranks of a virtual ring in lockstep on one device, and a
    benchmark (bench/sp_attention.py) can time one phase without the other."""

    def __init__(self, q, kv, size, rank, seq_len, scale, exchange, precision=None):
        self.q, self.size, self.rank, self.scale = q, size, rank, scale
        self.precision = precision
        block = q.shape[1]
        self.kv_len = [block_kv_len(seq_len, j, block) for j in range(size)]
        self.acc, self.lse = rk.init_state(q)
        self.cur, self.spare = kv, (torch.empty_like(kv) if size > 1 else None)
        self.exchange, self._handle = exchange, None

    def src(self, step):
        return (self.rank - step) % self.size  # the block held at this step

    def begin(self, step):
        self._handle = None
        if step < self.size - 1:
            src = self.src(step)
            self._handle = self.exchange.start(self.cur, self.spare, send=self.kv_len[src] > 0,
                                               recv=self.kv_len[(src - 1) % self.size] > 0)

    def attend(self, step):
        n = self.kv_len[self.src(step)]
        if n > 0:
            rk.attn_step_(self.q, self.cur[0], self.cur[1], self.acc, self.lse, self.scale, n, self.precision)

    def end(self, step):
        if self._handle is not None:
            self.exchange.wait(self._handle)
            self.cur, self.spare = self.spare, self.cur

    def run(self, before_first_step=None):
        for step in range(self.size):
            self.begin(step)
            if step == 0 and before_first_step is not None:
                before_first_step(self)
            self.attend(step)
            self.end(step)
        return rk.finalize(self.acc, self.lse, self.q.dtype)


def ring_pass(q, kv, group, seq_len, scale=None, joint=None, precision=None):
    """Attention of q [B, L, H, D] over the ring's blocks; kv is this rank's block, a
    [2, B, L, H, D] tensor or a (k, v) pair (ring position = rank in `group`, see groups.py).
    Block j's valid keys are block_kv_len(seq_len, j, L). joint = (joint_q, joint_k, joint_v,
    joint_len) with the same heads as q, identical on every rank. Returns (out, joint_out or
    None) in q's dtype. precision: None (q's dtype) or an 8-bit precision for the image-key
    steps (ringsp_kernels.attn_step_'s `precision`); text keys are few and stay native."""
    size, rank = size_rank(group)
    if size == 1:
        return _single_block(q, kv, seq_len, scale, joint, precision)
    if not isinstance(kv, torch.Tensor):
        kv = torch.stack(kv)
    kv = kv.contiguous()  # P2P needs it; a no-op for stacked buffers
    loop = RingLoop(q, kv, size, rank, seq_len, scale, ring_exchange(group, q.device), precision)
    if joint is None:
        return loop.run(), None
    gather = _start_text_gather(joint, kv, loop.kv_len[rank], scale, group, precision)
    out = loop.run(lambda lp: rk.attn_step_(q, joint[1], joint[2], lp.acc, lp.lse, scale, joint[3]))
    return out, _joint_out(joint, gather, size, scale)


def _single_block(q, kv, seq_len, scale, joint, precision):
    """A ring of one: image and text queries together. Natively that is one attention call
    over image and text keys; with an 8-bit precision the image keys are one quantised step
    and the text keys a native one, as on a longer ring (text keys never share a scale)."""
    k, v = kv[0], kv[1]
    n = min(seq_len, k.shape[1])
    if joint is None:
        out, _ = rk.attn_fwd(q, k, v, scale, n, precision)
        return out, None
    jq, jk, jv, jlen = joint
    both = torch.cat([q, jq], 1)
    if precision is None:
        out, _ = rk.attn_fwd(both, torch.cat([k[:, :n], jk[:, :jlen]], 1), torch.cat([v[:, :n], jv[:, :jlen]], 1),
                             scale)
    else:
        acc, lse = rk.init_state(both)
        rk.attn_step_(both, jk, jv, acc, lse, scale, jlen)
        rk.attn_step_(both, k, v, acc, lse, scale, n, precision)
        out = rk.finalize(acc, lse, q.dtype)
    return out[:, : q.shape[1]], out[:, q.shape[1]:]


def _start_text_gather(joint, kv, own_kv_len, scale, group, precision):
    """Starts gathering every rank's text-query state over its own image block: one
    asynchronous all_gather of acc and lse packed in one float32 buffer."""
    jq = joint[0]
    B, T, H, D = jq.shape
    packed = torch.empty(B * T * H * (D + 1), dtype=torch.float32, device=jq.device)
    acc, lse = _unpack(packed, jq.shape)
    acc.zero_()
    lse.fill_(float("-inf"))
    rk.attn_step_(jq, kv[0], kv[1], acc, lse, scale, own_kv_len, precision)
    parts = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
    return parts, dist.all_gather(parts, packed, group=group, async_op=True)


def _unpack(packed, shape):
    B, T, H, D = shape
    n = B * T * H * D
    return packed[:n].view(B, T, H, D), packed[n:].view(B, H, T)


def _joint_out(joint, gather, size, scale):
    """Text queries over the text keys, merged with every rank's image-block state in rank
    order (the same order, hence the same bits, on every rank)."""
    joint_q, joint_k, joint_v, joint_len = joint
    acc, lse = rk.init_state(joint_q)
    rk.attn_step_(joint_q, joint_k, joint_v, acc, lse, scale, joint_len)
    parts, work = gather
    wait(work)
    for packed in parts:
        rk.merge_(acc, lse, *_unpack(packed, joint_q.shape))
    return rk.finalize(acc, lse, joint_q.dtype)


def ring_attention(q, k, v, group=None, seq_len=None, *, joint_q=None, joint_k=None, joint_v=None,
                   joint_len=None, scale=None, precision=None):
    """Ring attention over `group` (None = WORLD; group rank order = sequence order).

    q/k/v: this rank's shard [B, S_local, H, D]; seq_len: the true global length when the
    shards were padded at the end (None = world * S_local). Returns this rank's shard of
    the output, or (out, joint_out) when joint tensors (replicated text tokens
    [B, T, H, D], the first joint_len of them valid) are given. precision: None (q's dtype)
    or "fp8" / "int8" (8-bit attention inside, CUDA; see ringsp_kernels.fp8).
    """
    a = prepare("ring_attention", group, size_rank(group)[0], q, k, v, seq_len, scale,
                joint_q, joint_k, joint_v, joint_len, precision=precision)
    out, joint_out = ring_pass(a.q, (a.k, a.v), group, a.seq_len, a.scale, a.joint, precision=a.precision)
    return out if a.joint is None else (out, joint_out)


__all__ = ["ring_attention", "ring_pass", "RingLoop"]
