// Hand-written AVX-512 versions of the hottest row functions (see rows_cpu.h for their
// contracts). Built on x86-64 with GCC or Clang through per-function target attributes,
// so the extension needs no -march flag; callers check has_avx512*() first.
#pragma once

#include <cstdint>

// The avx512bf16 target needs GCC >= 10 or Clang >= 9.
#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 9) || \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10))
#define RINGSP_HAVE_AVX512 1

namespace ringsp::cpu::avx512 {

bool has_avx512();       // AVX-512 F/BW/VL/DQ usable (CPU and OS)
bool has_avx512_bf16();  // ... and AVX512_BF16

float exp_and_sum(float* x, int64_t n, float scale, float m);
float exp_to_bf16_and_sum(const float* x, uint16_t* p, int64_t n, float scale, float m);

}  // namespace ringsp::cpu::avx512

#endif
