"""USP attention: Ulysses inside each group of consecutive ranks, ring across the groups."""
from .attention_args import prepare
from .mesh import ParallelContext
from .ulysses import sp_pass


def usp_attention(q, k, v, ctx, seq_len=None, *, joint_q=None, joint_k=None, joint_v=None,
                  joint_len=None, scale=None, precision=None):
    """Attention over the whole sequence of ctx's SP world (u x r ranks, shards in SP-rank
    order). q/k/v: this rank's shard [B, S_local, H, D]; seq_len: the true global length
    when shards were padded at the end. Returns this rank's output shard, or
    (out, joint_out) when replicated joint (text) tensors [B, T, H, D] are given.
    precision: None (q's dtype) or "fp8" / "int8" (8-bit attention inside; CUDA only)."""
    if not isinstance(ctx, ParallelContext):
        raise TypeError(f"ctx must be a ParallelContext (from init_parallel), got {type(ctx).__name__}")
    config = {"ulysses_degree": ctx.ulysses_degree, "ring_degree": ctx.ring_degree}
    a = prepare("usp_attention", ctx.sp_group, ctx.sp_degree, q, k, v, seq_len, scale,
                joint_q, joint_k, joint_v, joint_len, extra=config, precision=precision)
    return sp_pass(a, ctx.ulysses_group, ctx.ring_group)
