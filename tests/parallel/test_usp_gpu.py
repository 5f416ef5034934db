"""SP attention on CUDA over NCCL (one GPU per rank): the ring's streams and events, the
all-to-all and the joint path with the Triton kernels. Skipped without enough GPUs."""
import pytest
import torch

from tests.mp_pool import run_distributed
from tests.parallel.helpers import joint_reference, max_error, random_tensors

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4), (2, 4), (8, 1), (1, 8)]
TOL = {torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float32: 1e-4}


def _gpu_case(u, r, S, H, D, T, dtype, side_stream):
    from ringsp.parallel import ParallelConfig, init_parallel, shard_sequence, usp_attention

    ctx = init_parallel(ParallelConfig(u, r))
    q, k, v = random_tensors(S, *[(1, S, H, D)] * 3, dtype=dtype)
    joint = random_tensors(S + 1, *[(1, T, H, D)] * 3, dtype=dtype)
    ref, ref_joint = joint_reference(q, k, v, *joint, T - 1)
    stream = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
    with torch.cuda.stream(stream):  # the caller's stream, whichever it is, must be respected
        local = [shard_sequence(t.cuda(), ctx) for t in (q, k, v)]
        jq, jk, jv = (t.cuda() for t in joint)
        outs = [usp_attention(*local, ctx, seq_len=S, joint_q=jq, joint_k=jk, joint_v=jv, joint_len=T - 1)
                for _ in range(3)]  # repeated: buffers are reused while earlier steps may still run
    torch.cuda.synchronize()
    errs = [max(max_error(o.cpu(), ref, ctx.sp_rank, u * r), (jo.cpu().double() - ref_joint).abs().max().item())
            for o, jo in outs]
    return max(errs), ctx.device.type


@pytest.mark.gpu
@pytest.mark.parametrize("u,r", LAYOUTS)
@pytest.mark.parametrize("dtype,side_stream", [(torch.bfloat16, False), (torch.float16, True)])
def test_usp_on_cuda_matches_reference(u, r, dtype, side_stream):
    if GPUS < u * r:
        pytest.skip(f"needs {u * r} CUDA devices, found {GPUS}")
    for err, device in run_distributed(u * r, _gpu_case, u, r, 3001, 5, 128, 77, dtype, side_stream,
                                       backend="nccl", timeout=300):
        assert device == "cuda" and err < TOL[dtype]
