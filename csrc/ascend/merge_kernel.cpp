// AscendC kernel: merges a partial attention result into the running online-softmax state
// in one pass over GM, row by row:
//   acc <- w_acc * acc + w_blk * out_blk,   lse <- log(exp(lse) + exp(lse_blk)).
// A row neither side has seen comes out with lse exactly NEG_BIG (not -inf: the result
// never depends on how ln(0) or x/0 behave in the core's INF/NAN or saturation mode); the
// host turns NEG_BIG back into -inf when it copies lse back.
//
// Arithmetic: ringsp_kernels/npu/merge.py:merge_weights, step for step (the CPU tests check
// that formulation against a float64 reference; keep the two in lockstep). -inf is clamped
// to a finite NEG_BIG and "has this side seen a key" becomes a 0/1 factor, because the
// vector unit has no cheap per-element branch and inf - inf would give NaN.
//
// Operands (prepared by the host, see merge_tiling.h): acc [rows, D] float32 and out_blk
// [rows, D] (f32/f16/bf16), contiguous, D * sizeof(elem) a multiple of 32 bytes; lse and
// lse_blk float32 vectors in the same row order, padded with -inf to RINGSP_ROW_ALIGN.
// acc and lse are updated in place; each core owns a disjoint row range.
//
// Pipeline per tile: CopyIn (MTE2, GM->UB) -> Compute (V; S reads the per-row weights) ->
// CopyOut (MTE3, UB->GM). Every queue holds RINGSP_BUFFER_NUM buffers, so tile t+1's loads
// overlap tile t's compute and stores. PIPE_V dependencies are left to the compiler's
// automatic synchronisation (on by default for kernel-launch builds); the one V->S hand-off
// is synchronised explicitly.
#include "kernel_operator.h"
#include "merge_tiling.h"

namespace {

constexpr float kNegBig = -1e30f;  // finite stand-in for -inf
constexpr float kBig = 1e30f;      // -kNegBig: lse + kBig is 0 exactly at kNegBig

template <typename T, bool CAST>
class MergeRows {
 public:
  __aicore__ inline MergeRows() {}

  __aicore__ inline void Init(GM_ADDR acc, GM_ADDR lse, GM_ADDR out, GM_ADDR lseBlk,
                              const RingspMergeTiling& tiling) {
    headDim_ = tiling.headDim;
    tileRows_ = tiling.tileRows;
    const uint64_t first = static_cast<uint64_t>(AscendC::GetBlockIdx()) * tiling.rowsPerCore;
    rows_ = first < tiling.totalRows ? Min(tiling.rowsPerCore, tiling.totalRows - first) : 0;
    accGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(acc) + first * headDim_, rows_ * headDim_);
    outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(out) + first * headDim_, rows_ * headDim_);
    lseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lse) + first, AlignRows(rows_));
    lseBlkGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lseBlk) + first, AlignRows(rows_));

    // Sizes must add up to RingspMergeUbBytes (merge_tiling.h), which the host checks.
    const uint32_t tileElems = tileRows_ * headDim_;
    pipe_.InitBuffer(accIn_, RINGSP_BUFFER_NUM, tileElems * sizeof(float));
    pipe_.InitBuffer(outIn_, RINGSP_BUFFER_NUM, tileElems * sizeof(T));
    pipe_.InitBuffer(lseIn_, RINGSP_BUFFER_NUM, tileRows_ * sizeof(float));
    pipe_.InitBuffer(lseBlkIn_, RINGSP_BUFFER_NUM, tileRows_ * sizeof(float));
    pipe_.InitBuffer(accOut_, RINGSP_BUFFER_NUM, tileElems * sizeof(float));
    pipe_.InitBuffer(lseOut_, RINGSP_BUFFER_NUM, tileRows_ * sizeof(float));
    if constexpr (CAST) {
      pipe_.InitBuffer(outF32_, tileElems * sizeof(float));
    }
    pipe_.InitBuffer(rowWork_, RINGSP_ROW_VECTORS * tileRows_ * sizeof(float));
  }

  __aicore__ inline void Process() {
    for (uint64_t row = 0; row < rows_; row += tileRows_) {
      const uint32_t n = static_cast<uint32_t>(Min(tileRows_, rows_ - row));
      CopyIn(row, n);
      Compute(n);
      CopyOut(row, n);
    }
  }

 private:
  __aicore__ inline static uint64_t Min(uint64_t a, uint64_t b) { return a < b ? a : b; }

  // Row counts of the lse vectors are rounded up to whole 32-byte blocks; the host padded
  // them, and rows and tiles start on block boundaries, so this never crosses into another
  // core's range.
  __aicore__ inline static uint32_t AlignRows(uint64_t n) {
    return static_cast<uint32_t>((n + RINGSP_ROW_ALIGN - 1) / RINGSP_ROW_ALIGN * RINGSP_ROW_ALIGN);
  }

  __aicore__ inline void CopyIn(uint64_t row, uint32_t n) {
    AscendC::LocalTensor<float> acc = accIn_.AllocTensor<float>();
    AscendC::LocalTensor<T> out = outIn_.AllocTensor<T>();
    AscendC::LocalTensor<float> la = lseIn_.AllocTensor<float>();
    AscendC::LocalTensor<float> lb = lseBlkIn_.AllocTensor<float>();
    AscendC::DataCopy(acc, accGm_[row * headDim_], n * headDim_);
    AscendC::DataCopy(out, outGm_[row * headDim_], n * headDim_);
    AscendC::DataCopy(la, lseGm_[row], AlignRows(n));
    AscendC::DataCopy(lb, lseBlkGm_[row], AlignRows(n));
    accIn_.EnQue(acc);
    outIn_.EnQue(out);
    lseIn_.EnQue(la);
    lseBlkIn_.EnQue(lb);
  }

  // Per-row weights into work[3t..4t) (acc) and work[4t..5t) (block), the new lse into
  // lseNew. la and lb are clobbered. Mirrors merge_weights line by line.
  __aicore__ inline void Weights(AscendC::LocalTensor<float> la, AscendC::LocalTensor<float> lb,
                                 AscendC::LocalTensor<float> work, AscendC::LocalTensor<float> lseNew,
                                 uint32_t count) {
    AscendC::LocalTensor<float> seenA = work;
    AscendC::LocalTensor<float> seenB = work[tileRows_];
    AscendC::LocalTensor<float> mx = work[2 * tileRows_];
    AscendC::LocalTensor<float> ea = work[3 * tileRows_];
    AscendC::LocalTensor<float> eb = work[4 * tileRows_];
    AscendC::LocalTensor<float> keep = work[5 * tileRows_];
    AscendC::Maxs(la, la, kNegBig, count);  // -inf -> NEG_BIG
    AscendC::Maxs(lb, lb, kNegBig, count);
    AscendC::Adds(seenA, la, kBig, count);  // 0 at NEG_BIG, ~1e30 for any real lse ...
    AscendC::Mins(seenA, seenA, 1.0f, count);  // ... clamped to 1
    AscendC::Adds(seenB, lb, kBig, count);
    AscendC::Mins(seenB, seenB, 1.0f, count);
    AscendC::Max(mx, la, lb, count);
    AscendC::Sub(ea, la, mx, count);
    AscendC::Exp(ea, ea, count);
    AscendC::Mul(ea, ea, seenA, count);
    AscendC::Sub(eb, lb, mx, count);
    AscendC::Exp(eb, eb, count);
    AscendC::Mul(eb, eb, seenB, count);
    AscendC::Max(keep, seenA, seenB, count);  // keep = 1 - max(seenA, seenB)
    AscendC::Muls(keep, keep, -1.0f, count);
    AscendC::Adds(keep, keep, 1.0f, count);
    AscendC::Add(seenA, ea, eb, count);
    AscendC::Add(seenA, seenA, keep, count);  // seenA now holds the total, >= 1
    AscendC::Ln(lseNew, seenA, count);
    AscendC::Add(lseNew, lseNew, mx, count);  // exactly NEG_BIG where neither side has a key
    AscendC::Div(ea, ea, seenA, count);
    AscendC::Add(ea, ea, keep, count);   // weight of acc: 1 where neither side has a key
    AscendC::Div(eb, eb, seenA, count);  // weight of the block
  }

  __aicore__ inline void Compute(uint32_t n) {
    AscendC::LocalTensor<float> la = lseIn_.DeQue<float>();
    AscendC::LocalTensor<float> lb = lseBlkIn_.DeQue<float>();
    AscendC::LocalTensor<float> lseNew = lseOut_.AllocTensor<float>();
    AscendC::LocalTensor<float> work = rowWork_.Get<float>();
    Weights(la, lb, work, lseNew, AlignRows(n));
    lseOut_.EnQue(lseNew);
    lseIn_.FreeTensor(la);
    lseBlkIn_.FreeTensor(lb);

    AscendC::LocalTensor<float> acc = accIn_.DeQue<float>();
    AscendC::LocalTensor<T> out = outIn_.DeQue<T>();
    AscendC::LocalTensor<float> merged = accOut_.AllocTensor<float>();
    AscendC::LocalTensor<float> outF;
    if constexpr (CAST) {
      outF = outF32_.Get<float>();
      AscendC::Cast(outF, out, AscendC::RoundMode::CAST_NONE, n * headDim_);
    } else {
      outF = out;
    }
    // The weights are per row; the scalar unit reads them after the vector unit wrote them.
    AscendC::LocalTensor<float> wAcc = work[3 * tileRows_];
    AscendC::LocalTensor<float> wBlk = work[4 * tileRows_];
    const event_t vToS = static_cast<event_t>(pipe_.FetchEventID(AscendC::HardEvent::V_S));
    AscendC::SetFlag<AscendC::HardEvent::V_S>(vToS);
    AscendC::WaitFlag<AscendC::HardEvent::V_S>(vToS);
    for (uint32_t r = 0; r < n; ++r) {
      const uint32_t at = r * headDim_;
      AscendC::Muls(merged[at], acc[at], wAcc.GetValue(r), headDim_);
      AscendC::Muls(outF[at], outF[at], wBlk.GetValue(r), headDim_);
    }
    // Two rounded products and one rounded sum, like the torch fallback (the basic Axpy
    // is documented as less precise than Muls + Add).
    AscendC::Add(merged, merged, outF, n * headDim_);
    accOut_.EnQue(merged);
    accIn_.FreeTensor(acc);
    outIn_.FreeTensor(out);
  }

  __aicore__ inline void CopyOut(uint64_t row, uint32_t n) {
    AscendC::LocalTensor<float> merged = accOut_.DeQue<float>();
    AscendC::LocalTensor<float> lseNew = lseOut_.DeQue<float>();
    AscendC::DataCopy(accGm_[row * headDim_], merged, n * headDim_);
    AscendC::DataCopy(lseGm_[row], lseNew, AlignRows(n));
    accOut_.FreeTensor(merged);
    lseOut_.FreeTensor(lseNew);
  }

  AscendC::TPipe pipe_;
  AscendC::TQue<AscendC::TPosition::VECIN, RINGSP_BUFFER_NUM> accIn_, outIn_, lseIn_, lseBlkIn_;
  AscendC::TQue<AscendC::TPosition::VECOUT, RINGSP_BUFFER_NUM> accOut_, lseOut_;
  AscendC::TBuf<AscendC::TPosition::VECCALC> outF32_, rowWork_;
  AscendC::GlobalTensor<float> accGm_, lseGm_, lseBlkGm_;
  AscendC::GlobalTensor<T> outGm_;
  uint64_t rows_ = 0;
  uint32_t headDim_ = 0;
  uint32_t tileRows_ = 0;
};

template <typename T, bool CAST>
__aicore__ inline void RunMerge(GM_ADDR acc, GM_ADDR lse, GM_ADDR out, GM_ADDR lseBlk,
                                const RingspMergeTiling& tiling) {
  MergeRows<T, CAST> op;
  op.Init(acc, lse, out, lseBlk, tiling);
  op.Process();
}

}  // namespace

// One entry per out_blk dtype; vector cores only (no cube work).
#ifdef KERNEL_TASK_TYPE_DEFAULT
#define RINGSP_AIV_ONLY() KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY)
#else
#define RINGSP_AIV_ONLY()
#endif

extern "C" __global__ __aicore__ void ringsp_merge_rows_f32(GM_ADDR acc, GM_ADDR lse, GM_ADDR out,
                                                            GM_ADDR lseBlk, RingspMergeTiling tiling) {
  RINGSP_AIV_ONLY();
  RunMerge<float, false>(acc, lse, out, lseBlk, tiling);
}

extern "C" __global__ __aicore__ void ringsp_merge_rows_f16(GM_ADDR acc, GM_ADDR lse, GM_ADDR out,
                                                            GM_ADDR lseBlk, RingspMergeTiling tiling) {
  RINGSP_AIV_ONLY();
  RunMerge<half, true>(acc, lse, out, lseBlk, tiling);
}

extern "C" __global__ __aicore__ void ringsp_merge_rows_bf16(GM_ADDR acc, GM_ADDR lse, GM_ADDR out,
                                                             GM_ADDR lseBlk, RingspMergeTiling tiling) {
  RINGSP_AIV_ONLY();
  RunMerge<bfloat16_t, true>(acc, lse, out, lseBlk, tiling);
}

#ifndef RINGSP_CPU_MODEL  // cpu_model/ runs the entries directly; g++ has no <<<>>>
namespace ringsp {

// Host-side launch (the <<<>>> syntax is compiled by the AscendC toolchain, so it lives
// here); merge_op.cpp calls it from torch_npu's task queue with the current stream.
void LaunchMergeRows(uint32_t dtype, void* stream, void* acc, void* lse, void* out, void* lseBlk,
                     RingspMergeTiling tiling) {
  auto* a = static_cast<uint8_t*>(acc);
  auto* l = static_cast<uint8_t*>(lse);
  auto* o = static_cast<uint8_t*>(out);
  auto* lb = static_cast<uint8_t*>(lseBlk);
  switch (dtype) {
    case RINGSP_MERGE_F32:
      ringsp_merge_rows_f32<<<tiling.usedCores, nullptr, stream>>>(a, l, o, lb, tiling);
      break;
    case RINGSP_MERGE_F16:
      ringsp_merge_rows_f16<<<tiling.usedCores, nullptr, stream>>>(a, l, o, lb, tiling);
      break;
    case RINGSP_MERGE_BF16:
      ringsp_merge_rows_bf16<<<tiling.usedCores, nullptr, stream>>>(a, l, o, lb, tiling);
      break;
    default:
      break;  // merge_op.cpp rejects other dtypes before launching
  }
}

}  // namespace ringsp
#endif  // RINGSP_CPU_MODEL
