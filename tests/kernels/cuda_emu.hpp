// Host emulator that runs a CUDA C++ kernel's own source on a CPU: every thread of a block is a
// fiber (its own stack, switched by ucontext), so the kernel body runs as written (its index
// arithmetic, loops, guards, shared-memory staging, barriers and warp reductions), and a test
// compares what it wrote with the CPU reference. It takes kernels written in plain CUDA C++ without
// inline PTX (the FP8 quantisers and dequantiser of kernels/fp8_quant_tiles.cuh and
// fp8_quant_groups.cuh, BF16 rounding and the rounding row gathers of kernels/bf16_rows.cuh, the
// element-wise, reduction, row and head-layout kernels of kernels/elementwise_kernels.cuh, the
// exact SIMT attention and its pre-passes of kernels/flash_attention_simt.cuh, the FP32 MLA decode
// of kernels/mla_decode_kernels.cuh (its cp.async modelled below), the AdamW step of
// kernels/adamw_step.cuh, the row-softmax losses of kernels/row_softmax.cuh, RMSNorm and RoPE of
// kernels/norm_rope_kernels.cuh, SwiGLU of kernels/swiglu_kernels.cuh, the many-tensor passes of
// kernels/multi_tensor_kernels.cuh, and every MoE routing kernel: the routing and its backward of
// kernels/moe_router.cuh, the balance loss and counts of kernels/moe_balance.cuh, the pair sort,
// padded layout and combine of kernels/moe_sort.cuh, moe_pad.cuh and moe_combine.cuh); the
// PTX-level emulator of the tensor-core kernels' data movement is warp_emu.hpp.
//
// How it maps CUDA:
//   - __global__ / __device__ / __forceinline__ are plain inline C++; __shared__ is `static`:
//     blocks run one after another, so a static is the running block's shared memory (it
//     keeps the previous block's bytes, as real shared memory may hold anything); dynamic
//     shared memory (DS_DYNAMIC_SHARED(name), launch_dynamic) is one 0xcd-filled buffer;
//   - threadIdx / blockIdx / blockDim / gridDim are set for the running fiber; launch() runs
//     the grid's blocks in order, each on blockDim fibers of the calling thread that take
//     turns: a fiber runs until it waits at a barrier (__syncthreads, a warp collective) or
//     returns, then the next one runs (the one that completes a barrier gives its turn away
//     too, so every phase starts afresh). The turns go in ascending thread order in one block
//     and descending in the next (alternating from launch to launch too), so a thread that
//     reads what another writes with no barrier between them reads the bytes from before
//     the write in one of the two orders: a missing barrier shows every time where those
//     bytes differ, which threads racing would show only by chance;
//   - __syncthreads() is a barrier over the block's threads, all of which must arrive at the
//     same call site (else EmuError); a thread that returns leaves it, as an exited thread no
//     longer holds a CTA barrier up;
//   - the warp intrinsics used here (__reduce_max_sync, __shfl_xor_sync, __shfl_up_sync,
//     __shfl_sync, __ballot_sync, __syncwarp) exchange through a per-warp barrier and require
//     the full mask, all 32 lanes present and at the same call site (a lane that has
//     returned, or one elsewhere, is reported: CUDA leaves both undefined);
//   - atomicAdd on int and float is std::atomic_ref's fetch_add, atomicMin / atomicMax on int
//     and unsigned a compare-and-swap loop (in the fibers' turn order; integer results must
//     not depend on the order, and float sums, whose order differs on the GPU, are compared
//     within their rounding); __ldg a plain load;
//   - a block whose running threads all wait at barriers that cannot complete (threads at
//     different barriers, a collective some lanes never reach) is reported as a deadlock
//     (EmuError) as soon as no thread can take a turn, not a hung test;
//   - __fdiv_rn / __fmul_rn / __fadd_rn / __fsub_rn / __fsqrt_rn are the host's IEEE
//     operations (tests build with -ffp-contract=off) with the GPU's canonical NaN
//     (0x7fffffff) for a NaN result; __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3) is
//     ds::f32_to_e4m3 (RNE, saturating: the hardware cast's result for every non-NaN input);
//     __dadd_rn / __dsub_rn / __dmul_rn and the math functions (exp, expf, log1pf, expm1f,
//     sqrt, sincos) are the host's (CUDA's may differ from glibc's by an ulp or two: compare
//     those with tolerances).
// Not modelled: the memory model beyond barriers (races other than a missing barrier between
// a write and a read, e.g. two threads' plain writes to one place), a kernel that waits on
// another thread's write without a barrier (its spin loop never gives its turn back, or,
// with a barrier in it, never ends: the test hangs until CTest's timeout), a thread's stack
// beyond kFiberStack bytes (the guard below it faults), shared-memory bank conflicts and
// speed, and launch limits beyond those below.
// Launch limits are checked as the hardware would refuse them: at most 1024 threads a block,
// grid.y and grid.z at most 65535, and blockDim a multiple of 32 (the emulated warps are
// whole). An exception in any thread (an EmuError, a failed check) is rethrown by launch()
// after every thread has left.
#pragma once
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <source_location>
#include <stdexcept>
#include <string>
#include <vector>

#include "ds/core/dtype.hpp"

// AddressSanitizer (the dev preset) must be told of every switch between stacks.
#if defined(__SANITIZE_ADDRESS__)
#define DS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DS_EMU_ASAN 1
#endif
#endif
#if defined(DS_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace ds::test::cuda_emu {

struct EmuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline thread_local dim3 t_thread, t_block, t_bdim, t_gdim;

// ---- fibers: a block's threads, taking turns on the launching thread --------------------------
// Each fiber's stack (plenty for the kernels' locals and an exception's unwinding), above a
// 64 KiB guard (larger than any frame, so an overflow cannot step over it into the next
// stack); the stacks are mapped once and reused by every launch (stack_pool()).
inline constexpr size_t kFiberStack = size_t(512) << 10;
inline constexpr size_t kFiberGuard = size_t(64) << 10;

class StackPool {
 public:
  ~StackPool() {
    for (void* p : maps_) munmap(p, kFiberStack + kFiberGuard);
  }
  char* stack(size_t i) {   // the lowest usable byte of fiber i's stack
    while (maps_.size() <= i) {
      void* p = mmap(nullptr, kFiberStack + kFiberGuard, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a fiber stack");
      maps_.push_back(p);
      // an overflow faults instead of corrupting a neighbour
      if (mprotect(p, kFiberGuard, PROT_NONE) != 0)
        throw std::runtime_error("cuda_emu: cannot protect a fiber stack's guard");
    }
    return static_cast<char*>(maps_[i]) + kFiberGuard;
  }

 private:
  std::vector<void*> maps_;
};
inline StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}
inline uint64_t g_launches = 0;   // launches so far: the first block's turn order alternates

// Stack switches announced to AddressSanitizer; nothing without it. `save` null: the
// switching fiber ends.
inline void asan_start_switch(void** save, const void* bottom, size_t size) {
#if defined(DS_EMU_ASAN)
  __sanitizer_start_switch_fiber(save, bottom, size);
#else
  (void)save, (void)bottom, (void)size;
#endif
}
inline void asan_finish_switch(void* save, const void** bottom_old, size_t* size_old) {
#if defined(DS_EMU_ASAN)
  __sanitizer_finish_switch_fiber(save, bottom_old, size_old);
#else
  (void)save, (void)bottom_old, (void)size_old;
#endif
}

struct Fiber {
  ucontext_t ctx;
  void* asan_save = nullptr;
  dim3 tid;
  bool done = false;
  const uint64_t* waits_on = nullptr;   // a barrier's phase counter while it waits there,
  uint64_t phase = 0;                   // and the phase it waits to see end
  bool waiting() const { return waits_on && *waits_on == phase; }
};

// The running block's fibers (one launch at a time, from one host thread).
struct Scheduler {
  ucontext_t main;
  void* asan_save = nullptr;           // the launching thread's stack, for AddressSanitizer
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  std::vector<Fiber> fibers;
  size_t current = 0;
  bool restart = false;   // a barrier completed: the next turn is the turn order's first thread's
  bool abort = false;     // set on a deadlock: every waiting fiber throws when resumed
  std::function<void(size_t)> body;   // runs thread i of the block
};
inline Scheduler* g_sched = nullptr;

// The running fiber gives its turn back to the scheduler; with `phase`, it waits for
// *counter to move past it (the scheduler skips it until then) and throws if the block
// deadlocked meanwhile.
inline void yield_turn(const uint64_t* counter = nullptr, uint64_t phase = 0) {
  Scheduler& s = *g_sched;
  Fiber& f = s.fibers[s.current];
  f.waits_on = counter;
  f.phase = phase;
  asan_start_switch(&f.asan_save, s.main_bottom, s.main_size);
  swapcontext(&f.ctx, &s.main);
  asan_finish_switch(f.asan_save, &s.main_bottom, &s.main_size);
  if (s.abort) throw EmuError("deadlock: the block's threads wait at barriers none can complete");
}

// A barrier that a thread can leave for good (arrive_and_drop: an exited thread no longer
// holds it up). A waiting fiber gives its turn away until the barrier completes; if the
// block deadlocks, the wait throws EmuError.
class Barrier {
 public:
  explicit Barrier(int n) : expected_(n) {}
  void arrive_and_wait() {
    const uint64_t phase = phase_;
    if (++arrived_ == expected_) {
      complete();
      yield_turn();   // the next phase starts with the turn order's first thread, not this one
      return;
    }
    yield_turn(&phase_, phase);
  }
  void arrive_and_drop() {
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) complete();
  }

 private:
  void complete() {
    arrived_ = 0;
    ++phase_;
    g_sched->restart = true;
  }
  int expected_, arrived_ = 0;
  uint64_t phase_ = 0;
};

// Where a collective was called: every participant must call the same one (CUDA leaves
// collectives reached from different places undefined).
inline std::string site_of(const std::source_location& at) {
  return std::string(at.file_name()) + ":" + std::to_string(at.line());
}

// One warp's exchange: a value and a call site a lane, a barrier of its 32 lanes, the lanes
// that have left.
struct Warp {
  Barrier bar{32};
  uint64_t slot[32] = {};
  uint32_t line[32] = {};
  const char* file[32] = {};
  bool gone[32] = {};
};

struct Block {
  std::unique_ptr<Barrier> sync;
  std::vector<uint32_t> line;   // the __syncthreads call site of each thread
  std::vector<const char*> file;
  std::vector<std::unique_ptr<Warp>> warps;
};
inline Block* g_block = nullptr;   // the running block (one launch at a time)

inline int thread_rank() {
  return int(t_thread.x + t_bdim.x * (t_thread.y + t_bdim.y * t_thread.z));
}
inline int lane_id() { return thread_rank() % 32; }
inline Warp& my_warp() { return *g_block->warps[size_t(thread_rank() / 32)]; }

// All 32 lanes put a value, then read the lane `src(lane)` put; every lane must be present and
// at the same call site.
template <class F>
uint64_t exchange(unsigned mask, uint64_t v, F src, const std::source_location& at) {
  if (mask != 0xffffffffu) throw EmuError("warp intrinsic with a partial mask at " + site_of(at));
  Warp& w = my_warp();
  const int lane = lane_id();
  w.slot[lane] = v;
  w.line[lane] = at.line();
  w.file[lane] = at.file_name();
  w.bar.arrive_and_wait();
  for (int l = 0; l < 32; ++l) {
    if (w.gone[l])
      throw EmuError("warp intrinsic at " + site_of(at) + " after lane " + std::to_string(l) +
                     " returned");
    if (w.line[l] != at.line() || std::strcmp(w.file[l], at.file_name()) != 0)
      throw EmuError("warp intrinsic at " + site_of(at) + " met lane " + std::to_string(l) +
                     " at line " + std::to_string(w.line[l]));
  }
  const uint64_t out = src(w.slot, lane);
  w.bar.arrive_and_wait();
  return out;
}

// __syncthreads: every thread still running arrives, all at the same call site.
inline void block_sync(const std::source_location& at) {
  Block& b = *g_block;
  const int me = thread_rank();
  b.line[size_t(me)] = at.line();
  b.file[size_t(me)] = at.file_name();
  b.sync->arrive_and_wait();
  for (size_t t = 0; t < b.line.size(); ++t)
    if (b.file[t] && (b.line[t] != at.line() || std::strcmp(b.file[t], at.file_name()) != 0))
      throw EmuError("__syncthreads at " + site_of(at) + " met thread " + std::to_string(t) +
                     " at line " + std::to_string(b.line[t]));
  b.sync->arrive_and_wait();   // the sites are read before any thread records its next one
}

template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args);

// The running launch's dynamic shared memory (DS_DYNAMIC_SHARED): one buffer for all its
// blocks, as the static __shared__ ones; null in a launch without dynamic bytes (a kernel may
// name it and not use it; using it faults).
inline unsigned char* g_dynamic_shared = nullptr;
inline unsigned char* dynamic_shared() { return g_dynamic_shared; }

// Runs kernel(args...) over the grid: each block on block.x * block.y * block.z threads, with
// `dynamic_bytes` of dynamic shared memory (16-byte aligned, filled with 0xcd: never zeroed).
template <class... P, class... A>
void launch_dynamic(void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_bytes,
                    A&&... args) {
  if (g_sched) throw EmuError("launch: a launch from inside a kernel");
  if (dynamic_bytes > 227 * 1024) throw EmuError("launch: over 227 KiB of dynamic shared memory");
  struct Free {
    void operator()(unsigned char* p) const { ::operator delete(p, std::align_val_t(16)); }
  };
  std::unique_ptr<unsigned char, Free> dyn;
  if (dynamic_bytes) {
    dyn.reset(static_cast<unsigned char*>(::operator new(dynamic_bytes, std::align_val_t(16))));
    std::memset(dyn.get(), 0xcd, dynamic_bytes);
  }
  g_dynamic_shared = dyn.get();
  struct Reset {
    ~Reset() { g_dynamic_shared = nullptr; }
  } reset;
  launch(kernel, grid, block, std::forward<A>(args)...);
}

// The fiber entry: runs the scheduler's current thread, then marks it done (returning resumes
// the scheduler through uc_link).
inline void fiber_entry() {
  Scheduler& s = *g_sched;
  asan_finish_switch(nullptr, &s.main_bottom, &s.main_size);
  const size_t i = s.current;
  s.body(i);
  s.fibers[i].done = true;
  asan_start_switch(nullptr, s.main_bottom, s.main_size);
}

// Runs the running block's n threads to the end, in turns (see the header); `descending`
// reverses the turn order. After a barrier completes, the turns start again from the order's
// first thread; a round in which no thread could run is a deadlock, and the next round
// resumes every waiting thread with `abort` set, so each throws and leaves.
inline void run_block(Scheduler& s, StackPool& stacks, size_t n, bool descending) {
  s.fibers.assign(n, Fiber{});
  s.abort = false;
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks.stack(i);
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = &s.main;
    makecontext(&f.ctx, fiber_entry, 0);
    f.tid = dim3(unsigned(i) % t_bdim.x, (unsigned(i) / t_bdim.x) % t_bdim.y,
                 unsigned(i) / (t_bdim.x * t_bdim.y));
  }
  size_t live = n;
  while (live > 0) {
    bool ran = false;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = descending ? n - 1 - k : k;
      Fiber& f = s.fibers[i];
      if (f.done || (!s.abort && f.waiting())) continue;
      s.current = i;
      s.restart = false;
      t_thread = f.tid;
      asan_start_switch(&s.asan_save, f.ctx.uc_stack.ss_sp, kFiberStack);
      swapcontext(&s.main, &f.ctx);
      asan_finish_switch(s.asan_save, nullptr, nullptr);
      ran = true;
      if (f.done) --live;
      if (s.restart) break;
    }
    if (!ran && live > 0) s.abort = true;
  }
}

// Runs kernel(args...) over the grid: each block on block.x * block.y * block.z threads.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
  const unsigned n = block.x * block.y * block.z;
  if (n == 0 || n > 1024 || n % 32 != 0)
    throw EmuError("launch: " + std::to_string(n) + " threads a block (1..1024, whole warps)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw EmuError("launch: grid out of range");
  if (g_sched) throw EmuError("launch: a launch from inside a kernel");
  StackPool& stacks = stack_pool();
  const uint64_t order = g_launches++;
  std::exception_ptr first;
  Scheduler s;
  s.body = [&](size_t t) {
    try {
      kernel(args...);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
    Warp& w = my_warp();
    w.gone[lane_id()] = true;
    w.bar.arrive_and_drop();
    g_block->file[t] = nullptr;   // no longer at any __syncthreads
    g_block->sync->arrive_and_drop();
  };
  struct Reset {
    ~Reset() {
      g_sched = nullptr;
      g_block = nullptr;
    }
  } reset;
  g_sched = &s;
  t_bdim = block;
  t_gdim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk;
        blk.sync = std::make_unique<Barrier>(int(n));
        blk.line.assign(n, 0);
        blk.file.assign(n, nullptr);
        for (unsigned w = 0; w < n / 32; ++w) blk.warps.push_back(std::make_unique<Warp>());
        g_block = &blk;
        t_block = dim3(bx, by, bz);
        const uint64_t linear = bx + uint64_t(grid.x) * (by + uint64_t(grid.y) * bz);
        run_block(s, stacks, n, (linear + order) % 2 == 1);
        g_block = nullptr;
        if (first) std::rethrow_exception(first);
      }
}

// A kernel's output in a test: n elements of T between kGuard-byte guards of a fill byte
// (64-byte aligned), which must come back untouched (an out-of-bounds write shows there).
constexpr size_t kGuard = 64;
template <class T>
struct Guarded {
  size_t n;
  uint8_t* mem;
  explicit Guarded(size_t count, uint8_t fill = 0xa5) : n(count) {
    mem = static_cast<uint8_t*>(::operator new(bytes(), std::align_val_t(64)));
    std::memset(mem, fill, bytes());
  }
  ~Guarded() { ::operator delete(mem, std::align_val_t(64)); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  size_t bytes() const { return n * sizeof(T) + 2 * kGuard; }
  T* data() { return reinterpret_cast<T*>(mem + kGuard); }
  bool guards_intact(uint8_t fill = 0xa5) const {
    for (size_t i = 0; i < kGuard; ++i)
      if (mem[i] != fill || mem[kGuard + n * sizeof(T) + i] != fill) return false;
    return true;
  }
};

}  // namespace ds::test::cuda_emu

#define threadIdx ::ds::test::cuda_emu::t_thread
#define blockIdx ::ds::test::cuda_emu::t_block
#define blockDim ::ds::test::cuda_emu::t_bdim
#define gridDim ::ds::test::cuda_emu::t_gdim

inline void __syncthreads(std::source_location at = std::source_location::current()) {
  ::ds::test::cuda_emu::block_sync(at);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v,
                                  std::source_location at = std::source_location::current()) {
  return unsigned(::ds::test::cuda_emu::exchange(
      mask, v, [](const uint64_t* s, int) { return *std::max_element(s, s + 32); }, at));
}
inline unsigned __shfl_xor_sync(unsigned mask, unsigned v, int m,
                                std::source_location at = std::source_location::current()) {
  return unsigned(::ds::test::cuda_emu::exchange(
      mask, v, [m](const uint64_t* s, int lane) { return s[lane ^ m]; }, at));
}
inline float __shfl_xor_sync(unsigned mask, float v, int m,
                             std::source_location at = std::source_location::current()) {
  return std::bit_cast<float>(__shfl_xor_sync(mask, std::bit_cast<unsigned>(v), m, at));
}
inline int __shfl_xor_sync(unsigned mask, int v, int m,
                           std::source_location at = std::source_location::current()) {
  return int(__shfl_xor_sync(mask, unsigned(v), m, at));
}
inline unsigned long long __shfl_xor_sync(unsigned mask, unsigned long long v, int m,
                                          std::source_location at =
                                              std::source_location::current()) {
  return ::ds::test::cuda_emu::exchange(
      mask, v, [m](const uint64_t* s, int lane) { return s[lane ^ m]; }, at);
}
inline double __shfl_xor_sync(unsigned mask, double v, int m,
                              std::source_location at = std::source_location::current()) {
  return std::bit_cast<double>(::ds::test::cuda_emu::exchange(
      mask, std::bit_cast<uint64_t>(v), [m](const uint64_t* s, int lane) { return s[lane ^ m]; },
      at));
}
// A warp barrier: all 32 lanes, the full mask, at the same call site (stricter than CUDA,
// which lets lanes meet at different __syncwarp calls).
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location at = std::source_location::current()) {
  ::ds::test::cuda_emu::exchange(mask, 0, [](const uint64_t*, int) { return uint64_t(0); }, at);
}

// bit l: lane l's predicate
inline unsigned __ballot_sync(unsigned mask, bool p,
                              std::source_location at = std::source_location::current()) {
  return unsigned(::ds::test::cuda_emu::exchange(
      mask, p ? 1u : 0u,
      [](const uint64_t* s, int) {
        unsigned b = 0;
        for (int l = 0; l < 32; ++l) b |= unsigned(s[l] & 1u) << l;
        return uint64_t(b);
      },
      at));
}
// lane src_lane's value (src_lane mod 32, as CUDA takes it with the default width)
inline int __shfl_sync(unsigned mask, int v, int src_lane,
                       std::source_location at = std::source_location::current()) {
  return int(uint32_t(::ds::test::cuda_emu::exchange(
      mask, uint32_t(v), [src_lane](const uint64_t* s, int) { return s[src_lane & 31]; }, at)));
}
inline float __shfl_sync(unsigned mask, float v, int src_lane,
                         std::source_location at = std::source_location::current()) {
  return std::bit_cast<float>(__shfl_sync(mask, std::bit_cast<int>(v), src_lane, at));
}
inline int __popc(unsigned v) { return std::popcount(v); }
inline int __ffs(unsigned v) { return v == 0 ? 0 : std::countr_zero(v) + 1; }
// lane l gets lane l - d's value, lanes below d their own
inline int __shfl_up_sync(unsigned mask, int v, unsigned d,
                          std::source_location at = std::source_location::current()) {
  return int(uint32_t(::ds::test::cuda_emu::exchange(
      mask, uint32_t(v),
      [d](const uint64_t* s, int lane) {
        return unsigned(lane) >= d ? s[lane - int(d)] : s[lane];
      },
      at)));
}
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
// The GPU's arithmetic gives its canonical NaN (0x7fffffff) for every NaN result, where x86
// passes a NaN operand through or makes a negative default NaN: modelled here, since a kernel
// that tests a NaN's sign sees the GPU's.
inline float gpu_nan(float r) { return std::isnan(r) ? std::bit_cast<float>(0x7fffffffu) : r; }
inline float __fdiv_rn(float a, float b) { return gpu_nan(a / b); }
inline float __fmul_rn(float a, float b) { return gpu_nan(a * b); }
inline float __fadd_rn(float a, float b) { return gpu_nan(a + b); }
inline float __fsub_rn(float a, float b) { return gpu_nan(a - b); }
inline float __fsqrt_rn(float a) { return gpu_nan(std::sqrt(a)); }   // IEEE: correctly rounded
// Double operations are the host's; a NaN result keeps the host's bits (not modelled: tests
// compare NaN as NaN).
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline int __clz(unsigned v) { return v == 0 ? 32 : std::countl_zero(v); }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
// Atomic on the host's memory (std::atomic_ref): global and shared alike.
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int atomicMin(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (old > v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline int atomicMax(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
// A read through the read-only data cache: a plain load here.
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// Float adds in the fibers' turn order (on the GPU in whatever order the threads reach them).
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned> a(*p);
  unsigned old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
#define DS_DYNAMIC_SHARED(name) unsigned char* const name = ::ds::test::cuda_emu::dynamic_shared()
// cp.async (kernels/mla_decode_kernels.cuh's wrappers): the copy done at once, zeros when
// !pred; commit and wait do nothing. Data never arrives late here, so a read before its
// cp_wait goes unseen, but a copy issued into a buffer other threads still read lands as early
// as it possibly could.
#define DS_EMU_CP_ASYNC
inline void cp16(void* dst, const void* src, bool pred) {
  if (pred) std::memcpy(dst, src, 16);
  else std::memset(dst, 0, 16);
}
inline void cp4(void* dst, const void* src, bool pred) {
  if (pred) std::memcpy(dst, src, 4);
  else std::memset(dst, 0, 4);
}
inline void cp_commit() {}
template <int N>
inline void cp_wait() {}
using std::isinf;
using std::isnan;
using std::signbit;

enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE };
enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };
inline unsigned char __nv_cvt_float_to_fp8(float v, __nv_saturation_t sat,
                                           __nv_fp8_interpretation_t kind) {
  if (sat != __NV_SATFINITE || kind != __NV_E4M3)
    throw ::ds::test::cuda_emu::EmuError("__nv_cvt_float_to_fp8: only SATFINITE E4M3");
  return ::ds::f32_to_e4m3(v);
}
