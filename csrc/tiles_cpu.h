// Tile loaders for the CPU attention kernels: copy a strided [rows, D] slice of q/k/v
// into the contiguous layout a brgemm call wants, converting the dtype on the way.
//
// A slice is (base pointer, row stride rs, element stride es): element (r, d) lives at
// base[r * rs + d * es], which covers every [B, S, H, D] view once b and h are fixed.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace ringsp::cpu {

// dst[r * ld + d] = float(src(r, d)).
template <typename T>
void load_f32(const T* src, int64_t rs, int64_t es, int64_t rows, int64_t D, float* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * rs;
    float* o = dst + r * ld;
    if (es == 1) {
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(s[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(s[d * es]);
    }
  }
}

// dst[d * ld + r] = float(src(r, d)): the transposed slice, as the B operand of Q.K^T.
// Rows go in groups of 16 so the 16 destination elements a column receives share lines.
template <typename T>
void load_f32_transposed(const T* src, int64_t rs, int64_t es, int64_t rows, int64_t D, float* dst,
                         int64_t ld) {
  constexpr int64_t kGroup = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kGroup) {
    const int64_t r1 = r0 + kGroup < rows ? r0 + kGroup : rows;
    for (int64_t d = 0; d < D; ++d) {
      float* o = dst + d * ld;
      for (int64_t r = r0; r < r1; ++r) o[r] = static_cast<float>(src[r * rs + d * es]);
    }
  }
}

// dst[r * ld + d] = src(r, d) as raw bf16 bits (no conversion).
inline void load_bf16(const c10::BFloat16* src, int64_t rs, int64_t es, int64_t rows, int64_t D,
                      uint16_t* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const c10::BFloat16* s = src + r * rs;
    uint16_t* o = dst + r * ld;
    if (es == 1) {
      std::memcpy(o, s, D * sizeof(uint16_t));
    } else {
      for (int64_t d = 0; d < D; ++d) o[d] = s[d * es].x;
    }
  }
}

// The brgemm "VNNI" layout of a [K, N] bf16 B operand (K even), in panels of kPanel
// columns: panel c holds columns [c*kPanel, (c+1)*kPanel) as [K/2][kPanel][2], i.e.
// B(kk, n) at panel(c) + (kk / 2) * 2 * kPanel + (n % kPanel) * 2 + kk % 2.
constexpr int64_t kPanel = 64;

// K^T in VNNI panels: B(d, j) = k(j, d) for j < keys, D even. Panel stride D * kPanel.
inline void pack_kt_vnni(const c10::BFloat16* k, int64_t rs, int64_t es, int64_t keys, int64_t D,
                         uint16_t* dst) {
  for (int64_t j = 0; j < keys; ++j) {
    const c10::BFloat16* row = k + j * rs;
    uint16_t* o = dst + (j / kPanel) * D * kPanel + (j % kPanel) * 2;
    for (int64_t d = 0; d < D; d += 2) {
      o[d * kPanel] = row[d * es].x;
      o[d * kPanel + 1] = row[(d + 1) * es].x;
    }
  }
}

// V in VNNI panels: B(j, d) = v(j, d) for j < keys; keys are padded with a zero row to
// `keys_even`. Panel c covers head dims [c*kPanel, ...), panel stride keys_even * kPanel.
inline void pack_v_vnni(const c10::BFloat16* v, int64_t rs, int64_t es, int64_t keys,
                        int64_t keys_even, int64_t D, uint16_t* dst) {
  for (int64_t j = 0; j < keys_even; j += 2) {
    const c10::BFloat16* r0 = v + j * rs;
    const bool pad = j + 1 >= keys;
    const c10::BFloat16* r1 = pad ? r0 : r0 + rs;
    for (int64_t c0 = 0; c0 < D; c0 += kPanel) {
      uint16_t* o = dst + (c0 / kPanel) * keys_even * kPanel + j * kPanel;
      const int64_t n = D - c0 < kPanel ? D - c0 : kPanel;
      for (int64_t d = 0; d < n; ++d) {
        o[2 * d] = r0[(c0 + d) * es].x;
        o[2 * d + 1] = pad ? uint16_t{0} : r1[(c0 + d) * es].x;
      }
    }
  }
}

}  // namespace ringsp::cpu
