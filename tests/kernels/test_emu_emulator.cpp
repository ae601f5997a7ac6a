// The host emulator itself (cuda_emu.hpp): the fibers' turn order shows a missing
// __syncthreads between one thread's write and another's read in one of its two orders, a
// block whose threads wait at barriers that cannot complete is reported as a deadlock (at
// once, as an EmuError), and the emulator runs the next launch normally after either.
#include <doctest/doctest.h>

#include "cuda_emu.hpp"

#include <string>
#include <vector>

namespace {

using ds::test::cuda_emu::EmuError;
using ds::test::cuda_emu::launch;

constexpr int kThreads = 64;

// Each thread stores v(t) = t + salt + 100 * block, then reads its right neighbour's store
// (t + 1, wrapping). The block term keeps a block from reading the previous block's stores,
// which the static shared array still holds.
struct Neighbour {
  static void no_barrier(int salt, int* out) {
    __shared__ int s[kThreads];
    const int t = int(threadIdx.x);
    s[t] = t + salt + 100 * int(blockIdx.x);
    out[blockIdx.x * kThreads + t] = s[(t + 1) % kThreads];   // no barrier before the read
  }
  static void with_barrier(int salt, int* out) {
    __shared__ int s[kThreads];
    const int t = int(threadIdx.x);
    s[t] = t + salt + 100 * int(blockIdx.x);
    __syncthreads();
    out[blockIdx.x * kThreads + t] = s[(t + 1) % kThreads];
  }
  // After a barrier, thread 0 stores v(-1) = salt + 100 * block and every thread reads it with
  // no barrier between: the turns after a barrier start again from the order's first thread.
  static void after_barrier(int salt, int* out) {
    __shared__ int s0;
    __syncthreads();
    const int t = int(threadIdx.x);
    if (t == 0) s0 = salt + 100 * int(blockIdx.x);
    out[blockIdx.x * kThreads + t] = s0 + (t + 1) % kThreads;   // v(t + 1) if s0 is current
  }
};

// Threads whose read got something other than the neighbour's store, per block.
std::vector<int> stale_reads(void (*kernel)(int, int*), int blocks, int salt) {
  std::vector<int> out(static_cast<size_t>(blocks * kThreads), -1);
  launch(kernel, dim3(unsigned(blocks)), dim3(kThreads), salt, out.data());
  std::vector<int> stale(static_cast<size_t>(blocks), 0);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < kThreads; ++t)
      if (out[size_t(b * kThreads + t)] != (t + 1) % kThreads + salt + 100 * b)
        ++stale[size_t(b)];
  return stale;
}

TEST_CASE("the emulator's turn order shows a missing barrier in every other block") {
  // Ascending turns: threads 0..62 read before their neighbour stores (63 stale reads);
  // descending: thread 63 reads thread 0's store before it is made (1 stale read). Launches
  // with a new salt each, so the static shared array's bytes from before never match.
  int salt = 1000;
  for (int blocks : {1, 2, 3}) {
    for (int rep = 0; rep < 2; ++rep) {
      const std::vector<int> stale = stale_reads(Neighbour::no_barrier, blocks, salt += 1000);
      for (int b = 0; b < blocks; ++b) {
        const std::string label =
            "blocks " + std::to_string(blocks) + " block " + std::to_string(b);
        INFO(label);
        CHECK((stale[size_t(b)] == kThreads - 1 || stale[size_t(b)] == 1));
      }
      if (blocks > 1) CHECK(stale[0] != stale[1]);   // the two orders alternate by block
    }
  }
  // Two one-block launches in a row take both orders.
  const int first = stale_reads(Neighbour::no_barrier, 1, salt += 1000)[0];
  const int second = stale_reads(Neighbour::no_barrier, 1, salt += 1000)[0];
  CHECK(first + second == kThreads);
  for (int blocks : {1, 2, 3})
    for (int stale : stale_reads(Neighbour::with_barrier, blocks, salt += 1000)) CHECK(stale == 0);
}

TEST_CASE("the emulator's turns start afresh after a barrier") {
  // Ascending: thread 0 stores first and every read is current; descending: threads 63..1
  // read before thread 0's store. Were the thread that completes the barrier to run on, one
  // end of the order would come first and neither count would be 0 or 63.
  int salt = 500;
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<int> stale = stale_reads(Neighbour::after_barrier, 2, salt += 1000);
    CHECK((stale[0] == 0 || stale[0] == kThreads - 1));
    CHECK(stale[0] + stale[1] == kThreads - 1);
  }
}

struct Stuck {
  // Warp 1's lanes split: 32..47 at the block barrier, 48..63 at the warp barrier. Neither
  // can complete: the block barrier waits for 48..63, the warp barrier for 32..47.
  static void split_warp(int* out) {
    if (threadIdx.x < 48) __syncthreads();
    else __syncwarp();
    out[threadIdx.x] = 1;
  }
  static void fine(int* out) {
    __syncthreads();
    out[threadIdx.x] = int(__reduce_max_sync(0xffffffffu, threadIdx.x));
  }
};

TEST_CASE("the emulator reports a deadlocked block and runs the next launch") {
  std::vector<int> out(kThreads, 0);
  CHECK_THROWS_WITH_AS(launch(Stuck::split_warp, dim3(2), dim3(kThreads), out.data()),
                       doctest::Contains("deadlock"), EmuError);
  for (int t = 0; t < kThreads; ++t) CHECK(out[size_t(t)] == 0);   // nobody got past it
  launch(Stuck::fine, dim3(2), dim3(kThreads), out.data());
  for (int t = 0; t < kThreads; ++t) CHECK(out[size_t(t)] == (t < 32 ? 31 : 63));
}

}  // namespace
