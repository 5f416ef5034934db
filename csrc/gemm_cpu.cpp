// Float32 tile product: ATen's brgemm (oneDNN micro-kernels) where this torch has it,
// plain loops the compiler vectorises otherwise.
#include "gemm_cpu.h"

#include <algorithm>

#include "clones_cpu.h"


namespace ringsp::cpu {
namespace {

#ifndef RINGSP_HAVE_BRGEMM
// i-k-j order: the inner loop streams a row of B into a row of C.
RINGSP_CLONES void gemm_loops(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                              int64_t ldb, float* C, int64_t ldc, bool add) {
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (!add) std::fill_n(c, N, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[i * lda + k];
      const float* b = B + k * ldb;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}
#endif

}  // namespace

void gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
              float* C, int64_t ldc, bool add) {
#ifdef RINGSP_HAVE_BRGEMM
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, A, B, C, /*is_vnni=*/false);
#else
  gemm_loops(M, N, K, A, lda, B, ldb, C, ldc, add);
#endif
}

void release_tile_state(bool used_vnni) {
#ifdef RINGSP_HAVE_BRGEMM
  if (used_vnni) at::native::cpublas::brgemm_release(true);
#else
  (void)used_vnni;
#endif
}

}  // namespace ringsp::cpu
