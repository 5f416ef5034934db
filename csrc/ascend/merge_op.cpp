// Registers ringsp::npu_merge_rows_ for the PrivateUse1 (NPU) dispatch key: the host side of
// the AscendC fused merge (merge_kernel.cpp). ringsp_kernels/npu/merge.py prepares the
// operands and the tiling; this file re-checks everything the kernel would otherwise trust
// (a bad tiling here is an out-of-bounds write on the device), then queues the launch on
// torch_npu's task queue so it stays ordered with the surrounding torch_npu ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "merge_tiling.h"
#include "torch_npu/csrc/core/npu/NPUGuard.h"
#include "torch_npu/csrc/core/npu/NPUStream.h"
#include "torch_npu/csrc/framework/OpCommand.h"

namespace ringsp {

void LaunchMergeRows(uint32_t dtype, void* stream, void* acc, void* lse, void* out, void* lseBlk,
                     RingspMergeTiling tiling);

namespace {

constexpr int64_t kMaxBlockDim = 65535;

uint32_t KernelDtype(const at::Tensor& out) {
  switch (out.scalar_type()) {
    case at::kFloat:
      return RINGSP_MERGE_F32;
    case at::kHalf:
      return RINGSP_MERGE_F16;
    case at::kBFloat16:
      return RINGSP_MERGE_BF16;
    default:
      break;
  }
  TORCH_CHECK(false, "ringsp::npu_merge_rows_: out_blk must be float32, float16 or bfloat16, got ",
              out.scalar_type());
  return 0;
}

void CheckOperands(const at::Tensor& acc, const at::Tensor& lse_rows, const at::Tensor& out_blk,
                   const at::Tensor& lse_blk_rows) {
  for (const at::Tensor* t : {&acc, &lse_rows, &out_blk, &lse_blk_rows}) {
    TORCH_CHECK(t->device().type() == c10::DeviceType::PrivateUse1 && t->device() == acc.device(),
                "ringsp::npu_merge_rows_: all operands must be on acc's NPU device");
    TORCH_CHECK(t->is_contiguous(), "ringsp::npu_merge_rows_: operands must be contiguous");
  }
  TORCH_CHECK(acc.dim() == 4 && acc.scalar_type() == at::kFloat, "ringsp::npu_merge_rows_: acc must be float32 [B, S, H, D]");
  TORCH_CHECK(out_blk.sizes() == acc.sizes(), "ringsp::npu_merge_rows_: out_blk must have acc's shape");
  TORCH_CHECK(lse_rows.dim() == 1 && lse_rows.scalar_type() == at::kFloat && lse_blk_rows.sizes() == lse_rows.sizes() &&
                  lse_blk_rows.scalar_type() == at::kFloat,
              "ringsp::npu_merge_rows_: lse_rows and lse_blk_rows must be float32 vectors of one length");
}

RingspMergeTiling CheckedTiling(const at::Tensor& acc, const at::Tensor& lse_rows, const at::Tensor& out_blk,
                                at::IntArrayRef t) {
  TORCH_CHECK(t.size() == 5, "ringsp::npu_merge_rows_: tiling must be [rows, head_dim, tile_rows, rows_per_core, cores]");
  const int64_t rows = acc.size(0) * acc.size(1) * acc.size(2), D = acc.size(3);
  const int64_t tile = t[2], per_core = t[3], cores = t[4];
  const int64_t padded = (rows + RINGSP_ROW_ALIGN - 1) / RINGSP_ROW_ALIGN * RINGSP_ROW_ALIGN;
  TORCH_CHECK(t[0] == rows && t[1] == D, "ringsp::npu_merge_rows_: tiling is for another shape");
  TORCH_CHECK(lse_rows.numel() >= padded, "ringsp::npu_merge_rows_: lse vectors must be padded to ", padded);
  TORCH_CHECK(D * 4 % 32 == 0 && D * out_blk.element_size() % 32 == 0,
              "ringsp::npu_merge_rows_: a row of head dim ", D, " is not a whole number of 32-byte blocks");
  TORCH_CHECK(tile > 0 && tile % RINGSP_ROW_ALIGN == 0 && tile <= RINGSP_MAX_TILE_ROWS && per_core > 0 &&
                  per_core % RINGSP_ROW_ALIGN == 0 && tile <= per_core,
              "ringsp::npu_merge_rows_: tile_rows and rows_per_core must be positive multiples of ", RINGSP_ROW_ALIGN);
  TORCH_CHECK(cores > 0 && cores <= kMaxBlockDim && cores * per_core >= rows && (cores - 1) * per_core < rows,
              "ringsp::npu_merge_rows_: cores x rows_per_core must cover the rows exactly once");
  TORCH_CHECK(RingspMergeUbBytes(tile, D, out_blk.element_size()) <= RINGSP_UB_BUDGET,
              "ringsp::npu_merge_rows_: a tile of ", tile, " rows does not fit the UB budget");
  return RingspMergeTiling{static_cast<uint64_t>(rows), static_cast<uint32_t>(D), static_cast<uint32_t>(tile),
                           static_cast<uint32_t>(per_core), static_cast<uint32_t>(cores)};
}

void MergeRowsNpu(at::Tensor& acc, at::Tensor& lse_rows, const at::Tensor& out_blk, const at::Tensor& lse_blk_rows,
                  at::IntArrayRef tiling) {
  CheckOperands(acc, lse_rows, out_blk, lse_blk_rows);
  if (acc.numel() == 0) {
    return;
  }
  const RingspMergeTiling t = CheckedTiling(acc, lse_rows, out_blk, tiling);
  const uint32_t dtype = KernelDtype(out_blk);
  const c10_npu::OptionalNPUGuard guard(acc.device());
  // stream(false): the bare handle, without draining the task queue the launch joins anyway.
  aclrtStream stream = c10_npu::getCurrentNPUStream().stream(false);
  // The handler runs later on torch_npu's task-queue thread: hold the tensors until then.
  at::Tensor a = acc, l = lse_rows, o = out_blk, lb = lse_blk_rows;
  at_npu::native::OpCommand cmd;
  cmd.Name("RingspMergeRows");
  cmd.SetCustomHandler([a, l, o, lb, t, dtype, stream]() -> int {
    LaunchMergeRows(dtype, stream, a.data_ptr(), l.data_ptr(), o.data_ptr(), lb.data_ptr(), t);
    return 0;
  });
  cmd.Run();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ringsp, m) {
  m.def(
      "npu_merge_rows_(Tensor(a!) acc, Tensor(b!) lse_rows, Tensor out_blk, Tensor lse_blk_rows, "
      "int[] tiling) -> ()");
}

TORCH_LIBRARY_IMPL(ringsp, PrivateUse1, m) { m.impl("npu_merge_rows_", TORCH_FN(MergeRowsNpu)); }

}  // namespace ringsp
