// RoPE/YaRN: the correction range and the corrected inverse frequencies of the 671B settings
// against the table of spec §1.7, the plain-RoPE case, and the attention softmax scale with and
// without YaRN (spec §1.6: 0.1352338 / 0.0721688).
// reference: spec §1.6-1.7; DeepSeek-V3 inference/model.py precompute_freqs_cis.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "ds/model/config.hpp"
#include "ds/model/rope_yarn.hpp"

using namespace ds::model;

TEST_CASE("yarn correction range of the 671B settings is low=10, high=23") {
  ModelArgs a = preset("671b");
  REQUIRE(a.yarn);
  const YarnRange r = yarn_correction_range(a);
  CHECK(r.low == 10);
  CHECK(r.high == 23);
}

TEST_CASE("yarn inverse frequencies reproduce the spec table") {
  const ModelArgs a = preset("671b");
  const std::vector<double> f = rope_inv_freqs(a);
  const std::vector<double> ramp = yarn_ramp(a);
  REQUIRE(f.size() == 32);
  // pairs 0..10 unchanged
  const double unchanged[11] = {1, 0.749894, 0.562341, 0.421697, 0.316228, 0.237137,
                                0.177828, 0.133352, 0.1, 0.0749894, 0.0562341};
  for (int i = 0; i <= 10; ++i) {
    CHECK(f[size_t(i)] == doctest::Approx(unchanged[i]).epsilon(2e-6));
    CHECK(ramp[size_t(i)] == 0.0);
  }
  // blended pairs 11..22: (i, f'_i, ramp)
  struct Row { int i; double f, ramp; };
  const Row rows[] = {{11, 0.0390069, 0.077}, {12, 0.0268794, 0.154}, {13, 0.0183781, 0.231},
                      {14, 0.012448, 0.308},  {15, 0.00833451, 0.385}, {16, 0.0055, 0.462},
                      {17, 0.003562, 0.538},  {18, 0.00224937, 0.615}, {19, 0.00137051, 0.692},
                      {20, 0.000790569, 0.769}, {21, 0.00041499, 0.846}, {22, 0.000177828, 0.923}};
  for (const Row& r : rows) {
    CAPTURE(r.i);
    CHECK(f[size_t(r.i)] == doctest::Approx(r.f).epsilon(2e-5));
    CHECK(ramp[size_t(r.i)] == doctest::Approx(r.ramp).epsilon(2e-3));
  }
  // pairs 23..31: f_i / 40, 3.3338e-5 ... 3.3338e-6
  for (int i = 23; i < 32; ++i) {
    CHECK(ramp[size_t(i)] == 1.0);
    const double plain = std::pow(10000.0, -2.0 * i / 64.0);
    CHECK(f[size_t(i)] == doctest::Approx(plain / 40.0).epsilon(1e-12));
  }
  CHECK(f[23] == doctest::Approx(3.3338e-5).epsilon(1e-4));
  CHECK(f[31] == doctest::Approx(3.3338e-6).epsilon(1e-4));
}

TEST_CASE("without rope_scaling the frequencies are plain RoPE") {
  ModelArgs a = preset("671b");
  a.yarn = false;
  const std::vector<double> f = rope_inv_freqs(a);
  for (int i = 0; i < 32; ++i)
    CHECK(f[size_t(i)] == doctest::Approx(std::pow(10000.0, -2.0 * i / 64.0)).epsilon(1e-12));
  const ds::Tensor t = rope_freqs_tensor(ds::ops::Context{}, a);
  REQUIRE(t.numel() == 32);
  CHECK(t.f32()[5] == float(f[5]));
}

TEST_CASE("softmax scale with and without YaRN") {
  ModelArgs a = preset("671b");
  CHECK(a.softmax_scale() == doctest::Approx(0.13523378).epsilon(1e-7));
  a.yarn = false;
  CHECK(a.softmax_scale() == doctest::Approx(0.07216878).epsilon(1e-7));
}
