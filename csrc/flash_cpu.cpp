// Blocked online-softmax attention on CPU. The two tile products (S = Q.K^T and
// O += P.V) go through ATen's brgemm (oneDNN micro-kernels: AVX-512/AVX2 for float32,
// AMX for bf16 where the CPU has it, a BLAS gemm elsewhere; see gemm_cpu); the softmax
// in between is vectorised row math (rows_cpu). Memory per task is O(tile): never Sq x Sk.
//
// A task is (b, h, a chunk of query rows). For each block of keys it converts/packs
// K and V once and runs every query tile of the chunk against them, so the packing is
// paid once per chunk, not once per tile.
#include "flash_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "gemm_cpu.h"
#include "rows_cpu.h"
#include "tiles_cpu.h"
#include "views_cpu.h"

namespace ringsp::cpu {
namespace {

constexpr int64_t kTileM = 128;    // query rows per tile product
constexpr int64_t kMaxTiles = 16;  // query tiles per task (a chunk of up to 2048 rows)
constexpr int64_t kBlockN = 512;   // keys per block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// brgemm reads a matrix in place only when its rows are unit-stride and do not overlap.
bool rows_usable_in_place(const View4& v, int64_t D) { return v.sd == 1 && v.ss >= D; }

// Float32 tile products for every input dtype: operands are converted to float32 once
// per chunk (Q) or block (K, V); float32 inputs with unit-stride rows are read in place.
template <typename T>
class F32Tiles {
 public:
  F32Tiles(const AttnProblem& p, int64_t max_rows)
      : D_(p.q.size(3)), vq_(p.q), vk_(p.k), vv_(p.v),
        q_(p.q.data_ptr<T>()), k_(p.k.data_ptr<T>()), v_(p.v.data_ptr<T>()),
        kt_(D_ * padded_ld(kBlockN)), s_(kTileM * padded_ld(kBlockN)) {
    if (!kFloat || !rows_usable_in_place(vq_, D_)) qbuf_.resize(max_rows * D_);
    if (!kFloat || !rows_usable_in_place(vv_, D_)) vbuf_.resize(kBlockN * D_);
  }

  void load_q(int64_t b, int64_t h, int64_t m0, int64_t rows) {
    const T* src = q_ + vq_.at(b, m0, h);
    if (qbuf_.empty()) {
      qa_ = reinterpret_cast<const float*>(src);
      lda_ = vq_.ss;
    } else {
      load_f32(src, vq_.ss, vq_.sd, rows, D_, qbuf_.data(), D_);
      qa_ = qbuf_.data();
      lda_ = D_;
    }
  }

  void load_kv(int64_t b, int64_t h, int64_t n0, int64_t cols) {
    cols_ = cols;
    ld_ = padded_ld(cols);
    load_f32_transposed(k_ + vk_.at(b, n0, h), vk_.ss, vk_.sd, cols, D_, kt_.data(), ld_);
    const T* vs = v_ + vv_.at(b, n0, h);
    if (vbuf_.empty()) {
      vb_ = reinterpret_cast<const float*>(vs);
      ldv_ = vv_.ss;
    } else {
      load_f32(vs, vv_.ss, vv_.sd, cols, D_, vbuf_.data(), D_);
      vb_ = vbuf_.data();
      ldv_ = D_;
    }
  }

  // S (ld = ld_s()) = scores of the chunk's query rows [r0, r0 + rows) against the block.
  float* scores(int64_t r0, int64_t rows) {
    gemm_f32(rows, cols_, D_, qa_ + r0 * lda_, lda_, kt_.data(), ld_, s_.data(), ld_, false);
    return s_.data();
  }
  int64_t ld_s() const { return ld_; }

  // Turns score row i into probabilities exp(s - m) in place; returns their sum.
  float probabilities(int64_t i, float* s_row, float scale, float m) {
    return exp_and_sum(s_row, cols_, scale, m);
  }

  // o [rows, D] += P.V
  void accumulate(int64_t rows, float* o) {
    gemm_f32(rows, D_, cols_, s_.data(), ld_, vb_, ldv_, o, D_, true);
  }

  static void release() { release_tile_state(false); }

 private:
  // Row length of K^T and S: a multiple of 16 floats but not of 256, so that walking
  // down a column does not hit the same few cache sets (4 KiB aliasing).
  static int64_t padded_ld(int64_t cols) {
    const int64_t ld = (cols + 15) / 16 * 16;
    return ld % 256 == 0 ? ld + 16 : ld;
  }

  static constexpr bool kFloat = std::is_same_v<T, float>;
  const int64_t D_;
  const View4 vq_, vk_, vv_;
  const T *q_, *k_, *v_;
  std::vector<float> qbuf_, vbuf_, kt_, s_;
  const float* qa_ = nullptr;
  const float* vb_ = nullptr;
  int64_t lda_ = 0, ldv_ = 0, cols_ = 0, ld_ = 0;
};

#ifdef RINGSP_HAVE_BRGEMM
namespace blas = at::native::cpublas;

// bf16 tile products on AMX: K^T and V are packed into the VNNI layout, P is rounded
// to bf16 (as PyTorch's own CPU flash attention does), accumulation is float32.
class AmxBf16Tiles {
 public:
  static bool usable(const at::Tensor& q) {
    return q.scalar_type() == at::kBFloat16 && q.size(3) % 2 == 0 && blas::could_pack(at::kBFloat16);
  }

  AmxBf16Tiles(const AttnProblem& p, int64_t max_rows)
      : D_(p.q.size(3)), vq_(p.q), vk_(p.k), vv_(p.v),
        q_(p.q.data_ptr<at::BFloat16>()), k_(p.k.data_ptr<at::BFloat16>()), v_(p.v.data_ptr<at::BFloat16>()),
        kpack_(ceil_div(kBlockN, kPanel) * kPanel * D_), vpack_(ceil_div(D_, kPanel) * kPanel * kBlockN),
        s_(kTileM * kBlockN), p_(kTileM * kBlockN) {
    if (!rows_usable_in_place(vq_, D_)) qbuf_.resize(max_rows * D_);
  }

  void load_q(int64_t b, int64_t h, int64_t m0, int64_t rows) {
    const at::BFloat16* src = q_ + vq_.at(b, m0, h);
    if (qbuf_.empty()) {
      qa_ = reinterpret_cast<const uint16_t*>(src);
      lda_ = vq_.ss;
    } else {
      load_bf16(src, vq_.ss, vq_.sd, rows, D_, qbuf_.data(), D_);
      qa_ = qbuf_.data();
      lda_ = D_;
    }
  }

  void load_kv(int64_t b, int64_t h, int64_t n0, int64_t cols) {
    cols_ = cols;
    keys_even_ = cols + cols % 2;  // the VNNI reduction runs over key pairs
    pack_kt_vnni(k_ + vk_.at(b, n0, h), vk_.ss, vk_.sd, cols, D_, kpack_.data());
    pack_v_vnni(v_ + vv_.at(b, n0, h), vv_.ss, vv_.sd, cols, keys_even_, D_, vpack_.data());
  }

  float* scores(int64_t r0, int64_t rows) {
    for (int64_t c0 = 0; c0 < cols_; c0 += kPanel) {
      blas::brgemm(rows, std::min(kPanel, cols_ - c0), D_, lda_, kPanel, kBlockN, false,
                   bf16(qa_ + r0 * lda_), bf16(kpack_.data() + c0 * D_), s_.data() + c0, true);
    }
    return s_.data();
  }
  int64_t ld_s() const { return kBlockN; }

  float probabilities(int64_t i, float* s_row, float scale, float m) {
    uint16_t* p_row = p_.data() + i * kBlockN;
    if (keys_even_ > cols_) p_row[cols_] = 0;  // the zero row padded onto V meets a zero weight
    return exp_to_bf16_and_sum(s_row, p_row, cols_, scale, m);
  }

  void accumulate(int64_t rows, float* o) {
    for (int64_t d0 = 0; d0 < D_; d0 += kPanel) {
      blas::brgemm(rows, std::min(kPanel, D_ - d0), keys_even_, kBlockN, kPanel, D_, true, bf16(p_.data()),
                   bf16(vpack_.data() + d0 * keys_even_), o + d0, true);
    }
  }

  // Gives the AMX tile state back before the thread leaves the kernel.
  static void release() { release_tile_state(true); }

 private:
  static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
  static const at::BFloat16* bf16(const uint16_t* p) { return reinterpret_cast<const at::BFloat16*>(p); }

  const int64_t D_;
  const View4 vq_, vk_, vv_;
  const at::BFloat16 *q_, *k_, *v_;
  std::vector<uint16_t> qbuf_, kpack_, vpack_;
  std::vector<float> s_;
  std::vector<uint16_t> p_;
  const uint16_t* qa_ = nullptr;
  int64_t lda_ = 0, cols_ = 0, keys_even_ = 0;
};
#endif  // RINGSP_HAVE_BRGEMM

// Online-softmax state of a chunk's rows: running max m (scaled scores), sum l of
// exp(s - m), and the unnormalised output o [rows, D].
struct RowState {
  std::vector<float> m, l, o;
  RowState(int64_t rows, int64_t D) : m(rows), l(rows), o(rows * D) {}
};

// The state a chunk starts from: the caller's (acc is normalised, so l = 1 where a row
// has seen keys) or empty.
void load_state(const AttnProblem& p, int64_t b, int64_t h, int64_t m0, int64_t rows, RowState& st) {
  const int64_t D = p.q.size(3);
  if (!p.has_state) {
    std::fill_n(st.m.begin(), rows, kNegInf);
    std::fill_n(st.l.begin(), rows, 0.f);
    std::fill_n(st.o.begin(), rows * D, 0.f);
    return;
  }
  const View4 va(p.out);
  const Lse3 vl(p.lse);
  const float* acc = p.out.data_ptr<float>();
  const float* lse = p.lse.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const float m = lse[vl.at(b, h, m0 + i)];
    const bool seen = m > kNegInf;
    st.m[i] = m;
    st.l[i] = seen ? 1.f : 0.f;
    float* o = st.o.data() + i * D;
    const float* src = acc + va.at(b, m0 + i, h);
    for (int64_t d = 0; d < D; ++d) o[d] = seen ? src[d * va.sd] : 0.f;
  }
}

// Normalises the chunk's rows and writes them back (acc or out, and lse).
template <typename T>
void store_state(const AttnProblem& p, int64_t b, int64_t h, int64_t m0, int64_t rows, RowState& st) {
  const int64_t D = p.q.size(3);
  const View4 vo(p.out);
  const Lse3 vl(p.lse);
  float* lse = p.lse.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    float* o = st.o.data() + i * D;
    const float l = st.l[i];
    if (l > 0.f) {
      scale_row(o, D, 1.f / l);
      lse[vl.at(b, h, m0 + i)] = st.m[i] + std::log(l);
    } else {
      std::fill_n(o, D, 0.f);
      lse[vl.at(b, h, m0 + i)] = kNegInf;
    }
    if (p.has_state) {
      float* dst = p.out.data_ptr<float>() + vo.at(b, m0 + i, h);
      for (int64_t d = 0; d < D; ++d) dst[d * vo.sd] = o[d];
    } else {
      T* dst = p.out.data_ptr<T>() + vo.at(b, m0 + i, h);
      for (int64_t d = 0; d < D; ++d) dst[d * vo.sd] = static_cast<T>(o[d]);
    }
  }
}

// Folds query tile [r0, r0 + rows) of the chunk into its state, given the tile's scores
// s: the rows become probabilities (kept inside `tiles` for the P.V product), each
// row's max and sum move to the new max and its output is rescaled to match.
template <typename Tiles>
void fold_scores(Tiles& tiles, float* s, int64_t r0, int64_t rows, int64_t cols, float scale, int64_t D,
                 RowState& st) {
  for (int64_t i = 0; i < rows; ++i) {
    float* s_row = s + i * tiles.ld_s();
    const float m_old = st.m[r0 + i];
    const float m_new = std::max(m_old, max_scaled(s_row, cols, scale));
    // A row whose scores are all -inf keeps its state: with m_ref = 0 its weights are 0.
    const float m_ref = m_new == kNegInf ? 0.f : m_new;
    const float alpha = m_old == m_new ? 1.f : exp_scalar(m_old - m_new);
    if (alpha != 1.f) scale_row(st.o.data() + (r0 + i) * D, D, alpha);
    st.l[r0 + i] = st.l[r0 + i] * alpha + tiles.probabilities(i, s_row, scale, m_ref);
    st.m[r0 + i] = m_new;
  }
}

template <typename T, typename Tiles>
void run(const AttnProblem& p) {
  const int64_t B = p.q.size(0), Sq = p.q.size(1), H = p.q.size(2), D = p.q.size(3);
  const int64_t tiles_per_row = (Sq + kTileM - 1) / kTileM;
  // Big chunks amortise the K/V packing; keep at least ~4 tasks per thread for balance.
  const int64_t want_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t per_task = std::max<int64_t>(1, std::min({B * H * tiles_per_row / want_tasks, kMaxTiles, tiles_per_row}));
  const int64_t chunk = per_task * kTileM;
  const int64_t chunks = (Sq + chunk - 1) / chunk;

  at::parallel_for(0, B * H * chunks, 1, [&](int64_t begin, int64_t end) {
    Tiles tiles(p, chunk);
    RowState st(chunk, D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * chunks), h = (task / chunks) % H;
      const int64_t m0 = (task % chunks) * chunk, rows = std::min(chunk, Sq - m0);
      load_state(p, b, h, m0, rows, st);
      tiles.load_q(b, h, m0, rows);
      for (int64_t n0 = 0; n0 < p.kv_len; n0 += kBlockN) {
        const int64_t cols = std::min(kBlockN, p.kv_len - n0);
        tiles.load_kv(b, h, n0, cols);
        for (int64_t r0 = 0; r0 < rows; r0 += kTileM) {
          const int64_t tile_rows = std::min(kTileM, rows - r0);
          fold_scores(tiles, tiles.scores(r0, tile_rows), r0, tile_rows, cols, p.scale, D, st);
          tiles.accumulate(tile_rows, st.o.data() + r0 * D);
        }
      }
      store_state<T>(p, b, h, m0, rows, st);
    }
    Tiles::release();
  });
}

}  // namespace

void flash_attention(const AttnProblem& p) {
  if (p.has_state && p.kv_len == 0) return;  // an empty block leaves the state as it is
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(), "ringsp_flash_attention", [&] {
#ifdef RINGSP_HAVE_BRGEMM
    if constexpr (std::is_same_v<scalar_t, at::BFloat16>) {
      if (AmxBf16Tiles::usable(p.q)) return run<scalar_t, AmxBf16Tiles>(p);
    }
#endif
    run<scalar_t, F32Tiles<scalar_t>>(p);
  });
}

}  // namespace ringsp::cpu
