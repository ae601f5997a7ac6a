// The NCCL communicator on a real GPU (label `gpu`; exits 77 without a device): a world of one
// rank over device buffers runs every collective the trainers use, each checked against the
// expected values with guard bytes after the outputs (a collective must not write past its
// count). One GPU cannot hold two NCCL ranks, so multi-rank NCCL needs a multi-GPU machine.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ds/dist/topology.hpp"
#include "kernels/runtime.cuh"

using namespace ds::dist;

namespace {

constexpr size_t kGuard = 64;   // bytes checked after every output

// A device buffer of n elements of T plus guard bytes, filled from `init`.
template <class T>
struct DeviceBuf {
  void* p = nullptr;
  size_t n = 0;
  DeviceBuf(const std::vector<T>& init, size_t n_alloc) : n(n_alloc) {
    std::string err;
    REQUIRE(ds::cuda::malloc_device(&p, n * sizeof(T) + kGuard, &err));
    std::vector<unsigned char> fill(n * sizeof(T) + kGuard, 0xA5);
    std::memcpy(fill.data(), init.data(), init.size() * sizeof(T));
    REQUIRE(ds::cuda::copy_to_device(p, fill.data(), fill.size(), &err));
  }
  ~DeviceBuf() { ds::cuda::free_device(p); }
  std::vector<T> read(size_t count) const {
    std::string err;
    std::vector<unsigned char> all(n * sizeof(T) + kGuard);
    REQUIRE(ds::cuda::copy_to_host(all.data(), p, all.size(), &err));
    for (size_t i = n * sizeof(T); i < all.size(); ++i) REQUIRE(all[i] == 0xA5);
    std::vector<T> out(count);
    std::memcpy(out.data(), all.data(), count * sizeof(T));
    return out;
  }
};

std::unique_ptr<Comm> nccl_world() {
  LaunchOptions o;
  o.device = "cuda";
  return make_nccl_world(LaunchInfo{}, o);
}

}  // namespace

TEST_CASE("nccl: one-rank collectives on device buffers") {
  auto w = nccl_world();
  REQUIRE(w->backend() == "nccl");
  REQUIRE(w->size() == 1);
  std::vector<float> x{1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  {
    DeviceBuf<float> b(x, x.size());
    w->all_reduce_sum(b.p, int64_t(x.size()), ds::DType::f32);
    CHECK(b.read(x.size()) == x);
    w->all_reduce_max(b.p, int64_t(x.size()), ds::DType::f32);
    CHECK(b.read(x.size()) == x);
  }
  {
    std::vector<int64_t> v{1, 1ll << 40, -3};
    DeviceBuf<int64_t> b(v, v.size());
    w->all_reduce_sum(b.p, 3, ds::DType::i64);
    CHECK(b.read(3) == v);
  }
  {
    DeviceBuf<float> in(x, x.size()), out({}, x.size());
    w->reduce_scatter_sum(in.p, out.p, int64_t(x.size()), ds::DType::f32);
    CHECK(out.read(x.size()) == x);
    w->all_gather(in.p, out.p, int64_t(x.size()), ds::DType::f32);
    CHECK(out.read(x.size()) == x);
    w->all_gather_v(in.p, out.p, {int64_t(x.size())}, ds::DType::f32);
    CHECK(out.read(x.size()) == x);
    w->all_to_all_v(in.p, {int64_t(x.size())}, out.p, {int64_t(x.size())}, ds::DType::f32);
    CHECK(out.read(x.size()) == x);
  }
  {
    std::vector<uint16_t> h{0x3f80, 0xc000, 0x7fc0};   // bf16 bits travel unchanged
    DeviceBuf<uint16_t> b(h, h.size());
    w->broadcast(b.p, 3, ds::DType::bf16, 0);
    CHECK(b.read(3) == h);
  }
  w->barrier();
  auto sub = w->split(0, 0);
  CHECK(sub->size() == 1);
  sub->barrier();
}

int main(int argc, char** argv) {
  if (ds::cuda::device_count() == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  if (!have_nccl()) {
    std::printf("SKIP: built without NCCL\n");
    return 77;
  }
  std::printf("device: %s\n", ds::cuda::device_name(0).c_str());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
