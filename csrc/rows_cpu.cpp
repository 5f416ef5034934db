// Row math for the CPU attention tiles. exp dominates the non-GEMM time, so the portable
// loops are written for the auto-vectoriser (branch-free bodies, `omp simd` reductions)
// and, with GCC on x86-64 Linux, compiled once per ISA level and picked at load time
// (target_clones): the extension is built without -march flags, so it runs on any
// x86-64 CPU. Where AVX-512 is present the exp rows use rows_avx512_cpu.cpp instead.
#include "rows_cpu.h"

#include <cstring>
#include <limits>

#include "rows_avx512_cpu.h"

#include "clones_cpu.h"


namespace ringsp::cpu {
namespace {

constexpr float kExpLo = -87.0f;  // below this exp() is ~1e-38: flushed to 0 (and -inf -> 0)
constexpr float kExpHi = 88.0f;   // softmax arguments are <= 0; this only keeps 2^n finite

// exp(x) = 2^n * exp(r) with n = round(x / ln2) and |r| <= ln2 / 2, where exp(r) is a
// degree-6 polynomial (minimax coefficients as in Cephes' expf): about 1 ulp.
inline float exp_approx(float x) {
  float xc = x < kExpLo ? kExpLo : x;
  xc = xc > kExpHi ? kExpHi : xc;
  const float t = xc * 1.44269504088896341f;
  const float nf = (t + 12582912.0f) - 12582912.0f;  // round to nearest, valid for |t| < 2^22
  float r = xc - nf * 0.693359375f;                  // ln2 split in two so r stays exact
  r = r + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(nf) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < kExpLo ? 0.0f : p * two_n;
}

// float -> bf16 bits, round to nearest even (p is finite and non-negative here).
inline uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

RINGSP_CLONES float exp_and_sum_portable(float* x, int64_t n, float scale, float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_approx(x[i] * scale - m);
    x[i] = e;
    sum += e;
  }
  return sum;
}

RINGSP_CLONES float exp_to_bf16_and_sum_portable(const float* x, uint16_t* p, int64_t n, float scale,
                                                 float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_approx(x[i] * scale - m);
    p[i] = to_bf16_bits(e);
    sum += e;
  }
  return sum;
}

}  // namespace

RINGSP_CLONES float max_scaled(const float* x, int64_t n, float scale) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const float s = x[i] * scale;
    m = s > m ? s : m;
  }
  return m;
}

float exp_and_sum(float* x, int64_t n, float scale, float m) {
#ifdef RINGSP_HAVE_AVX512
  if (avx512::has_avx512()) return avx512::exp_and_sum(x, n, scale, m);
#endif
  return exp_and_sum_portable(x, n, scale, m);
}

float exp_to_bf16_and_sum(const float* x, uint16_t* p, int64_t n, float scale, float m) {
#ifdef RINGSP_HAVE_AVX512
  if (avx512::has_avx512_bf16()) return avx512::exp_to_bf16_and_sum(x, p, n, scale, m);
#endif
  return exp_to_bf16_and_sum_portable(x, p, n, scale, m);
}

RINGSP_CLONES void scale_row(float* x, int64_t n, float a) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

float exp_scalar(float x) { return exp_approx(x); }

}  // namespace ringsp::cpu
