// Host emulator of the warp-level PTX our CUDA kernels use, so that a kernel's data movement
// (which thread copies what where, which lane addresses which shared-memory row, which
// register holds which matrix element) can be run and checked on a CPU: a thread block's
// shared-memory image with cp.async (16-byte copies, src-size zero fill, commit/wait groups),
// bar.sync, ldmatrix .m8n8 .x1/.x2/.x4 (.trans) .b16, plain ld.shared / st.shared of 1-16
// bytes by a given thread, shfl.sync.bfly, mma.sync .m16n8k16 .row.col .f32.bf16.bf16.f32, and
// the shared-memory operands wgmma reads through a K-major 128-byte-swizzle descriptor.
// Written from the PTX ISA's definitions (section titles cited below); generic: it knows
// nothing of any particular kernel. A test drives it the way the kernel's threads and warps
// would, in lockstep between barriers, and compares the result with a reference; misuse
// throws EmuError with a description (first error wins):
//   - shared accesses outside [base, base + bytes), misaligned cp.async destinations and
//     ldmatrix row addresses (both must be 16-byte aligned), global reads outside the span;
//   - reading shared bytes never written, bytes an in-flight cp.async will write (not yet
//     waited for), or bytes another thread's completed cp.async wrote with no barrier since;
//   - a cp.async into bytes read since the last barrier (write-after-read race), or into bytes
//     another in-flight cp.async targets;
//   - plain shared stores / loads (st_shared / ld_shared, by thread id): a store into bytes a
//     cp.async targets, or that another thread stored, read or had a cp.async complete into
//     since the last barrier; a load of bytes another thread stored since the last barrier
//     (and the reads above); ldmatrix or cp.async on bytes stored since the last barrier.
// Arithmetic of mma: products of BF16 values are exact in double; the 16 products and c are
// summed in double and rounded once to FP32. Hardware accumulation order and intermediate
// rounding are not specified by PTX; tests that need exact equality use data whose sums are
// exactly representable (small integers), others a tolerance.
#pragma once
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

namespace ds::test::emu {

struct EmuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr int kWarpSize = 32;
using LaneU32 = std::array<uint32_t, kWarpSize>;   // one .b32 register of every lane
using LaneF32 = std::array<float, kWarpSize>;      // one .f32 register of every lane

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even (NaN stays NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// A global-memory operand the emulated threads may read: bytes [base, base + bytes).
struct GlobalSpan {
  const void* base = nullptr;
  size_t bytes = 0;
};

// One thread block (CTA): its shared memory and the per-thread state of the instructions
// above. Shared addresses are byte addresses in the .shared window; the block's memory is
// [base, base + bytes).
class Cta {
 public:
  Cta(uint32_t bytes, int threads, uint32_t base = 0)
      : base_(base), bytes_(bytes), data_(bytes, 0xff), written_(bytes, 0), pending_(bytes, 0),
        writer_(bytes, -1), read_epoch_(bytes, -1), reader_(bytes, -1), store_epoch_(bytes, -1),
        storer_(bytes, -1), threads_(size_t(threads)) {
    if (base % 16 != 0) throw EmuError("shared window base must be 16-byte aligned");
  }
  uint32_t base() const { return base_; }
  uint32_t bytes() const { return bytes_; }
  int threads() const { return int(threads_.size()); }

  // cp.async.cg.shared.global [dst], [src], 16, src_size by thread tid (PTX ISA, "Data
  // Movement and Conversion Instructions: cp.async"): an asynchronous copy of cp-size 16
  // bytes; the first src_size (<= 16) come from global memory, the rest of the 16 are zero
  // (src_size 0: nothing is read, 16 zero bytes). dst is aligned to cp-size. The copy joins
  // the thread's current, not yet committed group; its data is read now (global memory is
  // read-only while a kernel runs) and lands in shared memory when the group completes.
  void cp_async16(int tid, uint32_t dst, const GlobalSpan& src, size_t src_offset,
                  uint32_t src_size) {
    Thread& th = thread(tid);
    if (dst % 16 != 0) fail("cp.async destination " + hex(dst) + " of thread " +
                            std::to_string(tid) + " is not 16-byte aligned");
    const uint32_t o = offset(dst, 16, "cp.async destination", tid);
    if (src_size > 16) fail("cp.async src-size above cp-size 16");
    Copy c{o, {}};
    if (src_size > 0) {
      if (src_offset + src_size > src.bytes || src_offset > src.bytes)
        fail("cp.async of thread " + std::to_string(tid) + " reads global bytes [" +
             std::to_string(src_offset) + ", +" + std::to_string(src_size) +
             ") outside the operand's " + std::to_string(src.bytes));
      const auto* p = static_cast<const uint8_t*>(src.base) + src_offset;
      if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
        fail("cp.async source of thread " + std::to_string(tid) + " is not 16-byte aligned");
      std::memcpy(c.bytes.data(), p, src_size);
    }
    for (uint32_t i = 0; i < 16; ++i) {
      if (read_epoch_[o + i] == epoch_)
        fail("cp.async by thread " + std::to_string(tid) + " into " + hex(dst + i) +
             ", read since the last barrier (write-after-read race)");
      if (pending_[o + i] != 0)
        fail("cp.async by thread " + std::to_string(tid) + " into " + hex(dst + i) +
             ", the target of another copy still in flight");
      if (store_epoch_[o + i] == epoch_)
        fail("cp.async by thread " + std::to_string(tid) + " into " + hex(dst + i) +
             ", stored by thread " + std::to_string(storer_[o + i]) + " since the last barrier");
      ++pending_[o + i];
    }
    th.open.push_back(c);
    ++copies_;
  }
  // cp.async.commit_group (PTX ISA, "cp.async.commit_group"): the thread's copies issued since
  // its last commit become one cp.async-group; with none, an empty group.
  void commit_group(int tid) {
    Thread& th = thread(tid);
    th.groups.push_back(std::move(th.open));
    th.open.clear();
  }
  // cp.async.wait_group n (PTX ISA, "cp.async.wait_group / cp.async.wait_all"): the thread
  // waits until at most its n most recent groups are pending; every older group is complete
  // and its writes visible to the executing thread (to others only after a barrier).
  // Copies not yet committed are not waited for.
  void wait_group(int tid, int n) {
    Thread& th = thread(tid);
    while (th.groups.size() > size_t(n)) {
      for (const Copy& c : th.groups.front())
        for (uint32_t i = 0; i < 16; ++i) {
          data_[c.off + i] = c.bytes[i];
          written_[c.off + i] = 1;
          --pending_[c.off + i];
          writer_[c.off + i] = tid;
        }
      th.groups.pop_front();
    }
  }
  // bar.sync 0 / __syncthreads (PTX ISA, "Parallel Synchronization and Communication
  // Instructions: bar, barrier"): every thread arrives; memory accesses made before it
  // (completed cp.async writes included) are visible to all threads after it. In-flight
  // copies stay in flight.
  void bar_sync() {
    ++epoch_;
    for (int& w : writer_) w = -1;
  }
  // Copies issued or committed but not complete, over all threads (0 at a clean exit).
  int in_flight() const {
    int n = 0;
    for (const Thread& th : threads_) {
      n += int(th.open.size());
      for (const auto& g : th.groups) n += int(g.size());
    }
    return n;
  }

  // ldmatrix.sync.aligned.m8n8.xNum{.trans}.shared.b16 (PTX ISA, "Warp-level matrix load
  // instruction: ldmatrix"): a warp-collective load of Num 8x8 matrices of 16-bit elements.
  // Lanes 8j..8j+7 supply the addresses of rows 0..7 of matrix j (each row 8 elements, 16
  // contiguous bytes, 16-byte aligned); the other lanes' addresses are ignored. Destination
  // register j of lane l holds, for matrix j, the two elements at row l/4, columns 2(l%4) and
  // 2(l%4) + 1 (the lower column in the lower 16 bits); with .trans, the matrix is transposed
  // first: rows 2(l%4), 2(l%4) + 1 of column l/4.
  template <int Num>
  std::array<LaneU32, Num> ldmatrix(const LaneU32& addr, bool trans) {
    static_assert(Num == 1 || Num == 2 || Num == 4, "ldmatrix .num is .x1, .x2 or .x4");
    std::array<LaneU32, Num> out{};
    for (int j = 0; j < Num; ++j) {
      uint16_t m[8][8];
      for (int r = 0; r < 8; ++r) {
        const int lane = 8 * j + r;
        const uint32_t a = addr[size_t(lane)];
        if (a % 16 != 0)
          fail("ldmatrix row address " + hex(a) + " of lane " + std::to_string(lane) +
               " is not 16-byte aligned");
        const uint32_t o = offset(a, 16, "ldmatrix row", lane);
        for (uint32_t i = 0; i < 16; ++i) check_read(o + i, lane);
        std::memcpy(m[r], &data_[o], 16);
      }
      for (int l = 0; l < kWarpSize; ++l) {
        const int g = l >> 2, c = 2 * (l & 3);
        const uint16_t lo = trans ? m[c][g] : m[g][c], hi = trans ? m[c + 1][g] : m[g][c + 1];
        out[size_t(j)][size_t(l)] = uint32_t(lo) | uint32_t(hi) << 16;
      }
    }
    ++ldmatrix_;
    return out;
  }

  // The shared-memory operand wgmma.mma_async reads through a matrix descriptor in the K-major
  // layout with the 128-byte swizzle (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-
  // Accumulate": "Matrix Descriptor Format", "Shared Memory Matrix Layout" / swizzling
  // modes): `rows` rows of 32 bytes (one k16 step of BF16, one k32 step of E4M3) from the
  // descriptor's start address; rows 8g..8g+7 are 128 bytes apart from start + g * sbo (the
  // stride byte offset), and the swizzle XORs address bits [4:6] (the 16-byte unit) with bits
  // [7:9] (the row within its 1024-byte atom), so tiles must be 1024-byte aligned. Returns
  // rows x 16 16-bit values, row-major. Reads by the whole warpgroup, checked like any read.
  std::vector<uint16_t> wgmma_kmajor_sw128(uint32_t start, int rows, uint32_t sbo = 1024) {
    if (start % 16 != 0) fail("wgmma descriptor start " + hex(start) + " is not 16-byte aligned");
    std::vector<uint16_t> out(size_t(rows) * 16);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < 16; ++k) {
        const uint32_t lin = start + uint32_t(r / 8) * sbo + uint32_t(r % 8) * 128u + 2u * k;
        const uint32_t phys = lin ^ (((lin >> 7) & 7u) << 4);
        const uint32_t o = offset(phys, 2, "wgmma operand", -1);
        check_read(o, -1);
        check_read(o + 1, -1);
        std::memcpy(&out[size_t(r) * 16 + size_t(k)], &data_[o], 2);
      }
    ++wgmma_reads_;
    return out;
  }
  // The same for an operand stored MN-major (a descriptor with the transpose flag, 16-bit
  // types): one k16 step of `mn` elements along M or N, in the canonical 128-byte-swizzle
  // layout as CUTLASS documents it, ((8 units of 8 elements, mn/64 atoms), (8 rows, 2
  // groups)) : ((2 bytes, 16 bytes, lbo), (128 bytes, sbo)). Returns mn x 16 values [mn][k].
  // Not verified on a GPU: the probe of kernels/sm90_probe.cu settles it there.
  std::vector<uint16_t> wgmma_mnmajor_sw128(uint32_t start, int mn, uint32_t lbo,
                                            uint32_t sbo) {
    if (start % 16 != 0) fail("wgmma descriptor start " + hex(start) + " is not 16-byte aligned");
    std::vector<uint16_t> out(size_t(mn) * 16);
    for (int i = 0; i < mn; ++i)
      for (int k = 0; k < 16; ++k) {
        const uint32_t lin = start + uint32_t(i / 64) * lbo + uint32_t(k / 8) * sbo +
                             uint32_t(k % 8) * 128u + 2u * uint32_t(i % 64);
        const uint32_t phys = lin ^ (((lin >> 7) & 7u) << 4);
        const uint32_t o = offset(phys, 2, "wgmma operand", -1);
        check_read(o, -1);
        check_read(o + 1, -1);
        std::memcpy(&out[size_t(i) * 16 + size_t(k)], &data_[o], 2);
      }
    ++wgmma_reads_;
    return out;
  }
  int64_t wgmma_reads() const { return wgmma_reads_; }

  // A plain 16-bit shared load (ld.shared.b16), with the same checks; for tests of the
  // emulator and of kernels that read shared memory directly.
  uint16_t ld_b16(uint32_t addr) {
    if (addr % 2 != 0) fail("ld.shared.b16 address " + hex(addr) + " is not 2-byte aligned");
    const uint32_t o = offset(addr, 2, "ld.shared", -1);
    check_read(o, -1);
    check_read(o + 1, -1);
    uint16_t v;
    std::memcpy(&v, &data_[o], 2);
    return v;
  }

  // st.shared.b{8,16,32,64,128} by thread tid of n bytes (1, 2, 4, 8, 16; n-byte aligned).
  void st_shared(int tid, uint32_t addr, const void* src, uint32_t n) {
    thread(tid);
    check_width(addr, n, "st.shared", tid);
    const uint32_t o = offset(addr, n, "st.shared", tid);
    for (uint32_t i = o; i < o + n; ++i) {
      const std::string at = "st.shared by thread " + std::to_string(tid) + " into " +
                             hex(base_ + i);
      if (pending_[i] != 0) fail(at + " while a cp.async into it is in flight");
      if (writer_[i] >= 0 && writer_[i] != tid)
        fail(at + ", written by thread " + std::to_string(writer_[i]) +
             "'s cp.async with no barrier since (write-after-write race)");
      if (store_epoch_[i] == epoch_ && storer_[i] != tid)
        fail(at + ", stored by thread " + std::to_string(storer_[i]) +
             " since the last barrier (write-after-write race)");
      if (read_epoch_[i] == epoch_ && reader_[i] != tid)
        fail(at + ", read by " + reader_name(reader_[i]) +
             " since the last barrier (write-after-read race)");
    }
    std::memcpy(&data_[o], src, n);
    for (uint32_t i = o; i < o + n; ++i) {
      written_[i] = 1;
      store_epoch_[i] = epoch_;
      storer_[i] = tid;
    }
    ++stores_;
  }
  // ld.shared.b{8,16,32,64,128} by thread tid: besides the checks of every read, the bytes must
  // not have been stored by another thread since the last barrier; the thread's own completed
  // cp.async writes are visible to it.
  void ld_shared(int tid, uint32_t addr, void* dst, uint32_t n) {
    thread(tid);
    check_width(addr, n, "ld.shared", tid);
    const uint32_t o = offset(addr, n, "ld.shared", tid);
    for (uint32_t i = o; i < o + n; ++i) check_read(i, tid, tid);
    std::memcpy(dst, &data_[o], n);
    ++loads_;
  }
  template <class T>
  void st(int tid, uint32_t addr, const T& v) {
    st_shared(tid, addr, &v, uint32_t(sizeof(T)));
  }
  template <class T>
  T ld(int tid, uint32_t addr) {
    T v;
    ld_shared(tid, addr, &v, uint32_t(sizeof(T)));
    return v;
  }

  int64_t copies() const { return copies_; }
  int64_t ldmatrix_count() const { return ldmatrix_; }
  int64_t shared_stores() const { return stores_; }
  int64_t shared_loads() const { return loads_; }

 private:
  struct Copy {
    uint32_t off;
    std::array<uint8_t, 16> bytes;
  };
  struct Thread {
    std::vector<Copy> open;                  // issued, not committed
    std::deque<std::vector<Copy>> groups;    // committed, pending, oldest first
  };

  [[noreturn]] static void fail(const std::string& what) { throw EmuError(what); }
  static std::string reader_name(int reader) {
    return reader >= 0 ? "thread " + std::to_string(reader) : std::string("another thread");
  }
  void check_width(uint32_t addr, uint32_t n, const char* what, int tid) const {
    if (n != 1 && n != 2 && n != 4 && n != 8 && n != 16)
      fail(std::string(what) + " of " + std::to_string(n) + " bytes");
    if (addr % n != 0)
      fail(std::string(what) + " address " + hex(addr) + " of thread " + std::to_string(tid) +
           " is not " + std::to_string(n) + "-byte aligned");
  }

  static std::string hex(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", v);
    return buf;
  }
  Thread& thread(int tid) {
    if (tid < 0 || size_t(tid) >= threads_.size()) fail("thread id out of the block");
    return threads_[size_t(tid)];
  }
  // Byte offset of [addr, addr + n) in the block's memory.
  uint32_t offset(uint32_t addr, uint32_t n, const char* what, int who) const {
    if (addr < base_ || uint64_t(addr) - base_ + n > bytes_)
      fail(std::string(what) + " " + hex(addr) + " (lane/thread " + std::to_string(who) +
           ") outside shared memory [" + hex(base_) + ", " + hex(base_ + bytes_) + ")");
    return addr - base_;
  }
  // A read of byte o by thread tid (-1: a warp's ldmatrix, or a thread not named; lane or
  // thread `lane` for the message). Bytes written since the last barrier by a cp.async or a
  // store are readable only by the thread that wrote them.
  void check_read(uint32_t o, int lane, int tid = -1) {
    const bool copied = writer_[o] >= 0 && writer_[o] != tid;
    const bool stored = store_epoch_[o] == epoch_ && storer_[o] != tid;
    if (pending_[o] != 0 || copied || stored || !written_[o]) {
      const std::string at = "read of " + hex(base_ + o) + " (lane/thread " +
                             std::to_string(lane) + ")";
      if (pending_[o] != 0) fail(at + " while a cp.async into it is in flight");
      if (copied)
        fail(at + " written by thread " + std::to_string(writer_[o]) +
             "'s cp.async with no barrier since");
      if (stored)
        fail(at + " stored by thread " + std::to_string(storer_[o]) +
             " with no barrier since (read-after-write race)");
      fail(at + ", never written");
    }
    // the epoch's reader: one thread, or -2 (several, or not named)
    reader_[o] = tid >= 0 && (read_epoch_[o] != epoch_ || reader_[o] == tid) ? tid : -2;
    read_epoch_[o] = epoch_;
  }

  uint32_t base_, bytes_;
  std::vector<uint8_t> data_, written_;
  std::vector<int> pending_, writer_, read_epoch_;
  std::vector<int> reader_, store_epoch_, storer_;   // last reader / plain store (epoch, thread)
  std::vector<Thread> threads_;
  int epoch_ = 0;
  int64_t copies_ = 0, ldmatrix_ = 0, stores_ = 0, loads_ = 0, wgmma_reads_ = 0;
};

// shfl.sync.bfly.b32 d, a, lanemask, 0x1f, 0xffffffff (PTX ISA, "shfl.sync"), every lane
// active: lane l receives lane (l ^ lanemask)'s value.
template <class T>
std::array<T, kWarpSize> shfl_bfly(const std::array<T, kWarpSize>& v, int lanemask) {
  std::array<T, kWarpSize> r{};
  for (int l = 0; l < kWarpSize; ++l) r[size_t(l)] = v[size_t(l ^ (lanemask & 31))];
  return r;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c (PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type"): D (16x8) = A (16x16) * B (16x8) + C,
// in place (d = c). With groupID g = lane/4 and threadID_in_group t = lane%4:
//   A: registers a[0..3], each two BF16 (lower index in the lower half): a[0] = A[g][2t..+1],
//      a[1] = A[g+8][2t..+1], a[2] = A[g][2t+8..+9], a[3] = A[g+8][2t+8..+9];
//   B: b0 = B[2t..+1][g] (k = 2t, 2t+1 at column n = g), b1 = B[2t+8..+9][g];
//   C, D: c[0], c[1] = row g, columns 2t, 2t+1; c[2], c[3] = row g+8, same columns.
inline void mma_m16n8k16_bf16(std::array<LaneF32, 4>& c, const std::array<LaneU32, 4>& a,
                              const LaneU32& b0, const LaneU32& b1) {
  double A[16][16], B[16][8];
  float C[16][8];
  for (int l = 0; l < kWarpSize; ++l) {
    const int g = l >> 2, t = l & 3;
    const size_t L = size_t(l);
    for (int h = 0; h < 2; ++h) {
      const int sh = 16 * h;
      A[g][2 * t + h] = bf16_to_float(uint16_t(a[0][L] >> sh));
      A[g + 8][2 * t + h] = bf16_to_float(uint16_t(a[1][L] >> sh));
      A[g][2 * t + 8 + h] = bf16_to_float(uint16_t(a[2][L] >> sh));
      A[g + 8][2 * t + 8 + h] = bf16_to_float(uint16_t(a[3][L] >> sh));
      B[2 * t + h][g] = bf16_to_float(uint16_t(b0[L] >> sh));
      B[2 * t + 8 + h][g] = bf16_to_float(uint16_t(b1[L] >> sh));
      C[g][2 * t + h] = c[size_t(h)][L];
      C[g + 8][2 * t + h] = c[size_t(2 + h)][L];
    }
  }
  float D[16][8];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double s = C[i][j];
      for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][j];
      D[i][j] = float(s);
    }
  for (int l = 0; l < kWarpSize; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int h = 0; h < 2; ++h) {
      c[size_t(h)][size_t(l)] = D[g][2 * t + h];
      c[size_t(2 + h)][size_t(l)] = D[g + 8][2 * t + h];
    }
  }
}

}  // namespace ds::test::emu
