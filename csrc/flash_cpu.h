// Blocked online-softmax attention on CPU (the kernel behind attn_fwd / attn_step_).
#pragma once

#include <ATen/ATen.h>

namespace ringsp::cpu {

// Attention of q over k/v[:, :kv_len], all [B, S, H, D] with any strides.
// With has_state, `out` is the running state acc (float32, normalised output so far) and
// `lse` its log-sum-exp; both are read first and updated in place. Without, `out` is
// written in q's dtype and `lse` is overwritten. lse is [B, H, Sq] float32, any strides.
struct AttnProblem {
  const at::Tensor& q;
  const at::Tensor& k;
  const at::Tensor& v;
  const at::Tensor& out;
  const at::Tensor& lse;
  float scale;
  int64_t kv_len;
  bool has_state;
};

void flash_attention(const AttnProblem& p);

}  // namespace ringsp::cpu
