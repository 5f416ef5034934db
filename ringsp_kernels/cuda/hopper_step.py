"""ringsp's own Hopper (sm90) ring step, in Triton's Gluon dialect.

One launch attends a [BLOCK_M, D] query tile of one head to one KV block and merges the result
into the running online-softmax state inside the kernel (attn_step_), or starts from the empty
state and writes q's dtype (attn_fwd). Per program (9 warps, launched with num_warps=4 and
maxnreg=168):

  producer warp      TMA loads of K and V tiles into a STAGES-deep shared-memory ring, each
                     slot guarded by a ready and an empty mbarrier.
  2 consumer         each owns BLOCK_M // 2 query rows (its Q tile loaded by TMA once):
  warpgroups         S = Q.K^T (wgmma, Q and K from shared memory), online softmax in the log2
                     domain (exp2 with the scale folded in), O += P.V (wgmma, P from registers).
                     Q.K^T of tile j is issued together with P.V of tile j-1, so the softmax of
                     tile j runs under the tensor cores; the two warpgroups take turns issuing
                     (a ping-pong through two mbarriers), so one's softmax hides the other's GEMMs.
                     Registers: 240 per consumer thread, 24 for the producer.

Resume: the state (acc = normalised numerator, lse) is the softmax's start (max, sum, numerator)
= (lse, 1, acc) and is written back at the end: no partial output, no merge pass. Keys past
kv_len are zero-filled by the 3-D K/V descriptors ([B, kv_len, H*D]) and masked in the last tile
only, so padding (even NaN) never reaches the result.

Precisions (Q8, one kernel): the operand types of both products are the descriptors' dtypes.
NATIVE: bf16/fp16 Q, K, V. INT8 and FP8: fp8_reference.py's schemes, Q and K quantised by
triton_fp8's passes (smoothed K, 2-D [B*H*keys, D] descriptors padded per head); Q.K^T on int8
or e4m3 wgmma, dequantised per row (and per key for int8) before the softmax. INT8 keeps P.V
in V's 16-bit dtype; FP8 runs it on e4m3 wgmma with P in units of 2^-P_LOG2_UNIT and V
transposed per channel scale, each tile's product added to the float32 numerator.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

from ..fp8_reference import P_LOG2_UNIT as _P_LOG2

# Triton 3.9 renamed the TMA load (3.6: async_copy_global_to_shared)
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared

# the kernel's precision (Q8): 16-bit operands, or fp8_reference.py's "int8" / "fp8" scheme
NATIVE = gl.constexpr(0)
INT8 = gl.constexpr(1)
FP8 = gl.constexpr(2)
P_LOG2_UNIT = gl.constexpr(_P_LOG2)          # fp8 P is stored as p x 2^P_LOG2_UNIT
FP8_P_UNIT = gl.constexpr(2.0 ** _P_LOG2)


@gluon.jit
def _producer(k_desc, v_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, b, col, n_tiles, k_row0, v_row0,
              BLOCK_N: gl.constexpr, Q8: gl.constexpr):
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    for j in range(n_tiles):
        s = j % STAGES
        ph = (j // STAGES) & 1
        mbarrier.wait(k_empty.index(s), ph ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        if Q8 != NATIVE:  # quantised K: [B*H*k_rows, D], zero-padded past kv_len within each head
            _tma_load(k_desc, [k_row0 + j * BLOCK_N, 0], k_ready.index(s), k_bufs.index(s))
        else:
            _tma_load(k_desc, [b, j * BLOCK_N, col], k_ready.index(s), k_bufs.index(s))
        mbarrier.wait(v_empty.index(s), ph ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        if Q8 == FP8:  # e4m3 V transposed: [B*H*D, k_rows], keys contiguous (fp8 wgmma's B is K-major)
            _tma_load(v_desc, [v_row0, j * BLOCK_N], v_ready.index(s), v_bufs.index(s))
        else:
            _tma_load(v_desc, [b, j * BLOCK_N, col], v_ready.index(s), v_bufs.index(s))


@gluon.jit
def _scores(s_acc, m_i, l_i, qk_scale, col0, kv_len, s_layout: gl.constexpr, BLOCK_N: gl.constexpr,
            MASK: gl.constexpr, POS_SCALE: gl.constexpr, P_OFF: gl.constexpr):
    """Online softmax of one tile in the log2 domain: (p, new max, new sum, rescale factor);
    p in units of 2^-P_OFF (fp8's P grid: its row max lands at e4m3's top; 0 otherwise)."""
    if not POS_SCALE:  # scale <= 0: the max of the scaled scores, masked after scaling
        s_acc = s_acc * qk_scale
        qk_scale = 1.0
    if MASK:
        cols = col0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        s_acc = gl.where(gl.expand_dims(cols < kv_len, 0), s_acc, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s_acc, axis=1) * qk_scale)
    if P_OFF != 0.0:
        p = gl.exp2(s_acc * qk_scale - gl.expand_dims(m_new - P_OFF, 1))
    else:
        p = gl.exp2(s_acc * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, l_i, alpha


@gluon.jit
def _kv_tile(bufs, s, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    return bufs.index(s).reshape([BLOCK_N, HEAD_DIM])


@gluon.jit
def _v_tile(bufs, s, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, Q8: gl.constexpr):
    """P.V's B operand [BLOCK_N, D]: fp8 V's tile is stored [D, BLOCK_N] (keys contiguous)."""
    if Q8 == FP8:
        return bufs.index(s).permute((1, 0))
    else:
        return _kv_tile(bufs, s, BLOCK_N, HEAD_DIM)


@gluon.jit
def _p_operand(p, v_bufs, p_smem, p_layout: gl.constexpr, Q8: gl.constexpr):
    """P as P.V's A operand: registers in V's 16-bit dtype, or e4m3 through shared memory
    (wgmma's wait cannot keep an 8-bit register operand alive)."""
    if Q8 == FP8:
        p_smem.store(p.to(v_bufs.dtype))
        fence_async_shared()
        return p_smem
    else:
        return gl.convert_layout(p.to(v_bufs.dtype), p_layout)


@gluon.jit
def _pv(p_op, v_tile, acc, o_zero, Q8: gl.constexpr):
    """Issues P.V of one tile: into acc itself (16-bit operands), or for fp8 a fresh product
    added to acc in float32 afterwards (_pv_done): Hopper's fp8 MMA accumulates with ~14-bit
    precision, fine over one tile's keys, not over a whole block's."""
    if Q8 == FP8:
        o_tok = warpgroup_mma(p_op, v_tile, o_zero, use_acc=False, is_async=True)
    else:
        o_tok = warpgroup_mma(p_op, v_tile, acc, is_async=True)
    return o_tok


@gluon.jit
def _pv_done(o_tok, p_op, acc, Q8: gl.constexpr):
    if Q8 == FP8:
        pv = warpgroup_mma_wait(0, deps=(o_tok,))
        acc = acc + pv
    else:
        acc, p_op = warpgroup_mma_wait(0, deps=(o_tok, p_op))
    return acc


@gluon.jit
def _tile_offsets(row0, Sq, stride_as, stride_ls, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr,
                  o_layout: gl.constexpr):
    rows = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
    dcols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    return rows, gl.expand_dims(rows * stride_as, 1) + gl.expand_dims(dcols, 0), rows * stride_ls, rows < Sq


@gluon.jit
def _load_state(AccIn, LseIn, acc_base, lse_base, stride_as, stride_ls, row0, Sq, shift, sv, HAS_STATE: gl.constexpr,
                P_UNIT: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, o_layout: gl.constexpr,
                row_l: gl.constexpr):
    """The softmax's start: the running state as (max, sum, numerator) = (lse, 1, acc), or empty,
    in the units P.V accumulates in (fp8: sum P_UNIT, numerator acc x P_UNIT / V's channel scale sv).
    `shift` (None, or per row in row_l): the score shift of K's smoothing, taken off the max."""
    if HAS_STATE:
        rows, acc_off, lse_off, row_ok = _tile_offsets(row0, Sq, stride_as, stride_ls, BLOCK_M, HEAD_DIM, o_layout)
        m_o = gl.load(LseIn + lse_base + lse_off, mask=row_ok, other=float("-inf")) * 1.4426950408889634
        seen = m_o > float("-inf")
        # rows that have seen no key hold nothing: a ring's first step reads no state
        acc = gl.load(AccIn + acc_base + acc_off, mask=gl.expand_dims(row_ok & seen, 1), other=0.0)
        if sv is not None:
            acc = acc * gl.expand_dims(P_UNIT / sv, 0)
        m_i = gl.convert_layout(m_o, row_l)
        if shift is not None:
            m_i = m_i - shift
        l_i = gl.where(m_i > float("-inf"), P_UNIT, 0.0)
    else:
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
        m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, row_l)
        l_i = gl.zeros([BLOCK_M], gl.float32, row_l)
    return m_i, l_i, acc


@gluon.jit
def _store_state(Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, acc, m_i, l_i, shift, sv,
                 P_OFF: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, o_layout: gl.constexpr):
    """Writes the normalised numerator (Acc's dtype) and the log-sum-exp (natural log)."""
    orow_l: gl.constexpr = gl.SliceLayout(1, o_layout)
    if shift is not None:
        m_i = m_i + shift
    if P_OFF != 0.0:
        m_i = m_i - P_OFF
    has = l_i > 0.0
    l_safe = gl.where(has, l_i, 1.0)
    lse = gl.where(has, (m_i + gl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    acc = acc / gl.expand_dims(gl.convert_layout(l_safe, orow_l), 1)
    if sv is not None:
        acc = acc * gl.expand_dims(sv, 0)
    rows, acc_off, lse_off, row_ok = _tile_offsets(row0, Sq, stride_as, stride_ls, BLOCK_M, HEAD_DIM, o_layout)
    gl.store(Lse + lse_base + lse_off, gl.convert_layout(lse, orow_l), mask=row_ok)
    gl.store(Acc + acc_base + acc_off, acc.to(Acc.dtype.element_ty), mask=gl.expand_dims(row_ok, 1))


@gluon.jit
def _dequant(s_acc, row_a, KScale, ks_base, col0, s_layout: gl.constexpr, BLOCK_N: gl.constexpr, Q8: gl.constexpr):
    """8-bit Q.K^T of one tile as log2-domain scores: times the row's (Q scale x qk_scale, and
    for fp8 K's block scale) and for int8 each key's K scale (KScale is padded like K, so the
    last tile reads in bounds)."""
    if Q8 == INT8:
        cols = col0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        ksc = gl.load(KScale + ks_base + cols)
        return s_acc.to(gl.float32) * gl.expand_dims(row_a, 1) * gl.expand_dims(ksc, 0)
    else:
        return s_acc * gl.expand_dims(row_a, 1)


@gluon.jit
def _consumer(q_bufs, k_bufs, v_bufs, p_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn,
              AccIn, LseIn, Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, kv_len, qk_scale,
              QRow, QShift, KScale, ks_base, VScale, vs_base,
              HAS_STATE: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              HALF: gl.constexpr, Q8: gl.constexpr, POS_SCALE: gl.constexpr):
    """One consumer warpgroup: its BLOCK_M query rows over every K/V tile. Q8 (the 8-bit
    precisions, fp8_reference.py's schemes): Q and K are 8-bit (Q per row; K per key for int8,
    per block for fp8, after smoothing; QRow = Q scale x qk_scale (x K's block scale for fp8),
    QShift = q.mu x qk_scale per row, KScale per key for int8), Q.K^T in int32 or float32;
    P.V in V's dtype: q's for int8, e4m3 for fp8 (P in units of 2^-P_LOG2_UNIT, V per channel
    over VScale)."""
    STAGES: gl.constexpr = k_bufs.type.shape[0]
    q_smem = q_bufs.index(HALF)
    row0 = row0 + HALF * BLOCK_M
    K_INSTR: gl.constexpr = 16 if Q8 == NATIVE else 32  # wgmma's K: 32 bytes
    PV_K: gl.constexpr = 32 if Q8 == FP8 else 16
    P_OFF: gl.constexpr = P_LOG2_UNIT if Q8 == FP8 else 0.0
    P_UNIT: gl.constexpr = FP8_P_UNIT if Q8 == FP8 else 1.0
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, K_INSTR])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, PV_K])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=PV_K // 8)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    orow_l: gl.constexpr = gl.SliceLayout(1, o_layout)

    shift = None
    sv = None
    o_zero = None
    p_smem = None
    if Q8 != NATIVE:
        q_rows = row0 + gl.arange(0, BLOCK_M, layout=row_l)
        q_off = lse_base + q_rows * stride_ls
        row_a = gl.load(QRow + q_off, mask=q_rows < Sq, other=0.0)
        shift = gl.load(QShift + q_off, mask=q_rows < Sq, other=0.0)
        qk_scale = 1.0  # in row_a
    if Q8 == INT8:
        s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.int32, s_layout)
    else:
        s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    if Q8 == FP8:
        p_smem = p_bufs.index(HALF)
        sv = gl.load(VScale + vs_base + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout)))
        o_zero = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    m_i, l_i, acc = _load_state(AccIn, LseIn, acc_base, lse_base, stride_as, stride_ls, row0, Sq, shift, sv,
                                HAS_STATE, P_UNIT, BLOCK_M, HEAD_DIM, o_layout, row_l)

    n_tiles = gl.cdiv(kv_len, BLOCK_N)
    n_full = kv_len // BLOCK_N
    mbarrier.wait(q_bar, 0)

    # tile 0
    mbarrier.wait(k_ready.index(0), 0)
    s_tok = warpgroup_mma(q_smem, _kv_tile(k_bufs, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), s_zero,
                          use_acc=False, is_async=True)
    s_acc = warpgroup_mma_wait(0, deps=(s_tok,))
    mbarrier.arrive(k_empty.index(0), count=1)
    if Q8 != NATIVE:
        s_acc = _dequant(s_acc, row_a, KScale, ks_base, 0, s_layout, BLOCK_N, Q8)
    if n_full > 0:
        p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, False, POS_SCALE, P_OFF)
    else:
        p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, 0, kv_len, s_layout, BLOCK_N, True, POS_SCALE, P_OFF)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)

    # tiles 1 .. n-1: QK^T of tile j runs while P.V of tile j-1 is issued, softmax of j under it
    for j in range(1, n_tiles):
        s = j % STAGES
        ph = (j // STAGES) & 1
        sp = (j - 1) % STAGES
        php = ((j - 1) // STAGES) & 1
        mbarrier.wait(k_ready.index(s), ph)
        mbarrier.wait(v_ready.index(sp), php)
        p_op = _p_operand(p, v_bufs, p_smem, p_layout, Q8)
        # the two warpgroups take turns on the tensor cores: one's softmax hides the other's GEMMs
        mbarrier.wait(turn.index(HALF), (j - 1) & 1)
        s_tok = warpgroup_mma(q_smem, _kv_tile(k_bufs, s, BLOCK_N, HEAD_DIM).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
        o_tok = _pv(p_op, _v_tile(v_bufs, sp, BLOCK_N, HEAD_DIM, Q8), acc, o_zero, Q8)
        mbarrier.arrive(turn.index(1 - HALF), count=1)
        s_acc = warpgroup_mma_wait(1, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(s), count=1)
        if Q8 != NATIVE:
            s_acc = _dequant(s_acc, row_a, KScale, ks_base, j * BLOCK_N, s_layout, BLOCK_N, Q8)
        if j < n_full:
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, j * BLOCK_N, kv_len, s_layout, BLOCK_N, False,
                                         POS_SCALE, P_OFF)
        else:
            p, m_i, l_i, alpha = _scores(s_acc, m_i, l_i, qk_scale, j * BLOCK_N, kv_len, s_layout, BLOCK_N, True,
                                         POS_SCALE, P_OFF)
        acc = _pv_done(o_tok, p_op, acc, Q8)
        mbarrier.arrive(v_empty.index(sp), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, orow_l), 1)

    last = (n_tiles - 1) % STAGES
    mbarrier.wait(v_ready.index(last), ((n_tiles - 1) // STAGES) & 1)
    p_op = _p_operand(p, v_bufs, p_smem, p_layout, Q8)
    o_tok = _pv(p_op, _v_tile(v_bufs, last, BLOCK_N, HEAD_DIM, Q8), acc, o_zero, Q8)
    acc = _pv_done(o_tok, p_op, acc, Q8)
    mbarrier.arrive(v_empty.index(last), count=1)

    _store_state(Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, acc, m_i, l_i, shift, sv,
                 P_OFF, BLOCK_M, HEAD_DIM, o_layout)


@gluon.jit
def ring_step_kernel(q_desc, k_desc, v_desc, AccIn, LseIn, Acc, Lse,
                     qk_scale, kv_len, Sq, H,
                     stride_ab, stride_as, stride_ah, stride_lb, stride_lh, stride_ls,
                     QRow, QShift, KScale, VScale, k_rows,
                     HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     STAGES: gl.constexpr, HAS_STATE: gl.constexpr, Q8: gl.constexpr, POS_SCALE: gl.constexpr):
    """Program (query tile, batch * head). q_desc: [B*Sq, H*D] tiles of BLOCK_M // 2 rows;
    k_desc / v_desc: [B, kv_len, H*D] tiles of [1, BLOCK_N, D]. Acc / Lse: the state (HAS_STATE,
    float32; AccIn / LseIn the same tensors, passed twice so that the compiler does not keep the
    load's addresses alive for the store) or the output in q's dtype and its lse.
    Q8 = INT8 / FP8 (the 8-bit precisions): q_desc is 8-bit Q, k_desc 8-bit K as [B*H*k_rows, D]
    tiles of [BLOCK_N, D], QRow / QShift [B, H, Sq] with Lse's strides, KScale [B*H, k_rows]
    (int8); for FP8 v_desc is e4m3 V transposed, [B*H*D, k_rows] tiles of [D, BLOCK_N], and
    VScale [B*H, D]; what a precision does not read is None. POS_SCALE: qk_scale > 0."""
    CONSUMERS: gl.constexpr = 2
    ROWS: gl.constexpr = BLOCK_M // CONSUMERS
    pid_m = gl.program_id(0)
    pid_bh = gl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    row0 = pid_m * BLOCK_M
    col = h * HEAD_DIM

    q_bufs = gl.allocate_shared_memory(q_desc.dtype, [CONSUMERS, ROWS, HEAD_DIM], q_desc.layout)
    k_bufs = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    p_bufs = q_bufs  # a placeholder (warp_specialize takes no None): read only for FP8
    if Q8 == FP8:  # each consumer's e4m3 P tile, P.V's A operand
        p_bufs = gl.allocate_shared_memory(v_desc.dtype, [CONSUMERS, ROWS, BLOCK_N],
                                           gl.NVMMASharedLayout(swizzle_byte_width=min(BLOCK_N, 128),
                                                                element_bitwidth=8, rank=2))
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=CONSUMERS)
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    mbarrier.arrive(turn.index(0), count=1)  # the first consumer has the first turn
    mbarrier.expect(q_bar, CONSUMERS * q_desc.block_type.nbytes)
    for i in gl.static_range(CONSUMERS):
        _tma_load(q_desc, [b * Sq + row0 + i * ROWS, col], q_bar, q_bufs.index(i))

    n_tiles = gl.cdiv(kv_len, BLOCK_N)
    acc_base = b * stride_ab + h * stride_ah
    lse_base = b * stride_lb + h * stride_lh
    ks_base = 0
    if Q8 != NATIVE:
        ks_base = pid_bh * k_rows
    vs_base = pid_bh * HEAD_DIM
    gl.warp_specialize([
        (_consumer, (q_bufs, k_bufs, v_bufs, p_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn,
                     AccIn, LseIn, Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, kv_len,
                     qk_scale, QRow, QShift, KScale, ks_base, VScale, vs_base, HAS_STATE, ROWS, BLOCK_N, HEAD_DIM,
                     0, Q8, POS_SCALE)),
        (_consumer, (q_bufs, k_bufs, v_bufs, p_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn,
                     AccIn, LseIn, Acc, Lse, acc_base, lse_base, stride_as, stride_ls, row0, Sq, kv_len,
                     qk_scale, QRow, QShift, KScale, ks_base, VScale, vs_base, HAS_STATE, ROWS, BLOCK_N, HEAD_DIM,
                     1, Q8, POS_SCALE)),
        (_producer, (k_desc, v_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, b, col, n_tiles,
                     ks_base, vs_base, BLOCK_N, Q8)),
    ], [4, 1], [240, 24])
