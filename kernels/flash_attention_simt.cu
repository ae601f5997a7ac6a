// Exact FP32 SIMT attention kernels (forward, dQ, dK/dV) and the public launchers of
// kernels/flash_attention.cuh: attention_forward / attention_backward run the segment-bound
// and D = rowsum(dO * O) pre-passes, then dispatch to the BF16 tensor-core path
// (flash_attention_tc.cu, through flash_attention_common.cuh) when it takes the dims and
// pointers, else to the kernels here. Split from the former flash_attention.cu (kept under the
// project's file-size limit); the algorithm overview is in flash_attention_common.cuh.
//   exact path: FP32 SIMT, any dims: a CTA holds 16 rows (4 warps x 4); each lane owns one
//     streamed row for the dot products, then lanes own head dims for the accumulation;
//     accumulators live in shared memory so any Dk/Dv works. Measured on an H200 (B 2,
//     T 4096, H 16, Dk 192, Dv 128, causal): ~3-4 TFLOP/s (the tensor path: ~120-180).
#include <algorithm>
#include <cmath>

#include "kernels/flash_attention_common.cuh"
#include "kernels/flash_attention_simt.cuh"

namespace ds::cuda {
using namespace flash;
namespace {

constexpr size_t kMaxSmem = 227 * 1024;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Scratch carving: 256-byte aligned pieces of one scratch() block.
struct Carve {
  size_t off = 0;
  size_t take(size_t bytes) {
    const size_t at = off;
    off += (bytes + 255) & ~size_t(255);
    return at;
  }
};

void seg_bounds(const int32_t* seg, int32_t* kfirst, int32_t* klast, const AttnShape& s) {
  const int64_t BT = s.B * s.T;
  seg_bounds_kernel<<<unsigned(cdiv(BT * 32, 256)), 256, 0, stream()>>>(seg, kfirst, klast, BT,
                                                                         int(s.T));
  DS_CUDA_LAUNCHED();
}

}  // namespace

bool attention_simt_supported(int64_t Dk, int64_t Dv) {
  if (Dk <= 0 || Dv <= 0 || Dk > 65536 || Dv > 65536) return false;
  return std::max({simt_fwd_smem(int(Dk), int(Dv)), simt_dq_smem(int(Dk), int(Dv)),
                   simt_dkdv_smem(int(Dk), int(Dv))}) <= kMaxSmem;
}

bool attention_tc_runs(const AttnQKV& in, const AttnShape& s, bool tensor_cores) {
  return tensor_cores && aligned16(in.q) && aligned16(in.k) && aligned16(in.v) &&
         tc_variant(s.Dk, s.Dv) >= 0;
}

namespace {

void check_bf16_inputs(const AttnQKV& in, int variant) {
  if (in.bf16 && variant < 0)
    raise_cuda("attention: BF16 q/k/v need the tensor-core kernels (dims, alignment)",
               cudaErrorInvalidValue, __FILE__, __LINE__);
}

// The BF16 operand x (n elements) of the tensor-core kernels: x itself when the caller's
// inputs are BF16 codes, else converted into `buf`.
const bf16* as_bf16(const void* x, bool is_bf16, bf16* buf, int64_t n) {
  if (is_bf16) return static_cast<const bf16*>(x);
  convert(static_cast<const float*>(x), buf, n);
  return buf;
}

void transpose_bf16(const void* x, bool is_bf16, bf16* xt, const AttnShape& s, int64_t D,
                    int64_t Tp) {
  if (is_bf16) convert_t(static_cast<const bf16*>(x), xt, s, D, Tp);
  else convert_t(static_cast<const float*>(x), xt, s, D, Tp);
}

}  // namespace

void attention_forward(const AttnQKV& in, const int32_t* seg, float scale, float* out,
                       float* lse, const AttnShape& s, bool tensor_cores) {
  if (s.B == 0 || s.T == 0 || s.H == 0) return;
  const int variant = attention_tc_runs(in, s, tensor_cores) ? tc_variant(s.Dk, s.Dv) : -1;
  check_bf16_inputs(in, variant);
  const int64_t nq = s.B * s.T * s.H * s.Dk, nv = s.B * s.T * s.H * s.Dv;
  const bool wg = variant >= 0 && sm90_attention(s.Dk, s.Dv);   // V as V^T, keys padded
  const int64_t Tp = wg ? sm90_keys_padded(s.T) : 0;
  const bool conv = variant >= 0 && !in.bf16;   // q, k (and v) converted here
  Carve cv;
  const size_t o_first = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_last = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_q = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_k = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_v = wg ? cv.take(2 * size_t(s.B * s.H * s.Dv * Tp))
                        : conv ? cv.take(2 * size_t(nv)) : 0;
  char* base = cv.off ? static_cast<char*>(scratch(cv.off)) : nullptr;
  int32_t* kfirst = seg ? reinterpret_cast<int32_t*>(base + o_first) : nullptr;
  int32_t* klast = seg ? reinterpret_cast<int32_t*>(base + o_last) : nullptr;
  if (seg) seg_bounds(seg, kfirst, klast, s);
  const Launch L{s, seg, kfirst, klast, scale};
  if (variant >= 0) {
    const bf16* qb = as_bf16(in.q, in.bf16, reinterpret_cast<bf16*>(base + o_q), nq);
    const bf16* kb = as_bf16(in.k, in.bf16, reinterpret_cast<bf16*>(base + o_k), nq);
    if (wg) {
      bf16* vt = reinterpret_cast<bf16*>(base + o_v);
      transpose_bf16(in.v, in.bf16, vt, s, s.Dv, Tp);
      sm90_forward(L, qb, kb, vt, Tp, out, lse);
      return;
    }
    const Bf16Inputs b{qb, kb, as_bf16(in.v, in.bf16, reinterpret_cast<bf16*>(base + o_v), nv),
                       nullptr};
    tc_forward_variant(variant, L, b, out, lse);
    return;
  }
  const auto* q = static_cast<const float*>(in.q);
  const auto* k = static_cast<const float*>(in.k);
  const auto* v = static_cast<const float*>(in.v);
  const size_t smem = simt_fwd_smem(int(s.Dk), int(s.Dv));
  set_smem(simt_fwd_kernel, smem);
  const dim3 grid(unsigned(cdiv(s.T, kSB)), unsigned(s.B * s.H));
  simt_fwd_kernel<<<grid, kSW * 32, smem, stream()>>>(q, k, v, seg, kfirst, scale, out, lse,
                                                      int(s.T), int(s.H), int(s.Dk), int(s.Dv));
  DS_CUDA_LAUNCHED();
}

void attention_backward(const AttnQKV& in, const int32_t* seg, float scale, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttnShape& s, bool tensor_cores) {
  if (s.B == 0 || s.T == 0 || s.H == 0) return;
  const int variant =
      attention_tc_runs(in, s, tensor_cores) && aligned16(dout) ? tc_variant(s.Dk, s.Dv) : -1;
  check_bf16_inputs(in, variant);
  const int64_t nq = s.B * s.T * s.H * s.Dk, nv = s.B * s.T * s.H * s.Dv;
  const int64_t rows = s.B * s.T * s.H;
  const bool conv = variant >= 0 && !in.bf16;   // q, k, v converted here
  Carve cv;
  const size_t o_D = cv.take(4 * size_t(rows));
  const size_t o_first = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_last = seg ? cv.take(4 * size_t(s.B * s.T)) : 0;
  const size_t o_q = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_k = conv ? cv.take(2 * size_t(nq)) : 0;
  const size_t o_v = conv ? cv.take(2 * size_t(nv)) : 0;
  const size_t o_o = variant >= 0 ? cv.take(2 * size_t(nv)) : 0;
  const bool wg = variant >= 0 && sm90_attention(s.Dk, s.Dv);   // + transposed copies
  const int64_t Tp = wg ? sm90_keys_padded(s.T) : 0;
  const size_t o_qt = wg ? cv.take(2 * size_t(s.B * s.H * s.Dk * Tp)) : 0;
  const size_t o_kt = wg ? cv.take(2 * size_t(s.B * s.H * s.Dk * Tp)) : 0;
  const size_t o_ot = wg ? cv.take(2 * size_t(s.B * s.H * s.Dv * Tp)) : 0;
  const bool qs = wg && sm90_bwd_needs_qstats(s.Dk, s.Dv);
  const size_t o_qs = qs ? cv.take(8 * size_t(s.B * s.H * Tp)) : 0;
  char* base = static_cast<char*>(scratch(cv.off));
  float* D = reinterpret_cast<float*>(base + o_D);
  int32_t* kfirst = seg ? reinterpret_cast<int32_t*>(base + o_first) : nullptr;
  int32_t* klast = seg ? reinterpret_cast<int32_t*>(base + o_last) : nullptr;
  if (seg) seg_bounds(seg, kfirst, klast, s);
  attn_delta_kernel<<<unsigned(cdiv(rows * 32, 256)), 256, 0, stream()>>>(out, dout, D, rows,
                                                                          int(s.T), int(s.H),
                                                                          int(s.Dv));
  DS_CUDA_LAUNCHED();
  const Launch L{s, seg, kfirst, klast, scale};
  if (variant >= 0) {
    const Bf16Inputs b{as_bf16(in.q, in.bf16, reinterpret_cast<bf16*>(base + o_q), nq),
                       as_bf16(in.k, in.bf16, reinterpret_cast<bf16*>(base + o_k), nq),
                       as_bf16(in.v, in.bf16, reinterpret_cast<bf16*>(base + o_v), nv),
                       as_bf16(dout, false, reinterpret_cast<bf16*>(base + o_o), nv)};
    if (wg) {
      const Sm90BwdInputs w{b.q, b.k, b.v, b.dout, reinterpret_cast<bf16*>(base + o_qt),
                            reinterpret_cast<bf16*>(base + o_kt),
                            reinterpret_cast<bf16*>(base + o_ot),
                            qs ? reinterpret_cast<float2*>(base + o_qs) : nullptr};
      transpose_bf16(in.q, in.bf16, const_cast<bf16*>(w.qt), s, s.Dk, Tp);
      transpose_bf16(in.k, in.bf16, const_cast<bf16*>(w.kt), s, s.Dk, Tp);
      convert_t(dout, const_cast<bf16*>(w.doutt), s, s.Dv, Tp);
      sm90_backward(L, w, Tp, lse, D, dq, dk, dv);
      return;
    }
    tc_backward_variant(variant, L, b, lse, D, dq, dk, dv);
    return;
  }
  const auto* q = static_cast<const float*>(in.q);
  const auto* k = static_cast<const float*>(in.k);
  const auto* v = static_cast<const float*>(in.v);
  const int T = int(s.T), H = int(s.H), Dk = int(s.Dk), Dv = int(s.Dv);
  const dim3 grid(unsigned(cdiv(s.T, kSB)), unsigned(s.B * s.H));
  const size_t smq = simt_dq_smem(Dk, Dv), smkv = simt_dkdv_smem(Dk, Dv);
  set_smem(simt_dq_kernel, smq);
  simt_dq_kernel<<<grid, kSW * 32, smq, stream()>>>(q, k, v, dout, seg, kfirst, lse, D, scale, dq,
                                                    T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
  set_smem(simt_dkdv_kernel, smkv);
  simt_dkdv_kernel<<<grid, kSW * 32, smkv, stream()>>>(q, k, v, dout, seg, klast, lse, D, scale,
                                                       dk, dv, T, H, Dk, Dv);
  DS_CUDA_LAUNCHED();
}

}  // namespace ds::cuda
