// The ringsp op schemas and their CPU implementations. Attention (attn_fwd, attn_step_)
// is the blocked online-softmax kernel in flash_cpu.cpp, whose running state (acc =
// normalised output so far, lse = its log-sum-exp) is read at the start and written at
// the end of each call, so a ring step needs no separate merge pass.
//
// Layouts: q/k/v/out [B, S, H, D] (any strides), acc [B, Sq, H, D] float32,
// lse [B, H, Sq] float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "flash_cpu.h"
#include "views_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ringsp {
namespace {

using cpu::Lse3;
using cpu::View4;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The Python API checks arguments with friendlier messages; these guard C++ callers.
void check_attn(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                std::optional<int64_t> kv_len) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "ringsp: q, k, v must be [B, S, H, D]");
  TORCH_CHECK(k.sizes() == v.sizes(), "ringsp: k and v must have the same shape");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "ringsp: q and k must agree in batch, heads and head dim");
  TORCH_CHECK(q.size(3) >= 1, "ringsp: head dim must be at least 1");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "ringsp: q, k, v must have one dtype");
  TORCH_CHECK(!kv_len.has_value() || (*kv_len >= 0 && *kv_len <= k.size(1)),
              "ringsp: kv_len must be in [0, k.size(1)]");
}

void check_state(const at::Tensor& q, const at::Tensor& acc, const at::Tensor& lse) {
  TORCH_CHECK(acc.scalar_type() == at::kFloat && lse.scalar_type() == at::kFloat,
              "ringsp: acc and lse must be float32");
  TORCH_CHECK(acc.sizes() == q.sizes(), "ringsp: acc must have q's shape [B, Sq, H, D]");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(2) &&
                  lse.size(2) == q.size(1),
              "ringsp: lse must be [B, H, Sq]");
}

float default_scale(const at::Tensor& q, std::optional<double> scale) {
  return static_cast<float>(scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3))));
}

int64_t keys_used(const at::Tensor& k, std::optional<int64_t> kv_len) {
  return kv_len.has_value() ? std::min<int64_t>(*kv_len, k.size(1)) : k.size(1);
}

std::tuple<at::Tensor, at::Tensor> attn_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, std::optional<double> scale,
                                                std::optional<int64_t> kv_len) {
  check_attn(q, k, v, kv_len);
  at::Tensor out = at::empty_like(q, at::MemoryFormat::Contiguous);
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  cpu::flash_attention({q, k, v, out, lse, default_scale(q, scale), keys_used(k, kv_len), false});
  return {out, lse};
}

void attn_step_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& acc,
                   at::Tensor& lse, std::optional<double> scale, std::optional<int64_t> kv_len) {
  check_attn(q, k, v, kv_len);
  check_state(q, acc, lse);
  cpu::flash_attention({q, k, v, acc, lse, default_scale(q, scale), keys_used(k, kv_len), true});
}

// acc/lse <- merge of (acc, lse) and (out_blk, lse_blk), row by row.
template <typename T>
void merge_rows(at::Tensor& acc, at::Tensor& lse, const at::Tensor& out, const at::Tensor& lse_blk) {
  const int64_t B = acc.size(0), S = acc.size(1), H = acc.size(2), D = acc.size(3);
  const View4 va(acc), vo(out);
  const Lse3 vl(lse), vb(lse_blk);
  float* ap = acc.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const T* op = out.data_ptr<T>();
  const float* bp = lse_blk.data_ptr<float>();
  at::parallel_for(0, B * S * H, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (S * H), s = (r / H) % S, h = r % H;
      const float la = lp[vl.at(b, h, s)], lb = bp[vb.at(b, h, s)];
      const float mx = std::max(la, lb);
      if (mx == kNegInf) continue;  // neither side has seen a key
      const float lnew = mx + std::log(std::exp(la - mx) + std::exp(lb - mx));
      const float wa = std::exp(la - lnew), wb = std::exp(lb - lnew);
      float* a = ap + va.at(b, s, h);
      const T* o = op + vo.at(b, s, h);
      for (int64_t d = 0; d < D; ++d)
        a[d * va.sd] = (la == kNegInf ? 0.f : wa * a[d * va.sd]) + wb * static_cast<float>(o[d * vo.sd]);
      lp[vl.at(b, h, s)] = lnew;
    }
  });
}

void merge_cpu(at::Tensor& acc, at::Tensor& lse, const at::Tensor& out_blk, const at::Tensor& lse_blk) {
  check_state(out_blk, acc, lse);
  TORCH_CHECK(lse_blk.sizes() == lse.sizes() && lse_blk.scalar_type() == at::kFloat,
              "ringsp: lse_blk must be float32 [B, H, S] like lse");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_blk.scalar_type(), "merge_", [&] {
    merge_rows<scalar_t>(acc, lse, out_blk, lse_blk);
  });
}

// init_state and finalize are device-independent compositions of ATen ops.
std::tuple<at::Tensor, at::Tensor> init_state(const at::Tensor& q) {
  at::Tensor acc = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
  at::Tensor lse = at::full({q.size(0), q.size(2), q.size(1)}, -std::numeric_limits<double>::infinity(),
                            q.options().dtype(at::kFloat));
  return {acc, lse};
}

at::Tensor finalize(const at::Tensor& acc, const at::Tensor& lse, at::ScalarType dtype) {
  // Always a new tensor: a custom op's output may not alias its input (acc is float32
  // already when dtype is), and torch.compile relies on that.
  return acc.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

TORCH_LIBRARY(ringsp, m) {
  m.def("attn_fwd(Tensor q, Tensor k, Tensor v, float? scale=None, int? kv_len=None) -> (Tensor, Tensor)");
  m.def(
      "attn_step_(Tensor q, Tensor k, Tensor v, Tensor(a!) acc, Tensor(b!) lse, float? scale=None, "
      "int? kv_len=None) -> ()");
  m.def("merge_(Tensor(a!) acc, Tensor(b!) lse, Tensor out_blk, Tensor lse_blk) -> ()");
  m.def("init_state(Tensor q) -> (Tensor, Tensor)");
  m.def("finalize(Tensor acc, Tensor lse, ScalarType dtype) -> Tensor");
  m.impl("init_state", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(init_state));
  m.impl("finalize", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(finalize));
}

TORCH_LIBRARY_IMPL(ringsp, CPU, m) {
  m.impl("attn_fwd", TORCH_FN(attn_fwd_cpu));
  m.impl("attn_step_", TORCH_FN(attn_step_cpu));
  m.impl("merge_", TORCH_FN(merge_cpu));
}

}  // namespace ringsp
