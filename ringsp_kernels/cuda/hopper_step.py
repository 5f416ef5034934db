"""ringsp's own Hopper (sm90) ring step, in Triton's Gluon dialect.

One launch attends a query block to one KV block and merges the result into the running
online-softmax state inside the kernel (attn_step_), or starts from the empty state and writes
q's dtype (attn_fwd). Per program (a CTA of 9 warps):

  producer warp      TMA loads: the Q tile and (STATE_TMA) the float32 state tile of each work
                     item, then its K and V tiles into a STAGES-deep shared-memory ring, each
                     slot guarded by a ready and an empty mbarrier.
  2 consumer         each owns BLOCK_M // 2 query rows: S = Q.K^T (wgmma, Q and K from shared
  warpgroups         memory), online softmax in the log2 domain (exp2 with the scale folded in),
                     O += P.V (wgmma, P from registers). Q.K^T of tile j is issued together with
                     P.V of tile j-1, so the softmax of tile j runs under the tensor cores; the
                     two warpgroups take turns issuing (a ping-pong through two mbarriers), so one
                     warpgroup's softmax hides the other's GEMMs.

Resume: the state (acc = normalised numerator, lse) is the softmax's start (max, sum, numerator)
= (lse, 1, acc) and is written back at the end: no partial output, no merge pass. Keys past
kv_len are zero-filled by the 3-D K/V descriptors ([B, kv_len, H*D]) and masked in the last tile
only, so padding (even NaN) never reaches the result.

The grid is either one program per work item (a BLOCK_M-row query tile of one head) or
persistent (one program per SM walking items head-major); with a persistent grid the producer
runs ahead into the next item, whose Q and state load while this item finishes.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)

# Triton 3.9 renamed the TMA load (3.6: async_copy_global_to_shared)
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared


@gluon.jit
def _scores(s_acc, m_i, l_i, qk_scale, col0, kv_len, s_layout: gl.constexpr, BLOCK_N: gl.constexpr,
            MASK: gl.constexpr):
    """Online softmax of one tile in the log2 domain: (p, new max, new sum, rescale factor)."""
    if MASK:
        cols = col0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        s_acc = gl.where(gl.expand_dims(cols < kv_len, 0), s_acc, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s_acc, axis=1) * qk_scale)
    p = gl.exp2(s_acc * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, l_i, alpha


@gluon.jit
def _kv_tile(bufs, s, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    return bufs.index(s).reshape([BLOCK_N, HEAD_DIM])


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
def _store_state(Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, acc, m_i, l_i,
                 ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, o_layout: gl.constexpr):
    """Writes the normalised numerator (in Acc's dtype) and the log-sum-exp (natural log)."""
    orow_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    has = l_i > 0.0
    l_safe = gl.where(has, l_i, 1.0)
    lse = gl.where(has, (m_i + gl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    acc = acc / gl.expand_dims(gl.convert_layout(l_safe, orow_l), 1)
    acc_off, lse_off, row_ok = _tile_offsets(row0, Sq, stride_as, stride_ls, ROWS, HEAD_DIM, o_layout)
    gl.store(Lse + lse_base + lse_off, gl.convert_layout(lse, orow_l), mask=row_ok)
    gl.store(Acc + acc_base + acc_off, acc.to(Acc.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))


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
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, False)
        else:
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, True)
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
                                             False)
            else:
                p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, j * BLOCK_N, kv_len, s_layout, BLOCK_N,
                                             True)
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
        _store_state(Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, acc, m_i, l_i,
                     ROWS, HEAD_DIM, o_layout)
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
