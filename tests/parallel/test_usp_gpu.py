"""SP attention on CUDA over NCCL (one GPU per rank): the ring's streams and events, the
all-to-all and the joint path with the Triton kernels. Skipped without enough GPUs.

Every case prints its worst error (run with -s to see them) and one deliberately broken ring
(a dropped block) must fail the same comparison, so the tolerance is known to catch one
wrong block among eight."""
import pytest
import torch

from tests.mp_pool import run_distributed
from tests.parallel.helpers import joint_reference, max_error, random_tensors

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4), (2, 4), (8, 1), (1, 8)]
# bf16: about 3x the worst bf16 error of the kernels that earlier GPU runs of the kernel tests
# measured (7.8e-3 abs); a correct ring adds only the merge's float32 rounding to it. Dropping
# one block of 8 costs ~0.11 on these inputs (measured on CPU in float64), 4x this bound.
# fp16 / fp32: unchanged from before, not yet re-measured. The lead's next GPU run prints the
# measured worst errors; set these to a few times them.
BF16_TOL = 2.5e-2
TOL = {torch.bfloat16: BF16_TOL, torch.float16: 5e-3, torch.float32: 1e-4}


def _report(case, errs, tol):
    worst = max(errs)
    print(f"\n{case}: worst |error| {worst:.3g} (tolerance {tol:g})")
    return worst


def _drop_a_block(loop, step_to_skip):
    """Makes `loop` (a RingLoop) skip its attention step `step_to_skip`: a deliberately broken ring."""
    from ringsp.parallel.ring import RingLoop

    loop.attend = lambda step: None if step == step_to_skip else RingLoop.attend(loop, step)


def _gpu_case(u, r, S, H, D, T, dtype, side_stream, drop_block=False):
    from ringsp.parallel import ParallelConfig, init_parallel
    from ringsp.parallel.ring import RingLoop

    ctx = init_parallel(ParallelConfig(u, r))
    attend = RingLoop.attend
    if drop_block:  # every rank skips the ring's last step (a different block on each rank)
        RingLoop.attend = lambda self, step: None if step == self.size - 1 else attend(self, step)
    try:
        return _usp_errors(ctx, u, r, S, H, D, T, dtype, side_stream)
    finally:
        RingLoop.attend = attend  # the pool's process runs later tests


def _usp_errors(ctx, u, r, S, H, D, T, dtype, side_stream):
    from ringsp.parallel import shard_sequence, usp_attention

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
    results = run_distributed(u * r, _gpu_case, u, r, 3001, 5, 128, 77, dtype, side_stream, backend="nccl",
                              timeout=300)
    worst = _report(f"usp u{u}r{r} {dtype}", [err for err, _ in results], TOL[dtype])
    assert all(device == "cuda" for _, device in results) and worst < TOL[dtype]


@pytest.mark.gpu
def test_a_ring_with_a_dropped_block_fails_the_bf16_comparison():
    if GPUS < 2:
        pytest.skip("needs 2 CUDA devices")
    results = run_distributed(2, _gpu_case, 1, 2, 3001, 5, 128, 77, torch.bfloat16, False, True, backend="nccl",
                              timeout=300)
    assert _report("usp u1r2 bf16, one block dropped", [err for err, _ in results], BF16_TOL) > BF16_TOL


DELAY_CYCLES = 2_000_000  # about 1 ms of GPU time: long enough to expose a missing wait


def _virtual_ring_case(R, S, H, D, dtype, delay, drop_block=False):
    """A ring of R virtual ranks in one process on one GPU: the real RingLoop and RingExchange
    (NCCL send to and receive from this same rank, on the communication stream, ordered by
    events), driven phase by phase in lockstep. `delay` stalls the communication or the
    compute stream before each step, so a missing wait shows as a wrong result."""
    import torch.nn.functional as F

    import ringsp_kernels as rk
    from ringsp.parallel.comm import RingExchange
    from ringsp.parallel.layout import shard_len
    from ringsp.parallel.ring import RingLoop

    q, k, v = random_tensors(S, *[(1, S, H, D)] * 3, dtype=dtype)
    ref, _ = joint_reference(q, k, v)
    L = shard_len(S, R)
    q, k, v = (F.pad(t, (0, 0, 0, 0, 0, R * L - S), value=float("nan")).cuda() for t in (q, k, v))
    real = RingExchange(None, "cuda")  # a world of one: next = prev = this rank
    loops = []

    class Virtual:  # virtual rank i receives the block virtual rank i - 1 holds
        def __init__(self, i):
            self.i = i

        def start(self, send_buf, recv_buf, send=True, recv=True):
            if not recv:
                return []
            if delay == "comm":
                with torch.cuda.stream(real.stream):
                    torch.cuda._sleep(DELAY_CYCLES)
            return real.start(loops[self.i - 1].cur, recv_buf)

        def wait(self, handle):
            real.wait(handle)

    for i in range(R):
        kv = torch.stack([k[:, i * L:(i + 1) * L], v[:, i * L:(i + 1) * L]])
        loops.append(RingLoop(q[:, i * L:(i + 1) * L].contiguous(), kv, R, i, S, None, Virtual(i)))
    if drop_block:
        _drop_a_block(loops[R // 2], 1)  # one virtual rank misses one block
    for step in range(R):
        for lp in loops:
            lp.begin(step)
        for lp in loops:
            if delay == "compute":
                torch.cuda._sleep(DELAY_CYCLES)
            lp.attend(step)
        for lp in loops:
            lp.end(step)
    out = torch.cat([rk.finalize(lp.acc, lp.lse, dtype) for lp in loops], 1)[:, :S].cpu().double()
    row_err = (out - ref).abs().amax(dim=(0, 2, 3))  # per query row: one bad row cannot hide
    return row_err.max().item(), bool(torch.isfinite(out).all())


@pytest.mark.gpu
@pytest.mark.parametrize("R,S", [(2, 1000), (4, 1237), (8, 3001)])
@pytest.mark.parametrize("delay", [None, "comm", "compute"])
def test_ring_cuda_streams_on_one_gpu(R, S, delay):
    if GPUS < 1:
        pytest.skip("needs a CUDA device")
    (err, finite), = run_distributed(1, _virtual_ring_case, R, S, 4, 128, torch.bfloat16, delay,
                                     backend="nccl", timeout=300)
    assert finite and _report(f"virtual ring R={R} S={S} delay={delay}", [err], BF16_TOL) < BF16_TOL


@pytest.mark.gpu
def test_a_virtual_ring_with_a_dropped_block_fails_the_comparison():
    if GPUS < 1:
        pytest.skip("needs a CUDA device")
    (err, finite), = run_distributed(1, _virtual_ring_case, 8, 3001, 4, 128, torch.bfloat16, None, True,
                                     backend="nccl", timeout=300)
    assert finite and _report("virtual ring R=8, one block dropped", [err], BF16_TOL) > BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "cudnn"])
def test_attention_reads_the_ulysses_receive_layout_in_place(path, monkeypatch):
    """After the all-to-all, q, k and v are strided views of one [B, L, 3, H, D] buffer
    (token-major); both kernel paths must read them as they are."""
    if GPUS < 1:
        pytest.skip("needs a CUDA device")
    import ringsp_kernels as rk
    from ringsp_kernels.cuda import ops as cuda

    L, H, D, n = 1000, 3, 128, 937
    buf = random_tensors(7, (1, L, 3, H, D), dtype=torch.bfloat16)[0].cuda()
    buf[:, n:, 1:] = float("nan")  # padded keys and values: masked by kv_len, whatever they hold
    q, k, v = buf[:, :, 0], buf[:, :, 1], buf[:, :, 2]
    ref, _ = rk.reference_attention(q.cpu().double(), k[:, :n].cpu().double(), v[:, :n].cpu().double())
    with cuda.forced(path):  # RINGSP_CUDA_ATTN's setting, for these calls only
        out, _ = rk.attn_fwd(q, k, v, kv_len=n)
        acc, lse = rk.init_state(q)
        rk.attn_step_(q, k, v, acc, lse, kv_len=n)
    for name, got in (("attn_fwd", out), ("attn_step_", rk.finalize(acc, lse, q.dtype))):
        err = (got.cpu().double() - ref).abs().amax(dim=(0, 2, 3)).max().item()
        assert _report(f"{path} {name} on the Ulysses layout", [err], BF16_TOL) < BF16_TOL
