// AVX-512 row functions. exp uses the range reduction of the portable version
// (rows_cpu.cpp): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by polynomial, and vscalefps to
// apply 2^n. Arguments below -87 give exactly 0 (no subnormal P: they would slow the
// matrix products down), which also maps -inf to 0.
#include "rows_avx512_cpu.h"

#ifdef RINGSP_HAVE_AVX512

#include <immintrin.h>

#include <cstdlib>

// GCC 12's intrinsic headers trip its own -Wuninitialized (GCC PR 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define RINGSP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define RINGSP_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

namespace ringsp::cpu::avx512 {
namespace {

constexpr float kExpLo = -87.0f;

// Returns (n, r) of the range reduction for 16 lanes, and the lanes to flush to 0.
// max() returns its second operand when either is NaN, so a NaN argument stays NaN.
RINGSP_AVX512 inline __m512 reduce(__m512 x, __m512& nf, __mmask16& keep) {
  keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpLo), _CMP_NLT_UQ);
  const __m512 xc = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);
  nf = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(0.693359375f), xc);
  return _mm512_fmadd_ps(nf, _mm512_set1_ps(2.12194440e-4f), r);
}

// Full float accuracy: the degree-6 polynomial of the portable exp (~1 ulp).
RINGSP_AVX512 inline __m512 exp16(__m512 x) {
  __m512 nf;
  __mmask16 keep;
  const __m512 r = reduce(x, nf, keep);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(keep, p, nf);
}

// Enough for results rounded to bf16 (8 bits): degree-5 Taylor, error < 3e-6.
RINGSP_AVX512 inline __m512 exp16_coarse(__m512 x) {
  __m512 nf;
  __mmask16 keep;
  const __m512 r = reduce(x, nf, keep);
  __m512 p = _mm512_set1_ps(1.0f / 120);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(keep, p, nf);
}

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}

}  // namespace

// RINGSP_CPU_NO_AVX512=1 turns these versions off, so the portable ones can be tested
// on an AVX-512 machine.
bool has_avx512() {
  static const bool has = !std::getenv("RINGSP_CPU_NO_AVX512") && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
}

bool has_avx512_bf16() {
  static const bool has = has_avx512() && __builtin_cpu_supports("avx512bf16");
  return has;
}

RINGSP_AVX512 float exp_and_sum(float* x, int64_t n, float scale, float m) {
  const __m512 vscale = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = tail_mask(n - i);
    const __m512 e = exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(mask, x + i), vscale, vm));
    _mm512_mask_storeu_ps(x + i, mask, e);
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// The sum is of the values before rounding: the rounding is unbiased, so over a row its
// error averages out, and summing them saves widening the bf16 back.
RINGSP_AVX512_BF16 float exp_to_bf16_and_sum(const float* x, uint16_t* p, int64_t n, float scale, float m) {
  const __m512 vscale = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = tail_mask(n - i);
    const __m512 e = exp16_coarse(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(mask, x + i), vscale, vm));
    _mm256_mask_storeu_epi16(p + i, mask, (__m256i)_mm512_cvtneps_pbh(e));
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

}  // namespace ringsp::cpu::avx512

#pragma GCC diagnostic pop

#endif  // RINGSP_HAVE_AVX512
