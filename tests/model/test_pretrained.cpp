// load_pretrained on Hugging Face DeepSeek-V3-format directories written like the release
// (shards + index, BF16 + FP8 e4m3 with weight_scale_inv, MTP copies, quantization_config):
// every weight equals the official dequantisation rule, logits match the model loaded from
// the dequantised BF16 directory, the MTP layer is optional, and every checkpoint defect is
// reported in one error.
// reference: spec §1.13, §3.3; tests/model/hf_checkpoint_util.hpp.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <unistd.h>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/ops/ops.hpp"
#include "hf_checkpoint_util.hpp"
#include "model_test_util.hpp"

using namespace ds;
using namespace ds::model;
using namespace ds::model::testing;

namespace {

struct Tmp {
  fs::path p;
  Tmp() {
    static std::atomic<int> n{0};
    p = fs::temp_directory_path() /
        ("ds_test_pretrained_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(p);
  }
  ~Tmp() { std::error_code ec; fs::remove_all(p, ec); }
};

constexpr int64_t kBlock = 8;   // small blocks: several blocks per weight, partial edge blocks

ModelArgs test_args() {
  ModelArgs a = micro_args();
  a.vocab_size = 264;   // >= the tiny tokenizer's 263 ids
  return a;
}

struct Master {
  ModelArgs args = test_args();
  ParamStore ps;
  Transformer model{args, ps};
  Master() { ps.init(1234); randomize_biases(ps, 0.1, 5); }
};

// The values the loader must produce: dequantised FP8 weights, BF16-rounded others.
std::vector<std::vector<float>> expected_values(const ParamStore& ps) {
  std::vector<std::vector<float>> out;
  for (const Param& p : ps.params()) {
    const float* w = p.value.f32();
    std::vector<float> v(w, w + p.value.numel());
    if (p.info.fp8) {
      std::vector<uint8_t> q;
      std::vector<float> s;
      const int64_t M = p.info.shape[0], N = p.info.shape[1], sn = (N + kBlock - 1) / kBlock;
      quantize_fp8(w, M, N, kBlock, q, s);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
          v[size_t(i * N + j)] =
              e4m3_to_f32(q[size_t(i * N + j)]) * s[size_t((i / kBlock) * sn + j / kBlock)];
    } else {
      for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
    }
    out.push_back(std::move(v));
  }
  return out;
}

Tensor logits_of(Transformer& m, const Tensor& tokens) {
  ops::Context ctx;
  Tensor logits;
  m.forward_logits(ctx, tokens, logits);
  return logits;
}

Tensor test_tokens() {
  Tensor t = Tensor::empty({2, 12}, DType::i32);
  for (int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = int32_t((i * 37 + 5) % 263);
  return t;
}

void erase_named(std::vector<io::TensorSource>& v, const std::string& name) {
  auto it =
      std::find_if(v.begin(), v.end(), [&](const io::TensorSource& s) { return s.name == name; });
  REQUIRE(it != v.end());
  v.erase(it);
}

io::TensorSource& find_named(std::vector<io::TensorSource>& v, const std::string& name) {
  auto it =
      std::find_if(v.begin(), v.end(), [&](const io::TensorSource& s) { return s.name == name; });
  REQUIRE(it != v.end());
  return *it;
}

std::string load_error(const fs::path& dir) {
  try {
    load_pretrained(dir);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE(
    "pretrained: FP8 sharded HF directory equals the dequantisation rule and the BF16 model") {
  Master m;
  Tmp tmp;
  HfWriteOptions o;
  o.block = kBlock;
  write_hf_checkpoint(tmp.p / "fp8", m.ps, m.args, o);
  REQUIRE(fs::exists(tmp.p / "fp8" / io::kSafetensorsIndex));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(tmp.p / "fp8"))
    shards += e.path().extension() == ".safetensors";
  CHECK(shards > 2);

  Pretrained pt = load_pretrained(tmp.p / "fp8");
  CHECK(pt.quant.fp8);
  CHECK(pt.quant.block_rows == kBlock);
  CHECK(pt.args.n_mtp_layers == 1);
  CHECK(pt.tokenizer.has_value());
  CHECK(pt.chat_template.has_value());   // built-in V3 (no tokenizer_config.json)
  CHECK(pt.fingerprint.size() == 16);
  CHECK(pt.stats.copies_equal.size() == 2);
  CHECK(pt.stats.copies_differ.empty());
  int64_t n_fp8 = 0;
  for (const Param& p : m.ps.params()) n_fp8 += p.info.fp8;
  CHECK(n_fp8 > 10);
  CHECK(pt.stats.fp8_dequantised == n_fp8);

  // Every parameter bit-exactly as the rule says; buffers exact (F32).
  const auto want = expected_values(m.ps);
  size_t bad = 0, i = 0;
  for (const Param& p : pt.store->params()) {
    const float* got = p.value.f32();
    for (size_t j = 0; j < want[i].size(); ++j) bad += got[j] != want[i][j];
    ++i;
  }
  CHECK(bad == 0);
  for (size_t b = 0; b < m.ps.buffers().size(); ++b)
    CHECK(std::memcmp(m.ps.buffers()[b].second.f32(), pt.store->buffers()[b].second.f32(),
                      m.ps.buffers()[b].second.nbytes()) == 0);

  // Second directory: the dequantised weights stored as BF16, no FP8 at all.
  ParamStore deq;
  Transformer deq_model(m.args, deq);
  i = 0;
  for (Param& p : deq.params()) std::copy(want[i].begin(), want[i].end(), p.value.f32()), ++i;
  for (size_t b = 0; b < deq.buffers().size(); ++b)
    deq.buffers()[b].second.copy_from(m.ps.buffers()[b].second);
  HfWriteOptions ob;
  ob.fp8 = false;
  write_hf_checkpoint(tmp.p / "bf16", deq, m.args, ob);
  Pretrained pb = load_pretrained(tmp.p / "bf16");
  CHECK(pb.stats.fp8_dequantised == 0);
  CHECK(pb.fingerprint != pt.fingerprint);

  const Tensor tokens = test_tokens();
  const Tensor lf = logits_of(*pt.model, tokens), lb = logits_of(*pb.model, tokens);
  const Tensor lexact = logits_of(deq_model, tokens);
  double max_diff = 0, max_abs = 0, exact_diff = 0;
  for (int64_t k = 0; k < lf.numel(); ++k) {
    max_diff = std::max(max_diff, double(std::fabs(lf.f32()[k] - lb.f32()[k])));
    exact_diff = std::max(exact_diff, double(std::fabs(lf.f32()[k] - lexact.f32()[k])));
    max_abs = std::max(max_abs, double(std::fabs(lf.f32()[k])));
  }
  MESSAGE("FP8 vs BF16-dequantised logits: max |diff| " << max_diff << " (max |logit| " << max_abs
                                                        << ")");
  CHECK(exact_diff == 0.0);               // same F32 weights -> same logits
  CHECK(max_diff < 2e-2 * std::max(1.0, max_abs));   // BF16 rounding of the dequantised weights
  CHECK(max_diff > 0.0);                  // the two directories really differ
}

TEST_CASE("pretrained: dequantize_fp8_blocks with 128x128 blocks and partial edge blocks") {
  const int64_t M = 300, N = 200;   // 3 x 2 blocks, last row block 44 rows, last col block 72
  std::vector<float> w(size_t(M * N));
  for (size_t k = 0; k < w.size(); ++k)
    w[k] = float(std::sin(double(k) * 0.37) * (1 + double(k % 7)));
  std::vector<uint8_t> q;
  std::vector<float> s;
  quantize_fp8(w.data(), M, N, 128, q, s);
  REQUIRE(s.size() == 6);
  io::TensorView wv{"w.weight", DType::f8_e4m3, {M, N}, q.data(), q.size()};
  io::TensorView sv{
      "w.weight_scale_inv", DType::f32, {3, 2}, reinterpret_cast<uint8_t*>(s.data()), s.size() * 4};
  Tensor out = Tensor::empty({M, N});
  dequantize_fp8_blocks(wv, sv, 128, 128, out);
  size_t bad = 0;
  double max_rel = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const float ref = e4m3_to_f32(q[size_t(i * N + j)]) * s[size_t((i / 128) * 2 + j / 128)];
      bad += out.f32()[i * N + j] != ref;
      const double denom = std::max(1e-3, double(std::fabs(w[size_t(i * N + j)])));
      max_rel =
          std::max(max_rel, std::fabs(double(out.f32()[i * N + j]) - w[size_t(i * N + j)]) / denom);
    }
  CHECK(bad == 0);
  CHECK(out.f32()[299 * N + 199] == e4m3_to_f32(q[size_t(299 * N + 199)]) * s[5]);
  CHECK(max_rel < 0.2);   // e4m3: 3 mantissa bits (small values lose more relative to the block)
  io::TensorView bad_scale = sv;
  bad_scale.shape = {2, 2};
  CHECK_THROWS_AS(dequantize_fp8_blocks(wv, bad_scale, 128, 128, out), FormatError);
  // a band of rows (ds-convert-fp8's pieces of a large tensor): positions in the whole tensor
  io::TensorView band = wv, band_s = sv;
  band.shape = {M - 128, N};
  band.data += 128 * N;
  band.nbytes -= size_t(128 * N);
  band_s.shape = {2, 2};
  band_s.data += 2 * 4;
  band_s.nbytes -= 2 * 4;
  Tensor part = Tensor::empty({M - 128, N});
  q[size_t(133 * N + 7)] = 0x7f;   // an E4M3 NaN code at row 133
  CHECK_THROWS_WITH_AS(dequantize_fp8_blocks(band, band_s, 128, 128, part, 128),
                       doctest::Contains("at row 133 column 7"), FormatError);
  s[5] = -1.0f;   // block (2, 1)
  CHECK_THROWS_WITH_AS(check_fp8_blocks(band, band_s, 128, 128, 128),
                       doctest::Contains("block (2, 1)"), FormatError);
  CHECK(scale_inv_name("a.b.weight") == "a.b.weight_scale_inv");
  CHECK(scale_inv_name("a.b.bias").empty());
}

TEST_CASE("pretrained: MTP layer optional, copies compared, load_mtp = false") {
  Master m;
  Tmp tmp;
  HfWriteOptions o;
  o.block = kBlock;
  o.mutate = [](std::vector<io::TensorSource>& v) {
    std::erase_if(v,
                  [](const io::TensorSource& s) { return s.name.starts_with("model.layers.2."); });
  };
  write_hf_checkpoint(tmp.p / "nomtp", m.ps, m.args, o);
  Pretrained a = load_pretrained(tmp.p / "nomtp");
  CHECK(a.args.n_mtp_layers == 0);
  CHECK(a.mtp_layers_in_file == 0);

  HfWriteOptions full;
  full.block = kBlock;
  write_hf_checkpoint(tmp.p / "full", m.ps, m.args, full);
  PretrainedOptions po;
  po.load_mtp = false;
  Pretrained b = load_pretrained(tmp.p / "full", po);
  CHECK(b.args.n_mtp_layers == 0);
  CHECK(b.mtp_layers_in_file == 1);
  CHECK(!b.stats.ignored.empty());
  const Tensor tokens = test_tokens();
  const Tensor la = logits_of(*a.model, tokens), lb = logits_of(*b.model, tokens);
  CHECK(std::memcmp(la.f32(), lb.f32(), la.nbytes()) == 0);

  // A copy that differs from the main head: accepted, reported, the main head is used.
  std::vector<uint16_t> other(size_t(m.args.vocab_size * m.args.dim), f32_to_bf16(0.5f));
  HfWriteOptions od;
  od.block = kBlock;
  od.mutate = [&](std::vector<io::TensorSource>& v) {
    auto& s = find_named(v, "model.layers.2.shared_head.head.weight");
    s = io::TensorSource::raw(s.name, DType::bf16, s.shape, other.data());
  };
  write_hf_checkpoint(tmp.p / "diff", m.ps, m.args, od);
  Pretrained c = load_pretrained(tmp.p / "diff");
  CHECK(c.stats.copies_differ ==
        std::vector<std::string>{"model.layers.2.shared_head.head.weight"});
  CHECK(c.stats.copies_equal.size() == 1);
}

TEST_CASE("pretrained: layers past the declared MTP layers; a config with fewer decoder layers") {
  Master m;
  Tmp tmp;
  std::vector<float> junk(4, 0.0f);
  PretrainedOptions no_mtp;
  no_mtp.load_mtp = false;
  // One layer past the MTP layer config.json declares: unexpected, whether MTP is loaded or not.
  const std::string extra =
      fmt::format("model.layers.{}.self_attn.o_proj.weight", m.args.n_layers + m.args.n_mtp_layers);
  HfWriteOptions o;
  o.block = kBlock;
  o.mutate = [&](std::vector<io::TensorSource>& v) {
    v.push_back(io::TensorSource::raw(extra, DType::f32, {4}, junk.data()));
  };
  write_hf_checkpoint(tmp.p / "extra", m.ps, m.args, o);
  CHECK(load_error(tmp.p / "extra").find("1 unexpected: " + extra) != std::string::npos);
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "extra", no_mtp),
                       doctest::Contains(("1 unexpected: " + extra).c_str()), FormatError);
  // num_hidden_layers one short of the weights: the last decoder layer would pass for the MTP
  // layer (and be ignored without MTP) but has no eh_proj.
  HfWriteOptions full;
  full.block = kBlock;
  write_hf_checkpoint(tmp.p / "short", m.ps, m.args, full);
  auto cfg = nlohmann::json::parse(io::read_file(tmp.p / "short" / "config.json"));
  cfg["num_hidden_layers"] = m.args.n_layers - 1;
  io::write_file_atomic(tmp.p / "short" / "config.json", cfg.dump());
  const std::string says =
      fmt::format("model.layers.{}.* has no eh_proj.weight", m.args.n_layers - 1);
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "short"), doctest::Contains(says.c_str()),
                       FormatError);
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "short", no_mtp), doctest::Contains(says.c_str()),
                       FormatError);
  // num_nextn_predict_layers 0 while the weights keep their MTP layer: it is ignored.
  write_hf_checkpoint(tmp.p / "undeclared", m.ps, m.args, full);
  cfg = nlohmann::json::parse(io::read_file(tmp.p / "undeclared" / "config.json"));
  cfg["num_nextn_predict_layers"] = 0;
  io::write_file_atomic(tmp.p / "undeclared" / "config.json", cfg.dump());
  const Pretrained u = load_pretrained(tmp.p / "undeclared");
  CHECK(u.args.n_mtp_layers == 0);
  CHECK(!u.stats.ignored.empty());
  // A config far bigger than the weights (10^5 layers, 1M-wide): refused before it is built.
  for (const auto& [key, value] : {std::pair{"num_hidden_layers", 100000},
                                   {"hidden_size", 1 << 20}}) {
    write_hf_checkpoint(tmp.p / "huge", m.ps, m.args, full);
    cfg = nlohmann::json::parse(io::read_file(tmp.p / "huge" / "config.json"));
    cfg[key] = value;
    io::write_file_atomic(tmp.p / "huge" / "config.json", cfg.dump());
    INFO(key);
    CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "huge"),
                         doctest::Contains("config.json does not match the weights"),
                         FormatError);
  }
}

TEST_CASE("pretrained: every checkpoint defect is reported, all in one error") {
  Master m;
  Tmp tmp;
  const std::string q = "model.layers.0.self_attn.q_a_proj.weight";
  const std::string o_proj = "model.layers.1.self_attn.o_proj.weight";
  const std::string o0 = "model.layers.0.self_attn.o_proj.weight";   // (16, 8): scale [2, 1]
  std::vector<uint8_t> junk(4096, 0);
  struct Case {
    const char* what;
    std::function<void(std::vector<io::TensorSource>&)> mutate;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"deleted",
       [](auto& v) { erase_named(v, "model.norm.weight"); },
       {"1 missing: model.norm.weight"}},
      {"added",
       [&](auto& v) {
         v.push_back(io::TensorSource::raw("model.extra.weight", DType::f32, {4}, junk.data()));
       },
       {"1 unexpected: model.extra.weight"}},
      {"shape",
       [](auto& v) { find_named(v, "model.layers.0.input_layernorm.weight").shape = {8}; },
       {"1 wrong-shaped: model.layers.0.input_layernorm.weight [8] (model [16])"}},
      {"dtype",
       [&](auto& v) {
         auto& s = find_named(v, "model.norm.weight");
         s = io::TensorSource::raw(s.name, DType::i32, s.shape, junk.data());
       },
       {"of an unsupported dtype: model.norm.weight I32"}},
      {"no scale",
       [&](auto& v) { erase_named(v, q + "_scale_inv"); },
       {"1 FP8 without weight_scale_inv: " + q}},
      {"orphan scale",
       [&](auto& v) { erase_named(v, o_proj); },
       {"1 missing: " + o_proj,
        "1 weight_scale_inv without an FP8 weight: " + o_proj + "_scale_inv"}},
      {"scale shape",
       [&](auto& v) {
         find_named(v, o0 + "_scale_inv").shape = {1, 1};
       },
       {"wrong-shaped weight_scale_inv: " + o0 + "_scale_inv F32 [1, 1] (expected F32 [2, 1])"}},
  };
  std::vector<std::string> all;
  for (size_t k = 0; k < cases.size(); ++k) {
    HfWriteOptions o;
    o.block = kBlock;
    o.mutate = cases[k].mutate;
    const fs::path dir = tmp.p / ("case" + std::to_string(k));
    write_hf_checkpoint(dir, m.ps, m.args, o);
    const std::string err = load_error(dir);
    INFO(cases[k].what << ": " << err);
    CHECK(err.find(dir.string() + ": checkpoint does not match the model") != std::string::npos);
    for (const std::string& e : cases[k].expect) CHECK(err.find(e) != std::string::npos);
    all.insert(all.end(), cases[k].expect.begin(), cases[k].expect.end());
  }
  // All defects at once: one error naming every one of them.
  HfWriteOptions o;
  o.block = kBlock;
  o.mutate = [&](std::vector<io::TensorSource>& v) {
    for (size_t k = 0; k < cases.size(); ++k)
      if (std::string(cases[k].what) != "dtype") cases[k].mutate(v);
  };
  write_hf_checkpoint(tmp.p / "all", m.ps, m.args, o);
  const std::string err = load_error(tmp.p / "all");
  INFO(err);
  CHECK(err.find("2 missing: " + o_proj + ", model.norm.weight") != std::string::npos);
  for (const std::string& e : all)   // every name/detail, without the per-case counts
    if (e.find("I32") == std::string::npos)
      CHECK(err.find(e.substr(e.find(": ") + 2)) != std::string::npos);
}

TEST_CASE("pretrained: a NaN or infinite weight names its file and tensor") {
  Master m;
  Tmp tmp;
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          -std::numeric_limits<float>::infinity()}) {
    std::vector<float> values(16, 1.0f);
    values[5] = bad;
    HfWriteOptions o;
    o.block = kBlock;
    o.mutate = [&](std::vector<io::TensorSource>& v) {
      auto& s = find_named(v, "model.norm.weight");   // F32 [16]
      s = io::TensorSource::raw(s.name, DType::f32, s.shape,
                                values.data());
    };
    const fs::path dir = tmp.p / (std::isnan(bad) ? "nan" : "inf");
    write_hf_checkpoint(dir, m.ps, m.args, o);
    const std::string err = load_error(dir);
    INFO(err);
    CHECK(err.find(dir.string() + "/model-0000") == 0);   // the shard holding it
    CHECK(err.find(".safetensors: model.norm.weight: a non-finite value") != std::string::npos);
    CHECK(err.find("at element 5 of [16]") != std::string::npos);
  }
}

TEST_CASE("pretrained: a directory that is not a checkpoint") {
  Tmp tmp;
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "nope"), doctest::Contains("nope: not a directory"),
                       IoError);
  fs::create_directories(tmp.p / "empty");
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "empty"),
                       doctest::Contains("empty: not a model checkpoint (no config.json)"),
                       FormatError);
  std::ofstream(tmp.p / "empty" / "config.json") << to_hf_json(test_args());
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "empty"),
                       doctest::Contains("not a model checkpoint (no model.safetensors"),
                       FormatError);
  // Without tokenizer.json: an error unless not needed.
  Master m;
  HfWriteOptions o;
  o.tokenizer = false;
  write_hf_checkpoint(tmp.p / "notok", m.ps, m.args, o);
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "notok"), doctest::Contains("no tokenizer.json"),
                       FormatError);
  PretrainedOptions po;
  po.need_tokenizer = false;
  CHECK(!load_pretrained(tmp.p / "notok", po).tokenizer.has_value());
  // config.json's BOS/EOS ids must be the tokenizer's own.
  write_hf_checkpoint(tmp.p / "ids", m.ps, m.args);
  const Pretrained ok = load_pretrained(tmp.p / "ids");
  REQUIRE(ok.tokenizer->bos_id().has_value());
  REQUIRE(ok.tokenizer->eos_id().has_value());
  const auto ids_json = io::read_file(tmp.p / "ids" / "config.json");
  for (const char* key : {"bos_token_id", "eos_token_id"}) {
    auto bad = nlohmann::json::parse(ids_json);
    const int64_t own = bad[key].get<int64_t>();
    CHECK(own == (std::string_view(key) == "bos_token_id" ? *ok.tokenizer->bos_id()
                                                          : *ok.tokenizer->eos_id()));
    bad[key] = own - 1;
    std::ofstream(tmp.p / "ids" / "config.json") << bad.dump();
    const std::string err = load_error(tmp.p / "ids");
    CHECK_MESSAGE(err.find(fmt::format("config.json: {} {} is not the id of", key, own - 1)) !=
                      std::string::npos, err);
    CHECK_MESSAGE(err.find(fmt::format("tokenizer.json's '{}' ({})",
                                       ok.tokenizer->id_to_token(tok::TokenId(own)), own)) !=
                      std::string::npos, err);
  }
  // Unsupported quantisation.
  auto cfg = nlohmann::json::parse(io::read_file(tmp.p / "notok" / "config.json"));
  cfg["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e5m2"}};
  std::ofstream(tmp.p / "notok" / "config.json") << cfg.dump();
  CHECK_THROWS_WITH_AS(load_pretrained(tmp.p / "notok", po),
                       doctest::Contains("fmt 'e5m2' is not supported"), ConfigError);
}

TEST_CASE("quantization_config: read strictly, errors name the key") {
  Tmp tmp;
  const fs::path p = tmp.p / "config.json";
  auto read = [&](const std::string& qc) {
    std::ofstream(p) << R"({"hidden_size": 8, "quantization_config": )" + qc + "}";
    return read_quant_config(p);
  };
  const QuantConfig q = read(R"({"quant_method": "fp8", "weight_block_size": [64, 32]})");
  CHECK(q.fp8);
  CHECK(q.block_rows == 64);
  CHECK(q.block_cols == 32);
  CHECK_FALSE(read("null").fp8);
  struct Bad { const char* qc; const char* says; };
  const Bad bad[] = {
      {R"({"quant_method": 8})", "quantization_config.quant_method must be a string"},
      {R"({"quant_method": "fp8", "fmt": ["e4m3"]})", "quantization_config.fmt must be a string"},
      {R"({"quant_method": "int4"})", "quant_method 'int4' is not supported"},
      {R"({"quant_method": "fp8", "weight_block_size": [128, -1]})", "weight_block_size"},
      {R"({"quant_method": "fp8", "weight_block_size": [128, 1.5]})", "weight_block_size"},
      {R"({"quant_method": "fp8", "weight_block_size": [18446744073709551615, 128]})",
       "weight_block_size"},
      {R"({"quant_method": "fp8", "weight_block_size": [128]})", "weight_block_size"},
      {"[1]", "quantization_config must be an object"},
  };
  const std::string where = p.string() + ": quantization_config";
  for (const auto& b : bad) {
    INFO(std::string(b.qc));
    CHECK_THROWS_WITH_AS(read(b.qc), doctest::Contains(b.says), ConfigError);
    CHECK_THROWS_WITH_AS(read(b.qc), doctest::Contains(where.c_str()), ConfigError);
  }
}
