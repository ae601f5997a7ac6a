// Model configuration: DeepSeek-V3's hyper-parameters with model.py's field names, read from
// and written to a Hugging Face `config.json` (key mapping in docs/model.md), presets, checks,
// parameter counts and the memory plan used by `ds-pretrain --dry-run`.
// reference: spec §1.1-1.2, DeepSeek-V3 inference/model.py ModelArgs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ds::model {

struct ModelArgs {
  int64_t vocab_size = 129280;
  int64_t dim = 7168;               // hidden_size
  int64_t inter_dim = 18432;        // intermediate_size (dense SwiGLU)
  int64_t moe_inter_dim = 2048;     // moe_intermediate_size (per expert)
  int64_t n_layers = 61;            // num_hidden_layers (main model, MTP excluded)
  int64_t n_dense_layers = 3;       // first_k_dense_replace
  int64_t n_heads = 128;            // num_attention_heads
  // MoE
  int64_t n_routed_experts = 256;
  int64_t n_shared_experts = 1;
  int64_t n_activated_experts = 8;  // num_experts_per_tok
  int64_t n_expert_groups = 8;      // n_group
  int64_t n_limited_groups = 4;     // topk_group
  std::string score_func = "sigmoid";
  double route_scale = 2.5;         // routed_scaling_factor
  bool norm_topk_prob = true;
  bool gate_bias = true;            // topk_method == "noaux_tc": e_score_correction_bias exists
  // MLA
  int64_t q_lora_rank = 1536;       // 0 = no query compression
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  // RoPE / YaRN
  double rope_theta = 10000.0;
  bool yarn = true;                 // rope_scaling present (type yarn)
  double rope_factor = 40.0;
  int64_t original_seq_len = 4096;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0;              // rope_scaling.mscale_all_dim
  int64_t max_seq_len = 163840;     // max_position_embeddings
  double norm_eps = 1e-6;           // rms_norm_eps
  int64_t n_mtp_layers = 1;         // num_nextn_predict_layers
  double init_std = 0.006;          // not an HF key; stored as "initializer_range"
  int64_t bos_token_id = 0, eos_token_id = 1;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const { return layer >= n_dense_layers; }  // MTP: always MoE
  double softmax_scale() const;     // 1/sqrt(qk_head_dim) (* mscale^2 with YaRN)
  bool operator==(const ModelArgs&) const = default;
};

// Throws ConfigError naming the field (e.g. "n_routed_experts (10) not divisible by n_group (4)").
void validate(const ModelArgs& a, const std::string& source);

ModelArgs from_hf_json(const std::string& json_text, const std::string& source);
ModelArgs load_config(const std::filesystem::path& config_json);
std::string to_hf_json(const ModelArgs& a);   // keys in docs/model.md; model_type deepseek_v3

// Presets: "tiny" (CPU tests, quick start), "small" (~100M total), "671b" (DeepSeek-V3).
ModelArgs preset(const std::string& name);    // UsageError listing the names
std::vector<std::string> preset_names();

struct ParamCounts {
  int64_t total = 0;            // main model (embedding, layers, norm, head), MTP excluded
  int64_t activated = 0;        // per token: embedding, head, attention, dense, shared, K experts
  int64_t mtp = 0;              // unique MTP parameters (excludes the shared embedding/head)
  int64_t embedding = 0;
};
ParamCounts count_params(const ModelArgs& a);

// Training FLOPs per token (forward + backward = 3 x forward) for MFU, counting matmuls only:
// 6 x the activated matmul parameters (attention projections, dense FFN, router, shared + K
// routed experts, output head; the embedding lookup and norm gains excluded), plus the
// attention core 6 x H x (qk_head_dim + v_head_dim) x T/2 per layer (QK^T and PV over the
// causal half of the keys, T = seq_len), plus each MTP depth (its eh_proj, one layer, and the
// shared head again). bench/gpu/flops.py implements the same count for the PyTorch baseline.
double train_flops_per_token(const ModelArgs& a, int64_t seq_len);

// Memory plan for one training step (bytes), for --dry-run. Weights/grads FP32 master,
// moments FP32 or BF16; activations from the saved-activation layout of lib/model.
struct MemoryPlan {
  double weights = 0, grads = 0, optimizer = 0, activations = 0, total = 0;
};
MemoryPlan plan_memory(const ModelArgs& a, int64_t batch_size, int64_t seq_len,
                       bool bf16_moments);

// The part of the model one rank of a pipeline stage holds (parallel.hpp): main layers
// [first_layer, last_layer), with the final norm, head and MTP modules when last_stage, its
// routed experts split ep ways. The embedding table is not included (a rank holds it once,
// on the first stage, or as the last stage's copy when MTP is on). Activation values: what one
// token's forward through this part keeps for backward (F32 values, plan_memory's layout; the
// embedding output counted when first_stage), T the sequence length.
struct StagePart {
  int64_t replicated = 0;          // parameters every data-parallel rank of the stage holds
  int64_t experts = 0;             // routed-expert parameters of one expert-parallel rank
  double activation_values = 0;
};
StagePart stage_part(const ModelArgs& a, int64_t first_layer, int64_t last_layer,
                     bool first_stage, bool last_stage, int ep, int64_t seq_len);

}  // namespace ds::model
