"""A candidate variant of ringsp's Hopper kernel, kept beside the benchmark that compares it
(ringsp_bench.hopper_variants): not a path of the library, and NOT YET RUN ON A GPU.

It is ringsp_kernels.cuda.hopper_step's ping-pong design with two changes aimed at short ring
blocks (Qwen-Image's steps, where the library kernel's 4-step chain ran at 0.83x cuDNN on an
H100 while its forward ran at 1.04x): a persistent grid (one program per SM walking (query
tile, head) items head-major; the producer runs ahead into the next item, whose Q loads while
this item finishes), and the float32 state read by TMA into shared memory by the producer
(released once in registers, so the next item's state loads under this item's compute).
Measured reason it exists: in the library kernel each program reads and writes its 64 KB of
state unoverlapped, about a fifth of a Qwen step (estimate, not measured by ablation).
"""
import torch
from triton.experimental import gluon
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, warpgroup_mma, warpgroup_mma_wait)

from ringsp_kernels.cuda.hopper import LOG2E, MAXNREG, _layout, keys_ok, rows_ok
from ringsp_kernels.cuda.hopper_step import _kv_tile, _scores, _store_state, _tma_load



@gluon.jit
def _tile_offsets(row0, Sq, stride_as, stride_ls, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                  o_layout: gl.constexpr):
    rows = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
    dcols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    return gl.expand_dims(rows * stride_as, 1) + gl.expand_dims(dcols, 0), rows * stride_ls, rows < Sq


@gluon.jit
def _load_state(st_buf, st_ready, st_empty, ph, AccIn, Lse, acc_base, lse_base, stride_as, stride_ls, row0,
                Sq, HAS_STATE: gl.constexpr, STATE_TMA: gl.constexpr, ROWS: gl.constexpr,
                HEAD_DIM: gl.constexpr, o_layout: gl.constexpr, row_l: gl.constexpr):
    """The softmax's start: the running state as (max, sum, numerator) = (lse, 1, acc), or empty.
    AccIn is Acc passed a second time, so that the compiler does not keep the load's addresses
    alive for the store at the end."""
    if HAS_STATE:
        acc_off, lse_off, row_ok = _tile_offsets(row0, Sq, stride_as, stride_ls, ROWS, HEAD_DIM, o_layout)
        m_o = gl.load(Lse + lse_base + lse_off, mask=row_ok, other=float("-inf")) * 1.4426950408889634
        seen = gl.expand_dims(m_o > float("-inf"), 1)
        if STATE_TMA:
            mbarrier.wait(st_ready, ph)
            acc = st_buf.load(o_layout)
            fence_async_shared()  # this read before the producer's next TMA write of the buffer
            mbarrier.arrive(st_empty, count=1)
            acc = gl.where(seen, acc, 0.0)  # rows that saw no key (or lie past Sq) hold nothing
        else:  # rows that saw no key are not read: a ring's first step reads no state
            acc = gl.load(AccIn + acc_base + acc_off, mask=seen & gl.expand_dims(row_ok, 1), other=0.0)
        m_i = gl.convert_layout(m_o, row_l)
        l_i = gl.where(m_i > float("-inf"), 1.0, 0.0)
    else:
        acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
        m_i = gl.full([ROWS], float("-inf"), gl.float32, row_l)
        l_i = gl.zeros([ROWS], gl.float32, row_l)
    return m_i, l_i, acc


@gluon.jit
def _item(idx, n_m, H, BLOCK_M: gl.constexpr):
    """(batch, head, first row) of work item idx, head-major: programs running together share a
    head's K/V in L2."""
    bh = idx // n_m
    return bh // H, bh % H, (idx % n_m) * BLOCK_M


@gluon.jit
def _producer(q_desc, k_desc, v_desc, s_desc, q_bufs, k_bufs, v_bufs, st_bufs,
              q_ready, q_empty, st_ready, st_empty, k_ready, k_empty, v_ready, v_empty,
              Sq, H, n_m, n_items, kv_len, STATE_TMA: gl.constexpr, BLOCK_M: gl.constexpr,
              BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    ROWS: gl.constexpr = BLOCK_M // 2
    n_tiles = gl.cdiv(kv_len, BLOCK_N)
    it = 0
    i = 0
    for idx in range(gl.program_id(0), n_items, gl.num_programs(0)):
        b, h, row0 = _item(idx, n_m, H, BLOCK_M)
        col = h * HEAD_DIM
        ph = i & 1
        if STATE_TMA:  # released early by the consumers: this loads during the previous item
            mbarrier.wait(st_empty, ph ^ 1)
            mbarrier.expect(st_ready, 2 * s_desc.block_type.nbytes)
            for c in gl.static_range(2):
                _tma_load(s_desc, [b * Sq + row0 + c * ROWS, col], st_ready, st_bufs.index(c))
        mbarrier.wait(q_empty, ph ^ 1)
        mbarrier.expect(q_ready, 2 * q_desc.block_type.nbytes)
        for c in gl.static_range(2):
            _tma_load(q_desc, [b * Sq + row0 + c * ROWS, col], q_ready, q_bufs.index(c))
        for j in range(n_tiles):
            s = it % STAGES
            ph_kv = (it // STAGES) & 1
            mbarrier.wait(k_empty.index(s), ph_kv ^ 1)
            mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
            _tma_load(k_desc, [b, j * BLOCK_N, col], k_ready.index(s), k_bufs.index(s))
            mbarrier.wait(v_empty.index(s), ph_kv ^ 1)
            mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
            _tma_load(v_desc, [b, j * BLOCK_N, col], v_ready.index(s), v_bufs.index(s))
            it += 1
        i += 1


@gluon.jit
def _consumer(q_bufs, k_bufs, v_bufs, st_bufs, q_ready, q_empty, st_ready, st_empty,
              k_ready, k_empty, v_ready, v_empty, turn, AccIn, Acc, Lse,
              stride_ab, stride_as, stride_ah, stride_lb, stride_lh, stride_ls,
              Sq, H, n_m, n_items, kv_len, qk_scale,
              HAS_STATE: gl.constexpr, STATE_TMA: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              HEAD_DIM: gl.constexpr, HALF: gl.constexpr):
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    ROWS: gl.constexpr = BLOCK_M // 2
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    orow_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    q_smem = q_bufs.index(HALF)
    n_tiles = gl.cdiv(kv_len, BLOCK_N)
    n_full = kv_len // BLOCK_N
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    it = 0  # K/V tiles consumed so far (the ring's slot and phase)
    g = 0   # turns taken so far (the ping-pong's phase)
    i = 0
    for idx in range(gl.program_id(0), n_items, gl.num_programs(0)):
        b, h, row0 = _item(idx, n_m, H, BLOCK_M)
        row0 = row0 + HALF * ROWS
        acc_base = b * stride_ab + h * stride_ah
        lse_base = b * stride_lb + h * stride_lh
        ph = i & 1
        m_i, l_i, acc = _load_state(st_bufs.index(HALF), st_ready, st_empty, ph, AccIn, Lse, acc_base, lse_base,
                                    stride_as, stride_ls, row0, Sq, HAS_STATE, STATE_TMA, ROWS, HEAD_DIM,
                                    o_layout, row_l)
        mbarrier.wait(q_ready, ph)

        s = it % STAGES
        mbarrier.wait(k_ready.index(s), (it // STAGES) & 1)
        s_tok = warpgroup_mma(q_smem, _kv_tile(k_bufs, s, BLOCK_N, HEAD_DIM).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
        s_acc = warpgroup_mma_wait(0, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(s), count=1)
        if n_full > 0:
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, False, True, 0.0)
        else:
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, True, True, 0.0)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)

        for j in range(1, n_tiles):
            s = (it + j) % STAGES
            sp = (it + j - 1) % STAGES
            mbarrier.wait(k_ready.index(s), ((it + j) // STAGES) & 1)
            mbarrier.wait(v_ready.index(sp), ((it + j - 1) // STAGES) & 1)
            p_op = gl.convert_layout(p.to(v_bufs.dtype), p_layout)
            mbarrier.wait(turn.index(HALF), g & 1)
            s_tok = warpgroup_mma(q_smem, _kv_tile(k_bufs, s, BLOCK_N, HEAD_DIM).permute((1, 0)), s_zero,
                                  use_acc=False, is_async=True)
            o_tok = warpgroup_mma(p_op, _kv_tile(v_bufs, sp, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(1 - HALF), count=1)
            g += 1
            s_acc = warpgroup_mma_wait(1, deps=(s_tok,))
            mbarrier.arrive(k_empty.index(s), count=1)
            if j < n_full:
                p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, j * BLOCK_N, kv_len, s_layout, BLOCK_N,
                                             False, True, 0.0)
            else:
                p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, j * BLOCK_N, kv_len, s_layout, BLOCK_N,
                                             True, True, 0.0)
            acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
            mbarrier.arrive(v_empty.index(sp), count=1)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)
        mbarrier.arrive(q_empty, count=1)  # the last Q.K^T is done: the next item's Q may come in

        last = (it + n_tiles - 1) % STAGES
        mbarrier.wait(v_ready.index(last), ((it + n_tiles - 1) // STAGES) & 1)
        p_op = gl.convert_layout(p.to(v_bufs.dtype), p_layout)
        o_tok = warpgroup_mma(p_op, _kv_tile(v_bufs, last, BLOCK_N, HEAD_DIM), acc, is_async=True)
        acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
        mbarrier.arrive(v_empty.index(last), count=1)
        it += n_tiles
        _store_state(Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, acc, m_i, l_i, None, None,
                     0.0, ROWS, HEAD_DIM, o_layout)
        i += 1


# every integer argument is runtime data: the launcher's cache key then fixes the whole compile
@gluon.jit(do_not_specialize=["kv_len", "Sq", "H", "n_m", "n_items", "stride_ab", "stride_as", "stride_ah",
                              "stride_lb", "stride_lh", "stride_ls"])
def ring_step_kernel(q_desc, k_desc, v_desc, s_desc, AccIn, Acc, Lse,
                     qk_scale, kv_len, Sq, H, n_m, n_items,
                     stride_ab, stride_as, stride_ah, stride_lb, stride_lh, stride_ls,
                     HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     STAGES: gl.constexpr, HAS_STATE: gl.constexpr, STATE_TMA: gl.constexpr):
    """Launch with num_warps=4 (the first consumer) and maxnreg=168 (the consumers get 240 registers
    each, the producer 24). q_desc: [B*Sq, H*D] tiles of BLOCK_M // 2 rows; k_desc / v_desc:
    [B, kv_len, H*D] tiles of [1, BLOCK_N, D]; s_desc (STATE_TMA): Acc as [B*Sq, H*D] float32 tiles
    of BLOCK_M // 2 rows. Acc / Lse: the state (HAS_STATE) or the output in q's dtype and its lse."""
    ROWS: gl.constexpr = BLOCK_M // 2
    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [2, ROWS, HEAD_DIM], q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    if STATE_TMA:
        st_bufs = gl.allocate_shared_memory(gl.float32, [2, ROWS, HEAD_DIM], s_desc.layout)
    else:
        st_bufs = q_bufs  # not read
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    st_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    st_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_ready, count=1)
    mbarrier.init(q_empty, count=2)
    mbarrier.init(st_ready, count=1)
    mbarrier.init(st_empty, count=2)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2)
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    mbarrier.arrive(turn.index(0), count=1)  # the first consumer takes the first turn
    gl.warp_specialize([
        (_consumer, (q_bufs, k_bufs, v_bufs, st_bufs, q_ready, q_empty, st_ready, st_empty,
                     k_ready, k_empty, v_ready, v_empty, turn, AccIn, Acc, Lse,
                     stride_ab, stride_as, stride_ah, stride_lb, stride_lh, stride_ls,
                     Sq, H, n_m, n_items, kv_len, qk_scale, HAS_STATE, STATE_TMA, BLOCK_M, BLOCK_N, HEAD_DIM, 0)),
        (_consumer, (q_bufs, k_bufs, v_bufs, st_bufs, q_ready, q_empty, st_ready, st_empty,
                     k_ready, k_empty, v_ready, v_empty, turn, AccIn, Acc, Lse,
                     stride_ab, stride_as, stride_ah, stride_lb, stride_lh, stride_ls,
                     Sq, H, n_m, n_items, kv_len, qk_scale, HAS_STATE, STATE_TMA, BLOCK_M, BLOCK_N, HEAD_DIM, 1)),
        (_producer, (q_desc, k_desc, v_desc, s_desc, q_bufs, k_bufs, v_bufs, st_bufs,
                     q_ready, q_empty, st_ready, st_empty, k_ready, k_empty, v_ready, v_empty,
                     Sq, H, n_m, n_items, kv_len, STATE_TMA, BLOCK_M, BLOCK_N, HEAD_DIM)),
    ], [4, 1], [240, 24])


_SMS = {}  # device index -> multiprocessor count


def launch(q, k, v, acc, lse, scale, kv_len, has_state, *, persistent=True, state_tma=True, block_n=128,
           stages=2):
    """ringsp_kernels.cuda.hopper.launch's contract for this candidate (BLOCK_M = 128)."""
    B, Sq, H, D = q.shape
    q = q if rows_ok(q) else q.contiguous()
    k = k if keys_ok(k) else k.contiguous()
    v = v if keys_ok(v) else v.contiguous()
    state_tma = has_state and state_tma and rows_ok(acc)
    qd = TensorDescriptor(q, [B * Sq, H * D], [q.stride(1), 1], [64, D], _layout(q.dtype, (64, D)))
    kv_lay = _layout(k.dtype, (1, block_n, D))
    kd = TensorDescriptor(k, [B, kv_len, H * D], [k.stride(0), k.stride(1), 1], [1, block_n, D], kv_lay)
    vd = TensorDescriptor(v, [B, kv_len, H * D], [v.stride(0), v.stride(1), 1], [1, block_n, D], kv_lay)
    sd = TensorDescriptor(acc, [B * Sq, H * D], [acc.stride(1), 1], [64, D],
                          _layout(torch.float32, (64, D))) if state_tma else None
    dev = q.device.index if q.device.index is not None else torch.cuda.current_device()
    if dev not in _SMS:
        _SMS[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    n_m = -(-Sq // 128)
    n_items = n_m * B * H
    sa, sl = acc.stride(), lse.stride()
    with torch.cuda.device(q.device):
        ring_step_kernel[(min(n_items, _SMS[dev]) if persistent else n_items,)](
            qd, kd, vd, sd, acc, acc, lse, scale * LOG2E, kv_len, Sq, H, n_m, n_items,
            sa[0], sa[1], sa[2], sl[0], sl[1], sl[2], HEAD_DIM=D, BLOCK_M=128, BLOCK_N=block_n, STAGES=stages,
            HAS_STATE=has_state, STATE_TMA=state_tma, num_warps=4, maxnreg=MAXNREG)
