// GPU casts against the CPU reference (dtype.hpp): every fp8 code's value, every midpoint
// between neighbours, random floats across magnitudes, NaN/inf, and guard bytes after the
// output to catch out-of-bounds writes. Skips (exit 77) without a GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ds/core/dtype.hpp"
#include "kernels/runtime.cuh"
#include "kernels/smxx_fp8_convert.cuh"

namespace {
std::vector<float> probe_values() {
  std::vector<float> v = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e30f, -1e30f, 448.0f, 464.0f,
                          57344.0f, 61440.0f};
  for (int c = 0; c < 256; ++c) {
    for (float (*dec)(uint8_t) : {ds::e4m3_to_f32, ds::e5m2_to_f32}) {
      float a = dec(uint8_t(c)), b = dec(uint8_t((c + 1) & 0xff));
      v.push_back(a);
      if (std::isfinite(a) && std::isfinite(b)) v.push_back(float((double(a) + b) / 2));
    }
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> e(-20.0f, 20.0f);
  for (int i = 0; i < 100000; ++i) v.push_back((rng() & 1 ? 1 : -1) * std::exp2(e(rng)));
  return v;
}

template <typename T>
void run_cast(const std::vector<float>& in, ds::cuda::CastTarget t, std::vector<T>& out) {
  const size_t guard = 64;
  void *din = nullptr, *dout = nullptr;
  std::string err;
  REQUIRE(ds::cuda::malloc_device(&din, in.size() * 4, &err));
  REQUIRE(ds::cuda::malloc_device(&dout, (in.size() + guard) * sizeof(T), &err));
  std::vector<T> host(in.size() + guard, T(0x5a));
  REQUIRE(ds::cuda::copy_to_device(din, in.data(), in.size() * 4, &err));
  REQUIRE(ds::cuda::copy_to_device(dout, host.data(), host.size() * sizeof(T), &err));
  REQUIRE(ds::cuda::cast_f32(static_cast<float*>(din), dout, in.size(), t));
  REQUIRE(ds::cuda::synchronize(&err));
  REQUIRE(ds::cuda::copy_to_host(host.data(), dout, host.size() * sizeof(T), &err));
  for (size_t i = in.size(); i < host.size(); ++i) REQUIRE(host[i] == T(0x5a));  // guard
  host.resize(in.size());
  out = host;
  ds::cuda::free_device(din);
  ds::cuda::free_device(dout);
}
}  // namespace

TEST_CASE("gpu fp8/bf16 casts match the CPU reference") {
  auto in = probe_values();
  std::vector<uint8_t> e4, e5;
  std::vector<uint16_t> bf;
  run_cast(in, ds::cuda::CastTarget::e4m3, e4);
  run_cast(in, ds::cuda::CastTarget::e5m2, e5);
  run_cast(in, ds::cuda::CastTarget::bf16, bf);
  size_t bad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    float x = in[i];
    bool nan = std::isnan(x);
    auto same8 = [&](uint8_t got, uint8_t want, float (*dec)(uint8_t)) {
      return nan ? std::isnan(dec(got)) : got == want;
    };
    if (!same8(e4[i], ds::f32_to_e4m3(x), ds::e4m3_to_f32) ||
        !same8(e5[i], ds::f32_to_e5m2(x), ds::e5m2_to_f32) ||
        (nan ? !std::isnan(ds::bf16_to_f32(bf[i])) : bf[i] != ds::f32_to_bf16(x))) {
      if (bad++ < 10) MESSAGE("mismatch at x=" << x);
    }
  }
  CHECK(bad == 0);
}

int main(int argc, char** argv) {
  if (ds::cuda::device_count() == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  std::printf("device: %s\n", ds::cuda::device_name(0).c_str());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
