// Vectorised row math for the CPU attention kernels: the softmax part of a tile
// (scale, max, exp, sum), done one score row at a time.
#pragma once

#include <cstdint>

namespace ringsp::cpu {

// max over i < n of x[i] * scale (-inf when n == 0).
float max_scaled(const float* x, int64_t n, float scale);

// x[i] = exp(x[i] * scale - m) in place; returns the sum of the results.
float exp_and_sum(float* x, int64_t n, float scale, float m);

// p[i] = bf16(exp(x[i] * scale - m)), p as raw bf16 bits; returns the sum of the
// float values (before rounding). exp here is only as accurate as bf16 needs.
float exp_to_bf16_and_sum(const float* x, uint16_t* p, int64_t n, float scale, float m);

// x[i] *= a for i < n.
void scale_row(float* x, int64_t n, float a);

// exp(x) with the same approximation as the row functions (for a single value).
float exp_scalar(float x);

}  // namespace ringsp::cpu
