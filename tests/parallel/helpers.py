"""Worker-side helpers shared by the distributed parallel-layer tests (run inside the
tests.mp_pool workers)."""
import torch

import ringsp_kernels as rk
from ringsp.parallel import ParallelConfig, init_parallel, shard_sequence

_contexts = {}


def context(u, r, cfg=1):
    """One ParallelContext per config per worker: creating groups costs more than the tests."""
    key = (u, r, cfg)
    if key not in _contexts:
        _contexts[key] = init_parallel(ParallelConfig(u, r, cfg))
    return _contexts[key]


def random_tensors(seed, *shapes, dtype=torch.float32):
    """Random normal tensors, identical on every rank for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


def joint_reference(q, k, v, jq=None, jk=None, jv=None, joint_len=None):
    """Float64 attention over the concatenated sequence (image keys + first joint_len text
    keys); returns (image rows, text rows or None)."""
    S = q.shape[1]
    if jq is None:
        return rk.reference_attention(q, k, v)[0], None
    jl = jq.shape[1] if joint_len is None else joint_len
    ref, _ = rk.reference_attention(torch.cat([q, jq], 1), torch.cat([k, jk[:, :jl]], 1),
                                    torch.cat([v, jv[:, :jl]], 1))
    return ref[:, :S], ref[:, S:]


def local_rows(full, rank, world):
    """This rank's rows of the padded full sequence, restricted to the real tokens:
    (rank's slice of `full`, number of valid rows in the shard)."""
    S = full.shape[1]
    local = -(-S // world)
    start = min(rank * local, S)
    stop = min(start + local, S)
    return full[:, start:stop], stop - start


def max_error(out_local, ref_full, rank, world):
    """Largest |out - ref| over the valid rows of this rank's shard."""
    ref, n = local_rows(ref_full, rank, world)
    return (out_local[:, :n].double() - ref).abs().max().item() if n else 0.0


def shards(ctx_or_group, *tensors):
    return [shard_sequence(t, ctx_or_group) for t in tensors]
