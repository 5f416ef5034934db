// CPU kernels for the ringsp ops: blocked online-softmax attention whose running
// state (acc = normalised output so far, lse = its log-sum-exp) is read at the start
// and written at the end of each call, so a ring step needs no separate merge pass.
//
// Layouts: q/k/v/out [B, S, H, D] (any strides), acc [B, Sq, H, D] float32,
// lse [B, H, Sq] float32. Memory per task is O(block), never O(Sq * Sk).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace ringsp {
namespace {

constexpr int64_t kBlockM = 32;   // query rows per task
constexpr int64_t kBlockN = 128;  // keys per inner block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct View4 {  // a strided [B, S, H, D] tensor
  int64_t sb, ss, sh, sd;
  explicit View4(const at::Tensor& t)
      : sb(t.stride(0)), ss(t.stride(1)), sh(t.stride(2)), sd(t.stride(3)) {}
  int64_t at(int64_t b, int64_t s, int64_t h) const { return b * sb + s * ss + h * sh; }
};

struct Lse3 {  // a strided [B, H, S] float tensor
  int64_t sb, sh, ss;
  explicit Lse3(const at::Tensor& t) : sb(t.stride(0)), sh(t.stride(1)), ss(t.stride(2)) {}
  int64_t at(int64_t b, int64_t h, int64_t s) const { return b * sb + h * sh + s * ss; }
};

// Online softmax of one (b, h, rows [m0, m1)) tile over keys [0, kv_len), starting
// from the state in (m, l, o). On return o is normalised and m holds the new lse.
template <typename T>
void attend_tile(const T* q, const View4& vq, const T* k, const View4& vk, const T* v,
                 const View4& vv, int64_t b, int64_t h, int64_t m0, int64_t rows,
                 int64_t kv_len, int64_t D, float scale, float* m, float* l, float* o) {
  std::vector<float> qt(rows * D), kt(kBlockN * D), vt(kBlockN * D), s(rows * kBlockN);
  for (int64_t i = 0; i < rows; ++i) {
    const T* src = q + vq.at(b, m0 + i, h);
    for (int64_t d = 0; d < D; ++d) qt[i * D + d] = static_cast<float>(src[d * vq.sd]) * scale;
  }
  for (int64_t n0 = 0; n0 < kv_len; n0 += kBlockN) {
    const int64_t cols = std::min(kBlockN, kv_len - n0);
    for (int64_t j = 0; j < cols; ++j) {
      const T* ks = k + vk.at(b, n0 + j, h);
      const T* vs = v + vv.at(b, n0 + j, h);
      for (int64_t d = 0; d < D; ++d) {
        kt[j * D + d] = static_cast<float>(ks[d * vk.sd]);
        vt[j * D + d] = static_cast<float>(vs[d * vv.sd]);
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      float* si = s.data() + i * kBlockN;
      const float* qi = qt.data() + i * D;
      float row_max = kNegInf;
      for (int64_t j = 0; j < cols; ++j) {
        const float* kj = kt.data() + j * D;
        float dot = 0.f;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
        si[j] = dot;
        row_max = std::max(row_max, dot);
      }
      const float m_new = std::max(m[i], row_max);
      const float alpha = std::exp(m[i] - m_new);  // 0 when m[i] is -inf
      float* oi = o + i * D;
      for (int64_t d = 0; d < D; ++d) oi[d] *= alpha;
      float sum = 0.f;
      for (int64_t j = 0; j < cols; ++j) {
        const float p = std::exp(si[j] - m_new);
        sum += p;
        const float* vj = vt.data() + j * D;
        for (int64_t d = 0; d < D; ++d) oi[d] += p * vj[d];
      }
      l[i] = l[i] * alpha + sum;
      m[i] = m_new;
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    if (l[i] > 0.f) {
      const float inv = 1.f / l[i];
      for (int64_t d = 0; d < D; ++d) o[i * D + d] *= inv;
      m[i] += std::log(l[i]);
    } else {
      m[i] = kNegInf;
    }
  }
}

// Runs attention of q over k/v[:kv_len] for every (b, h, row tile) in parallel. With
// `state` the tile starts from (acc, lse) and writes back into them; otherwise it starts
// empty and writes `out` (q's dtype) and lse.
template <typename T>
void attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
               int64_t kv_len, bool state, at::Tensor& acc_or_out, at::Tensor& lse) {
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t tiles = (Sq + kBlockM - 1) / kBlockM;
  const View4 vq(q), vk(k), vv(v), vo(acc_or_out);
  const Lse3 vl(lse);
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, B * H * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> m(kBlockM), l(kBlockM), o(kBlockM * D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * tiles), h = (task / tiles) % H;
      const int64_t m0 = (task % tiles) * kBlockM, rows = std::min(kBlockM, Sq - m0);
      for (int64_t i = 0; i < rows; ++i) {
        float* oi = o.data() + i * D;
        if (state) {
          m[i] = lp[vl.at(b, h, m0 + i)];
          const bool seen = m[i] > kNegInf;
          l[i] = seen ? 1.f : 0.f;
          const float* src = acc_or_out.data_ptr<float>() + vo.at(b, m0 + i, h);
          for (int64_t d = 0; d < D; ++d) oi[d] = seen ? src[d * vo.sd] : 0.f;
        } else {
          m[i] = kNegInf;
          l[i] = 0.f;
          std::fill(oi, oi + D, 0.f);
        }
      }
      attend_tile<T>(qp, vq, kp, vk, vp, vv, b, h, m0, rows, kv_len, D,
                     static_cast<float>(scale), m.data(), l.data(), o.data());
      for (int64_t i = 0; i < rows; ++i) {
        lp[vl.at(b, h, m0 + i)] = m[i];
        const float* oi = o.data() + i * D;
        if (state) {
          float* dst = acc_or_out.data_ptr<float>() + vo.at(b, m0 + i, h);
          for (int64_t d = 0; d < D; ++d) dst[d * vo.sd] = oi[d];
        } else {
          T* dst = acc_or_out.data_ptr<T>() + vo.at(b, m0 + i, h);
          for (int64_t d = 0; d < D; ++d) dst[d * vo.sd] = static_cast<T>(oi[d]);
        }
      }
    }
  });
}

// The Python API checks arguments with friendlier messages; these guard C++ callers.
void check_attn(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                std::optional<int64_t> kv_len) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "ringsp: q, k, v must be [B, S, H, D]");
  TORCH_CHECK(k.sizes() == v.sizes(), "ringsp: k and v must have the same shape");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "ringsp: q and k must agree in batch, heads and head dim");
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

double default_scale(const at::Tensor& q, std::optional<double> scale) {
  return scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "attn_fwd", [&] {
    attention<scalar_t>(q, k, v, default_scale(q, scale), keys_used(k, kv_len), false, out, lse);
  });
  return {out, lse};
}

void attn_step_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& acc,
                   at::Tensor& lse, std::optional<double> scale, std::optional<int64_t> kv_len) {
  check_attn(q, k, v, kv_len);
  check_state(q, acc, lse);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "attn_step_", [&] {
    attention<scalar_t>(q, k, v, default_scale(q, scale), keys_used(k, kv_len), true, acc, lse);
  });
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
  return acc.to(dtype);
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
