// Inference engine: the DeepSeek-V3 forward pass with the absorbed-MLA latent cache (spec §2.1)
// for a batch of sequences of different lengths, chunked prefill, one-token decode, the MTP
// module's own cached block (speculative drafting, spec §2.7) and cache rollback. A slot's
// cache can be copied to another (copy_slot: a prompt or prefix that several sequences share
// is computed once), and the engine records the tokens each slot holds (tokens(): a chat turn
// keeps the cached start that the re-rendered conversation repeats).
//
// KV cache: per sequence slot, per layer (main layers, then the MTP layers) and per cached
// position, only the normalised KV latent c (R = kv_lora_rank) and the rotated shared rope key
// k_pe (Dr = qk_rope_head_dim), F32 or BF16 (EngineOptions::kv_cache): bytes/token =
// 4 (or 2) * (R + Dr) * (n_layers + n_mtp_layers). A naive F32 cache of full keys and values
// needs 4 * H * (Dn + Dr + Dv) per layer and token (tiny: 48 vs 384 floats per layer, 8x;
// 671B: 576 vs 40,960, 71x).
// Weights: shared with the caller's store, except that linear weights exactly representable in
// BF16 (BF16 checkpoints) are held as BF16 copies, read only through ops::linear_forward.
// reference: DeepSeek-V3 inference/model.py MLA (attn_impl="absorb"), generate.py; spec §2.1-2.7.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ds/model/block.hpp"
#include "ds/model/config.hpp"
#include "ds/model/embedding.hpp"
#include "ds/model/mtp.hpp"
#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::infer {

struct EngineOptions {
  int slots = 1;            // S: sequences the cache holds at once
  int64_t capacity = 0;     // L: cached positions per slot (0 = args.max_seq_len)
  // Linear weights (attention projections except kv_b_proj, expert/MLP matrices, router gate,
  // lm_head, MTP eh_proj) whose values are all exactly representable in BF16 get a BF16 copy
  // (half the bytes streamed per decode step; identical values, products still in FP32).
  bool bf16_weights = true;
  // Latent cache dtype: F32 (exact), or BF16 (half the bytes; each latent and rope key rounded
  // to BF16 when written, read back exactly; on the GPU the tensor-core decode kernel).
  DType kv_cache = DType::f32;
};

// One sequence's part of a forward call: its new tokens, appended at the slot's current length.
struct SeqChunk {
  int slot = 0;
  std::span<const int32_t> tokens;   // >= 1 tokens
  bool all_logits = false;           // logits for every new position (else only the last)
};

struct StepOutput {
  Tensor logits;                     // (M, V) on the host: per chunk its last row, or all rows
  std::vector<int64_t> logit_row;    // (chunks + 1) offsets of each chunk's rows in `logits`
  Tensor hidden;                     // (N, C) post-final-norm hidden of every new position
  std::vector<int64_t> hidden_row;   // (chunks + 1) offsets of each chunk's rows in `hidden`
};

// The MTP module's part of a call (depth 1): rows i of the MTP sequence take
// concat(enorm(E[tokens[i]]), hnorm(hidden[i])), appended at the slot's MTP length.
struct MtpChunk {
  int slot = 0;
  std::span<const int32_t> tokens;   // t_{p+1} for MTP positions p = mtp_length(slot)...
  Tensor hidden;                     // (n, C) the main model's post-norm hidden at positions p...
};

class Engine {
 public:
  // Binds to the weights of `weights` (a store filled by model::Transformer registration or a
  // checkpoint load; tensors are shared, not copied) and allocates the caches.
  Engine(const model::ModelArgs& args, const model::ParamStore& weights, ops::Context ctx,
         EngineOptions opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const model::ModelArgs& args() const { return args_; }
  const ops::Context& context() const { return ctx_; }
  int slots() const { return opts_.slots; }
  int64_t capacity() const { return opts_.capacity; }
  int64_t length(int slot) const;       // cached positions of the main model
  std::span<const int32_t> tokens(int slot) const;   // the tokens of those positions
  int64_t mtp_length(int slot) const;   // cached positions of the MTP block
  void reset(int slot);                 // empties both caches of a slot
  // Drops cached positions >= len (rejected speculative tokens); MTP cache too if longer.
  void truncate(int slot, int64_t len);
  // Makes slot `to` hold a copy of slot `from`'s cached positions (main and MTP caches, every
  // layer): a prompt prefilled once serves several sequences (generate's shared prefill).
  void copy_slot(int from, int to);

  // Main model over the chunks (each slot at most once); appends to the caches.
  StepOutput forward(const std::vector<SeqChunk>& chunks);
  // MTP depth-1 block over the chunks; returns (chunks, V) logits of each chunk's last row.
  Tensor mtp_forward(const std::vector<MtpChunk>& chunks);
  bool has_mtp() const { return !mtp_.empty(); }

  // Cache footprint per token (all layers incl. MTP) and the naive F32 full-K/V equivalent.
  int64_t cache_bytes_per_token() const;
  int64_t naive_cache_bytes_per_token() const;
  int64_t cache_bytes_allocated() const;   // sum of the cache tensors' sizes (S * L positions)
  // Weight matrices held as BF16 copies (EngineOptions::bf16_weights), and their F32 bytes.
  int64_t bf16_weight_count() const { return bf16_count_; }

 private:
  struct LayerCache;
  struct Rows;
  Rows make_rows(const std::vector<int>& slots, const std::vector<int64_t>& counts,
                 const std::vector<int64_t>& start) const;
  void block_forward(const model::Block& b, size_t layer, const Rows& rows, Tensor& x) const;
  Tensor mla_forward(const model::MLA& m, size_t layer, const Rows& rows,
                     const Tensor& xn) const;

  model::ModelArgs args_;
  ops::Context ctx_;
  EngineOptions opts_;
  model::ParamStore store_;                 // shape-only registry sharing `weights`' tensors
  model::Embedding embed_;
  std::vector<model::Block> layers_;
  model::RMSNorm norm_;
  model::Linear head_;
  std::vector<model::MTPModule> mtp_;
  Tensor freqs_;                            // (Dr/2) RoPE inverse frequencies
  std::vector<LayerCache> cache_;           // (n_layers + n_mtp_layers)
  std::vector<int64_t> len_, mtp_len_;      // (S) cached positions per slot
  std::vector<std::vector<int32_t>> tok_;   // (S) the tokens of each slot's main positions
  int64_t bf16_count_ = 0;                  // weights converted to BF16
};

}  // namespace ds::infer
