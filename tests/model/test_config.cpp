// Model configuration: spec §1.2 parameter counts, config.json round trips, the real
// DeepSeek-V3 config, validation errors naming the field, presets, memory plan, and
// save_model/load_model on a hand-registered ParamStore.
// reference: spec §1.1, §1.2, §11; docs/model.md.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/model/config.hpp"

namespace fs = std::filesystem;
using ds::model::ModelArgs;
using json = nlohmann::json;

namespace {

// deepseek-ai/DeepSeek-V3 config.json, written from the field values in spec §1.1.
const char* kV3Config = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0, "aux_loss_alpha": 0.001,
  "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
  "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02,
  "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
  "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1,
  "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true,
  "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61,
  "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "pretraining_tp": 1,
  "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                          "quant_method": "fp8", "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
  "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
  "v_head_dim": 128, "vocab_size": 129280
})";

// Expects from_hf_json(j) to throw ConfigError mentioning `field` and the source name.
void expect_config_error(const json& j, const std::string& field) {
  try {
    ds::model::from_hf_json(j.dump(), "cfg.json");
    FAIL("accepted a config with a bad " << field);
  } catch (const ds::ConfigError& e) {
    std::string m = e.what();
    CHECK_MESSAGE(m.find(field) != std::string::npos, m);
    CHECK_MESSAGE(m.find("cfg.json") != std::string::npos, m);
  }
}

}  // namespace

TEST_CASE("671b parameter counts match spec §1.2") {
  auto c = ds::model::count_params(ds::model::preset("671b"));
  CHECK(std::fabs(double(c.total) / 1e9 - 671.03) < 0.005);
  CHECK(std::fabs(double(c.activated) / 1e9 - 37.55) < 0.01);
  CHECK(std::fabs(double(c.mtp) / 1e9 - 11.61) < 0.01);
  CHECK(c.embedding == int64_t(129280) * 7168);
}

TEST_CASE("V2 configurations reproduce the 236B and 16B counts of spec §1.2") {
  ModelArgs v2;   // DeepSeek-V2 (236B)
  v2.vocab_size = 102400; v2.dim = 5120; v2.inter_dim = 12288; v2.moe_inter_dim = 1536;
  v2.n_layers = 60; v2.n_dense_layers = 1; v2.n_routed_experts = 160; v2.n_shared_experts = 2;
  v2.n_activated_experts = 6; v2.n_mtp_layers = 0;
  auto c = ds::model::count_params(v2);
  CHECK(std::fabs(double(c.total) / 1e9 - 235.74) < 0.005);
  CHECK(std::fabs(double(c.activated) / 1e9 - 21.38) < 0.01);
  CHECK(c.mtp == 0);
  ModelArgs lite = v2;   // DeepSeek-V2-Lite (16B): no query compression
  lite.dim = 2048; lite.inter_dim = 10944; lite.moe_inter_dim = 1408; lite.n_layers = 27;
  lite.n_heads = 16; lite.n_routed_experts = 64; lite.q_lora_rank = 0;
  c = ds::model::count_params(lite);
  CHECK(std::fabs(double(c.total) / 1e9 - 15.71) < 0.005);
  CHECK(std::fabs(double(c.activated) / 1e9 - 2.66) < 0.01);
}

TEST_CASE("softmax scale with and without YaRN (spec §11)") {
  ModelArgs a = ds::model::preset("671b");
  CHECK(a.softmax_scale() == doctest::Approx(0.13523378).epsilon(1e-7));
  a.yarn = false;
  CHECK(a.softmax_scale() == doctest::Approx(0.07216878).epsilon(1e-7));
}

TEST_CASE("the real DeepSeek-V3 config.json parses to the 671b preset") {
  ModelArgs a = ds::model::from_hf_json(kV3Config, "config.json");
  CHECK(a.init_std == 0.02);   // HF's placeholder; the preset keeps the paper's 0.006
  a.init_std = 0.006;
  CHECK(a == ds::model::preset("671b"));
  CHECK(a.yarn);
  CHECK(a.rope_factor == 40.0);
  CHECK(a.gate_bias);
  // through a file too
  fs::path p = fs::temp_directory_path() / ("ds_test_cfg_" + std::to_string(::getpid()) + ".json");
  ds::io::write_file_atomic(p, kV3Config);
  CHECK(ds::model::load_config(p).n_routed_experts == 256);
  fs::remove(p);
  CHECK_THROWS_AS(ds::model::load_config(p), ds::IoError);
}

TEST_CASE("config.json round trip for every preset") {
  for (const auto& name : ds::model::preset_names()) {
    CAPTURE(name);
    ModelArgs a = ds::model::preset(name);
    CHECK_NOTHROW(ds::model::validate(a, name));
    std::string text = ds::model::to_hf_json(a);
    ModelArgs b = ds::model::from_hf_json(text, name);
    CHECK(a == b);
    json j = json::parse(text);
    CHECK(j["model_type"] == "deepseek_v3");
    CHECK(j["rope_scaling"].is_null() == !a.yarn);
  }
  ModelArgs v = ds::model::preset("tiny");   // non-default choices survive too
  v.q_lora_rank = 0; v.gate_bias = false; v.score_func = "softmax"; v.norm_topk_prob = false;
  v.route_scale = 1.25; v.norm_eps = 1e-5;
  CHECK(ds::model::from_hf_json(ds::model::to_hf_json(v), "v") == v);
  CHECK(json::parse(ds::model::to_hf_json(v))["q_lora_rank"].is_null());
}

TEST_CASE("a V2-Lite style config: null q_lora_rank, softmax, mscale 0.707") {
  json j = json::parse(kV3Config);
  j["model_type"] = "deepseek_v2";
  j["q_lora_rank"] = nullptr;
  j["scoring_func"] = "softmax";
  j.erase("num_nextn_predict_layers");
  j.erase("topk_method");
  j.erase("norm_topk_prob");
  j["rope_scaling"]["mscale"] = 0.707;
  j["rope_scaling"]["mscale_all_dim"] = 0.707;
  ModelArgs a = ds::model::from_hf_json(j.dump(), "lite");
  CHECK(a.q_lora_rank == 0);
  CHECK(a.n_mtp_layers == 0);
  CHECK_FALSE(a.gate_bias);
  CHECK_FALSE(a.norm_topk_prob);
  CHECK(a.softmax_scale() == doctest::Approx(1.5896 / std::sqrt(192.0)).epsilon(1e-4));
  // topk_method greedy (the V2 default) routes over all experts whatever n_group says (HF's
  // DeepseekV2MoEGate); group_limited_greedy keeps the groups
  CHECK(a.n_expert_groups == 1);
  CHECK(a.n_limited_groups == 1);
  j["topk_method"] = "group_limited_greedy";
  a = ds::model::from_hf_json(j.dump(), "v2");
  CHECK(a.n_expert_groups == 8);
  CHECK(a.n_limited_groups == 4);
  CHECK_FALSE(a.gate_bias);
}

TEST_CASE("transformers 5 configs: rope_parameters in place of rope_scaling and rope_theta") {
  const json v3 = json::parse(kV3Config);
  const ModelArgs want = ds::model::from_hf_json(v3.dump(), "v3");
  // What transformers 5 writes for DeepSeek-V3 (save_pretrained of the loaded model).
  json j = v3;
  json rp = j["rope_scaling"];
  rp["rope_type"] = "yarn";
  rp["rope_theta"] = 10000.0;
  j["rope_parameters"] = rp;
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_interleave"] = true;
  CHECK(ds::model::from_hf_json(j.dump(), "t5") == want);
  json both = j;   // both keys, agreeing
  both["rope_scaling"] = v3["rope_scaling"];
  both["rope_theta"] = 10000.0;
  CHECK(ds::model::from_hf_json(both.dump(), "both") == want);
  both["rope_scaling"]["factor"] = 4.0;
  expect_config_error(both, "rope_scaling and rope_parameters");
  both = j;
  both["rope_theta"] = 50000.0;
  expect_config_error(both, "rope_theta");
  // Plain RoPE with its theta inside rope_parameters.
  json plain = v3;
  plain.erase("rope_scaling");
  plain.erase("rope_theta");
  plain["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 50000.0}};
  ModelArgs a = ds::model::from_hf_json(plain.dump(), "plain");
  CHECK_FALSE(a.yarn);
  CHECK(a.rope_theta == 50000.0);
  plain["rope_parameters"]["rope_type"] = "llama3";
  expect_config_error(plain, "rope_parameters.rope_type 'llama3'");
  json x = j;
  x["rope_interleave"] = false;
  expect_config_error(x, "rope_interleave");
  x = j;
  x["rope_parameters"]["truncate"] = false;
  expect_config_error(x, "truncate");
  x = j;
  x["rope_parameters"]["partial_rotary_factor"] = 0.5;
  expect_config_error(x, "partial_rotary_factor");
  x = j;
  x["rope_parameters"]["attention_factor"] = 1.0;   // what the equal mscales imply
  CHECK(ds::model::from_hf_json(x.dump(), "af") == want);
  x["rope_parameters"]["attention_factor"] = 1.2;
  expect_config_error(x, "cos/sin");
}

TEST_CASE("YaRN mscale keys where Hugging Face would scale the rotary scores are refused") {
  // transformers multiplies cos/sin by mscale(f, 1) unless both keys are non-zero (then by
  // mscale(f, mscale) / mscale(f, mscale_all_dim)); ds implements the factor-1 case only.
  const json v3 = json::parse(kV3Config);
  auto rope = [&](json m, json d) {
    json j = v3;
    if (m.is_null()) j["rope_scaling"].erase("mscale"); else j["rope_scaling"]["mscale"] = m;
    if (d.is_null()) j["rope_scaling"].erase("mscale_all_dim");
    else j["rope_scaling"]["mscale_all_dim"] = d;
    return j;
  };
  CHECK_NOTHROW(ds::model::from_hf_json(rope(0.707, 0.707).dump(), "eq"));
  expect_config_error(rope(nullptr, nullptr), "mscale (absent)");   // cos/sin by 1.369
  expect_config_error(rope(nullptr, 1.0), "cos/sin");    // HF and DeepSeek's code disagree
  expect_config_error(rope(1.0, nullptr), "cos/sin");
  expect_config_error(rope(1.0, 0.707), "cos/sin");
  expect_config_error(rope(0.0, 0.0), "cos/sin");
  json f1 = rope(nullptr, nullptr);   // factor 1: every mscale is 1, nothing to scale
  f1["rope_scaling"]["factor"] = 1.0;
  CHECK_NOTHROW(ds::model::from_hf_json(f1.dump(), "f1"));
}

TEST_CASE("inconsistent or malformed configs are ConfigErrors naming the field") {
  const json base = json::parse(kV3Config);
  auto with = [&](const char* key, json v) { json j = base; j[key] = std::move(v); return j; };
  json j = base;
  j.erase("hidden_size");
  expect_config_error(j, "hidden_size");
  j = base;
  j.erase("kv_lora_rank");
  expect_config_error(j, "kv_lora_rank");
  expect_config_error(with("hidden_size", "7168"), "hidden_size");
  expect_config_error(with("norm_topk_prob", 1), "norm_topk_prob");
  expect_config_error(with("n_routed_experts", 100), "n_routed_experts");
  expect_config_error(with("topk_group", 9), "topk_group");
  expect_config_error(with("num_experts_per_tok", 129), "num_experts_per_tok");
  expect_config_error(with("first_k_dense_replace", 62), "first_k_dense_replace");
  expect_config_error(with("scoring_func", "relu"), "scoring_func");
  expect_config_error(with("topk_method", "bogus"), "topk_method");
  expect_config_error(with("kv_lora_rank", 0), "kv_lora_rank");
  expect_config_error(with("qk_rope_head_dim", 63), "qk_rope_head_dim");
  expect_config_error(with("hidden_size", 0), "hidden_size");
  expect_config_error(with("tie_word_embeddings", true), "tie_word_embeddings");
  {   // another model_type: refused, unless architectures names DeepSeek-V3's (Kimi-K2)
    json other = with("model_type", "llama");
    other["architectures"] = json::array({"LlamaForCausalLM"});
    expect_config_error(other, "model_type 'llama'");
    other.erase("architectures");
    expect_config_error(other, "model_type 'llama'");
    CHECK_NOTHROW(ds::model::from_hf_json(with("model_type", "kimi_k2").dump(), "cfg.json"));
  }
  expect_config_error(with("model_type", 3), "model_type");
  expect_config_error(with("num_key_value_heads", 1), "num_key_value_heads");
  expect_config_error(with("rms_norm_eps", -1.0), "rms_norm_eps");
  expect_config_error(with("bos_token_id", 129280), "bos_token_id");
  // sizes past what the kernels index or the counts hold (found by fuzz/fuzz_model_config)
  expect_config_error(with("hidden_size", int64_t(1) << 31), "hidden_size");
  expect_config_error(with("max_position_embeddings", int64_t(3) << 40), "max_position_embeddings");
  j = base;
  j["moe_intermediate_size"] = int64_t(1) << 30;
  j["intermediate_size"] = int64_t(1) << 30;
  j["vocab_size"] = int64_t(1) << 30;
  expect_config_error(j, "parameters");   // 3.5e17 parameters: more than 2^53
  j = base;
  j["rope_scaling"]["type"] = "linear";
  expect_config_error(j, "rope_scaling");
  j = base;
  j["rope_scaling"]["beta_slow"] = 64;
  expect_config_error(j, "beta_fast");
  CHECK_THROWS_AS(ds::model::from_hf_json("{\"vocab_size\": ", "x"), ds::ConfigError);
  CHECK_THROWS_AS(ds::model::from_hf_json("[]", "x"), ds::ConfigError);
  CHECK_THROWS_AS(ds::model::from_hf_json(R"({"vocab_size": 1e999})", "x"), ds::ConfigError);
  CHECK_NOTHROW(ds::model::from_hf_json(with("some_future_key", 3).dump(), "x"));
  CHECK(ds::model::from_hf_json(with("max_position_embeddings", 4096.0).dump(), "x").max_seq_len ==
        4096);
}

TEST_CASE("presets: tiny and small sizes, unknown names") {
  ModelArgs t = ds::model::preset("tiny"), s = ds::model::preset("small");
  CHECK_FALSE(t.yarn);
  CHECK_FALSE(s.yarn);
  CHECK(t.n_dense_layers == 1);
  CHECK(t.n_layers > t.n_dense_layers);
  CHECK(t.n_expert_groups > 1);
  CHECK(t.q_lora_rank > 0);
  CHECK(t.n_mtp_layers == 1);
  auto cs = ds::model::count_params(s);
  CHECK(s.vocab_size == 32000);
  CHECK(double(cs.total) == doctest::Approx(100e6).epsilon(0.1));
  try {
    ds::model::preset("huge");
    FAIL("unknown preset accepted");
  } catch (const ds::UsageError& e) {
    CHECK(std::string(e.what()).find("tiny") != std::string::npos);
  }
}

TEST_CASE("memory plan: states per parameter, activations scale with B, T, layers") {
  ModelArgs a = ds::model::preset("small");
  auto c = ds::model::count_params(a);
  const double P = double(c.total + c.mtp);
  auto m = ds::model::plan_memory(a, 2, 256, false);
  CHECK(m.weights == 4 * P);
  CHECK(m.grads == 4 * P);
  CHECK(m.optimizer == 8 * P);
  CHECK(ds::model::plan_memory(a, 2, 256, true).optimizer == 4 * P);
  CHECK(m.total == doctest::Approx(m.weights + m.grads + m.optimizer + m.activations));
  CHECK(m.activations > 0);
  CHECK(ds::model::plan_memory(a, 4, 256, false).activations == doctest::Approx(2 * m.activations));
  CHECK(ds::model::plan_memory(a, 2, 512, false).activations > 2 * m.activations);
  ModelArgs l2 = a, l3 = a;   // linear in the number of layers
  l2.n_layers += 4;
  l3.n_layers += 8;
  double d1 = ds::model::plan_memory(l2, 2, 256, false).activations - m.activations;
  double d2 = ds::model::plan_memory(l3, 2, 256, false).activations - m.activations;
  CHECK(d1 > 0);
  CHECK(d2 == doctest::Approx(2 * d1));
}

TEST_CASE("save_model / load_model: round trip, BF16, sharding, listed mismatches") {
  ModelArgs args = ds::model::preset("tiny");
  auto make = [](bool with_extra, int64_t embed_cols = 8) {
    auto ps = std::make_unique<ds::model::ParamStore>();
    ps->add({.name = "model.embed_tokens.weight", .shape = {16, embed_cols}});
    ps->add({.name = "model.layers.0.input_layernorm.weight", .shape = {8}, .decay = false});
    ps->add({.name = "lm_head.weight", .shape = {16, 8}});
    if (with_extra) ps->add({.name = "model.norm.weight", .shape = {8}, .decay = false});
    ps->add_buffer("model.layers.1.mlp.gate.e_score_correction_bias", {4});
    return ps;
  };
  auto src = make(false);
  float k = 0.f;
  for (auto& p : src->params())
    for (int64_t i = 0; i < p.value.numel(); ++i) p.value.f32()[i] = (k += 0.013f) - 1.0f;
  src->buffers()[0].second.f32()[2] = 0.123456789f;
  fs::path d = fs::temp_directory_path() / ("ds_test_ckio_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);

  ds::model::save_model(*src, args, d, /*bf16=*/false, 600);   // 3 shards of <= 600 B
  CHECK(fs::exists(d / "model.safetensors.index.json"));
  CHECK(ds::model::load_config(d / "config.json") == args);
  auto dst = make(false);
  ds::model::load_model(*dst, d);
  for (size_t i = 0; i < src->params().size(); ++i)
    for (int64_t j = 0; j < src->params()[i].value.numel(); ++j)
      CHECK(dst->params()[i].value.f32()[j] == src->params()[i].value.f32()[j]);
  CHECK(dst->buffers()[0].second.f32()[2] == 0.123456789f);

  ds::model::save_model(*src, args, d, /*bf16=*/true, uint64_t(1) << 30);   // replaces shards
  CHECK_FALSE(fs::exists(d / "model.safetensors.index.json"));
  ds::io::SafetensorsDir st(d);
  CHECK(st.get("lm_head.weight").dtype == ds::DType::bf16);
  CHECK(st.get("model.layers.1.mlp.gate.e_score_correction_bias").dtype == ds::DType::f32);
  CHECK(json::parse(ds::io::read_file(d / "config.json"))["torch_dtype"] == "bfloat16");
  ds::model::load_model(*dst, d);
  float x = src->params()[2].value.f32()[5];
  CHECK(dst->params()[2].value.f32()[5] == ds::bf16_to_f32(ds::f32_to_bf16(x)));
  CHECK(dst->buffers()[0].second.f32()[2] == 0.123456789f);

  // mismatches: one missing (model.norm.weight), one wrong shape, one unexpected; all listed
  auto other = make(true, 9);
  auto small = std::make_unique<ds::model::ParamStore>();
  small->add({.name = "lm_head.weight", .shape = {16, 8}});
  try {
    ds::model::load_model(*other, d);
    FAIL("mismatched checkpoint accepted");
  } catch (const ds::FormatError& e) {
    std::string m = e.what();
    CHECK_MESSAGE(m.find("1 missing: model.norm.weight") != std::string::npos, m);
    CHECK_MESSAGE(m.find("model.embed_tokens.weight [16, 8] (model [16, 9])") != std::string::npos,
                  m);
  }
  try {
    ds::model::load_model(*small, d);
    FAIL("unexpected tensors accepted");
  } catch (const ds::FormatError& e) {
    std::string m = e.what();
    CHECK_MESSAGE(m.find("3 unexpected") != std::string::npos, m);
    CHECK_MESSAGE(m.find("e_score_correction_bias") != std::string::npos, m);
  }
  CHECK_NOTHROW(ds::model::load_model(
      *small, d, {"model.embed_tokens.weight", "model.layers.*"}));
  fs::remove_all(d);
}
