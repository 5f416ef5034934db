// Index helpers for the strided tensors the CPU kernels take (any strides allowed).
#pragma once

#include <ATen/ATen.h>

namespace ringsp::cpu {

struct View4 {  // a strided [B, S, H, D] tensor: offset of element (b, s, h, 0), and sd
  int64_t sb, ss, sh, sd;
  explicit View4(const at::Tensor& t) : sb(t.stride(0)), ss(t.stride(1)), sh(t.stride(2)), sd(t.stride(3)) {}
  int64_t at(int64_t b, int64_t s, int64_t h) const { return b * sb + s * ss + h * sh; }
};

struct Lse3 {  // a strided [B, H, S] tensor
  int64_t sb, sh, ss;
  explicit Lse3(const at::Tensor& t) : sb(t.stride(0)), sh(t.stride(1)), ss(t.stride(2)) {}
  int64_t at(int64_t b, int64_t h, int64_t s) const { return b * sb + h * sh + s * ss; }
};

}  // namespace ringsp::cpu
