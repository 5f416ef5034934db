// A CPU model of the slice of the AscendC API that ../merge_kernel.cpp uses, so the kernel
// source itself can be compiled with g++ and run where no CANN toolkit exists
// (tests/kernels/test_npu.py does). It checks what the device would not forgive: UB over-
// allocation, operands not 32-byte aligned, DataCopy lengths that are not whole 32-byte
// blocks, GM accesses outside the range a core was given, a queue allocated past its depth
// or dequeued empty (a hang on the device). Any violation aborts with a message.
//
// It models semantics, not timing: pipes run in program order, so missing synchronisation
// is NOT detected here, and the arithmetic is IEEE float (std::exp / std::log), not the
// vector unit's. Signatures follow the documented Level-2 ("first count elements") API.
#ifndef RINGSP_ASCENDC_CPU_MODEL_H_
#define RINGSP_ASCENDC_CPU_MODEL_H_

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>

#define __aicore__
#define __global__
#define __gm__

using GM_ADDR = uint8_t*;
using half = _Float16;
using event_t = int;

struct bfloat16_t {  // storage only: the kernel never does arithmetic on it
  uint16_t bits;
  explicit operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
};

namespace AscendC {

constexpr uint64_t kUbBytes = 192 * 1024;  // Atlas A2 vector core

[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "AscendC CPU model: %s\n", what);
  std::abort();
}
#define RINGSP_MODEL_CHECK(cond, what) \
  do {                                 \
    if (!(cond)) ::AscendC::Fail(what); \
  } while (0)

inline uint8_t* UbBase() {
  alignas(32) static uint8_t ub[kUbBytes];
  return ub;
}
inline uint64_t& UbUsed() {  // bytes allocated by the current TPipe (read by the runner)
  static uint64_t used = 0;
  return used;
}
inline int64_t& BlockIdx() {
  static int64_t idx = 0;
  return idx;
}
inline int64_t GetBlockIdx() { return BlockIdx(); }
inline uint64_t Align32(uint64_t n) { return (n + 31) / 32 * 32; }

enum class TPosition { VECIN, VECOUT, VECCALC };
enum class HardEvent { V_S, S_V, MTE2_V, V_MTE3, MTE3_MTE2 };
enum class RoundMode { CAST_NONE, CAST_RINT };

template <typename T>
class LocalTensor {
 public:
  LocalTensor() = default;
  LocalTensor(T* p, uint64_t n) : p_(p), n_(n) {}
  LocalTensor operator[](uint64_t off) const {
    RINGSP_MODEL_CHECK(off <= n_, "LocalTensor offset past its buffer");
    return LocalTensor(p_ + off, n_ - off);
  }
  T GetValue(uint64_t i) const {
    RINGSP_MODEL_CHECK(i < n_, "GetValue past the buffer");
    return p_[i];
  }
  T* Operand(uint64_t count) const {  // what a vector instruction or DataCopy may touch
    RINGSP_MODEL_CHECK(p_ != nullptr, "LocalTensor used before allocation");
    RINGSP_MODEL_CHECK(count <= n_, "UB operand past the end of its buffer");
    RINGSP_MODEL_CHECK((reinterpret_cast<uintptr_t>(p_) - reinterpret_cast<uintptr_t>(UbBase())) % 32 == 0,
                       "UB operand not 32-byte aligned");
    return p_;
  }

 private:
  T* p_ = nullptr;
  uint64_t n_ = 0;
};

template <typename T>
class GlobalTensor {
 public:
  void SetGlobalBuffer(__gm__ T* p, uint64_t n) {
    p_ = p;
    n_ = n;
  }
  GlobalTensor operator[](uint64_t off) const {
    RINGSP_MODEL_CHECK(off <= n_, "GlobalTensor offset past the core's range");
    GlobalTensor g;
    g.SetGlobalBuffer(p_ + off, n_ - off);
    return g;
  }
  T* Operand(uint64_t count) const {
    RINGSP_MODEL_CHECK(count <= n_, "GM access past the range SetGlobalBuffer gave this core");
    return p_;
  }

 private:
  T* p_ = nullptr;
  uint64_t n_ = 0;
};

template <TPosition P, int32_t DEPTH>
class TQue {
 public:
  void Init(uint8_t* base, int32_t num, uint64_t len) {
    RINGSP_MODEL_CHECK(num >= 1 && num <= DEPTH, "InitBuffer: more buffers than the queue depth");
    base_ = base;
    len_ = len;
    for (int32_t i = 0; i < num; ++i) free_.push_back(i);
  }
  template <typename T>
  LocalTensor<T> AllocTensor() {
    RINGSP_MODEL_CHECK(!free_.empty(), "AllocTensor with every buffer of the queue in use");
    const int32_t i = free_.front();
    free_.pop_front();
    return At<T>(i);
  }
  template <typename T>
  void EnQue(const LocalTensor<T>& t) {
    queued_.push_back(Index(t));
  }
  template <typename T>
  LocalTensor<T> DeQue() {
    RINGSP_MODEL_CHECK(!queued_.empty(), "DeQue on an empty queue");
    const int32_t i = queued_.front();
    queued_.pop_front();
    return At<T>(i);
  }
  template <typename T>
  void FreeTensor(const LocalTensor<T>& t) {
    free_.push_back(Index(t));
  }

 private:
  template <typename T>
  LocalTensor<T> At(int32_t i) {
    return LocalTensor<T>(reinterpret_cast<T*>(base_ + i * Align32(len_)), len_ / sizeof(T));
  }
  template <typename T>
  int32_t Index(const LocalTensor<T>& t) {
    const uintptr_t off = reinterpret_cast<uintptr_t>(t.Operand(0)) - reinterpret_cast<uintptr_t>(base_);
    RINGSP_MODEL_CHECK(off % Align32(len_) == 0, "EnQue/FreeTensor of a tensor the queue did not hand out");
    return static_cast<int32_t>(off / Align32(len_));
  }
  uint8_t* base_ = nullptr;
  uint64_t len_ = 0;
  std::deque<int32_t> free_, queued_;
};

template <TPosition P>
class TBuf {
 public:
  void Init(uint8_t* p, uint64_t len) {
    p_ = p;
    len_ = len;
  }
  template <typename T>
  LocalTensor<T> Get() {
    RINGSP_MODEL_CHECK(p_ != nullptr, "TBuf::Get before InitBuffer");
    return LocalTensor<T>(reinterpret_cast<T*>(p_), len_ / sizeof(T));
  }

 private:
  uint8_t* p_ = nullptr;
  uint64_t len_ = 0;
};

class TPipe {
 public:
  TPipe() { UbUsed() = 0; }
  template <TPosition P, int32_t DEPTH>
  void InitBuffer(TQue<P, DEPTH>& q, int32_t num, uint32_t len) {
    q.Init(Take(num * Align32(len)), num, len);
  }
  template <TPosition P>
  void InitBuffer(TBuf<P>& b, uint32_t len) {
    b.Init(Take(Align32(len)), len);
  }
  event_t FetchEventID(HardEvent) { return 0; }

 private:
  static uint8_t* Take(uint64_t bytes) {
    uint8_t* p = UbBase() + UbUsed();
    UbUsed() += bytes;
    RINGSP_MODEL_CHECK(UbUsed() <= kUbBytes, "InitBuffer past the UB size");
    return p;
  }
};

template <HardEvent E>
void SetFlag(event_t) {}
template <HardEvent E>
void WaitFlag(event_t) {}

template <typename T>
void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count) {
  RINGSP_MODEL_CHECK(count * sizeof(T) % 32 == 0, "DataCopy of a length that is not whole 32-byte blocks");
  std::memcpy(dst.Operand(count), src.Operand(count), count * sizeof(T));
}
template <typename T>
void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
  RINGSP_MODEL_CHECK(count * sizeof(T) % 32 == 0, "DataCopy of a length that is not whole 32-byte blocks");
  std::memcpy(dst.Operand(count), src.Operand(count), count * sizeof(T));
}

#define RINGSP_MODEL_SCALAR_OP(NAME, EXPR)                                                              \
  template <typename T>                                                                                \
  void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& s, const int32_t& count) { \
    T* d = dst.Operand(count);                                                                         \
    const T* a = src.Operand(count);                                                                   \
    for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                                 \
  }
RINGSP_MODEL_SCALAR_OP(Adds, a[i] + s)
RINGSP_MODEL_SCALAR_OP(Muls, a[i] * s)
RINGSP_MODEL_SCALAR_OP(Maxs, a[i] > s ? a[i] : s)
RINGSP_MODEL_SCALAR_OP(Mins, a[i] < s ? a[i] : s)

#define RINGSP_MODEL_BINARY_OP(NAME, EXPR)                                                                       \
  template <typename T>                                                                                         \
  void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,                  \
            const int32_t& count) {                                                                             \
    T* d = dst.Operand(count);                                                                                  \
    const T* a = src0.Operand(count);                                                                           \
    const T* b = src1.Operand(count);                                                                           \
    for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                                          \
  }
RINGSP_MODEL_BINARY_OP(Add, a[i] + b[i])
RINGSP_MODEL_BINARY_OP(Sub, a[i] - b[i])
RINGSP_MODEL_BINARY_OP(Mul, a[i] * b[i])
RINGSP_MODEL_BINARY_OP(Div, a[i] / b[i])
RINGSP_MODEL_BINARY_OP(Max, a[i] > b[i] ? a[i] : b[i])

#define RINGSP_MODEL_UNARY_OP(NAME, EXPR)                                                        \
  template <typename T>                                                                          \
  void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count) {       \
    T* d = dst.Operand(count);                                                                   \
    const T* a = src.Operand(count);                                                             \
    for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                           \
  }
RINGSP_MODEL_UNARY_OP(Exp, std::exp(a[i]))
RINGSP_MODEL_UNARY_OP(Ln, std::log(a[i]))

template <typename D, typename S>
void Cast(const LocalTensor<D>& dst, const LocalTensor<S>& src, const RoundMode&, uint32_t count) {
  D* d = dst.Operand(count);
  const S* a = src.Operand(count);
  for (uint32_t i = 0; i < count; ++i) d[i] = static_cast<D>(static_cast<float>(a[i]));
}

}  // namespace AscendC

#endif  // RINGSP_ASCENDC_CPU_MODEL_H_
