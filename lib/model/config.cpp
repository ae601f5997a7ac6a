// Model configuration: Hugging Face config.json <-> ModelArgs (key table in docs/model.md),
// validation, presets, parameter counts (spec §1.2 conventions) and the training memory plan.
// reference: spec §1.1 (hyper-parameters, other HF fields), §1.2 (counts), §1.7 (YaRN mscale).
#include "ds/model/config.hpp"

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"

namespace ds::model {

using json = nlohmann::json;

double ModelArgs::softmax_scale() const {
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn && rope_factor > 1.0) {
    double m = 0.1 * mscale * std::log(rope_factor) + 1.0;
    s *= m * m;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// validate

namespace {

void require(bool ok, const std::string& src, const std::string& what) {
  if (!ok) DS_THROW(ConfigError, "{}: {}", src, what);
}

// The parameter counts (spec §1.2) in T: int64_t for count_params, double for validate's
// size check (which must not overflow on the configs it is there to reject).
template <class T>
struct Counts {
  T total = 0, activated = 0, mtp = 0, embedding = 0;
};

template <class T>
T attention_params(const ModelArgs& a) {
  const T H = T(a.n_heads), qk = T(a.qk_head_dim()), C = T(a.dim), Rq = T(a.q_lora_rank),
          Rkv = T(a.kv_lora_rank);
  const T q = a.q_lora_rank > 0 ? C * Rq + Rq + Rq * H * qk   // wq_a, q_norm, wq_b
                                : C * H * qk;                 // wq
  const T kv = C * (Rkv + T(a.qk_rope_head_dim)) + Rkv +       // wkv_a, kv_norm, wkv_b
               Rkv * H * (T(a.qk_nope_head_dim) + T(a.v_head_dim));
  return q + kv + H * T(a.v_head_dim) * C;                    // + wo
}

template <class T>
Counts<T> count_params_as(const ModelArgs& a) {
  Counts<T> c;
  const T C = T(a.dim);
  c.embedding = T(a.vocab_size) * C;
  const T attn = attention_params<T>(a) + 2 * C;                 // + attn_norm, ffn_norm
  const T dense = 3 * C * T(a.inter_dim);
  const T expert = 3 * C * T(a.moe_inter_dim);
  const T router = T(a.n_routed_experts) * C;
  const T moe_all = router + T(a.n_routed_experts + a.n_shared_experts) * expert;
  const T moe_act = router + T(a.n_activated_experts + a.n_shared_experts) * expert;
  const T n_moe = T(a.n_layers - a.n_dense_layers), L = T(a.n_layers), Ld = T(a.n_dense_layers);
  const T outer = 2 * c.embedding + C;                           // embedding, head, norm
  c.total = outer + L * attn + Ld * dense + n_moe * moe_all;
  c.activated = outer + L * attn + Ld * dense + n_moe * moe_act;
  // MTP depth: enorm, hnorm, eh_proj [C, 2C], one MoE block, shared_head.norm.
  c.mtp = T(a.n_mtp_layers) * (3 * C + 2 * C * C + attn + moe_all);
  return c;
}

}  // namespace

void validate(const ModelArgs& a, const std::string& src) {
  auto positive = [&](int64_t v, const char* key) {
    require(v > 0, src, fmt::format("{} must be positive (got {})", key, v));
  };
  positive(a.vocab_size, "vocab_size");
  positive(a.dim, "hidden_size");
  positive(a.n_layers, "num_hidden_layers");
  positive(a.n_heads, "num_attention_heads");
  positive(a.kv_lora_rank, "kv_lora_rank");
  positive(a.qk_nope_head_dim, "qk_nope_head_dim");
  positive(a.qk_rope_head_dim, "qk_rope_head_dim");
  positive(a.v_head_dim, "v_head_dim");
  positive(a.max_seq_len, "max_position_embeddings");
  require(
      a.qk_rope_head_dim % 2 == 0, src,
      fmt::format("qk_rope_head_dim ({}) must be even (RoPE rotates pairs)", a.qk_rope_head_dim));
  require(a.q_lora_rank >= 0, src, fmt::format("q_lora_rank must be >= 0 (got {})", a.q_lora_rank));
  require(a.n_dense_layers >= 0 && a.n_dense_layers <= a.n_layers, src,
          fmt::format("first_k_dense_replace ({}) must be in [0, num_hidden_layers = {}]",
                      a.n_dense_layers, a.n_layers));
  require(a.n_mtp_layers >= 0, src,
          fmt::format("num_nextn_predict_layers must be >= 0 (got {})", a.n_mtp_layers));
  if (a.n_dense_layers > 0) positive(a.inter_dim, "intermediate_size");
  const bool has_moe = a.n_dense_layers < a.n_layers || a.n_mtp_layers > 0;
  if (has_moe) {
    positive(a.moe_inter_dim, "moe_intermediate_size");
    positive(a.n_routed_experts, "n_routed_experts");
    positive(a.n_expert_groups, "n_group");
    require(a.n_shared_experts >= 0, src,
            fmt::format("n_shared_experts must be >= 0 (got {})", a.n_shared_experts));
    require(a.n_routed_experts % a.n_expert_groups == 0, src,
            fmt::format("n_routed_experts ({}) not divisible by n_group ({})", a.n_routed_experts,
                        a.n_expert_groups));
    require(a.n_limited_groups >= 1 && a.n_limited_groups <= a.n_expert_groups, src,
            fmt::format("topk_group ({}) must be in [1, n_group = {}]", a.n_limited_groups,
                        a.n_expert_groups));
    const int64_t kept = a.n_limited_groups * (a.n_routed_experts / a.n_expert_groups);
    require(a.n_activated_experts >= 1 && a.n_activated_experts <= kept, src,
            fmt::format("num_experts_per_tok ({}) must be in [1, {}] (experts in the topk_group "
                        "kept groups)", a.n_activated_experts, kept));
    require(a.score_func == "sigmoid" || a.score_func == "softmax", src,
            fmt::format("scoring_func '{}' must be sigmoid or softmax", a.score_func));
    require(std::isfinite(a.route_scale) && a.route_scale > 0, src,
            fmt::format("routed_scaling_factor must be positive (got {})", a.route_scale));
  }
  require(a.norm_eps > 0 && std::isfinite(a.norm_eps), src,
          fmt::format("rms_norm_eps must be positive (got {})", a.norm_eps));
  require(a.rope_theta > 0 && std::isfinite(a.rope_theta), src,
          fmt::format("rope_theta must be positive (got {})", a.rope_theta));
  if (a.yarn) {
    require(a.rope_factor >= 1.0 && std::isfinite(a.rope_factor), src,
            fmt::format("rope_scaling.factor must be >= 1 (got {})", a.rope_factor));
    require(a.original_seq_len > 0, src,
            fmt::format("rope_scaling.original_max_position_embeddings must be positive (got {})",
                        a.original_seq_len));
    require(a.beta_slow > 0 && a.beta_fast > a.beta_slow, src,
            fmt::format("rope_scaling.beta_fast ({}) must exceed beta_slow ({}) > 0", a.beta_fast,
                        a.beta_slow));
    require(a.mscale >= 0 && std::isfinite(a.mscale), src,
            fmt::format("rope_scaling.mscale_all_dim must be >= 0 (got {})", a.mscale));
  }
  require(a.init_std > 0 && std::isfinite(a.init_std), src,
          fmt::format("initializer_range must be positive (got {})", a.init_std));
  require(
      a.bos_token_id >= 0 && a.bos_token_id < a.vocab_size, src,
      fmt::format("bos_token_id ({}) outside the vocabulary ({})", a.bos_token_id, a.vocab_size));
  require(
      a.eos_token_id >= 0 && a.eos_token_id < a.vocab_size, src,
      fmt::format("eos_token_id ({}) outside the vocabulary ({})", a.eos_token_id, a.vocab_size));
  // Sizes: the kernels index one dimension with 32-bit integers, and the parameter counts
  // (int64_t, and byte counts of 4 per parameter and more) must stay exact.
  const std::pair<int64_t, const char*> dims[] = {
      {a.vocab_size, "vocab_size"}, {a.dim, "hidden_size"}, {a.inter_dim, "intermediate_size"},
      {a.moe_inter_dim, "moe_intermediate_size"}, {a.n_layers, "num_hidden_layers"},
      {a.n_heads, "num_attention_heads"}, {a.n_routed_experts, "n_routed_experts"},
      {a.n_shared_experts, "n_shared_experts"}, {a.q_lora_rank, "q_lora_rank"},
      {a.kv_lora_rank, "kv_lora_rank"}, {a.qk_nope_head_dim, "qk_nope_head_dim"},
      {a.qk_rope_head_dim, "qk_rope_head_dim"}, {a.v_head_dim, "v_head_dim"},
      {a.max_seq_len, "max_position_embeddings"}, {a.n_mtp_layers, "num_nextn_predict_layers"},
      {a.original_seq_len, "rope_scaling.original_max_position_embeddings"}};
  for (const auto& [v, key] : dims)
    require(v <= int64_t(INT32_MAX), src, fmt::format("{} ({}) must be below 2^31", key, v));
  const Counts<double> n = count_params_as<double>(a);
  require(n.total + n.mtp < 0x1p53, src,
          fmt::format("the model has {:.3g} parameters: more than 2^53, too large to count",
                      n.total + n.mtp));
}

// ---------------------------------------------------------------------------------------------
// config.json

namespace {

// Typed access to one config.json object; every error names the key and the file.
struct Reader {
  const json& j;
  const std::string& src;

  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }
  const json& need(const char* key) const {
    const json* v = find(key);
    if (!v) DS_THROW(ConfigError, "{}: missing required key '{}'", src, key);
    return *v;
  }
  [[noreturn]] void bad(const char* key, const char* want, const json& v) const {
    DS_THROW(ConfigError, "{}: key '{}' must be {} (got {})", src, key, want, v.dump());
  }
  int64_t as_int(const char* key, const json& v) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && std::nearbyint(v.get<double>()) == v.get<double>() &&
        std::fabs(v.get<double>()) < 9e15)
      return int64_t(v.get<double>());   // e.g. 4096.0 written by some tools
    bad(key, "an integer", v);
  }
  int64_t get_int(const char* key) const { return as_int(key, need(key)); }
  int64_t get_int(const char* key, int64_t def) const {
    const json* v = find(key);
    return v && !v->is_null() ? as_int(key, *v) : def;
  }
  double as_double(const char* key, const json& v) const {
    if (!v.is_number()) bad(key, "a number", v);
    return v.get<double>();
  }
  double get_double(const char* key, double def) const {
    const json* v = find(key);
    return v && !v->is_null() ? as_double(key, *v) : def;
  }
  bool get_bool(const char* key, bool def) const {
    const json* v = find(key);
    if (!v || v->is_null()) return def;
    if (!v->is_boolean()) bad(key, "true or false", *v);
    return v->get<bool>();
  }
  std::string get_string(const char* key, const std::string& def) const {
    const json* v = find(key);
    if (!v || v->is_null()) return def;
    if (!v->is_string()) bad(key, "a string", *v);
    return v->get<std::string>();
  }
};

// YaRN's mscale(s, m) (spec §1.7): 1 for s <= 1, else 0.1 m ln s + 1.
double yarn_mscale(double factor, double m) {
  return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0;
}

// The RoPE settings one of the two keys describes: `rope_scaling` (DeepSeek's configs and
// transformers 4) or `rope_parameters` (transformers 5, which moves rope_theta into it and
// writes {"rope_type": "default"} for plain RoPE).
struct RopeSpec {
  bool yarn = false;
  double factor = 1.0, beta_fast = 32.0, beta_slow = 1.0, mscale_all_dim = 0.0;
  int64_t original_seq_len = 4096;
  const json* theta = nullptr;   // rope_parameters.rope_theta, if given
  bool operator==(const RopeSpec& o) const {
    return yarn == o.yarn && (!yarn || (factor == o.factor && beta_fast == o.beta_fast &&
                                        beta_slow == o.beta_slow &&
                                        mscale_all_dim == o.mscale_all_dim &&
                                        original_seq_len == o.original_seq_len));
  }
};

RopeSpec read_rope_object(const Reader& r, const char* key, const json& v) {
  if (!v.is_object()) r.bad(key, "an object or null", v);
  const std::string k = key;
  const std::string src = r.src;
  Reader s{v, src};
  RopeSpec spec;
  if (k == "rope_parameters") spec.theta = s.find("rope_theta");
  const std::string type =
      s.get_string("rope_type", s.get_string("type", k == "rope_parameters" ? "default" : ""));
  if (type == "default") return spec;   // plain RoPE
  if (type != "yarn")
    DS_THROW(ConfigError, "{}: {}.rope_type '{}' is not supported (yarn or default)", src, k,
             type);
  spec.yarn = true;
  spec.factor = s.as_double((k + ".factor").c_str(), s.need("factor"));
  spec.original_seq_len = s.get_int("original_max_position_embeddings", 4096);
  spec.beta_fast = s.get_double("beta_fast", 32.0);
  spec.beta_slow = s.get_double("beta_slow", 1.0);
  // Softmax-scale correction mscale(factor, mscale_all_dim)^2; absent or 0: none (HF).
  spec.mscale_all_dim = s.get_double("mscale_all_dim", 0.0);
  // transformers' DeepSeek-V3 also multiplies cos and sin by an attention factor: the given
  // `attention_factor`, else mscale(f, mscale) / mscale(f, mscale_all_dim) when both keys are
  // non-zero, else mscale(f, 1); DeepSeek's own modeling code uses the ratio with absent
  // mscale read as 1 and absent mscale_all_dim as 0. ds implements the rotary part unscaled,
  // so a config is taken only where both give 1 (every DeepSeek config: mscale equal to
  // mscale_all_dim).
  const double m = s.get_double("mscale", 0.0), d = spec.mscale_all_dim, f = spec.factor;
  const bool has_m = s.find("mscale") && !s.find("mscale")->is_null();
  const double by_ratio = yarn_mscale(f, has_m ? m : 1.0) / yarn_mscale(f, d);
  double by_hf = m != 0 && d != 0 ? yarn_mscale(f, m) / yarn_mscale(f, d) : yarn_mscale(f, 1.0);
  if (const json* af = s.find("attention_factor"); af && !af->is_null())
    by_hf = s.as_double((k + ".attention_factor").c_str(), *af);
  if (std::fabs(by_ratio - 1.0) > 1e-12 || std::fabs(by_hf - 1.0) > 1e-12)
    DS_THROW(ConfigError,
             "{}: {}: mscale {} and mscale_all_dim {} (factor {}) make Hugging Face scale the "
             "rotary part of the attention scores (cos/sin by {:.6g}); ds implements only the "
             "unscaled form: set mscale equal to mscale_all_dim, as DeepSeek's configs do",
             src, k, has_m ? fmt::format("{}", m) : std::string("(absent)"),
             s.find("mscale_all_dim") ? fmt::format("{}", d) : std::string("(absent)"), f,
             by_hf != 1.0 ? by_hf : by_ratio);
  if (s.get_bool("truncate", true) == false)
    DS_THROW(ConfigError, "{}: {}.truncate false is not supported (the correction range is "
             "rounded to whole pairs, as DeepSeek-V3 does)", src, k);
  if (s.get_double("partial_rotary_factor", 1.0) != 1.0)
    DS_THROW(ConfigError, "{}: {}.partial_rotary_factor must be 1 (RoPE covers the "
             "qk_rope_head_dim dimensions)", src, k);
  return spec;
}

void read_rope(const Reader& r, ModelArgs& a) {
  const json* rs = r.find("rope_scaling");
  const json* rp = r.find("rope_parameters");
  if (rs && rs->is_null()) rs = nullptr;
  if (rp && rp->is_null()) rp = nullptr;
  RopeSpec spec;
  if (rs) spec = read_rope_object(r, "rope_scaling", *rs);
  if (rp) {
    const RopeSpec p = read_rope_object(r, "rope_parameters", *rp);
    if (rs && !(p == spec))
      DS_THROW(ConfigError, "{}: rope_scaling and rope_parameters describe different RoPE "
               "settings", r.src);
    if (!rs) spec = p;
    if (p.theta) {
      const double t = r.as_double("rope_parameters.rope_theta", *p.theta);
      if (r.find("rope_theta") && !r.find("rope_theta")->is_null() &&
          r.get_double("rope_theta", t) != t)
        DS_THROW(ConfigError, "{}: rope_theta ({}) and rope_parameters.rope_theta ({}) differ",
                 r.src, r.get_double("rope_theta", t), t);
      a.rope_theta = t;
    }
  }
  if (!r.get_bool("rope_interleave", true))
    DS_THROW(ConfigError, "{}: rope_interleave false is not supported (RoPE rotates "
             "interleaved pairs, the layout of DeepSeek-V3's weights)", r.src);
  a.yarn = spec.yarn;
  if (!a.yarn) return;
  a.rope_factor = spec.factor;
  a.original_seq_len = spec.original_seq_len;
  a.beta_fast = spec.beta_fast;
  a.beta_slow = spec.beta_slow;
  a.mscale = spec.mscale_all_dim;
}

}  // namespace

ModelArgs from_hf_json(const std::string& text, const std::string& src) {
  io::check_json_input(text, src);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    DS_THROW(ConfigError, "{}: not valid JSON: {}", src, e.what());
  }
  if (!j.is_object()) DS_THROW(ConfigError, "{}: config is not a JSON object", src);
  Reader r{j, src};
  // DeepSeek-V2 configs share the keys; their defaults for absent keys differ.
  // model_type deepseek_v3 or deepseek_v2, or a derivative naming the architecture (Kimi-K2:
  // model_type kimi_k2, architectures ["DeepseekV3ForCausalLM"])
  const std::string model_type = r.get_string("model_type", "deepseek_v3");
  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && it->size() == 1 &&
                                         (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  const bool named = model_type == "deepseek_v3" || model_type == "deepseek_v2";
  const bool v3 = named ? model_type == "deepseek_v3" : arch == "DeepseekV3ForCausalLM";
  const bool v2 = named ? model_type == "deepseek_v2" : arch == "DeepseekV2ForCausalLM";
  if (!v3 && !v2)
    DS_THROW(ConfigError, "{}: model_type '{}' is not supported (deepseek_v3 or deepseek_v2, or "
             "architectures [\"DeepseekV3ForCausalLM\"])", src, model_type);
  ModelArgs a;
  a.vocab_size = r.get_int("vocab_size");
  a.dim = r.get_int("hidden_size");
  a.inter_dim = r.get_int("intermediate_size");
  a.moe_inter_dim = r.get_int("moe_intermediate_size");
  a.n_layers = r.get_int("num_hidden_layers");
  a.n_dense_layers = r.get_int("first_k_dense_replace");
  a.n_heads = r.get_int("num_attention_heads");
  if (r.get_int("num_key_value_heads", a.n_heads) != a.n_heads)
    DS_THROW(ConfigError, "{}: num_key_value_heads must equal num_attention_heads (MLA)", src);
  a.n_routed_experts = r.get_int("n_routed_experts");
  a.n_shared_experts = r.get_int("n_shared_experts");
  a.n_activated_experts = r.get_int("num_experts_per_tok");
  a.n_expert_groups = r.get_int("n_group", 1);
  a.n_limited_groups = r.get_int("topk_group", 1);
  a.score_func = r.get_string("scoring_func", v2 ? "softmax" : "sigmoid");
  a.route_scale = r.get_double("routed_scaling_factor", v2 ? 1.0 : 2.5);
  a.norm_topk_prob = r.get_bool("norm_topk_prob", !v2);
  const std::string topk_method = r.get_string("topk_method", v2 ? "greedy" : "noaux_tc");
  if (topk_method != "noaux_tc" && topk_method != "greedy" && topk_method != "group_limited_greedy")
    DS_THROW(ConfigError, "{}: topk_method '{}' must be noaux_tc, greedy or group_limited_greedy",
             src, topk_method);
  a.gate_bias = topk_method == "noaux_tc";
  if (topk_method == "greedy") {   // HF's V2 code routes greedy over all experts, whatever n_group
    a.n_expert_groups = 1;
    a.n_limited_groups = 1;
  }
  a.q_lora_rank = r.get_int("q_lora_rank", 0);   // null => no query compression
  a.kv_lora_rank = r.get_int("kv_lora_rank");
  a.qk_nope_head_dim = r.get_int("qk_nope_head_dim");
  a.qk_rope_head_dim = r.get_int("qk_rope_head_dim");
  a.v_head_dim = r.get_int("v_head_dim");
  a.rope_theta = r.get_double("rope_theta", 10000.0);
  read_rope(r, a);
  a.norm_eps = r.get_double("rms_norm_eps", 1e-6);
  a.max_seq_len = r.get_int("max_position_embeddings");
  a.n_mtp_layers = r.get_int("num_nextn_predict_layers", 0);
  a.init_std = r.get_double("initializer_range", a.init_std);
  a.bos_token_id = r.get_int("bos_token_id", 0);
  a.eos_token_id = r.get_int("eos_token_id", 1);
  // Fields we do not model must hold the only value we implement.
  if (r.get_bool("tie_word_embeddings", false))
    DS_THROW(ConfigError, "{}: tie_word_embeddings true is not supported (head is untied)", src);
  if (r.get_bool("attention_bias", false))
    DS_THROW(ConfigError, "{}: attention_bias true is not supported (no biases)", src);
  if (r.get_string("hidden_act", "silu") != "silu")
    DS_THROW(ConfigError, "{}: hidden_act '{}' is not supported (silu only)", src,
             r.get_string("hidden_act", ""));
  if (r.get_int("moe_layer_freq", 1) != 1)
    DS_THROW(ConfigError, "{}: moe_layer_freq must be 1 (every layer after the dense ones)", src);
  validate(a, src);
  return a;
}

ModelArgs load_config(const std::filesystem::path& p) {
  return from_hf_json(io::read_file(p), p.string());
}

std::string to_hf_json(const ModelArgs& a) {
  json j = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", "deepseek_v3"},
      {"vocab_size", a.vocab_size},
      {"hidden_size", a.dim},
      {"intermediate_size", a.inter_dim},
      {"moe_intermediate_size", a.moe_inter_dim},
      {"num_hidden_layers", a.n_layers},
      {"first_k_dense_replace", a.n_dense_layers},
      {"num_attention_heads", a.n_heads},
      {"num_key_value_heads", a.n_heads},
      {"n_routed_experts", a.n_routed_experts},
      {"n_shared_experts", a.n_shared_experts},
      {"num_experts_per_tok", a.n_activated_experts},
      {"n_group", a.n_expert_groups},
      {"topk_group", a.n_limited_groups},
      {"scoring_func", a.score_func},
      {"routed_scaling_factor", a.route_scale},
      {"norm_topk_prob", a.norm_topk_prob},
      {"topk_method", a.gate_bias ? "noaux_tc"
                                  : (a.n_expert_groups > 1 ? "group_limited_greedy" : "greedy")},
      {"q_lora_rank", a.q_lora_rank > 0 ? json(a.q_lora_rank) : json(nullptr)},
      {"kv_lora_rank", a.kv_lora_rank},
      {"qk_nope_head_dim", a.qk_nope_head_dim},
      {"qk_rope_head_dim", a.qk_rope_head_dim},
      {"v_head_dim", a.v_head_dim},
      {"rope_theta", a.rope_theta},
      {"rms_norm_eps", a.norm_eps},
      {"max_position_embeddings", a.max_seq_len},
      {"num_nextn_predict_layers", a.n_mtp_layers},
      {"initializer_range", a.init_std},
      {"bos_token_id", a.bos_token_id},
      {"eos_token_id", a.eos_token_id},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"hidden_act", "silu"},
      {"moe_layer_freq", 1},
  };
  if (a.yarn) {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", a.rope_factor},
                         {"original_max_position_embeddings", a.original_seq_len},
                         {"beta_fast", a.beta_fast},
                         {"beta_slow", a.beta_slow},
                         {"mscale", a.mscale},
                         {"mscale_all_dim", a.mscale}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------
// presets

std::vector<std::string> preset_names() { return {"tiny", "small", "1b", "671b"}; }

namespace {

// Training presets: plain RoPE (pre-extension training, rope_scaling absent). The YaRN fields
// keep their defaults (unused while yarn is false), which is also what from_hf_json leaves
// there, so presets round-trip through config.json exactly.
ModelArgs training_base() {
  ModelArgs a;
  a.yarn = false;
  return a;
}

}  // namespace

ModelArgs preset(const std::string& name) {
  if (name == "671b") return ModelArgs{};   // the defaults are DeepSeek-V3 (spec §1.1)
  if (name == "tiny") {
    // 3 layers (1 dense + 2 MoE) + 1 MTP depth: 1.80M params (+0.31M MTP), 1.05M of them
    // embedding/head; 1.50M activated per token.
    ModelArgs a = training_base();
    a.vocab_size = 4096; a.dim = 128; a.inter_dim = 384; a.moe_inter_dim = 64;
    a.n_layers = 3; a.n_dense_layers = 1; a.n_heads = 4;
    a.n_routed_experts = 8; a.n_shared_experts = 1; a.n_activated_experts = 2;
    a.n_expert_groups = 4; a.n_limited_groups = 2;
    a.q_lora_rank = 64; a.kv_lora_rank = 32;
    a.qk_nope_head_dim = 32; a.qk_rope_head_dim = 16; a.v_head_dim = 32;
    a.max_seq_len = 1024; a.n_mtp_layers = 1;
    return a;
  }
  if (name == "small") {
    // ~100M total (incl. 2 x 16.4M embedding/head at vocab 32000): 1 dense + 9 MoE layers.
    ModelArgs a = training_base();
    a.vocab_size = 32000; a.dim = 512; a.inter_dim = 1536; a.moe_inter_dim = 256;
    a.n_layers = 10; a.n_dense_layers = 1; a.n_heads = 8;
    a.n_routed_experts = 16; a.n_shared_experts = 1; a.n_activated_experts = 2;
    a.n_expert_groups = 4; a.n_limited_groups = 2;
    a.q_lora_rank = 256; a.kv_lora_rank = 128;
    a.qk_nope_head_dim = 64; a.qk_rope_head_dim = 32; a.v_head_dim = 64;
    a.max_seq_len = 4096; a.n_mtp_layers = 1;
    return a;
  }
  if (name == "1b") {
    // The GPU benchmark model (docs/benchmarks.md "CUDA"): DeepSeek-V3's ratios at dim 1024;
    // ~1.0B total, ~0.2B activated per token. 1 dense + 11 MoE layers of 64 routed experts
    // (6 activated + 1 shared) in 8 groups (4 kept), MLA with 16 heads of 64+32 / 64.
    ModelArgs a = training_base();
    a.vocab_size = 32000; a.dim = 1024; a.inter_dim = 4096; a.moe_inter_dim = 384;
    a.n_layers = 12; a.n_dense_layers = 1; a.n_heads = 16;
    a.n_routed_experts = 64; a.n_shared_experts = 1; a.n_activated_experts = 6;
    a.n_expert_groups = 8; a.n_limited_groups = 4;
    a.q_lora_rank = 384; a.kv_lora_rank = 256;
    a.qk_nope_head_dim = 64; a.qk_rope_head_dim = 32; a.v_head_dim = 64;
    a.max_seq_len = 4096; a.n_mtp_layers = 1;
    return a;
  }
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  DS_THROW(UsageError, "unknown model preset '{}' (known: {})", name, names);
}

// ---------------------------------------------------------------------------------------------
// parameter counts (spec §1.2): norms are counted, the router's e_score_correction_bias is a
// buffer (not a parameter) and is not. total + mtp == the numel of a full ParamStore.

ParamCounts count_params(const ModelArgs& a) {
  const Counts<int64_t> n = count_params_as<int64_t>(a);
  return ParamCounts{n.total, n.activated, n.mtp, n.embedding};
}

double train_flops_per_token(const ModelArgs& a, int64_t seq_len) {
  const ParamCounts c = count_params(a);
  const double C = double(a.dim), V = double(a.vocab_size);
  const double attn_norms = double(a.q_lora_rank > 0 ? a.q_lora_rank : 0) + double(a.kv_lora_rank);
  const double layer_norms = 2 * C + attn_norms;
  // activated minus the embedding table and every norm gain (final norm included)
  const double main_mm = double(c.activated - c.embedding) - double(a.n_layers) * layer_norms - C;
  const double attn_core = 6.0 * double(a.n_heads) * double(a.qk_head_dim() + a.v_head_dim) *
                           double(seq_len) / 2.0;
  const double attn = attention_params<double>(a);
  const double moe_act = double(a.n_routed_experts) * C +
                         double(a.n_activated_experts + a.n_shared_experts) * 3.0 * C *
                             double(a.moe_inter_dim);
  const double mtp_mm = 2 * C * C + (attn - attn_norms) +
                        moe_act + V * C;
  return 6.0 * main_mm + double(a.n_layers) * attn_core +
         double(a.n_mtp_layers) * (6.0 * mtp_mm + attn_core);
}

// ---------------------------------------------------------------------------------------------
// memory plan

StagePart stage_part(const ModelArgs& a, int64_t first_layer, int64_t last_layer,
                     bool first_stage, bool last_stage, int ep, int64_t T) {
  // Activations: an ESTIMATE of what one micro-batch's forward keeps for backward, in F32
  // values per token, per layer:
  //   norms       4C            (attn_norm, ffn_norm: input and output)
  //   MLA         2Q + H*qk + R+dr + R + H*(dn+dv) + dr + H*dv + 2C + H
  //               (q_a out, q_norm out, q, kv_a out, kv_norm out, kv_b out, k_pe, attention
  //                output, o_proj out, residual, softmax statistics)
  //   dense FFN   3I + C        (w1 out, w3 out, silu*w3, w2 out)
  //   MoE         2E + 2K + K*(3*Im + 2C) + 3*S*Im + C
  //               (router logits and scores, top-K ids/weights, per routed copy gathered
  //                input, gate/up/act and output, shared expert, combined output)
  //   attention probabilities  H*T per token (the reference kernels keep the T x T matrix)
  // plus per token outside the layers: embedding output C, final norm 2C, logits and
  // softmax 2V; each MTP depth adds one MoE layer, eh_proj input/output 3C, norms 2C, 2V.
  // With expert parallelism a rank's experts see K routed copies per token on average (the
  // balanced case). Real usage depends on kernel choices and allocator slack.
  const double C = double(a.dim), H = double(a.n_heads), V = double(a.vocab_size);
  const double Q = double(a.q_lora_rank), R = double(a.kv_lora_rank);
  const double dr = double(a.qk_rope_head_dim), qk = double(a.qk_head_dim());
  const double dn = double(a.qk_nope_head_dim), dv = double(a.v_head_dim);
  const double E = double(a.n_routed_experts), K = double(a.n_activated_experts);
  const double Im = double(a.moe_inter_dim), S = double(a.n_shared_experts);
  const double norm_v = 4 * C;
  const double mla_v = 2 * Q + H * qk + (R + dr) + R + H * (dn + dv) + dr + H * dv + 2 * C + H +
                       H * double(T);
  const double dense_v = 3 * double(a.inter_dim) + C;
  const double moe_v = 2 * E + 2 * K + K * (3 * Im + 2 * C) + 3 * S * Im + C;

  const int64_t Ci = a.dim;
  const int64_t attn = attention_params<int64_t>(a) + 2 * Ci;     // + attn_norm, ffn_norm
  const int64_t expert = 3 * Ci * a.moe_inter_dim;
  const int64_t moe_shared = a.n_routed_experts * Ci + a.n_shared_experts * expert;  // + router
  const int64_t moe_local = (a.n_routed_experts / ep) * expert;
  StagePart p;
  for (int64_t l = first_layer; l < last_layer; ++l) {
    const bool dense = l < a.n_dense_layers;
    p.replicated += attn + (dense ? 3 * Ci * a.inter_dim : moe_shared);
    p.experts += dense ? 0 : moe_local;
    p.activation_values += norm_v + mla_v + (dense ? dense_v : moe_v);
  }
  if (first_stage) p.activation_values += C;   // the embedding's output
  if (last_stage) {
    p.replicated += Ci + a.vocab_size * Ci;     // final norm, head
    p.activation_values += 2 * C + 2 * V;
    // MTP depth: enorm, hnorm, eh_proj [C, 2C], one MoE block, shared_head.norm
    const int64_t D = a.n_mtp_layers;
    p.replicated += D * (3 * Ci + 2 * Ci * Ci + attn + moe_shared);
    p.experts += D * moe_local;
    p.activation_values += double(D) * (norm_v + mla_v + moe_v + 5 * C + 2 * V);
  }
  return p;
}

MemoryPlan plan_memory(const ModelArgs& a, int64_t B, int64_t T, bool bf16_moments) {
  const StagePart whole = stage_part(a, 0, a.n_layers, true, true, 1, T);
  const double P = double(whole.replicated + whole.experts + a.vocab_size * a.dim);
  MemoryPlan m;
  m.weights = 4.0 * P;                         // F32 master weights
  m.grads = 4.0 * P;                           // F32 gradients
  m.optimizer = (bf16_moments ? 4.0 : 8.0) * P;   // AdamW m and v
  m.activations = 4.0 * double(B) * double(T) * whole.activation_values;
  m.total = m.weights + m.grads + m.optimizer + m.activations;
  return m;
}

}  // namespace ds::model
