// The many-tensor kernels (kernels/multi_tensor_kernels.cuh: ops::sum_squares_multi,
// zero_multi and bf16_round_multi on the GPU, the optimiser's passes over every parameter) run
// on the CPU by the host emulator (cuda_emu.hpp: a fiber per CUDA thread) over tables
// laid out as the launchers lay them out (chunk_prefix, the alignment rules): an empty entry,
// entries of a few elements, one over two chunks (65,536 elements; 1 MiB for the zeroing),
// and a misaligned one (the scalar path). The sums of squares equal the reference's
// (ops::sum_squares, double) to 1e-12 relative (another order of double sums); every byte is
// zeroed and no other; the rounding is f32_to_bf16's bit for bit, as codes and as F32 values
// (in place). Outputs between guard bytes.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"
#include "kernels/multi_tensor_kernels.cuh"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"
#include "ds/ops/ops.hpp"
#include "emu_buffers.hpp"
#include "moe_pairs_util.hpp"

namespace {

using ds::Tensor;
using ds::test::EmuBuf;
using ds::test::emu_random;
using ds::test::ref_ctx;
using ds::test::cuda_emu::launch;
namespace mt = ds::cuda::multitensor;

struct Spec {
  int64_t n;     // elements (bytes for the zeroing)
  size_t skew;   // 4: misaligned
};
const Spec kSpecs[] = {{1000, 0}, {0, 0}, {5, 0}, {65536 + 7, 0}, {130, 4}, {3, 0}};

TEST_CASE("emulated sum_squares_multi kernel equals the CPU reference") {
  std::mt19937_64 rng(1);
  std::vector<Tensor> xs;
  std::vector<std::unique_ptr<EmuBuf>> bufs;
  std::vector<int64_t> ns;
  for (const Spec& s : kSpecs) {
    xs.push_back(emu_random({s.n}, rng, -3.f, 3.f));
    bufs.push_back(std::make_unique<EmuBuf>(xs.back(), s.skew));
    ns.push_back(s.n);
  }
  const int count = int(xs.size());
  std::vector<int64_t> first(xs.size() + 1);
  const int64_t chunks = ds::cuda::chunk_prefix(ns.data(), count, mt::kChunk, first.data());
  std::vector<mt::SumEntry> tab;
  for (size_t i = 0; i < xs.size(); ++i)
    tab.push_back({bufs[i]->f(), ns[i], first[i], mt::aligned16(bufs[i]->f())});
  std::vector<double> partial(size_t(chunks), NAN), got(xs.size());
  launch(mt::sum_squares_multi_kernel, dim3(unsigned(chunks)), dim3(unsigned(mt::kThreads)),
         static_cast<const mt::SumEntry*>(tab.data()), count, partial.data());
  mt::add_partials(first.data(), partial.data(), count, got.data());
  for (size_t i = 0; i < xs.size(); ++i) {
    INFO("entry " << i << " n=" << ns[i]);
    CHECK(tab[i].vec == (kSpecs[i].skew == 0));
    const double want = ds::ops::sum_squares(ref_ctx(), xs[i]);
    CHECK(std::fabs(got[i] - want) <= 1e-12 * want);
    CHECK(bufs[i]->ok());
  }
}

TEST_CASE("emulated zero_multi kernel zeroes every byte and no other") {
  const Spec specs[] = {{64, 0}, {0, 0}, {13, 0}, {(1 << 20) + 17, 0}, {100, 4}, {16, 0}};
  std::vector<std::unique_ptr<EmuBuf>> bufs;
  std::vector<int64_t> bytes;
  for (const Spec& s : specs) {
    bufs.push_back(std::make_unique<EmuBuf>(size_t(s.n), s.skew));
    std::memset(bufs.back()->ptr(), 0x5c, size_t(s.n));
    bytes.push_back(s.n);
  }
  const int count = int(bufs.size());
  std::vector<int64_t> first(bufs.size() + 1);
  const int64_t chunks = ds::cuda::chunk_prefix(bytes.data(), count, mt::kZeroChunk,
                                                first.data());
  std::vector<mt::ZeroEntry> tab;
  for (size_t i = 0; i < bufs.size(); ++i) {
    auto* p = static_cast<uint8_t*>(bufs[i]->ptr());
    tab.push_back({p, bytes[i], first[i], mt::aligned16(p)});
  }
  launch(mt::zero_multi_kernel, dim3(unsigned(chunks)), dim3(unsigned(mt::kThreads)),
         static_cast<const mt::ZeroEntry*>(tab.data()), count);
  for (size_t i = 0; i < bufs.size(); ++i) {
    INFO("entry " << i << " bytes=" << bytes[i]);
    CHECK(tab[i].vec == (specs[i].skew == 0));
    const auto* p = static_cast<const uint8_t*>(bufs[i]->ptr());
    int64_t nonzero = 0;
    for (int64_t b = 0; b < bytes[i]; ++b) nonzero += p[b] != 0;
    CHECK(nonzero == 0);
    CHECK(bufs[i]->ok());
  }
}

void check_round(bool codes) {
  const std::string label = codes ? "bf16_round_multi codes" : "bf16_round_multi F32 in place";
  INFO(label);
  std::mt19937_64 rng(codes ? 2 : 3);
  std::vector<Tensor> xs;
  std::vector<std::unique_ptr<EmuBuf>> in, out;
  std::vector<int64_t> ns;
  for (const Spec& s : kSpecs) {
    xs.push_back(emu_random({s.n}, rng, -3.f, 3.f));
    if (s.n > 4) xs.back().f32()[2] = NAN;
    in.push_back(std::make_unique<EmuBuf>(xs.back(), s.skew));
    if (codes) out.push_back(std::make_unique<EmuBuf>(size_t(s.n) * 2, s.skew));
    ns.push_back(s.n);
  }
  const int count = int(xs.size());
  std::vector<int64_t> first(xs.size() + 1);
  const int64_t chunks = ds::cuda::chunk_prefix(ns.data(), count, mt::kChunk, first.data());
  std::vector<mt::RoundEntry> tab;
  for (size_t i = 0; i < xs.size(); ++i) {
    void* o = codes ? out[i]->ptr() : in[i]->ptr();   // F32: in place
    tab.push_back({in[i]->f(), o, ns[i], first[i], mt::round_vec(in[i]->f(), o, codes)});
    CHECK(tab.back().vec == (kSpecs[i].skew == 0));
  }
  auto* k = codes ? mt::bf16_round_multi_kernel<true> : mt::bf16_round_multi_kernel<false>;
  launch(k, dim3(unsigned(chunks)), dim3(unsigned(mt::kThreads)),
         static_cast<const mt::RoundEntry*>(tab.data()), count);
  for (size_t i = 0; i < xs.size(); ++i) {
    INFO("entry " << i << " n=" << ns[i]);
    const float* x = xs[i].f32();
    int64_t bad = 0;
    for (int64_t j = 0; j < ns[i]; ++j) {
      const uint16_t want = ds::f32_to_bf16(x[j]);
      const float rounded = ds::bf16_to_f32(want);
      if (codes) bad += out[i]->u()[j] != want;
      else bad += std::memcmp(in[i]->f() + j, &rounded, sizeof(float)) != 0;
    }
    CHECK(bad == 0);
    CHECK(in[i]->ok());
    if (codes) CHECK(out[i]->ok());
  }
}

}  // namespace

TEST_CASE("emulated bf16_round_multi kernel equals f32_to_bf16 bit for bit") {
  check_round(true);
  check_round(false);
}
