// Backend test harness for the CUDA ops (in the spirit of ggml's test-backend-ops): every op
// runs on the GPU and on the CPU reference (Impl::reference) over the same seeded random
// inputs; outputs on the GPU sit between guard regions filled with a sentinel byte pattern
// (checked after every op for out-of-bounds writes) and are poisoned with NaN before the op
// (so an unwritten element fails); results are compared by normalised error and max error,
// with NaN/inf positions required to match. Tests skip (exit 77) without a GPU (gpu_main.cpp).
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/core/tensor.hpp"
#include "ds/ops/fp8.hpp"
#include "ds/ops/ops.hpp"
#include "kernels/runtime.cuh"

namespace ds::gpu_test {

using ops::Context;

inline Context cpu_ref() { Context c; c.impl = ops::Impl::reference; return c; }
inline Context gpu() { Context c; c.device = Device::cuda; return c; }

inline std::mt19937_64& rng() { static std::mt19937_64 r(20261130); return r; }

// Random F32 CPU tensor with values uniform in [lo, hi).
inline Tensor rand_f32(const Shape& s, float lo = -1, float hi = 1) {
  Tensor t = Tensor::empty(s);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng());
  return t;
}
// Random I32 CPU tensor uniform in [lo, hi].
inline Tensor rand_i32(const Shape& s, int lo, int hi) {
  Tensor t = Tensor::empty(s, DType::i32);
  std::uniform_int_distribution<int> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = d(rng());
  return t;
}

inline constexpr size_t kGuardBytes = 256;
inline constexpr uint8_t kGuardByte = 0xA5;

// GPU buffers with guard regions on both sides, freed at scope exit; every tensor made by
// upload()/empty() is a borrowed view into one of them. check() verifies every guard.
class Arena {
 public:
  ~Arena() {
    for (auto& b : bufs_) ds::cuda::free_device(b.base);
  }
  // GPU copy of a CPU tensor.
  Tensor upload(const Tensor& host) {
    Tensor t = alloc(host.shape(), host.dtype(), 0x00);
    t.copy_from(host);
    return t;
  }
  // Uninitialised GPU tensor, poisoned with 0xFF bytes (NaN for F32/BF16).
  Tensor empty(const Shape& s, DType dt = DType::f32) { return alloc(s, dt, 0xFF); }
  Tensor zeros(const Shape& s, DType dt = DType::f32) { return alloc(s, dt, 0x00); }
  // Every guard region still holds its sentinel.
  bool check() const {
    for (const auto& b : bufs_) {
      std::vector<uint8_t> h(kGuardBytes);
      for (size_t off : {size_t(0), kGuardBytes + b.bytes}) {
        std::string err;
        if (!ds::cuda::copy_to_host(h.data(), static_cast<uint8_t*>(b.base) + off, kGuardBytes,
                                    &err))
          return false;
        for (uint8_t v : h)
          if (v != kGuardByte) return false;
      }
    }
    return true;
  }

 private:
  struct Buf {
    void* base;
    size_t bytes;
  };
  Tensor alloc(const Shape& s, DType dt, uint8_t fill) {
    const size_t bytes = size_t(shape_numel(s)) * dtype_size(dt);
    void* base = nullptr;
    std::string err;
    REQUIRE(ds::cuda::malloc_device(&base, bytes + 2 * kGuardBytes, &err));
    std::vector<uint8_t> h(bytes + 2 * kGuardBytes, fill);
    std::memset(h.data(), kGuardByte, kGuardBytes);
    std::memset(h.data() + kGuardBytes + bytes, kGuardByte, kGuardBytes);
    REQUIRE(ds::cuda::copy_to_device(base, h.data(), h.size(), &err));
    bufs_.push_back({base, bytes});
    return Tensor::borrow(static_cast<uint8_t*>(base) + kGuardBytes, s, dt, Device::cuda);
  }
  std::vector<Buf> bufs_;
};

inline Tensor download(const Tensor& t) {
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  h.copy_from(t);
  return h;
}

inline double to_double(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f32: return t.f32()[i];
    case DType::i32: return t.i32()[i];
    case DType::bf16: return bf16_to_f32(t.data<uint16_t>()[i]);
    case DType::u8: return t.data<uint8_t>()[i];
    default: return NAN;
  }
}

// GPU copy of `host` whose data starts 4 bytes past a 16-byte boundary (misaligned for float4).
inline Tensor upload_misaligned(Arena& ar, const Tensor& host) {
  Tensor big = Tensor::empty({host.numel() + 1}, host.dtype());
  const size_t es = dtype_size(host.dtype());
  std::memset(big.raw(), 0, es);
  std::memcpy(static_cast<char*>(big.raw()) + es, host.raw(), host.nbytes());
  Tensor g = ar.upload(big);
  return Tensor::borrow(static_cast<char*>(g.raw()) + es, host.shape(), host.dtype(), Device::cuda);
}

inline Tensor up(Arena& ar, const Tensor& host, bool misaligned = false) {
  return misaligned ? upload_misaligned(ar, host) : ar.upload(host);
}

// Bitwise equality (NaNs equal to NaNs); reports the first mismatch.
inline void expect_exact(const Tensor& got_any, const Tensor& want, const char* what) {
  const Tensor got = got_any.device() == Device::cpu ? got_any : download(got_any);
  REQUIRE(got.numel() == want.numel());
  REQUIRE(got.dtype() == want.dtype());
  const size_t es = dtype_size(want.dtype());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = to_double(got, i), w = to_double(want, i);
    const bool same = std::memcmp(static_cast<const char*>(got.raw()) + size_t(i) * es,
                                  static_cast<const char*>(want.raw()) + size_t(i) * es, es) == 0 ||
                      (std::isnan(g) && std::isnan(w));
    if (!same && bad++ == 0) first = i;
  }
  INFO(what << ": " << bad << " of " << want.numel() << " elements differ; first at " << first
            << (first >= 0 ? " got " + std::to_string(to_double(got, first)) + " want " +
                                 std::to_string(to_double(want, first))
                           : std::string()));
  CHECK(bad == 0);
}

struct Diff {
  double nmse = 0, max_abs = 0, max_rel = 0;
  int64_t nan_mismatch = 0, count = 0;
};

// got (GPU or CPU) against want (CPU); nmse = sum (g-w)^2 / sum w^2.
inline Diff compare(const Tensor& got_any, const Tensor& want) {
  const Tensor got = got_any.device() == Device::cpu ? got_any : download(got_any);
  Diff d;
  REQUIRE(got.numel() == want.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = to_double(got, i), w = to_double(want, i);
    if (std::isfinite(g) != std::isfinite(w) || std::isnan(g) != std::isnan(w)) {
      d.nan_mismatch++;
      continue;
    }
    if (!std::isfinite(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
    d.max_abs = std::max(d.max_abs, std::fabs(g - w));
    d.max_rel = std::max(d.max_rel, std::fabs(g - w) / std::max(1e-6, std::fabs(w)));
  }
  d.count = got.numel();
  d.nmse = den > 0 ? num / den : num;
  return d;
}

// CHECKs that got matches want: no NaN/inf mismatch, nmse <= tol (and max_abs <= atol when
// atol >= 0). `what` names the op/output in failure messages.
inline void expect_close(const Tensor& got, const Tensor& want, double tol, const char* what,
                         double atol = -1) {
  const Diff d = compare(got, want);
  INFO(what << ": nmse " << d.nmse << " max_abs " << d.max_abs << " nan/inf mismatches "
            << d.nan_mismatch << " of " << d.count);
  CHECK(d.nan_mismatch == 0);
  CHECK(d.nmse <= tol);
  if (atol >= 0) CHECK(d.max_abs <= atol);
}

}  // namespace ds::gpu_test
