// The ops layer: every numerical kernel the model uses, forward and backward, behind one
// set of functions that dispatch on the tensors' device and on Context::impl. Each op has a
// plain reference implementation (lib/ops/cpu/ref_*.cpp, readable loops, also instantiated
// in double for finite-difference tests), an optimised CPU path (OpenBLAS GEMMs, OpenMP
// threads, fused loops) and, later, a CUDA path (kernels/), all tested against the reference.
//
// Conventions: tensors are contiguous row-major F32 on the CPU (the CUDA path adds BF16).
// Outputs named `out`/`d<x>` are overwritten; parameter gradients named `dw`, `dg`, `dtable`
// are ACCUMULATED (+=), so micro-batches and shared weights (MTP's embedding/head) add up.
// Index tensors are I32. Shapes use the letters of ds/core/tensor.hpp.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ds/core/tensor.hpp"

namespace ds::ops {

enum class Impl : uint8_t { reference, optimized };

// Per-op profile: calls, seconds and FLOPs (GEMMs) of every op called with a Context whose
// `prof` points here. CPU ops are timed on the calling thread (wall clock). GPU ops are timed
// on the device by a pair of CUDA events around their launches, without synchronising: the
// GPU time from the op's first launch to its last kernel's end (including any wait for the
// host to enqueue them); the pairs are read, after one synchronisation, by the first
// entries() / seconds() / flops() that follows. Not thread-safe: one Profiler per thread
// that drives ops. Families group ops for reports: gemm, attention, cross_entropy, norm,
// rope_permute, moe, embedding, elementwise, quantize (FP8/BF16 operand rounding), optimizer.
class Profiler {
 public:
  struct Entry {
    const char* op = nullptr;   // string literal of the op name
    std::string_view family;
    int64_t calls = 0;
    double seconds = 0, flops = 0;
    double bytes = 0;   // the operands' bytes the calls moved at least (detail::Scope's io)
  };
  Profiler() = default;
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;
  ~Profiler();
  void add(const char* op, double seconds, double flops, double bytes = 0);
  // A GPU op between two recorded timing events (ds::cuda::timing_event_record).
  void add_events(const char* op, void* e0, void* e1, double flops, double bytes = 0);
  const std::vector<Entry>& entries() const;
  double seconds(std::string_view family = {}) const;   // all ops, or one family
  double flops(std::string_view family = {}) const;
  double bytes(std::string_view family = {}) const;
  void clear();
  static std::string_view family_of(std::string_view op);

 private:
  struct Timed {
    const char* op;
    void *e0, *e1;
    double flops, bytes;
  };
  void resolve() const;   // pending event pairs -> entries (synchronises the device once)
  mutable std::vector<Entry> entries_;
  mutable std::vector<Timed> pending_;
};

// GEMM operands derived from weights that stay fixed while the cache is in use: one training
// step's forward and backward passes, over all its micro-batches. model::Linear and the MoE
// experts keep the BF16 operand of each weight here instead of rounding the weight on every
// use (the LM head was rounded once per logits chunk), and an FP8 Linear its weight's E4M3
// codes and scales for both orientations (Fprop's W, Dgrad's W^T). The trainer sets
// Context::operands (train::make_context, on the GPU). Entries are keyed by the weight's data
// pointer and size and by a kind chosen by the caller. Before the optimizer changes the
// weights, the cache is either cleared, or (AdamW::step, Context::operand_refresh) asked for a
// refresh plan: a BF16 entry binds each of its parts to the weight it was rounded from, and
// AdamW writes the updated weight's operand into that part in the same pass as the update
// (the BF16 working copies of DeepSeek-V3's optimizer step), so the entry stays valid for the
// next step; the entries it cannot refresh (FP8 codes, weights outside the update) are dropped.
class OperandCache {
 public:
  using Make = std::function<std::vector<Tensor>()>;
  // A part of an entry: `operand` holds the BF16 operand (codes, or the CPU's F32 rounded
  // values) of the numel F32 weight elements from `weight` on, in their layout.
  struct Binding {
    const void* weight = nullptr;
    int64_t numel = 0;
    Tensor operand;
  };
  using Bind = std::function<std::vector<Binding>(const std::vector<Tensor>& entry)>;
  // The entry (key, kind), made by `make` when absent; `bind` (optional) names the weights its
  // parts were made from, which makes it refreshable.
  const std::vector<Tensor>& get(const Tensor& key, int kind, const Make& make,
                                 const Bind& bind = nullptr) {
    const auto k = std::make_tuple(key.raw(), key.numel(), kind);
    auto it = m_.find(k);
    if (it == m_.end()) {
      it = m_.emplace(k, Entry{make(), {}}).first;
      if (bind) it->second.bindings = bind(it->second.tensors);
      ++made_;
    }
    return it->second.tensors;
  }
  void clear() { m_.clear(); }
  size_t entries() const { return m_.size(); }
  // Entries made so far (tests: a refreshed entry is not made again).
  int64_t made() const { return made_; }
  // Before an optimizer step over `params` (each an F32 weight's data and element count) that
  // writes each weight's BF16 operand itself: the operand view (the weight's shape, flat) that
  // each parameter's update must write, for the entries whose every part lies exactly over
  // whole parameters of the list, each parameter bound once. Every other entry is dropped.
  std::map<const void*, Tensor> refresh_plan(
      const std::vector<std::pair<const void*, int64_t>>& params);

 private:
  struct Entry {
    std::vector<Tensor> tensors;
    std::vector<Binding> bindings;
  };
  std::map<std::tuple<const void*, int64_t, int>, Entry> m_;
  int64_t made_ = 0;
};

// Numeric precision of the model's Linear GEMMs (training; see include/ds/ops/fp8.hpp and
// docs/model.md "Precision"). fp32: FP32 inputs. bf16: every Linear's GEMM inputs rounded to
// BF16 (products and sums in FP32, as BF16 tensor cores do). fp8: DeepSeek-V3's recipe: the
// Linears flagged FP8 (ParamInfo::fp8: attention projections, dense/shared/routed expert
// matrices, MTP blocks) take E4M3 inputs in all three GEMMs (1x128 activation tiles, 128x128
// weight blocks, 128x1 for the weight gradient); the other Linears (head, MTP eh_proj) as bf16.
// The router (gate.cpp calls the ops directly) and norms stay FP32. The attention core is
// FP32 on the CPU; on the GPU a bf16/fp8 context runs it on BF16 tensor cores (FP32 softmax
// and accumulation), an fp32 context in exact FP32 (docs/cuda.md).
enum class Precision : uint8_t { fp32, bf16, fp8 };
// How FP8 scales are grouped: the paper's fine-grained tiles/blocks, or one scale per tensor
// (the baseline that shows what the tiles buy).
enum class Fp8Granularity : uint8_t { tile, tensor };
// FP8 scale values: any FP32, or powers of two (UE8M0, as DeepGEMM on SM100).
enum class ScaleFormat : uint8_t { fp32, ue8m0 };

struct LinearPrecision {
  Precision mode = Precision::fp32;
  Fp8Granularity granularity = Fp8Granularity::tile;
  ScaleFormat scale_format = ScaleFormat::fp32;
  // bf16 GEMMs: an activation that feeds Linears is rounded to its BF16 operand once
  // (model::gemm_input), and the Linears sharing it and the backward pass read that operand,
  // which is what the layer keeps for the backward (BF16 codes: half the bytes of the F32
  // activation). -1 auto: on the GPU; 0 never (every Linear rounds its input per use, as the
  // CPU does); 1 also on the CPU (BF16 codes there too, widened per use: the same numbers; for
  // tests).
  int8_t share_inputs = -1;
};

struct Context {
  Device device = Device::cpu;
  Impl impl = Impl::optimized;
  int threads = 1;          // CPU threads (OpenMP; OpenBLAS runs single-threaded per caller)
  Profiler* prof = nullptr; // optional per-op timing
  LinearPrecision linear;   // read by model::Linear (training GEMM precision)
  // GPU: keep the attention core in exact FP32 even when `linear` is bf16/fp8 (which
  // otherwise selects the BF16 tensor-core kernels); the CPU's is always FP32. Lets a test
  // compare the GEMM precisions alone against the CPU emulation.
  bool exact_attention = false;
  // q, k, v of the training attention as BF16 codes, written by their producers (MLA's RoPE,
  // mla_kv_split) and kept for the backward: -1 auto (where the attention runs them on BF16
  // tensor cores, attention_bf16_inputs), 0 F32, 1 BF16 codes also on the CPU (which then
  // attends over those values in FP32; for tests).
  int8_t attention_inputs = -1;
  // The routed experts' GEMMs (model::MoE, unless Transformer::set_grouped_experts says
  // otherwise): -1 auto (grouped GEMMs over the expert-sorted rows on the GPU, in FP8 with tile
  // scaling; the per-expert loop on the CPU), 0 the per-expert loop, 1 grouped (FP8: tile
  // scaling).
  int moe_gemm = -1;
  // An MLP's gate_proj and up_proj as one GEMM over their stacked (2I, C) matrix where the
  // parameters lie stacked (model::ParamStore::stack) and the path takes it (the routed
  // experts' grouped GEMMs, and every MLP's Linears; in FP8 when I is a multiple of 128 and
  // scales are tiles): -1 auto (on, except on the GPU under DS_CUDA_FUSED=0 and wherever
  // DS_STACKED_GATE_UP=0: the separate GEMMs), 0 off, 1 on.
  int8_t stacked_gate_up = -1;
  // Sums into existing tensors by the GEMM itself (gemm_accumulates): -1 auto (on the GPU
  // unless DS_CUDA_FUSED=0; off on the CPU), 0 off, 1 on.
  int8_t gemm_accumulate = -1;
  // The routed experts' GEMM outputs (model::MoE's grouped bf16 path with gate_proj and
  // up_proj stacked): the outputs of gate/up, down and their input-gradient GEMMs written as
  // BF16 (FP32 accumulation, rounded once, as DeepSeek-V3's GEMMs output BF16 and its combine
  // runs in BF16), read by SwiGLU, the per-token combine and the gate weights' gradient; the
  // weight gradients stay FP32. -1 auto (DS_EXPERT_OUTPUTS: f32 unless it says bf16), 0 F32,
  // 1 BF16; never on the GPU under DS_CUDA_FUSED=0. A change of numerics (the outputs rounded
  // to 8 bits of mantissa); on the GPU it lets cuBLAS's grouped GEMM take the experts'
  // forward and input-gradient GEMMs in one call each (it has no BF16-in, F32-out form).
  int8_t expert_outputs_bf16 = -1;
  // An optimizer step with an operand cache refreshes its BF16 weight operands in place
  // (AdamW writes them with the update; OperandCache::refresh_plan) instead of clearing it:
  // -1 auto and 1: refresh, except on the GPU under DS_CUDA_FUSED=0 (cleared there); 0 clear.
  int8_t operand_refresh = -1;
  // The weights' GEMM operands (BF16, or FP8 codes) for the current step (see OperandCache);
  // shared by copies.
  std::shared_ptr<OperandCache> operands;
};

// "fp32" | "bf16" | "fp8", "tile" | "tensor", "fp32" | "ue8m0"; UsageError naming `flag`.
Precision parse_precision(std::string_view s, std::string_view flag);
Fp8Granularity parse_fp8_granularity(std::string_view s, std::string_view flag);
ScaleFormat parse_scale_format(std::string_view s, std::string_view flag);
std::string_view precision_name(Precision p);

// ---- devices ------------------------------------------------------------------------------
// True when this build carries the CUDA path (kernels/ compiled in).
bool cuda_built();
// Makes `d` usable: for cuda, selects GPU `gpu` (a process drives one: asking for another
// later throws) and installs the Tensor memory hooks (once per process). Throws CudaError with
// a one-line reason when the build has no CUDA path or no GPU/driver is present. No-op for
// cpu.
void init_device(Device d, int gpu = 0);
// Waits for the device's queued work (no-op on the CPU); throws CudaError on an asynchronous
// error of an earlier launch.
void synchronize(Device d);
// "NVIDIA H200 (sm_90, 139 GiB)" or "cpu".
std::string device_description(Device d);
// GPU memory: bytes held by the allocator's pool, and the peak in use since the last reset.
struct DeviceMemory {
  size_t reserved = 0, peak_used = 0;
};
DeviceMemory device_memory(Device d);
void reset_device_peak(Device d);

// Sets the OpenMP thread count once per process and keeps OpenBLAS single-threaded (GEMMs
// are split over OpenMP threads by the ops layer). Call from the tools.
void set_cpu_threads(int n);

// ---- GEMM -------------------------------------------------------------------------------
// c(M,N) = alpha * op(a) @ op(b) + beta * c; op(x) = x^T when trans_x. 2-D tensors.
void matmul(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, bool trans_a,
            bool trans_b, float alpha = 1.0f, float beta = 0.0f);
// Linear layer without bias, weights (out, in) as in nn.Linear / Hugging Face checkpoints.
// w may be F32 or BF16 (inference: widened to float exactly, products and sums in FP32).
void linear_forward(const Context& ctx, const Tensor& x /*(N,in)*/, const Tensor& w /*(out,in)*/,
                    Tensor& y /*(N,out)*/);
// dx = dy @ w + dx_beta * dx (skipped if dx is undefined); dw += dy^T @ x.
void linear_backward(const Context& ctx, const Tensor& x /*(N,in)*/, const Tensor& w,
                     const Tensor& dy /*(N,out)*/, Tensor& dx /*(N,in)*/, Tensor& dw /*(out,in)*/,
                     float dx_beta = 0.0f);
// Whether the model adds a GEMM's result into a tensor through the GEMM itself (cuBLAS's
// beta = 1, the FP8 k-grouped GEMM's += : one pass over the target, no temporary) rather than
// into a temporary and an add_: Context::gemm_accumulate resolved; by default on the GPU, not
// under DS_CUDA_FUSED=0 (the paths the H200 measured). The CPU keeps the temporary and add_ by
// default, so that its results stay as they were to the bit (its BLAS folds the target into
// its K-block sums in another order).
bool gemm_accumulates(const Context& ctx);
// Context::expert_outputs_bf16 resolved; reads and checks DS_EXPERT_OUTPUTS (f32 | bf16, unset
// or empty: f32; anything else a UsageError naming it) on first use.
bool expert_outputs_bf16(const Context& ctx);
// Context::operand_refresh resolved.
bool refreshes_operands(const Context& ctx);

// Grouped GEMMs over row blocks: the MoE experts of a layer on the expert-sorted rows, in
// one call (cuBLAS grouped GEMM on the GPU; a loop of matmuls on the CPU). Group g owns rows
// [offsets[g], offsets[g+1]) of the row-blocked operands (host offsets, G+1 values from 0 to
// the row count); groups without rows are skipped. Operands F32, or (GPU) BF16 codes for x/w
// and dy/x; outputs F32 (grouped_matmul's y may be BF16 codes with beta 0: the FP32 sums
// rounded once, the routed experts' BF16 outputs; the CPU rounds its F32 result).
// y[rows_g] (M_g, N) = x[rows_g] (M_g, K) @ op(w[g]) + beta * y[rows_g]; op(w) = w^T with
// w[g] (N, K) when trans_w (a Linear's forward), else w[g] (K, N) (its input gradient).
void grouped_matmul(const Context& ctx, const Tensor& x, const std::vector<Tensor>& w,
                    bool trans_w, const std::vector<int64_t>& offsets, Tensor& y,
                    float beta = 0.0f);
// dw[g] (O, I) += dy[rows_g]^T (O, M_g) @ x[rows_g] (M_g, I): the weight gradients.
void grouped_matmul_wgrad(const Context& ctx, const Tensor& dy, const Tensor& x,
                          const std::vector<int64_t>& offsets, std::vector<Tensor>& dw);

// out (K, M) = x (M, K)^T for 2-D F32, BF16 or U8 tensors (same dtype in and out).
void transpose(const Context& ctx, const Tensor& x, Tensor& out);

// ---- embedding --------------------------------------------------------------------------
void embedding_forward(const Context& ctx, const Tensor& table /*(V,C)*/,
                       const Tensor& ids /*(N) i32*/, Tensor& out /*(N,C)*/);
void embedding_backward(const Context& ctx, const Tensor& ids /*(N)*/, const Tensor& dout /*(N,C)*/,
                        Tensor& dtable /*(V,C) +=*/);

// ---- RMSNorm: y = x * rstd * g, rstd = 1/sqrt(mean(x^2) + eps) -------------------------------
// y F32, or BF16: then the results' codes (bf16_round of the F32 y, bit for bit; the next
// Linear's operand, model::gemm_input_empty), written in the same pass on the GPU.
void rmsnorm_forward(const Context& ctx, const Tensor& x /*(N,C)*/, const Tensor& g /*(C)*/,
                     float eps, Tensor& y /*(N,C)*/, Tensor& rstd /*(N)*/);
// dx F32, or BF16: the codes of the F32 dx (bit for bit bf16_round of it; the gradient a
// Linear reads as its GEMM operand, written in the same pass on the GPU).
void rmsnorm_backward(const Context& ctx, const Tensor& x, const Tensor& g, const Tensor& rstd,
                      const Tensor& dy /*(N,C)*/, Tensor& dx /*(N,C)*/, Tensor& dg /*(C) +=*/);
// The pre-norm residual add fused in front (model::Block): h = x + a (F32, the residual
// stream; h may be x or a, not y), then y, rstd = rmsnorm_forward(h): bit for bit add then
// rmsnorm_forward, with one pass fewer over the rows.
void add_rmsnorm_forward(const Context& ctx, const Tensor& x /*(N,C)*/, const Tensor& a /*(N,C)*/,
                         const Tensor& g /*(C)*/, float eps, Tensor& h /*(N,C)*/,
                         Tensor& y /*(N,C)*/, Tensor& rstd /*(N)*/);
// And behind the backward: dx = res + rmsnorm_backward's dx (the residual gradient added in
// the same pass; bit for bit rmsnorm_backward then add(res, .)); dg += as rmsnorm_backward.
// res may be dx; dx must not overlap x or dy. dx_codes (N, C) BF16 or null: also the codes of
// dx (bit for bit bf16_round(dx); the residual gradient as the next Linears' GEMM operand, so
// that they do not round it again), written in the same pass on the GPU.
void rmsnorm_backward_add(const Context& ctx, const Tensor& x, const Tensor& g,
                          const Tensor& rstd, const Tensor& dy, const Tensor& res /*(N,C)*/,
                          Tensor& dx /*(N,C)*/, Tensor& dg /*(C) +=*/,
                          Tensor* dx_codes = nullptr);

// ---- RoPE, interleaved pairs (2i, 2i+1), angle pos * freq[i] ----------------------------------
// x: (N, H, Dr) rotated in place-free fashion into out; pos: (N) i32 absolute positions;
// freqs: (Dr/2) F32 (YaRN-corrected inverse frequencies, see model/rope_yarn).
void rope_forward(const Context& ctx, const Tensor& x, const Tensor& pos, const Tensor& freqs,
                  Tensor& out);
// dx = rotation by -angle of dout.
void rope_backward(const Context& ctx, const Tensor& dout, const Tensor& pos, const Tensor& freqs,
                   Tensor& dx);
// In place on the last Dr = 2 * freqs.size(0) elements of each (n, h) row of x (N, H, D): the
// rope_forward (dir +1) or rope_backward (dir -1) of that tail, the rest untouched. MLA's
// q = [q_nope | rope(q_pe)] and its gradient without splitting and concatenating the heads.
void rope_tail_inplace(const Context& ctx, Tensor& x /*(N,H,D)*/, const Tensor& pos,
                       const Tensor& freqs, int dir);
// The same rotation written as BF16 codes into out (N, H, D), x (F32) left as it is: bit for
// bit rope_tail_inplace then bf16_round, in one pass (MLA's q as the attention's BF16 operand,
// and its gradient as q_b_proj's; x and out must not overlap).
void rope_tail_codes(const Context& ctx, const Tensor& x /*(N,H,D)*/, const Tensor& pos,
                     const Tensor& freqs, int dir, Tensor& out /*(N,H,D) BF16*/);

// ---- head split / merge along the last dim: x (N, H, A+B) <-> a (N, H, A), b (N, H, B) ----------
void split_last(const Context& ctx, const Tensor& x, Tensor& a, Tensor& b);
void concat_last(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& x);
// Broadcast one shared head: out (N, H, D) = x (N, D) for every head; backward sums heads.
void broadcast_heads(const Context& ctx, const Tensor& x /*(N,D)*/, Tensor& out /*(N,H,D)*/);
void sum_heads(const Context& ctx, const Tensor& dout /*(N,H,D)*/, Tensor& dx /*(N,D)*/);
// MLA's keys and values in one pass (what split_last, broadcast_heads and concat_last make):
// k (N, H, Dn+Dr) = [kv[.., :Dn] | k_rot], v (N, H, Dv) = kv[.., Dn:], from kv_b_proj's output
// kv (N, H, Dn+Dv) and the rotated shared rope key k_rot (N, Dr). k and v both F32, or both
// BF16 codes (the attention's inputs, attention_bf16_inputs; bit for bit bf16_round of the F32
// results).
void mla_kv_split(const Context& ctx, const Tensor& kv, const Tensor& k_rot, Tensor& k,
                  Tensor& v);
// Its backward: dkv (N, H, Dn+Dv) = [dk[.., :Dn] | dv], F32 or BF16 codes (kv_b_proj's GEMM
// operand, bit for bit bf16_round of the F32 result), and dk_rot (N, Dr) = dk[.., Dn:] summed
// over heads (sum_heads' sums, bit for bit).
void mla_kv_split_backward(const Context& ctx, const Tensor& dk, const Tensor& dv, Tensor& dkv,
                           Tensor& dk_rot);

// ---- causal attention ---------------------------------------------------------------------
// q, k: (B, T, H, Dk); v: (B, T, H, Dv); out: (B, T, H, Dv); lse: (B, H, T) log-sum-exp saved
// for backward. segments: undefined, or (B, T) i32 sample ids: a query attends only to keys
// of its own segment (block-diagonal causal mask of SFT packing). Softmax in FP32. q, k, v
// all F32, or all BF16 codes: on the GPU the operands of the tensor-core kernels, read as they
// are (F32 inputs are rounded to BF16 there in a pass of their own, so the results are the
// same bits); the exact kernels and the CPU attend over the codes' values in FP32.
// Whether the model should hand q, k, v over as BF16 codes (Context::attention_inputs; auto:
// on the GPU where bf16/fp8 runs the tensor-core kernels for these head dims).
bool attention_bf16_inputs(const Context& ctx, int64_t Dk, int64_t Dv);
void attention_forward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& segments, float scale, Tensor& out, Tensor& lse);
void attention_backward(const Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& segments, float scale, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv);

// ---- SwiGLU: out = silu(gate) * up ----------------------------------------------------------
// F32 inputs. The outputs (out; dgate and dup) are all F32, or all BF16: then the results'
// codes (RNE), bit for bit bf16_round of the F32 results, written in the same pass on the GPU
// (the next Linear's operands, model::gemm_input).
void swiglu_forward(const Context& ctx, const Tensor& gate /*(N,I)*/, const Tensor& up /*(N,I)*/,
                    Tensor& out /*(N,I)*/);
void swiglu_backward(const Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dout,
                     Tensor& dgate, Tensor& dup);
// Packed: h (N, 2I) is the output of one GEMM over stacked [gate_proj; up_proj] weights, gate
// in columns [0, I) and up in [I, 2I); out (N, I), and the backward's dh (N, 2I) = [dgate |
// dup]. Each element as swiglu_forward / swiglu_backward give it; outputs F32 or BF16 codes.
// The packed ops' inputs (h; h and dout) may also be BF16 codes, all of them (the routed
// experts' BF16 GEMM outputs, Context::expert_outputs_bf16): the results of the F32 op on
// their values, widened exactly.
// Context::stacked_gate_up resolved.
bool use_stacked_gate_up(const Context& ctx);
void swiglu_packed_forward(const Context& ctx, const Tensor& h /*(N,2I)*/, Tensor& out /*(N,I)*/);
void swiglu_packed_backward(const Context& ctx, const Tensor& h /*(N,2I)*/,
                            const Tensor& dout /*(N,I)*/, Tensor& dh /*(N,2I)*/);

// ---- cross-entropy over logits (N, V); targets (N) i32, -1 = ignored -----------------------
// losses (N): -log softmax(logits)[target] (0 for ignored rows).
void cross_entropy_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& losses);
// dlogits = (softmax(logits) - onehot(target)) * scale (0 rows for ignored targets).
void cross_entropy_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            float scale, Tensor& dlogits);
// Both at once, each logit exponentiated once: losses (N) as cross_entropy_forward (skipped if
// undefined) and dlogits as cross_entropy_backward. dlogits may be logits itself (in place),
// or BF16: then the gradient's codes (bf16_round of the F32 dlogits, bit for bit; the head's
// GEMM operand), written by the same pass on the GPU.
void cross_entropy_forward_backward(const Context& ctx, const Tensor& logits,
                                    const Tensor& targets, float scale, Tensor& losses,
                                    Tensor& dlogits);

// ---- MoE routing (spec §1.9) -----------------------------------------------------------------
struct RouteParams {
  int n_groups = 1;          // expert groups; experts E must be divisible by it
  int topk_groups = 1;       // groups kept per token
  int topk = 1;              // experts per token (K)
  bool sigmoid = true;       // false: softmax scores (V2 checkpoints)
  bool norm_topk = true;     // renormalise the K weights to sum to 1
  float route_scale = 1.0f;  // then multiply by this
};
// logits (N, E) F32; bias (E) or undefined (selection only). Outputs: scores (N, E) = sigmoid
// (or softmax) of logits; idx (N, K) i32 selected experts (ascending score order not implied:
// sorted by descending selection score, ties to the lower index); weights (N, K).
void moe_route(const Context& ctx, const Tensor& logits, const Tensor& bias, const RouteParams& p,
               Tensor& scores, Tensor& idx, Tensor& weights);
// dlogits (N, E) from dweights (N, K) through the normalisation and the score function, plus
// dscores_extra (N, E) (e.g. the balance loss), if defined.
void moe_route_backward(const Context& ctx, const Tensor& scores, const Tensor& idx,
                        const Tensor& dweights, const Tensor& dscores_extra, const RouteParams& p,
                        Tensor& dlogits);
// Sequence-wise balance loss (docs/model.md): scores (N, E), idx (N, K), N = n_seq * seq_len
// tokens in sequence-major order. Returns alpha * mean_seq sum_i f_i P_i; if dscores is
// defined, writes dL/dscores (N, E) (gradient through P_i only). lengths, when not empty
// (n_seq, each in [0, seq_len]): sequence s is its first lengths[s] tokens (f and P over
// them; the rest is padding with zero dscores; an empty sequence adds 0 to the mean).
double moe_balance_loss(const Context& ctx, const Tensor& scores, const Tensor& idx, int n_seq,
                        int seq_len, float alpha, Tensor& dscores,
                        std::span<const int32_t> lengths = {});
// Per-expert token counts of idx (N, K), added into counts (E) I32.
void moe_count(const Context& ctx, const Tensor& idx, Tensor& counts /*(E) i32 +=*/);
// Stable counting sort of the (token, k) pairs of idx (N, K) by expert, E = counts.size(0):
// counts[e] = the pairs routed to e; slot j of the expert-sorted order (experts ascending, pair
// p = n*K + k ascending within an expert) gets pair_src[j] = p and pair_tok[j] = p / K, and
// pair_slot[p] = j (the inverse; skipped when undefined). The MoE layer's grouping
// (model/moe.cpp group_pairs); on the GPU it needs no host round trip but the E counts. idx
// entries must lie in [0, E) (checked on the CPU). host_counts (optional): the counts also on
// the host; on the GPU copied as soon as they are counted, so that the sort runs while the
// host goes on (the MoE layer's only wait for the GPU). lib/ops/moe_pairs.cpp.
void moe_sort_pairs(const Context& ctx, const Tensor& idx /*(N,K) i32*/,
                    Tensor& counts /*(E) i32*/, Tensor& pair_src /*(N*K) i32*/,
                    Tensor& pair_tok /*(N*K) i32*/, Tensor& pair_slot /*(N*K) i32 or undef*/,
                    std::vector<int32_t>* host_counts = nullptr);
// The FP8 grouped experts' padded layout (model/moe_fp8.cpp) of the expert-sorted pairs
// (moe_sort_pairs' pair_src and their gate weights pair_w): expert e's sorted pairs
// [offsets[e], offsets[e+1]) move to padded rows from p_offsets[e], the rest of its padded
// range [p_offsets[e], p_offsets[e+1]) are pad rows. Sorted pair i goes to row r =
// p_offsets[e] + i - offsets[e]: p_tok[r] = pair_src[i] / K, p_w[r] = pair_w[i], p_row[i] = r,
// p_pair[pair_src[i]] = r (viewed (N, K): combine_pairs' slot); a pad row gets p_tok[r] = r mod
// N and p_w[r] = 0. pair_src must be a permutation of [0, NK) (checked on the CPU). On the GPU
// one launch and the offsets' upload, no wait for the GPU (DS_CUDA_FUSED=0: on the host, with
// two downloads and four uploads, as before the kernel). lib/ops/moe_pairs.cpp.
void moe_pad_pairs(const Context& ctx, const Tensor& pair_src /*(NK) i32*/,
                   const Tensor& pair_w /*(NK) f32*/, int64_t K,
                   const std::vector<int64_t>& offsets /*(E+1)*/,
                   const std::vector<int64_t>& p_offsets /*(E+1)*/, Tensor& p_tok /*(NKp) i32*/,
                   Tensor& p_w /*(NKp) f32*/, Tensor& p_row /*(NK) i32*/,
                   Tensor& p_pair /*(NK) i32*/);
// dst[n] += w[n, k] * src[slot[n, k]] over k = 0..K-1 taken in ascending slot order (w
// undefined: weight 1): the expert-sorted rows added back into their tokens. The same float
// operations in the same order as scatter_add_rows(src, pair_tok, pair_w, dst) (bit for bit
// on the CPU), but per token, so the GPU needs no atomics and is deterministic. slot is
// moe_sort_pairs' pair_slot viewed (N, K), or any distinct rows of src: src may have more rows
// than pairs (the FP8 experts' 128-padded layout, whose pad rows no slot names; they are
// not read, except by the DS_CUDA_FUSED=0 fallback, which adds them with weight 0, so they
// must be finite there). src F32, or BF16 codes (the routed experts' BF16 GEMM outputs; the
// sums those of the widened values; on the GPU not under DS_CUDA_FUSED=0).
void combine_pairs(const Context& ctx, const Tensor& src /*(R,C), R >= N*K*/,
                   const Tensor& slot /*(N,K)*/, const Tensor& w /*(N,K) or undefined*/,
                   Tensor& dst /*(N,C)*/);

// ---- token permutation for experts -------------------------------------------------------------
// dst (M, C) = src[rows[m]]
void gather_rows(const Context& ctx, const Tensor& src /*(N,C)*/, const Tensor& rows /*(M)*/,
                 Tensor& dst /*(M,C)*/);
// dst (M, C) = 0 + w[m] * src[rows[m]], F32: what gather_rows and a weighted scatter_add_rows
// into zeros give on the CPU, value for value (0 + x makes -0 +0 as that scatter does), in one
// pass (the GPU's atomic scatter flushed subnormal products to zero; this keeps them).
void gather_rows_scaled(const Context& ctx, const Tensor& src /*(N,C)*/, const Tensor& rows /*(M)*/,
                        const Tensor& w /*(M)*/, Tensor& dst /*(M,C)*/);
// dst (M, C) = bf16(w[m] * src[rows[m]]) (w undefined: bf16(src[rows[m]])), one pass for what
// gather_rows, a scatter_add_rows of the rows into zeros with weights w and bf16_round give
// (bit for bit): the routed experts' BF16 GEMM operands. dst BF16 (the codes) or F32 (the
// rounded values, the CPU's form of a BF16 operand).
void gather_rows_bf16(const Context& ctx, const Tensor& src /*(N,C) F32*/, const Tensor& rows,
                      const Tensor& w /*(M) or undefined*/, Tensor& dst /*(M,C)*/);
// dst[rows[m]] += w[m] * src[m]  (w undefined: weight 1). Deterministic order of m.
void scatter_add_rows(const Context& ctx, const Tensor& src /*(M,C)*/, const Tensor& rows,
                      const Tensor& w /*(M) or undefined*/, Tensor& dst /*(N,C)*/);
// out[m] = dot(a[rows[m]], b[m])  (gradient of scatter_add_rows w.r.t. w)
void gather_rows_dot(const Context& ctx, const Tensor& a /*(N,C)*/, const Tensor& rows,
                     const Tensor& b /*(M,C)*/, Tensor& out /*(M)*/);
// gather_rows_bf16 and gather_rows_dot of the same rows in one pass over them (the routed
// experts' backward: each pair's weighted output gradient as the GEMM operand, and its gate
// weight's gradient): dst as gather_rows_bf16(src, rows, w), dot as gather_rows_dot(src, rows,
// b), bit for bit. b may be BF16 codes (the routed experts' BF16 outputs): the dot of its
// widened values (the CPU: gather_rows_dot over them, bit for bit; the GPU: its own order of
// the same double sums, there being no BF16 gather_rows_dot; not under DS_CUDA_FUSED=0).
void gather_rows_bf16_dot(const Context& ctx, const Tensor& src /*(N,C) F32*/,
                          const Tensor& rows /*(M)*/, const Tensor& w /*(M) or undefined*/,
                          const Tensor& b /*(M,C)*/, Tensor& dst /*(M,C)*/, Tensor& dot /*(M)*/);

// ---- element-wise and reductions --------------------------------------------------------------
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);   // out = a + b
void add_(const Context& ctx, Tensor& dst, const Tensor& src);                 // dst += src
void scale_(const Context& ctx, Tensor& x, float s);                           // x *= s
double sum_squares(const Context& ctx, const Tensor& x);                       // in double
int64_t count_nonfinite(const Context& ctx, const Tensor& x);
double sum(const Context& ctx, const Tensor& x);                               // in double

// ---- AdamW (decoupled weight decay), one tensor ------------------------------------------------
// m, v: F32 or BF16 moments (same shape as param). step >= 1 (bias correction).
struct AdamWParams {
  float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;
  float grad_scale = 1.0f;   // the gradient is read as grad * grad_scale (global-norm clipping)
};
void adamw_step(const Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                const AdamWParams& p);

// ---- many tensors in one call (lib/ops/multi_tensor.cpp) -------------------------------------
// The optimiser's passes over every parameter (about 2500 tensors in the 1b preset): on the GPU
// one kernel launch per call, and for the sums one device->host copy, instead of one (and one
// synchronisation) per tensor. Each entry gets exactly what the one-tensor op gives it, except
// that the GPU's sums of squares add in another order (double precision either way).
// out[i] = sum_squares(*xs[i]); every x F32.
std::vector<double> sum_squares_multi(const Context& ctx, const std::vector<const Tensor*>& xs);
// Every byte of every tensor set to zero (any dtype).
void zero_multi(const Context& ctx, const std::vector<Tensor*>& xs);
// adamw_step(*param, *grad, *m, *v, p with weight_decay = the entry's) for every entry; the
// moments of all entries share one dtype (all F32 or all BF16 per moment). operand (optional,
// param's numel, contiguous): the updated weight's BF16 operand written in the same pass, BF16
// codes or F32 rounded values, bit for bit bf16_round of the new param (the next step's GEMM
// operand, OperandCache::refresh_plan).
struct AdamWTensors {
  Tensor* param = nullptr;
  const Tensor* grad = nullptr;
  Tensor* m = nullptr;
  Tensor* v = nullptr;
  float weight_decay = 0.0f;
  Tensor* operand = nullptr;
};
void adamw_step_multi(const Context& ctx, const std::vector<AdamWTensors>& ts,
                      const AdamWParams& p);

}  // namespace ds::ops

// =============================================================================================
// ---- inference: absorbed MLA over a latent KV cache (lib/ops/mla_decode.cpp) ----------------
// Added for the inference engine (lib/infer/engine*.cpp); spec §2.1. Letters: S cache slots
// (sequences), L cache capacity per slot, R kv_lora_rank, Dr rope head dim.
namespace ds::ops {

// Per-head matmul: y[n, h, :] = x[n, h, :] @ w[h] with w (H, I, O); with trans_w, w is
// (H, O, I) and y[n, h, :] = x[n, h, :] @ w[h]^T. x (N, H, I), y (N, H, O) overwritten.
// (q_hat_h = W^UK_h^T q_nope_h: x = q_nope, w = W^UK (H, Dn, R); o_h = W^UV_h latent_h:
// x = latent, w = W^UV (H, Dv, R), trans_w.)
void head_matmul(const Context& ctx, const Tensor& x, const Tensor& w, bool trans_w, Tensor& y);

// Absorbed MLA attention core (MQA over the latent cache, spec §2.1):
//   s_j = scale * (q_lat[n,h] . ckv[slot[n], j] + q_pe[n,h] . kpe[slot[n], j]),  j < len[n]
//   out[n, h] = sum_j softmax(s)_j ckv[slot[n], j]
// q_lat (N, H, R), q_pe (N, H, Dr) rotated, ckv (S, L, R), kpe (S, L, Dr) rotated, slot (N)
// i32 in [0, S), len (N) i32 in [1, L] (visible keys: causal masks come from len), out (N, H, R)
// overwritten. q_lat, q_pe, out F32; the cache (ckv, kpe) both F32 or both BF16 (codes; each
// element widened exactly). Softmax in FP32 (reference: double).
// CPU: a BF16 cache gives exactly the result of an F32 cache holding the widened values.
// GPU: an F32 cache runs the exact FP32 kernel; a BF16 cache the tensor-core kernel (R, Dr
// multiples of 16), whose only departures from that result, besides FP32 summation order, are
// q rounded to BF16 (RNE) and the softmax weights p rounded to BF16 before P.V (the row sums
// use the same rounded p, so the output stays a convex combination of cache rows).
void mla_latent_attention(const Context& ctx, const Tensor& q_lat, const Tensor& q_pe,
                          const Tensor& ckv, const Tensor& kpe, const Tensor& slot,
                          const Tensor& len, float scale, Tensor& out);

// dst[rows[m]] = src[m] (cache writes); rows distinct, in [0, N). src (M, C), dst (N, C).
// (src, dst) F32 -> F32, BF16 -> BF16 (copies), or F32 -> BF16 (each value rounded to nearest
// even, as ds::f32_to_bf16: new F32 latent rows written into a BF16 cache).
void set_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst);

}  // namespace ds::ops

// =============================================================================================
// ---- policy gradients: per-token log-probabilities (lib/ops/token_logprob.cpp) ---------------
// Added for GRPO (ds-rl, lib/rl; spec §5.3): the log-probability of each sampled token and the
// entropy of its softmax, and the backward of an arbitrary loss given dL/dlogp per token.
// Rows of logits (N, V); targets (N) i32, -1 = not scored (all outputs 0 for that row).
namespace ds::ops {

// logp (N) = log softmax(logits)[target] = logits[target] - lse; lse (N) = log sum_v
// exp(logits[v]) (saved for the backward); entropy (N) = -sum_v p_v log p_v, skipped when
// undefined. Outputs overwritten; each logit exponentiated once.
void token_logprob_forward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                           Tensor& logp, Tensor& lse, Tensor& entropy);
// dlogits (N, V) = dlogp[n] * (onehot(target) - softmax(logits)), softmax = exp(logits - lse)
// with lse from the forward; 0 rows for ignored targets. dlogits may be logits (in place), or
// BF16: the gradient's codes (bf16_round of the F32 dlogits, bit for bit; the GEMM operand).
void token_logprob_backward(const Context& ctx, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dlogp, Tensor& dlogits);

}  // namespace ds::ops
