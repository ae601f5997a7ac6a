// The parameter registry of the 671B preset, built by the model's own registration code in a
// shape-only ParamStore (nothing allocated): tensor counts per layer type, full HF names and
// shapes (spec §1.13), FP8 / decay flags, router-bias buffers, and the totals of spec §1.2.
// reference: spec §1.2, §1.6, §1.9, §1.11, §1.13.
#include <doctest/doctest.h>

#include <map>
#include <regex>
#include <string>

#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"

using namespace ds::model;

namespace {
std::map<std::string, ParamInfo> by_name(const std::vector<ParamInfo>& v) {
  std::map<std::string, ParamInfo> m;
  for (const auto& p : v) m[p.name] = p;
  return m;
}
}  // namespace

TEST_CASE("671b registry: counts per layer type") {
  const ModelArgs a = preset("671b");
  const std::vector<ParamInfo> infos = describe_params(a);
  std::map<int, int> per_layer;
  int outer = 0;
  for (const auto& p : infos) {
    if (p.layer < 0) ++outer;
    else per_layer[p.layer]++;
  }
  CHECK(outer == 3);                               // embed_tokens, norm, lm_head
  REQUIRE(per_layer.size() == 62);
  for (int l = 0; l < 3; ++l) CHECK(per_layer[l] == 12);     // 7 attn + 2 norms + 3 dense
  for (int l = 3; l < 61; ++l) CHECK(per_layer[l] == 781);   // 9 + gate + 256*3 + 3 shared
  CHECK(per_layer[61] == 785);                      // + enorm, hnorm, eh_proj, shared_head.norm
  CHECK(infos.size() == size_t(3 + 3 * 12 + 58 * 781 + 785));
}

TEST_CASE("671b registry: names, shapes and flags") {
  const ModelArgs a = preset("671b");
  const auto m = by_name(describe_params(a));
  struct Want { const char* name; ds::Shape shape; bool fp8; };
  const Want want[] = {
      {"model.embed_tokens.weight", {129280, 7168}, false},
      {"lm_head.weight", {129280, 7168}, false},
      {"model.norm.weight", {7168}, false},
      {"model.layers.0.input_layernorm.weight", {7168}, false},
      {"model.layers.0.self_attn.q_a_proj.weight", {1536, 7168}, true},
      {"model.layers.0.self_attn.q_a_layernorm.weight", {1536}, false},
      {"model.layers.0.self_attn.q_b_proj.weight", {24576, 1536}, true},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {576, 7168}, true},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", {512}, false},
      {"model.layers.0.self_attn.kv_b_proj.weight", {32768, 512}, true},
      {"model.layers.0.self_attn.o_proj.weight", {7168, 16384}, true},
      {"model.layers.2.mlp.gate_proj.weight", {18432, 7168}, true},
      {"model.layers.2.mlp.down_proj.weight", {7168, 18432}, true},
      {"model.layers.2.post_attention_layernorm.weight", {7168}, false},
      {"model.layers.3.mlp.gate.weight", {256, 7168}, false},
      {"model.layers.3.mlp.experts.255.down_proj.weight", {7168, 2048}, true},
      {"model.layers.60.mlp.experts.0.up_proj.weight", {2048, 7168}, true},
      {"model.layers.60.mlp.shared_experts.gate_proj.weight", {2048, 7168}, true},
      {"model.layers.61.eh_proj.weight", {7168, 14336}, false},
      {"model.layers.61.enorm.weight", {7168}, false},
      {"model.layers.61.hnorm.weight", {7168}, false},
      {"model.layers.61.shared_head.norm.weight", {7168}, false},
      {"model.layers.61.self_attn.kv_b_proj.weight", {32768, 512}, true},
      {"model.layers.61.mlp.experts.17.gate_proj.weight", {2048, 7168}, true},
      {"model.layers.61.mlp.gate.weight", {256, 7168}, false},
  };
  for (const Want& w : want) {
    CAPTURE(w.name);
    auto it = m.find(w.name);
    REQUIRE(it != m.end());
    CHECK(it->second.shape == w.shape);
    CHECK(it->second.fp8 == w.fp8);
  }
  CHECK(m.at("model.layers.3.mlp.experts.255.down_proj.weight").expert == 255);
  CHECK(m.at("model.layers.3.mlp.experts.255.down_proj.weight").layer == 3);
  CHECK(m.at("model.layers.61.eh_proj.weight").layer == 61);
  // Not separate parameters: the MTP's embedding/head copies, the dense-only q_proj.
  CHECK(!m.count("model.layers.61.embed_tokens.weight"));
  CHECK(!m.count("model.layers.61.shared_head.head.weight"));
  CHECK(!m.count("model.layers.0.self_attn.q_proj.weight"));
  CHECK(!m.count("model.layers.3.mlp.gate.e_score_correction_bias"));   // a buffer
  // Flags over the whole list: fp8 exactly on attention projections and FFN matrices, decay
  // exactly on matrices, norm gains initialised to one.
  const std::regex fp8_re(
      R"(model\.layers\.\d+\.(self_attn\.(q_a|q_b|q|kv_a|kv_b|o)_proj(_with_mqa)?|)"
      R"(mlp\.((experts\.\d+|shared_experts)\.)?(gate|up|down)_proj)\.weight)");
  int n_fp8 = 0;
  for (const auto& [name, p] : m) {
    CAPTURE(name);
    CHECK(p.fp8 == std::regex_match(name, fp8_re));
    CHECK(p.decay == (p.shape.size() == 2));
    CHECK(p.init_one == (p.shape.size() == 1));
    if (p.shape.size() == 2) CHECK(p.init_std == a.init_std);
    n_fp8 += p.fp8;
  }
  CHECK(n_fp8 == 62 * 5 + 3 * 3 + 59 * (257 * 3));
}

TEST_CASE("671b registry: totals match spec §1.2 and count_params; buffers") {
  const ModelArgs a = preset("671b");
  ParamStore store;
  store.set_allocate(false);
  Transformer model(a, store);
  int64_t main = 0, mtp = 0;
  for (const Param& p : store.params()) {
    CHECK(!p.value.defined());
    (p.info.layer >= a.n_layers ? mtp : main) += ds::shape_numel(p.info.shape);
  }
  CHECK(double(main) / 1e9 == doctest::Approx(671.03).epsilon(2e-5));
  CHECK(double(mtp) / 1e9 == doctest::Approx(11.61).epsilon(1e-3));
  const ParamCounts c = count_params(a);
  CHECK(main == c.total);
  CHECK(mtp == c.mtp);
  CHECK(store.numel() == c.total + c.mtp);
  REQUIRE(store.buffers().size() == 59);
  CHECK(store.buffers().front().first == "model.layers.3.mlp.gate.e_score_correction_bias");
  CHECK(store.buffers().back().first == "model.layers.61.mlp.gate.e_score_correction_bias");
  CHECK(store.buffers().back().second.shape() == ds::Shape{256});
  CHECK(model.n_moe_layers() == 59);
  CHECK(model.moe_layer_names().back() == "model.layers.61.mlp");
}

TEST_CASE("stack: values and gradients as one allocation, order and values unchanged") {
  ParamStore s;
  auto info = [](const char* n, ds::Shape shape) {
    ParamInfo i;
    i.name = n;
    i.shape = std::move(shape);
    i.init_std = 0.1;
    return i;
  };
  s.add(info("a", {3, 4}));
  s.add(info("b", {5, 7}));
  s.add(info("c", {2, 4}));
  s.init(5);
  const ds::Tensor a0 = s.get("a").value.clone(), c0 = s.get("c").value.clone();
  CHECK_FALSE(s.get("a").value.join0(s.get("c").value).defined());
  CHECK_THROWS(s.stack({"a", "b"}));   // rows of 4 and of 7
  CHECK_THROWS(s.stack({"a", "nope"}));
  CHECK_THROWS(s.stack({"a"}));
  s.stack({"a", "c"});
  CHECK_THROWS(s.stack({"c", "a"}));   // already stacked
  const ds::Tensor ac = s.get("a").value.join0(s.get("c").value);
  REQUIRE(ac.defined());
  CHECK(ac.shape() == ds::Shape{5, 4});
  for (int64_t i = 0; i < a0.numel(); ++i) CHECK(s.get("a").value.f32()[i] == a0.f32()[i]);
  for (int64_t i = 0; i < c0.numel(); ++i) CHECK(ac.f32()[12 + i] == c0.f32()[i]);
  CHECK(s.params()[0].info.name == "a");
  CHECK(s.params()[1].info.name == "b");
  CHECK(s.params()[2].info.name == "c");
  s.alloc_grads();
  CHECK(s.get("a").grad.join0(s.get("c").grad).defined());
  CHECK(s.get("b").grad.shape() == ds::Shape{5, 7});
  ParamStore g;   // a gradient already there
  g.add(info("a", {3, 4}));
  g.add(info("c", {2, 4}));
  g.alloc_grads();
  CHECK_THROWS(g.stack({"a", "c"}));
  // shape-only, then values shared in (as ds-rl places a loaded model): the gradients that
  // alloc_grads makes afterwards are stacked
  ParamStore shapes;
  shapes.set_allocate(false);
  shapes.add(info("a", {3, 4}));
  shapes.add(info("b", {5, 7}));
  shapes.add(info("c", {2, 4}));
  shapes.stack({"a", "c"});
  CHECK_FALSE(shapes.get("a").value.defined());
  shapes.set_allocate(true);
  for (Param& p : shapes.params()) p.value = s.get(p.info.name).value;
  shapes.alloc_grads();
  CHECK(shapes.get("a").grad.join0(shapes.get("c").grad).defined());
  CHECK_FALSE(shapes.get("a").grad.join0(shapes.get("b").grad).defined());
}

TEST_CASE("stack: every MLP's gate_proj and up_proj are one (2I, C) matrix") {
  ModelArgs a = preset("tiny");
  ParamStore s;
  Transformer m(a, s);
  s.alloc_grads();
  int stacked = 0;
  for (Param& p : s.params()) {
    const std::string& n = p.info.name;
    const size_t at = n.find("gate_proj.weight");
    if (at == std::string::npos) continue;
    Param& up = s.get(n.substr(0, at) + "up_proj.weight");
    CAPTURE(n);
    CHECK(p.value.join0(up.value).defined());
    CHECK(p.grad.join0(up.grad).defined());
    ++stacked;
  }
  CHECK(stacked > a.n_routed_experts);   // the routed experts, the shared and dense MLPs
}
