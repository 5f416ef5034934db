// The float32 tile product of the CPU attention kernel, and whether the bf16 AMX one
// (brgemm on VNNI-packed operands) is available in this torch build.
#pragma once

#include <ATen/native/CPUBlas.h>

#include <cstdint>

// torch defines these macros since its brgemm gained float32/bf16 inputs; older torch
// builds take the portable loops below and never the AMX path.
#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(CPUBLAS_BRGEMM_BF16BF16F32)
#define RINGSP_HAVE_BRGEMM 1
#endif

namespace ringsp::cpu {

// C[M, N] = (add ? C : 0) + A[M, K] . B[K, N]; row-major with leading dims lda/ldb/ldc.
void gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
              float* C, int64_t ldc, bool add);

// Gives back hardware state a thread's tile products took (AMX tiles); call on leaving.
void release_tile_state(bool used_vnni);

}  // namespace ringsp::cpu
