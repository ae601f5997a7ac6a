// ds-convert-fp8 quantize / dequantize: exactly the registry's FP8 tensors are quantised (the
// rest byte-identical), 128x128 scales = block amax / 448 with partial edge blocks, the round
// trip BF16 -> FP8 -> BF16 within the per-element E4M3 bound, the official dequantisation rule,
// sharded inputs with scales in another shard than their weight, byte-identical outputs across
// runs and thread counts, config.json / index rewriting, --allow-missing-scale, and every error
// case leaving no output behind.
// reference: spec §1.13, §3.1, §3.3; include/ds/convert/fp8_convert.hpp.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <set>

#include "convert_test_util.hpp"
#include "ds/convert/fp8_convert.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/core/error.hpp"

using namespace ds;
using namespace ds::convert::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

convert::ConvertOptions opts(const fs::path& in, const fs::path& out, int threads = 1) {
  convert::ConvertOptions o;
  o.model = in.string();
  o.out = out.string();
  o.threads = threads;
  return o;
}

json read_json(const fs::path& p) { return json::parse(io::read_file(p)); }

const json kOfficialQuant = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"},
                             {"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};

// Per-element bound of x -> e4m3(x / s) * s with s = amax / 448 (spec §3.1): half a step of
// the 3-bit mantissa (2^-4 relative) for normals, half the subnormal step 2^-9 times s below,
// plus FP32 rounding of x / s and of the product.
double e4m3_bound(double x, double s) {
  return std::ldexp(std::fabs(x), -4) + std::ldexp(s, -10) + 1e-6 * std::fabs(x) + 1e-12;
}

// Checks one quantised weight against its F32 source: scale = amax / 448 per 128x128 block
// (1 for an all-zero block), every element within the E4M3 bound. Returns the blocks seen.
int64_t check_quantised(const io::TensorView& q, const io::TensorView& s, const Tensor& src) {
  const int64_t M = q.shape[0], N = q.shape[1], sm = (M + 127) / 128, sn = (N + 127) / 128;
  REQUIRE(q.dtype == DType::f8_e4m3);
  REQUIRE(s.dtype == DType::f32);
  REQUIRE(s.shape == Shape({sm, sn}));
  const Tensor sf = io::to_f32(s);
  const std::vector<float> deq = dequant_ref(q, s, 128);
  int64_t bad = 0;
  for (int64_t bi = 0; bi < sm; ++bi)
    for (int64_t bj = 0; bj < sn; ++bj) {
      float amax = 0;
      for (int64_t i = bi * 128; i < std::min(M, bi * 128 + 128); ++i)
        for (int64_t j = bj * 128; j < std::min(N, bj * 128 + 128); ++j)
          amax = std::max(amax, std::fabs(src.f32()[i * N + j]));
      const float scale = sf.f32()[bi * sn + bj];
      CHECK(scale == (amax > 0 ? amax / kE4M3Max : 1.0f));
      for (int64_t i = bi * 128; i < std::min(M, bi * 128 + 128); ++i)
        for (int64_t j = bj * 128; j < std::min(N, bj * 128 + 128); ++j) {
          const double x = src.f32()[i * N + j], d = std::fabs(deq[size_t(i * N + j)] - x);
          bad += d > e4m3_bound(x, scale);
        }
    }
  CHECK_MESSAGE(bad == 0, q.name, ": ", bad, " elements outside the e4m3 bound");
  return sm * sn;
}

}  // namespace

TEST_CASE("quantize: exactly the registry's FP8 tensors, block scales, partial edge blocks") {
  TempDir tmp;
  const model::ModelArgs a = wide_args();
  write_model(tmp / "in", a, 5);
  const convert::ConvertStats st = convert::quantize(opts(tmp / "in", tmp / "fp8"));

  io::SafetensorsDir in(tmp / "in"), out(tmp / "fp8");
  int64_t fp8 = 0, partial_rows = 0, partial_cols = 0;
  for (const model::ParamInfo& p : model::describe_params(a)) {
    const io::TensorView& v = out.get(p.name);
    if (!p.fp8) {
      const io::TensorView& o = in.get(p.name);
      CHECK(v.dtype == o.dtype);
      CHECK(std::equal(v.data, v.data + v.nbytes, o.data, o.data + o.nbytes));
      CHECK_FALSE(out.contains(p.name + "_scale_inv"));
      continue;
    }
    ++fp8;
    check_quantised(v, out.get(p.name + "_scale_inv"), in.load_f32(p.name));
    partial_rows += p.shape[0] % 128 != 0;
    partial_cols += p.shape[1] % 128 != 0;
  }
  CHECK(partial_rows > 0);
  CHECK(partial_cols > 0);
  // The MTP layer's projections are quantised too; eh_proj, norms, router and head are not.
  CHECK(out.get("model.layers.2.self_attn.q_a_proj.weight").dtype == DType::f8_e4m3);
  CHECK(out.get("model.layers.2.mlp.experts.3.down_proj.weight").dtype == DType::f8_e4m3);
  CHECK(out.get("model.layers.2.eh_proj.weight").dtype == DType::f32);
  CHECK(out.get("model.layers.1.mlp.gate.weight").dtype == DType::f32);
  CHECK(out.get("model.layers.1.mlp.gate.e_score_correction_bias").dtype == DType::f32);
  CHECK(out.get("lm_head.weight").dtype == DType::f32);
  CHECK(st.quantized == fp8);
  CHECK(st.tensors_out == st.tensors_in + fp8);
  CHECK(out.names().size() == in.names().size() + size_t(fp8));

  const json cfg = read_json(tmp / "fp8" / "config.json"),
             cfg_in = read_json(tmp / "in" / "config.json");
  CHECK(cfg["quantization_config"] == kOfficialQuant);
  json stripped = cfg;
  stripped.erase("quantization_config");
  CHECK(stripped == cfg_in);
  CHECK(io::read_file(tmp / "fp8" / "tokenizer.json") ==
        io::read_file(tmp / "in" / "tokenizer.json"));
  CHECK(fs::exists(tmp / "fp8" / "tokenizer_config.json"));
  CHECK(fs::exists(tmp / "fp8" / "model.safetensors"));
  CHECK_FALSE(fs::exists(tmp / "fp8" / io::kSafetensorsIndex));
}

TEST_CASE("round trip BF16 -> FP8 -> BF16 within the per-element e4m3 bound") {
  TempDir tmp;
  const model::ModelArgs a = wide_args();
  write_model(tmp / "in", a, 9, /*bf16=*/true);
  convert::quantize(opts(tmp / "in", tmp / "fp8"));
  const convert::ConvertStats st = convert::dequantize(opts(tmp / "fp8", tmp / "back"));
  io::SafetensorsDir in(tmp / "in"), fp8(tmp / "fp8"), back(tmp / "back");
  CHECK(back.names().size() == in.names().size());
  int64_t checked = 0;
  for (const model::ParamInfo& p : model::describe_params(a)) {
    const io::TensorView& b = back.get(p.name);
    CHECK(b.dtype == DType::bf16);
    if (!p.fp8) {
      const io::TensorView& o = in.get(p.name);
      CHECK(std::equal(b.data, b.data + b.nbytes, o.data, o.data + o.nbytes));
      continue;
    }
    // Exactly the official rule: bf16(e4m3(q) * s) ...
    const std::vector<float> ref =
        dequant_ref(fp8.get(p.name), fp8.get(p.name + "_scale_inv"), 128);
    const Tensor bt = io::to_f32(b), src = in.load_f32(p.name),
                 sf = fp8.load_f32(p.name + "_scale_inv");
    int64_t exact = 0, bound = 0;
    const int64_t N = p.shape[1], sn = sf.shape()[1];
    for (int64_t i = 0; i < bt.numel(); ++i) {
      exact += bt.f32()[i] != bf16_to_f32(f32_to_bf16(ref[size_t(i)]));
      // ... within the e4m3 bound of the BF16 original, plus the final BF16 rounding (2^-9).
      const double x = src.f32()[i], s = sf.f32()[(i / N / 128) * sn + (i % N) / 128];
      bound += std::fabs(bt.f32()[i] - x) > e4m3_bound(x, s) + std::ldexp(std::fabs(x) * 1.07, -9);
    }
    CHECK_MESSAGE(exact == 0, p.name);
    CHECK_MESSAGE(bound == 0, p.name);
    ++checked;
  }
  CHECK(checked == st.dequantized);
  CHECK_FALSE(read_json(tmp / "back" / "config.json").contains("quantization_config"));
  for (const std::string& n : back.names()) CHECK_FALSE(n.ends_with("_scale_inv"));
}

TEST_CASE("sharded input with scales in another shard than their weight; index rewritten") {
  TempDir tmp;
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 264;
  model::ParamStore ps;
  model::Transformer m(a, ps);
  ps.init(3);
  model::testing::HfWriteOptions o;
  o.block = 128;
  o.max_shard_bytes = 2048;
  o.mutate = [](std::vector<io::TensorSource>& src) {  // every scale after every weight
    std::stable_partition(src.begin(), src.end(), [](const io::TensorSource& t) {
      return !t.name.ends_with("_scale_inv");
    });
  };
  model::testing::write_hf_checkpoint(tmp / "hf", ps, a, o);
  io::SafetensorsDir hf(tmp / "hf");
  int64_t elsewhere = 0;
  for (const std::string& n : hf.names())
    if (n.ends_with("_scale_inv"))
      elsewhere += hf.file_of(n) != hf.file_of(n.substr(0, n.size() - 10));
  REQUIRE(elsewhere > 0);
  REQUIRE(hf.num_files() > 3);

  // Output files are the input's, by name, less those that held only scales.
  std::set<std::string> weight_files;
  for (const std::string& n : hf.names())
    if (!n.ends_with("_scale_inv")) weight_files.insert(hf.file_of(n).filename().string());
  const convert::ConvertStats st = convert::dequantize(opts(tmp / "hf", tmp / "bf16"));
  io::SafetensorsDir out(tmp / "bf16");
  CHECK(out.num_files() == weight_files.size());
  CHECK(st.files == int64_t(weight_files.size()));
  size_t on_disk = 0;
  for (const auto& e : fs::directory_iterator(tmp / "bf16"))
    on_disk += e.path().extension() == ".safetensors";
  CHECK(on_disk == weight_files.size());
  const json idx = read_json(tmp / "bf16" / io::kSafetensorsIndex);
  uint64_t total = 0;
  for (const std::string& n : out.names()) {
    CHECK(idx["weight_map"][n] == out.file_of(n).filename().string());
    CHECK(out.file_of(n).filename() == hf.file_of(n).filename());   // one output per input shard
    total += out.get(n).nbytes;
    CHECK_FALSE(n.ends_with("_scale_inv"));
  }
  CHECK(idx["weight_map"].size() == out.names().size());
  CHECK(idx["metadata"]["total_size"] == total);
  for (const model::ParamInfo& p : model::describe_params(a)) {
    if (!p.fp8) continue;
    const std::vector<float> ref = dequant_ref(hf.get(p.name), hf.get(p.name + "_scale_inv"), 128);
    const Tensor t = out.load_f32(p.name);
    int64_t diff = 0;
    for (int64_t i = 0; i < t.numel(); ++i)
      diff += t.f32()[i] != bf16_to_f32(f32_to_bf16(ref[size_t(i)]));
    CHECK_MESSAGE(diff == 0, p.name);
  }
  // Quantising the sharded BF16 result again: same shard names, scale after its weight.
  convert::quantize(opts(tmp / "bf16", tmp / "fp8"));
  io::SafetensorsDir q(tmp / "fp8");
  CHECK(q.num_files() == weight_files.size());
  for (const model::ParamInfo& p : model::describe_params(a))
    if (p.fp8) CHECK(q.file_of(p.name + "_scale_inv") == q.file_of(p.name));
}

TEST_CASE("byte-identical output across runs and thread counts") {
  TempDir tmp;
  write_model(tmp / "in", wide_args(), 21, false, /*max_shard_bytes=*/600000);
  REQUIRE(fs::exists(tmp / "in" / io::kSafetensorsIndex));
  convert::quantize(opts(tmp / "in", tmp / "a", 1));
  convert::quantize(opts(tmp / "in", tmp / "b", 2));
  const auto a = dir_bytes(tmp / "a"), b = dir_bytes(tmp / "b");
  CHECK(a.size() > 3);
  CHECK(a == b);
  convert::dequantize(opts(tmp / "a", tmp / "c"));
  convert::dequantize(opts(tmp / "b", tmp / "d"));
  CHECK(dir_bytes(tmp / "c") == dir_bytes(tmp / "d"));
  // Quantising an FP8 checkpoint again changes nothing (FP8 weights are copied with scales).
  convert::quantize(opts(tmp / "a", tmp / "e"));
  CHECK(dir_bytes(tmp / "e") == a);
}

TEST_CASE("an FP8 weight without its scale: error by default, copied with --allow-missing-scale") {
  TempDir tmp;
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 264;
  model::ParamStore ps;
  model::Transformer m(a, ps);
  ps.init(4);
  const std::string w = "model.layers.0.self_attn.o_proj.weight";
  model::testing::HfWriteOptions o;
  o.block = 128;
  o.mutate = [&](std::vector<io::TensorSource>& src) {
    std::erase_if(src, [&](const io::TensorSource& t) { return t.name == w + "_scale_inv"; });
  };
  model::testing::write_hf_checkpoint(tmp / "hf", ps, a, o);
  fs::create_directories(tmp / "outs");
  try {
    convert::dequantize(opts(tmp / "hf", tmp / "outs" / "bf16"));
    FAIL("expected FormatError");
  } catch (const FormatError& e) {
    CHECK(std::string(e.what()).find(w) != std::string::npos);
    CHECK(std::string(e.what()).find("--allow-missing-scale") != std::string::npos);
  }
  CHECK(entries(tmp / "outs").empty());
  CHECK_THROWS_AS(convert::quantize(opts(tmp / "hf", tmp / "outs" / "fp8")), FormatError);
  CHECK(entries(tmp / "outs").empty());

  convert::ConvertOptions allow = opts(tmp / "hf", tmp / "outs" / "bf16");
  allow.allow_missing_scale = true;
  const convert::ConvertStats st = convert::dequantize(allow);
  CHECK(st.missing_scale == 1);
  io::SafetensorsDir out(tmp / "outs" / "bf16");
  CHECK(out.get(w).dtype == DType::f8_e4m3);   // passed through, never silently rescaled
  CHECK(out.get("model.layers.0.self_attn.kv_b_proj.weight").dtype == DType::bf16);
}

TEST_CASE("quantize on an FP8 input keeps its quantization_config; added weights follow it") {
  // DeepSeek-V3.1 writes "scale_fmt": "ue8m0" (power-of-two scales); the official config that
  // replaced it dropped the key and turned "static" activations into "dynamic"
  TempDir tmp;
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 264;
  model::ParamStore ps;
  model::Transformer m(a, ps);
  ps.init(5);
  const std::string w = "model.layers.0.self_attn.o_proj.weight";   // left in BF16
  model::testing::HfWriteOptions o;
  o.block = 128;
  std::deque<std::vector<float>> pow2;   // the fixture's scales, rounded up to powers of two
  const auto round_scales = [&](std::vector<io::TensorSource>& src) {
    for (io::TensorSource& t : src) {
      if (!t.name.ends_with("_scale_inv")) continue;
      REQUIRE((t.dtype == DType::f32 && t.src_dtype == DType::f32 && t.data));
      const float* v = static_cast<const float*>(t.data);
      auto& r = pow2.emplace_back(v, v + shape_numel(t.shape));
      for (float& x : r) x = std::ldexp(1.0f, int(std::ceil(std::log2(x))));
      t.data = r.data();
    }
  };
  o.mutate = [&](std::vector<io::TensorSource>& src) {
    std::erase_if(src, [&](const io::TensorSource& t) { return t.name.starts_with(w); });
    src.push_back(io::TensorSource::from_tensor(w, ps.get(w).value, DType::bf16));
    round_scales(src);
  };
  model::testing::write_hf_checkpoint(tmp / "hf", ps, a, o);
  json cfg = read_json(tmp / "hf" / "config.json");
  cfg["quantization_config"]["scale_fmt"] = "ue8m0";
  cfg["quantization_config"]["activation_scheme"] = "static";
  io::write_file_atomic(tmp / "hf" / "config.json", cfg.dump(2));
  fs::create_directories(tmp / "outs");
  const convert::ConvertStats st = convert::quantize(opts(tmp / "hf", tmp / "outs" / "q"));
  CHECK(st.quantized == 1);
  CHECK(read_json(tmp / "outs" / "q" / "config.json")["quantization_config"] ==
        cfg["quantization_config"]);
  io::SafetensorsDir out(tmp / "outs" / "q");
  REQUIRE(out.get(w).dtype == DType::f8_e4m3);
  const Tensor s = io::to_f32(out.get(w + "_scale_inv"));
  for (int64_t i = 0; i < s.numel(); ++i) {
    int e = 0;
    CHECK(std::frexp(s.f32()[i], &e) == 0.5f);   // a power of two
  }
  // a block whose power-of-two scale would pass FLT_MAX / 448 (the readers' limit) is refused
  const float w0 = ps.get(w).value.f32()[0];
  ps.get(w).value.f32()[0] = 3.2e38f;   // finite in BF16
  model::testing::write_hf_checkpoint(tmp / "big", ps, a, o);
  io::write_file_atomic(tmp / "big" / "config.json", cfg.dump(2));
  CHECK_THROWS_WITH_AS(convert::quantize(opts(tmp / "big", tmp / "outs" / "big")),
                       doctest::Contains("beyond FLT_MAX / 448"), NumericsError);
  CHECK_FALSE(fs::exists(tmp / "outs" / "big"));
  ps.get(w).value.f32()[0] = w0;
  // the input file's __metadata__ keys are kept (they were replaced by {"format": "pt"})
  const std::string shard = io::SafetensorsDir(tmp / "hf").file_of(w).filename().string();
  {
    const io::SafetensorsFile in(tmp / "hf" / shard);
    std::vector<io::TensorSource> src;
    for (const std::string& n : in.names()) {
      const io::TensorView& v = in.get(n);
      src.push_back(io::TensorSource::raw(n, v.dtype, v.shape, v.data));
    }
    io::write_safetensors(tmp / "meta.safetensors", src, {{"producer", "ds-test"}});
  }
  fs::rename(tmp / "meta.safetensors", tmp / "hf" / shard);
  convert::quantize(opts(tmp / "hf", tmp / "outs" / "meta"));
  const auto meta = io::SafetensorsFile(tmp / "outs" / "meta" / shard).metadata();
  CHECK(meta.at("producer") == "ds-test");
  CHECK(meta.at("format") == "pt");
  // ue8m0 rules the scales quantize computes; a stored FP8 weight's scale is taken as it is
  // (the released V3.1's o_proj scales are not powers of two): copied byte for byte, and the
  // model loaders read it
  const std::string q = "model.layers.1.self_attn.q_b_proj.weight";
  o.mutate = [&](std::vector<io::TensorSource>& src) {
    std::erase_if(src, [&](const io::TensorSource& t) { return t.name.starts_with(w); });
    src.push_back(io::TensorSource::from_tensor(w, ps.get(w).value, DType::bf16));
    round_scales(src);
    for (io::TensorSource& t : src)
      if (t.name == q + "_scale_inv") {
        const float* v = static_cast<const float*>(t.data);
        auto& r = pow2.emplace_back(v, v + shape_numel(t.shape));
        r[0] *= 0.75f;
        t.data = r.data();
      }
  };
  model::testing::write_hf_checkpoint(tmp / "nonpow2", ps, a, o);
  io::write_file_atomic(tmp / "nonpow2" / "config.json", cfg.dump(2));
  convert::quantize(opts(tmp / "nonpow2", tmp / "outs" / "np"));
  const io::SafetensorsDir np_in(tmp / "nonpow2"), np_out(tmp / "outs" / "np");
  const io::TensorView &si = np_in.get(q + "_scale_inv"), &so = np_out.get(q + "_scale_inv");
  REQUIRE(si.nbytes == so.nbytes);
  CHECK(std::memcmp(si.data, so.data, si.nbytes) == 0);
  CHECK_NOTHROW(model::load_pretrained(tmp / "nonpow2", {.need_tokenizer = false}));
  // a scale_fmt ds does not know is refused, naming the file
  cfg["quantization_config"]["scale_fmt"] = "e8m0-pow3";
  io::write_file_atomic(tmp / "hf" / "config.json", cfg.dump(2));
  CHECK_THROWS_WITH_AS(convert::quantize(opts(tmp / "hf", tmp / "outs" / "q2")),
                       doctest::Contains("config.json: quantization_config.scale_fmt"),
                       ConfigError);
  CHECK_FALSE(fs::exists(tmp / "outs" / "q2"));
  CHECK_THROWS_AS(model::load_pretrained(tmp / "hf", {.need_tokenizer = false}), ConfigError);
  // null is absent (FP32 scales), for the converter as for the loaders
  cfg["quantization_config"]["scale_fmt"] = nullptr;
  io::write_file_atomic(tmp / "hf" / "config.json", cfg.dump(2));
  CHECK(convert::quantize(opts(tmp / "hf", tmp / "outs" / "q3")).quantized == 1);
  CHECK_NOTHROW(model::load_pretrained(tmp / "hf", {.need_tokenizer = false}));
}
