// Element-wise ops, double-accumulated reductions, row gathers/scatters (embedding and
// the MoE permutation) and the head-layout copies (split/concat along the last dim, head
// broadcast/sum) of the CUDA path; declared in kernels/elementwise.cuh. All of them are
// memory-bound, so the kernels aim for full-width coalesced traffic: float4 accesses whenever
// the pointers are 16-byte aligned (and row lengths a multiple of 4 for row ops), grid-stride
// loops, 32-bit index arithmetic where the sizes allow it (64-bit division is emulated and
// would make the layout copies ALU-bound). Semantics follow lib/ops/cpu/ref_*.cpp.
#include <algorithm>
#include <initializer_list>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/elementwise_kernels.cuh"
#include "kernels/elementwise_util.cuh"
#include "kernels/head_layout_kernels.cuh"

namespace ds::cuda {
namespace {

using namespace ew;
using namespace elem;   // the kernels (elementwise_kernels.cuh, head_layout_kernels.cuh)

constexpr int kRedMaxBlocks = 1024;   // fixed (not device-dependent): same sum on any GPU

template <Red R>
typename RedT<R>::T reduce(const float* x, int64_t n) {
  using T = typename RedT<R>::T;
  if (n <= 0) return T(0);
  const bool vec = aligned16(x);
  const int64_t work = vec ? std::max<int64_t>(n / 4, 1) : n;
  const int nb = int(std::min<int64_t>(cdiv(work, kThreads), kRedMaxBlocks));
  T* buf = static_cast<T*>(scratch(sizeof(T) * size_t(nb + 1)));
  reduce_partial_kernel<R><<<nb, kThreads, 0, stream()>>>(x, n, vec, buf);
  DS_CUDA_LAUNCHED();
  reduce_final_kernel<T><<<1, 1024, 0, stream()>>>(buf, nb, buf + nb);
  DS_CUDA_LAUNCHED();
  T h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, buf + nb, sizeof(T), cudaMemcpyDeviceToHost, stream()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return h;
}

inline bool fits31(int64_t n) { return n < (int64_t(1) << 31); }

}  // namespace

// ---- launchers ------------------------------------------------------------------------------
void add_f32(const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(b) && aligned16(out);
  add_kernel<<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(a, b, out, n, vec);
  DS_CUDA_LAUNCHED();
}

void add_inplace_f32(float* dst, const float* src, int64_t n) { add_f32(dst, src, dst, n); }

void scale_f32(float* x, float s, int64_t n) {
  if (n <= 0) return;
  const bool vec = aligned16(x);
  scale_kernel<<<flat_blocks(vec ? n / 4 + 1 : n), kThreads, 0, stream()>>>(x, s, n, vec);
  DS_CUDA_LAUNCHED();
}

double sum_f32(const float* x, int64_t n) { return reduce<Red::sum>(x, n); }
double sum_squares_f32(const float* x, int64_t n) { return reduce<Red::sumsq>(x, n); }
int64_t count_nonfinite_f32(const float* x, int64_t n) {
  return int64_t(reduce<Red::nonfinite>(x, n));
}

void gather_rows_scaled_f32(const float* src, int64_t n_src, const int32_t* rows, const float* w,
                            float* dst, int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    gather_rows_kernel<float4, true><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), n_src, rows, reinterpret_cast<float4*>(dst), M,
        C / 4, L.lg, w);
  } else {
    const RowLaunch L = row_launch(M, C);
    gather_rows_kernel<float, true><<<L.blocks, kThreads, 0, stream()>>>(src, n_src, rows, dst,
                                                                         M, C, L.lg, w);
  }
  DS_CUDA_LAUNCHED();
}

void gather_rows_f32(const float* src, int64_t n_src, const int32_t* rows, float* dst, int64_t M,
                     int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    gather_rows_kernel<float4><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), n_src, rows, reinterpret_cast<float4*>(dst), M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    gather_rows_kernel<float><<<L.blocks, kThreads, 0, stream()>>>(src, n_src, rows, dst, M, C,
                                                                   L.lg);
  }
  DS_CUDA_LAUNCHED();
}

template <bool SET>
static void scatter_rows(const float* src, const int32_t* rows, const float* w, float* dst,
                         int64_t n_dst, int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && aligned16(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    scatter_rows_kernel<float4, SET><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), rows, w, reinterpret_cast<float4*>(dst), n_dst, M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    scatter_rows_kernel<float, SET><<<L.blocks, kThreads, 0, stream()>>>(src, rows, w, dst, n_dst,
                                                                          M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void scatter_add_rows_f32(const float* src, const int32_t* rows, const float* w, float* dst,
                          int64_t n_dst, int64_t M, int64_t C) {
  scatter_rows<false>(src, rows, w, dst, n_dst, M, C);
}

void set_rows_f32(const float* src, const int32_t* rows, float* dst, int64_t n_dst, int64_t M,
                  int64_t C) {
  scatter_rows<true>(src, rows, nullptr, dst, n_dst, M, C);
}

void set_rows_bf16(const uint16_t* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                   int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  const auto a8 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 7u) == 0; };
  if (C % 4 == 0 && a8(src) && a8(dst)) {
    const RowLaunch L = row_launch(M, C / 4);
    set_rows_bf16_kernel<uint2, uint2><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const uint2*>(src), rows, reinterpret_cast<uint2*>(dst), n_dst, M, C / 4,
        L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    set_rows_bf16_kernel<uint16_t, uint16_t><<<L.blocks, kThreads, 0, stream()>>>(
        src, rows, dst, n_dst, M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void set_rows_f32_bf16(const float* src, const int32_t* rows, uint16_t* dst, int64_t n_dst,
                       int64_t M, int64_t C) {
  if (M <= 0 || C <= 0) return;
  if (C % 4 == 0 && aligned16(src) && (reinterpret_cast<uintptr_t>(dst) & 7u) == 0) {
    const RowLaunch L = row_launch(M, C / 4);
    set_rows_bf16_kernel<float4, uint2><<<L.blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(src), rows, reinterpret_cast<uint2*>(dst), n_dst, M,
        C / 4, L.lg);
  } else {
    const RowLaunch L = row_launch(M, C);
    set_rows_bf16_kernel<float, uint16_t><<<L.blocks, kThreads, 0, stream()>>>(
        src, rows, dst, n_dst, M, C, L.lg);
  }
  DS_CUDA_LAUNCHED();
}

void gather_rows_dot_f32(const float* a, int64_t n_a, const int32_t* rows, const float* b,
                         float* out, int64_t M, int64_t C) {
  if (M <= 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>(cdiv(M, kThreads / 32), int64_t(sms()) * 64));
  if (C % 4 == 0 && aligned16(a) && aligned16(b)) {
    gather_rows_dot_kernel<float4><<<blocks, kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(a), n_a, rows, reinterpret_cast<const float4*>(b), out, M,
        C / 4);
  } else {
    gather_rows_dot_kernel<float><<<blocks, kThreads, 0, stream()>>>(a, n_a, rows, b, out, M, C);
  }
  DS_CUDA_LAUNCHED();
}

template <bool SPLIT>
static void split_concat(float* x, float* a, float* b, int64_t R, int64_t A, int64_t B) {
  if (R <= 0 || A + B <= 0) return;
  const bool vec = A % 4 == 0 && B % 4 == 0 && aligned16(x) && aligned16(a) && aligned16(b);
  const int64_t V = vec ? 4 : 1, total = R * (A + B) / V;
  const unsigned blocks = flat_blocks(total);
  if (vec) {
    auto *x4 = reinterpret_cast<float4*>(x), *a4 = reinterpret_cast<float4*>(a),
         *b4 = reinterpret_cast<float4*>(b);
    if (fits31(total))
      split_concat_kernel<float4, uint32_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x4, a4, b4, uint32_t(R), uint32_t(A / 4), uint32_t(B / 4));
    else
      split_concat_kernel<float4, int64_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x4, a4, b4, R, A / 4, B / 4);
  } else {
    if (fits31(total))
      split_concat_kernel<float, uint32_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(
          x, a, b, uint32_t(R), uint32_t(A), uint32_t(B));
    else
      split_concat_kernel<float, int64_t, SPLIT><<<blocks, kThreads, 0, stream()>>>(x, a, b, R, A,
                                                                                    B);
  }
  DS_CUDA_LAUNCHED();
}

void split_last_f32(const float* x, float* a, float* b, int64_t R, int64_t A, int64_t B) {
  split_concat<true>(const_cast<float*>(x), a, b, R, A, B);   // x only read
}

void concat_last_f32(const float* a, const float* b, float* x, int64_t R, int64_t A, int64_t B) {
  split_concat<false>(x, const_cast<float*>(a), const_cast<float*>(b), R, A, B);   // a, b only read
}

void broadcast_heads_f32(const float* x, float* out, int64_t N, int64_t H, int64_t D) {
  if (N <= 0 || H <= 0 || D <= 0) return;
  const bool vec = D % 4 == 0 && aligned16(x) && aligned16(out);
  const int64_t V = vec ? 4 : 1, Dv = D / V, total = N * H * Dv;
  const unsigned blocks = flat_blocks(total);
  if (vec) {
    auto* x4 = reinterpret_cast<const float4*>(x);
    auto* o4 = reinterpret_cast<float4*>(out);
    if (fits31(total))
      broadcast_heads_kernel<float4, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          x4, o4, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      broadcast_heads_kernel<float4, int64_t><<<blocks, kThreads, 0, stream()>>>(x4, o4, N, H, Dv);
  } else {
    if (fits31(total))
      broadcast_heads_kernel<float, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          x, out, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      broadcast_heads_kernel<float, int64_t><<<blocks, kThreads, 0, stream()>>>(x, out, N, H, Dv);
  }
  DS_CUDA_LAUNCHED();
}

void sum_heads_f32(const float* dout, float* dx, int64_t N, int64_t H, int64_t D) {
  if (N <= 0 || D <= 0) return;
  const bool vec = D % 4 == 0 && aligned16(dout) && aligned16(dx);
  const int64_t V = vec ? 4 : 1, Dv = D / V, total = N * Dv;
  const unsigned blocks = flat_blocks(total);
  const bool small = fits31(N * H * Dv);
  if (vec) {
    auto* d4 = reinterpret_cast<const float4*>(dout);
    auto* x4 = reinterpret_cast<float4*>(dx);
    if (small)
      sum_heads_kernel<float4, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          d4, x4, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      sum_heads_kernel<float4, int64_t><<<blocks, kThreads, 0, stream()>>>(d4, x4, N, H, Dv);
  } else {
    if (small)
      sum_heads_kernel<float, uint32_t><<<blocks, kThreads, 0, stream()>>>(
          dout, dx, uint32_t(N), uint32_t(H), uint32_t(Dv));
    else
      sum_heads_kernel<float, int64_t><<<blocks, kThreads, 0, stream()>>>(dout, dx, N, H, Dv);
  }
  DS_CUDA_LAUNCHED();
}

namespace {
// float4 when every width is a multiple of 4 and the pointers allow it (codes: 8 bytes).
bool kv_vec(std::initializer_list<const void*> f32, const void* codes, int64_t Dn, int64_t Dr,
            int64_t Dv) {
  bool ok = Dn % 4 == 0 && Dr % 4 == 0 && Dv % 4 == 0;
  for (const void* p : f32) ok = ok && aligned16(p);
  return ok && (codes == nullptr || (reinterpret_cast<uintptr_t>(codes) & 7u) == 0);
}
template <class VT, class I, bool CODES>
void kv_split(const float* kv, const float* krot, void* k, void* v, int64_t N, int64_t H,
              int64_t Dn, int64_t Dr, int64_t Dv, int64_t V) {
  mla_kv_split_kernel<VT, I, CODES>
      <<<flat_blocks(N * H * (Dn + Dr + Dv) / V), kThreads, 0, stream()>>>(
          reinterpret_cast<const VT*>(kv), reinterpret_cast<const VT*>(krot), k, v, I(N), I(H),
          I(Dn / V), I(Dr / V), I(Dv / V));
}
template <class VT, class I, bool CODES>
void kv_split_bwd(const float* dk, const float* dv, void* dkv, float* dkrot, int64_t N, int64_t H,
                  int64_t Dn, int64_t Dr, int64_t Dv, int64_t V) {
  mla_kv_split_bwd_kernel<VT, I, CODES>
      <<<flat_blocks((N * H * (Dn + Dv) + N * Dr) / V), kThreads, 0, stream()>>>(
          reinterpret_cast<const VT*>(dk), reinterpret_cast<const VT*>(dv), dkv,
          reinterpret_cast<VT*>(dkrot), I(N), I(H), I(Dn / V), I(Dr / V), I(Dv / V));
}
}  // namespace

namespace {
// The kernel variant of a layout op: f(VT, I, C) with tag values of float4 rows (vec) or
// float, 32-bit indices (small) or 64-bit, and std::bool_constant<codes> outputs.
template <class F>
void kv_variant(bool vec, bool small, bool codes, F&& f) {
  const auto by_codes = [&](auto vt, auto it) {
    if (codes) f(vt, it, std::true_type{});
    else f(vt, it, std::false_type{});
  };
  if (vec && small) by_codes(float4{}, uint32_t{});
  else if (vec) by_codes(float4{}, int64_t{});
  else if (small) by_codes(float{}, uint32_t{});
  else by_codes(float{}, int64_t{});
}
}  // namespace

void mla_kv_split_f32(const float* kv, const float* krot, void* k, void* v, bool codes,
                      int64_t N, int64_t H, int64_t Dn, int64_t Dr, int64_t Dv) {
  if (N <= 0 || H <= 0) return;
  const bool vec = codes ? kv_vec({kv, krot}, k, Dn, Dr, Dv) && kv_vec({}, v, Dn, Dr, Dv)
                         : kv_vec({kv, krot, k, v}, nullptr, Dn, Dr, Dv);
  const int64_t V = vec ? 4 : 1;
  kv_variant(vec, fits31(N * H * (Dn + Dr + Dv)), codes, [&](auto vt, auto it, auto ct) {
    kv_split<decltype(vt), decltype(it), decltype(ct)::value>(kv, krot, k, v, N, H, Dn, Dr, Dv,
                                                              V);
  });
  DS_CUDA_LAUNCHED();
}

void mla_kv_split_backward_f32(const float* dk, const float* dv, float* dkv_f32,
                               uint16_t* dkv_codes, float* dkrot, int64_t N, int64_t H,
                               int64_t Dn, int64_t Dr, int64_t Dv) {
  if (N <= 0) return;
  if (H <= 0) {   // a sum over no heads, as the reference
    DS_CUDA_CHECK(cudaMemsetAsync(dkrot, 0, size_t(N * Dr) * sizeof(float), stream()));
    return;
  }
  const bool codes = dkv_codes != nullptr;
  void* dkv = codes ? static_cast<void*>(dkv_codes) : static_cast<void*>(dkv_f32);
  const bool vec = codes ? kv_vec({dk, dv, dkrot}, dkv_codes, Dn, Dr, Dv)
                         : kv_vec({dk, dv, dkrot, dkv_f32}, nullptr, Dn, Dr, Dv);
  const int64_t V = vec ? 4 : 1;
  kv_variant(vec, fits31(N * H * (Dn + Dr + Dv)), codes, [&](auto vt, auto it, auto ct) {
    kv_split_bwd<decltype(vt), decltype(it), decltype(ct)::value>(dk, dv, dkv, dkrot, N, H, Dn,
                                                                  Dr, Dv, V);
  });
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
