// The work split of the fused merge, computed on the host (ringsp_kernels/npu/merge.py,
// checked again in merge_op.cpp) and passed to the kernel by value. Shared by the AscendC
// kernel and the host op, so it holds only plain integers.
//
// Rows are (b, s, h) in acc's [B, S, H, D] order. Core c takes rows
// [c * rowsPerCore, min((c + 1) * rowsPerCore, totalRows)) in tiles of tileRows.
// rowsPerCore and tileRows are multiples of RINGSP_ROW_ALIGN, so every core and tile starts
// on a 32-byte boundary of the float32 lse vectors; the host pads those vectors to a
// multiple of RINGSP_ROW_ALIGN so the last tile can read and write whole blocks.
#ifndef RINGSP_ASCEND_MERGE_TILING_H_
#define RINGSP_ASCEND_MERGE_TILING_H_

#include <cstdint>

// ringsp_kernels/npu/merge.py mirrors these; tests/kernels/test_npu.py checks they agree.
#define RINGSP_ROW_ALIGN 8
#define RINGSP_UB_BUDGET (160 * 1024)
#define RINGSP_BUFFER_NUM 2
#define RINGSP_ROW_VECTORS 6
#define RINGSP_MAX_TILE_ROWS 256

struct RingspMergeTiling {
  uint64_t totalRows;
  uint32_t headDim;
  uint32_t tileRows;
  uint32_t rowsPerCore;
  uint32_t usedCores;
};

enum RingspMergeDtype : uint32_t { RINGSP_MERGE_F32 = 0, RINGSP_MERGE_F16 = 1, RINGSP_MERGE_BF16 = 2 };

#if !defined(__CCE_AICORE__)  // host only: the device pass needs none of it
// UB bytes the kernel allocates for a tile (its InitBuffer calls, summed).
inline uint64_t RingspMergeUbBytes(uint64_t tileRows, uint64_t headDim, uint64_t outElemSize) {
  const uint64_t cast = outElemSize != 4 ? 4 : 0;  // float32 copy of a 16-bit out_blk tile
  const uint64_t perRow = headDim * (RINGSP_BUFFER_NUM * (4 + outElemSize + 4) + cast) +
                          4 * (RINGSP_BUFFER_NUM * 3 + RINGSP_ROW_VECTORS);
  return tileRows * perRow;
}
#endif

#endif  // RINGSP_ASCEND_MERGE_TILING_H_
