// Shared helpers of the ops tests (in the spirit of ggml's test-backend-ops): seeded random
// tensors, outputs placed inside guard regions filled with a sentinel, NMSE / max-abs
// comparisons with NaN-position checks, and a central finite-difference checker in double.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ds/ops/ops.hpp"

namespace ds::ops::test {

inline Context ref_ctx() { Context c; c.impl = Impl::reference; return c; }
inline Context opt_ctx(int threads = 2) {
  Context c;
  c.impl = Impl::optimized;
  c.threads = threads;
  return c;
}

inline std::mt19937_64& rng() { static std::mt19937_64 r(1234567); return r; }
inline double urand(double lo = -1, double hi = 1) {
  return std::uniform_real_distribution<double>(lo, hi)(rng());
}
inline std::vector<double> rand_vec(size_t n, double lo = -1, double hi = 1) {
  std::vector<double> v(n);
  for (double& x : v) x = urand(lo, hi);
  return v;
}

constexpr float kSentinel = -7777.125f;
constexpr int64_t kGuardRows = 2;

// A tensor of `shape` viewed in the middle of a larger allocation along dim 0, the rest
// filled with kSentinel; intact() checks the guard rows were never written.
struct Guarded {
  Tensor full, t;
  int64_t row = 1;
  Guarded(const Shape& shape, DType dt = DType::f32) {
    Shape big = shape;
    big[0] += 2 * kGuardRows;
    full = Tensor::empty(big, dt);
    row = shape[0] ? shape_numel(shape) / shape[0] : 0;
    fill_all(kSentinel);
    t = full.slice0(kGuardRows, kGuardRows + shape[0]);
  }
  void fill_all(float v) {
    if (full.dtype() == DType::f32) {
      for (int64_t i = 0; i < full.numel(); ++i) full.f32()[i] = v;
    } else {
      for (int64_t i = 0; i < full.numel(); ++i) full.i32()[i] = int32_t(v);
    }
  }
  bool intact() const {
    const int64_t g = kGuardRows * row, n = full.numel();
    for (int64_t i = 0; i < n; ++i) {
      if (i >= g && i < n - g) continue;
      bool ok = full.dtype() == DType::f32 ? std::memcmp(&full.f32()[i], &kSentinel, 4) == 0
                                           : full.i32()[i] == int32_t(kSentinel);
      if (!ok) return false;
    }
    return true;
  }
};

inline Tensor f32_from(const std::vector<double>& v, const Shape& s) {
  Tensor t = Tensor::empty(s);
  for (size_t i = 0; i < v.size(); ++i) t.f32()[i] = float(v[i]);
  return t;
}
inline Tensor rand_f32(const Shape& s, double lo = -1, double hi = 1) {
  return f32_from(rand_vec(size_t(shape_numel(s)), lo, hi), s);
}
inline Tensor i32_from(const std::vector<int32_t>& v, const Shape& s) {
  Tensor t = Tensor::empty(s, DType::i32);
  for (size_t i = 0; i < v.size(); ++i) t.i32()[i] = v[i];
  return t;
}
inline std::vector<double> to_vec(const Tensor& t) {
  std::vector<double> v(size_t(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = t.f32()[i];
  return v;
}

// The same byte size and bytes (an empty tensor has no storage: no memcmp of a null pointer).
inline bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// Normalised mean squared error sum((a-b)^2) / sum(b^2) (0 when both are zero), after checking
// that NaN/inf sit at the same positions in both.
inline double nmse(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float x = a.f32()[i], y = b.f32()[i];
    if (!std::isfinite(x) || !std::isfinite(y)) {
      CHECK_MESSAGE((std::isnan(x) == std::isnan(y) && (std::isnan(x) || x == y)),
                    "non-finite mismatch at ", i, ": ", x, " vs ", y);
      continue;
    }
    num += (double(x) - y) * (double(x) - y);
    den += double(y) * y;
  }
  return den == 0 ? num : num / den;
}
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(double(a.f32()[i]) - b.f32()[i]));
  return m;
}

// Central differences of loss() w.r.t. every entry of x (perturbed in place), compared with
// `analytic`: max |a - n| / max(max |n|, 1e-3) must stay below tol.
inline void grad_check(std::vector<double>& x, const std::function<double()>& loss,
                       const std::vector<double>& analytic, const std::string& what,
                       double tol = 1e-6, double h = 1e-5) {
  REQUIRE(analytic.size() == x.size());
  double worst = 0, scale = 1e-3;
  std::vector<double> num(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    num[i] = (lp - lm) / (2 * h);
    scale = std::max(scale, std::fabs(num[i]));
  }
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(analytic[i] - num[i]));
  INFO(what, ": max abs error ", worst, " scale ", scale);
  CHECK(worst / scale < tol);
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace ds::ops::test
