// ds-convert-fp8 error cases, each a one-line ds::Error naming the file or tensor and leaving
// nothing at OUT or beside it: OUT exists (without --force), OUT inside IN, a scale of the
// wrong shape, a scale without an FP8 weight, F8_E5M2, a non-finite weight, a weight whose
// shape differs from config.json, an FP8 input with another block size, no config.json, a
// missing or unexpected tensor, a NaN / zero / negative scale, an E4M3 NaN code, a signal,
// an integer tensor, a dequantised value past BF16's range.
// Also the streaming safetensors writer: same bytes as write_safetensors, misuse detected,
// nothing published without finish(); release_mapped_pages keeps the mapping readable.
// reference: include/ds/convert/fp8_convert.hpp, include/ds/io/safetensors.hpp.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <cmath>
#include <sstream>

#include "convert_test_util.hpp"
#include "ds/convert/fp8_convert.hpp"
#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"

using namespace ds;
using namespace ds::convert::testing;
namespace fs = std::filesystem;

namespace {

convert::ConvertOptions opts(const fs::path& in, const fs::path& out) {
  convert::ConvertOptions o;
  o.model = in.string();
  o.out = out.string();
  o.threads = 1;
  return o;
}

// Runs `f`, expects error type E whose message contains `needle`, and an empty `parent`.
template <class E, class F>
void expect_error(F f, const std::string& needle, const fs::path& parent) {
  try {
    f();
    FAIL("expected an error mentioning " << needle);
  } catch (const E& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find('\n') == std::string::npos, msg);
  }
  CHECK(entries(parent).empty());
}

model::ModelArgs micro() {
  model::ModelArgs a = model::testing::micro_args();
  a.vocab_size = 264;
  return a;
}

// An HF-layout FP8 checkpoint of the micro model (block 128 unless told), edited by `mutate`.
void write_fp8(const fs::path& dir, std::function<void(std::vector<io::TensorSource>&)> mutate,
               int64_t block = 128) {
  model::ParamStore ps;
  model::Transformer m(micro(), ps);
  ps.init(8);
  model::testing::HfWriteOptions o;
  o.block = block;
  o.mutate = std::move(mutate);
  model::testing::write_hf_checkpoint(dir, ps, micro(), o);
}

const std::string kW = "model.layers.1.self_attn.q_b_proj.weight";

}  // namespace

TEST_CASE("OUT exists: refused without --force, replaced atomically with it; OUT inside IN") {
  TempDir tmp;
  write_model(tmp / "in", micro(), 1);
  fs::create_directories(tmp / "outs" / "fp8");
  io::write_file_atomic(tmp / "outs" / "fp8" / "keep.txt", "old");
  try {
    convert::quantize(opts(tmp / "in", tmp / "outs" / "fp8"));
    FAIL("expected UsageError");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("--force") != std::string::npos);
  }
  CHECK(entries(tmp / "outs") == std::vector<std::string>{"fp8"});
  CHECK(io::read_file(tmp / "outs" / "fp8" / "keep.txt") == "old");
  convert::ConvertOptions f = opts(tmp / "in", tmp / "outs" / "fp8");
  f.force = true;
  convert::quantize(f);
  CHECK_FALSE(fs::exists(tmp / "outs" / "fp8" / "keep.txt"));
  CHECK(fs::exists(tmp / "outs" / "fp8" / "model.safetensors"));
  CHECK(entries(tmp / "outs") == std::vector<std::string>{"fp8"});

  f.out = (tmp / "in" / "sub").string();
  CHECK_THROWS_AS(convert::quantize(f), UsageError);
  f.out = (tmp / "in").string();
  CHECK_THROWS_AS(convert::quantize(f), UsageError);
  CHECK_FALSE(fs::exists(tmp / "in" / "sub"));

  // an input file that is a link into OUT: --force would destroy the input with OUT
  fs::create_directories(tmp / "linked");
  for (const fs::directory_entry& e : fs::directory_iterator(tmp / "in"))
    if (e.path().filename() == "model.safetensors")
      fs::create_symlink(tmp / "outs" / "fp8" / "kept.safetensors",
                         tmp / "linked" / e.path().filename());
    else
      fs::copy_file(e.path(), tmp / "linked" / e.path().filename());
  fs::copy_file(tmp / "in" / "model.safetensors", tmp / "outs" / "fp8" / "kept.safetensors");
  f.model = (tmp / "linked").string();
  f.out = (tmp / "outs" / "fp8").string();
  try {
    convert::quantize(f);
    FAIL("expected UsageError");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("model.safetensors links into it") != std::string::npos);
  }
  CHECK(fs::exists(tmp / "outs" / "fp8" / "kept.safetensors"));
  // OUT a dangling link: refused before the work (its rename would fail after it)
  fs::create_symlink(tmp / "missing", tmp / "dangling");
  f.model = (tmp / "in").string();
  f.out = (tmp / "dangling").string();
  CHECK_THROWS_WITH_AS(convert::quantize(f), doctest::Contains("a symbolic link to a missing"),
                       UsageError);
  CHECK_FALSE(fs::exists(tmp / "missing"));
}

TEST_CASE("a signal stops the conversion; nothing is published, nothing left beside OUT") {
  TempDir tmp;
  write_model(tmp / "in", micro(), 1);
  fs::create_directories(tmp / "outs");
  InterruptScope outer;   // the converter's own scope nests in it and keeps its flag
  raise(SIGTERM);
  try {
    convert::quantize(opts(tmp / "in", tmp / "outs" / "fp8"));
    FAIL("expected Interrupted");
  } catch (const Interrupted& e) {
    CHECK(e.exit_code() == 143);
  }
  CHECK(entries(tmp / "outs").empty());   // neither OUT nor its hidden temporary directory
}

TEST_CASE("malformed FP8 inputs: wrong-shaped scale, orphan scale, F8_E5M2, block size") {
  TempDir tmp;
  fs::create_directories(tmp / "outs");
  static std::vector<float> two = {1.0f, 1.0f};
  static std::vector<uint8_t> bytes(64, 0x38);

  write_fp8(tmp / "shape", [](std::vector<io::TensorSource>& src) {
    for (auto& t : src)
      if (t.name == kW + "_scale_inv")
        t = io::TensorSource::raw(t.name, DType::f32, {1, 2}, two.data());
  });
  expect_error<FormatError>([&] { convert::dequantize(opts(tmp / "shape", tmp / "outs" / "o")); },
                            kW + "_scale_inv", tmp / "outs");

  const std::string orphan = "model.layers.0.mlp.gate_proj.weight_scale_inv";
  write_fp8(tmp / "orphan", [&](std::vector<io::TensorSource>& src) {
    std::erase_if(src, [](const io::TensorSource& t) {   // the weight becomes F32, its scale stays
      return t.name == "model.layers.0.mlp.gate_proj.weight";
    });
    static std::vector<float> w(24 * 16, 0.5f);
    src.push_back(io::TensorSource::raw("model.layers.0.mlp.gate_proj.weight", DType::f32, {24, 16},
                                        w.data()));
  });
  expect_error<FormatError>([&] { convert::dequantize(opts(tmp / "orphan", tmp / "outs" / "o")); },
                            orphan, tmp / "outs");
  expect_error<FormatError>([&] { convert::quantize(opts(tmp / "orphan", tmp / "outs" / "o")); },
                            orphan, tmp / "outs");

  write_fp8(tmp / "e5m2", [](std::vector<io::TensorSource>& src) {
    src.push_back(io::TensorSource::raw("extra.weight", DType::f8_e5m2, {8, 8}, bytes.data()));
  });
  expect_error<FormatError>([&] { convert::dequantize(opts(tmp / "e5m2", tmp / "outs" / "o")); },
                            "extra.weight", tmp / "outs");

  write_fp8(tmp / "b64", nullptr, 64);
  expect_error<FormatError>([&] { convert::quantize(opts(tmp / "b64", tmp / "outs" / "o")); },
                            "dequantize it first", tmp / "outs");
  // ... but it dequantises with its own block size.
  const convert::ConvertStats st = convert::dequantize(opts(tmp / "b64", tmp / "outs" / "o"));
  CHECK(st.dequantized > 0);
}

TEST_CASE("quantize errors: non-finite weight, shape differs from config.json, no config.json") {
  TempDir tmp;
  fs::create_directories(tmp / "outs");
  {
    model::ParamStore ps;
    model::Transformer m(micro(), ps);
    ps.init(2);
    ps.get(kW).value.f32()[7] = std::nanf("");
    fs::create_directories(tmp / "nan");
    model::save_model(ps, micro(), tmp / "nan", false);
  }
  expect_error<NumericsError>([&] { convert::quantize(opts(tmp / "nan", tmp / "outs" / "o")); },
                              kW, tmp / "outs");

  write_model(tmp / "shape", micro(), 3);
  model::ModelArgs other = micro();
  other.q_lora_rank = 12;
  io::write_file_atomic(tmp / "shape" / "config.json", model::to_hf_json(other));
  expect_error<FormatError>([&] { convert::quantize(opts(tmp / "shape", tmp / "outs" / "o")); },
                            "q_a_proj.weight", tmp / "outs");

  write_model(tmp / "nocfg", micro(), 3);
  fs::remove(tmp / "nocfg" / "config.json");
  expect_error<FormatError>([&] { convert::quantize(opts(tmp / "nocfg", tmp / "outs" / "o")); },
                            "config.json", tmp / "outs");
  expect_error<IoError>([&] { convert::quantize(opts(tmp / "absent", tmp / "outs" / "o")); },
                        "absent", tmp / "outs");
}

TEST_CASE("streaming writer: same bytes as write_safetensors; misuse; nothing without finish") {
  TempDir tmp;
  std::vector<float> f(15);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(i) * 0.25f;
  std::vector<uint8_t> q = {1, 2, 3, 4, 5, 6, 7};
  std::vector<uint16_t> h = {0x3f80, 0x4000, 0xbf80};
  const std::vector<io::TensorSource> src = {
      io::TensorSource::raw("a.weight", DType::f8_e4m3, {7}, q.data()),
      io::TensorSource::raw("a.weight_scale_inv", DType::f32, {3, 5}, f.data()),
      io::TensorSource::raw("empty", DType::f32, {0, 4}, nullptr),
      io::TensorSource::raw("b", DType::bf16, {3}, h.data())};
  io::write_safetensors(tmp / "ref.safetensors", src, {{"note", "x"}});

  std::vector<io::TensorDecl> decls;
  for (const auto& t : src) decls.push_back({t.name, t.dtype, t.shape});
  {
    io::SafetensorsStreamWriter w(tmp / "stream.safetensors", decls, {{"note", "x"}});
    w.begin("a.weight");
    w.write(q.data(), 3);
    w.write(q.data() + 3, 4);
    w.begin("a.weight_scale_inv");
    w.write(f.data(), f.size() * 4);
    w.begin("empty");
    w.begin("b");
    w.write(h.data(), 6);
    CHECK(w.data_bytes() == 7 + 60 + 6);
    w.finish();
  }
  CHECK(io::read_file(tmp / "stream.safetensors") == io::read_file(tmp / "ref.safetensors"));
  io::SafetensorsFile rd(tmp / "stream.safetensors");
  CHECK(rd.metadata().at("note") == "x");

  {
    io::SafetensorsStreamWriter w(tmp / "bad.safetensors", decls);
    CHECK_THROWS_AS(w.begin("b"), InternalError);            // out of order
    w.begin("a.weight");
    CHECK_THROWS_AS(w.write(q.data(), 8), InternalError);    // beyond the declared size
    w.write(q.data(), 6);
    CHECK_THROWS_AS(w.begin("a.weight_scale_inv"), InternalError);   // one byte missing
  }
  {
    io::SafetensorsStreamWriter w(tmp / "short.safetensors", decls);
    w.begin("a.weight");
    w.write(q.data(), 7);
    CHECK_THROWS_AS(w.finish(), InternalError);               // tensors never written
  }
  CHECK(entries(tmp.path()) == std::vector<std::string>{"ref.safetensors", "stream.safetensors"});

  // Released pages are read back from the file.
  const io::TensorView& v = rd.get("a.weight_scale_inv");
  io::release_mapped_pages(v);
  CHECK(rd.load_f32("a.weight_scale_inv").f32()[14] == 3.5f);
}

TEST_CASE("weights that do not match config.json; corrupt FP8 scales and codes") {
  TempDir tmp;
  fs::create_directories(tmp / "outs");
  const std::string o_proj = "model.layers.1.self_attn.o_proj.weight";
  write_fp8(tmp / "missing", [&](std::vector<io::TensorSource>& src) {
    std::erase_if(src, [&](const io::TensorSource& t) { return t.name.starts_with(o_proj); });
  });
  for (auto run : {convert::quantize, convert::dequantize})
    expect_error<FormatError>([&] { run(opts(tmp / "missing", tmp / "outs" / "o")); },
                              "do not match config.json: 1 missing: " + o_proj, tmp / "outs");
  static std::vector<float> four(4, 1.0f);
  const std::string past = "model.layers.3.mlp.gate_proj.weight";   // past the MTP layer 2
  write_fp8(tmp / "extra", [&](std::vector<io::TensorSource>& src) {
    src.push_back(io::TensorSource::raw(past, DType::f32, {4}, four.data()));
  });
  expect_error<FormatError>([&] { convert::dequantize(opts(tmp / "extra", tmp / "outs" / "o")); },
                            "1 unexpected: " + past, tmp / "outs");
  // An absent MTP layer is not a defect (the loaders run without it).
  write_fp8(tmp / "nomtp", [](std::vector<io::TensorSource>& src) {
    std::erase_if(src,
                  [](const io::TensorSource& t) { return t.name.starts_with("model.layers.2."); });
  });
  CHECK(convert::dequantize(opts(tmp / "nomtp", tmp / "outs" / "nomtp")).dequantized > 0);
  fs::remove_all(tmp / "outs" / "nomtp");

  // Scales must be finite and positive; E4M3 NaN codes (0x7f, 0xff) are corrupt data.
  static std::vector<float> bad_scale;
  for (float bad : {std::nanf(""), -1.0f, 0.0f}) {
    write_fp8(tmp / "scale", [&](std::vector<io::TensorSource>& src) {
      for (auto& t : src)
        if (t.name == kW + "_scale_inv") {
          bad_scale.assign(size_t(shape_numel(t.shape)), 0.01f);
          bad_scale.back() = bad;
          t = io::TensorSource::raw(t.name, DType::f32, t.shape, bad_scale.data());
        }
    });
    expect_error<FormatError>(
        [&] { convert::dequantize(opts(tmp / "scale", tmp / "outs" / "o")); },
        kW + "_scale_inv: block", tmp / "outs");
    // quantize copies FP8 weights through: checked as the loaders check them (it published
    // them with exit 0); verify names the file
    expect_error<FormatError>(
        [&] { convert::quantize(opts(tmp / "scale", tmp / "outs" / "o")); },
        ".safetensors: ", tmp / "outs");
    expect_error<FormatError>(
        [&] { convert::quantize(opts(tmp / "scale", tmp / "outs" / "o")); },
        kW + "_scale_inv", tmp / "outs");
    std::ostringstream report;
    expect_error<FormatError>(
        [&] {
          convert::verify({(tmp / "scale").string(), (tmp / "scale").string()}, report);
        },
        (tmp / "scale").string() + "/model", tmp / "outs");
    fs::remove_all(tmp / "scale");
  }
  static std::vector<uint8_t> codes;
  write_fp8(tmp / "code", [&](std::vector<io::TensorSource>& src) {
    for (auto& t : src)
      if (t.name == kW) {
        codes.assign(size_t(shape_numel(t.shape)), 0x38);
        codes[5] = 0xff;
        t = io::TensorSource::raw(t.name, DType::f8_e4m3, t.shape, codes.data());
      }
  });
  expect_error<FormatError>([&] { convert::dequantize(opts(tmp / "code", tmp / "outs" / "o")); },
                            kW + ": E4M3 NaN code 0xff at row 0 column 5",
                            tmp / "outs");
  expect_error<FormatError>([&] { convert::quantize(opts(tmp / "code", tmp / "outs" / "o")); },
                            kW + ": E4M3 NaN code 0xff at row 0 column 5",
                            tmp / "outs");

  // Tensors copied through are checked too: shapes against config.json (the output did not
  // load) and non-finite values (published with exit 0).
  static std::vector<float> norm(16, 1.0f);
  write_fp8(tmp / "shape", [&](std::vector<io::TensorSource>& src) {
    for (auto& t : src)
      if (t.name == "model.norm.weight")
        t = io::TensorSource::raw(t.name, DType::f32, {8}, norm.data());
  });
  for (auto run : {convert::quantize, convert::dequantize})
    expect_error<FormatError>([&] { run(opts(tmp / "shape", tmp / "outs" / "o")); },
                              "1 wrong-shaped: model.norm.weight [8] (config.json implies [16])",
                              tmp / "outs");
  static std::vector<float> nan_norm(16, 1.0f);
  nan_norm[3] = std::nanf("");
  write_fp8(tmp / "nan", [&](std::vector<io::TensorSource>& src) {
    for (auto& t : src)
      if (t.name == "model.norm.weight")
        t = io::TensorSource::raw(t.name, DType::f32, t.shape, nan_norm.data());
  });
  for (auto run : {convert::quantize, convert::dequantize})
    expect_error<FormatError>([&] { run(opts(tmp / "nan", tmp / "outs" / "o")); },
                              "tensor model.norm.weight: a non-finite value (NaN or infinity) at "
                              "element 3", tmp / "outs");
}

TEST_CASE("copied tensors of a dtype no loader reads; a dequantised value past BF16's range") {
  TempDir tmp;
  fs::create_directories(tmp / "outs");
  static std::vector<int32_t> ints(16, 1);
  write_fp8(tmp / "i32", [&](std::vector<io::TensorSource>& src) {
    for (auto& t : src)
      if (t.name == "model.norm.weight")
        t = io::TensorSource::raw(t.name, DType::i32, t.shape, ints.data());
  });
  for (auto run : {convert::quantize, convert::dequantize})
    expect_error<FormatError>([&] { run(opts(tmp / "i32", tmp / "outs" / "o")); },
                              "tensor model.norm.weight: dtype I32 is not one the loaders read",
                              tmp / "outs");
  // 448 x 7.59e35 is below FLT_MAX (a valid scale) but rounds to BF16 infinity
  static std::vector<uint8_t> codes;
  static std::vector<float> scales;
  write_fp8(tmp / "big", [&](std::vector<io::TensorSource>& src) {
    for (auto& t : src) {
      if (t.name == kW) {
        codes.assign(size_t(shape_numel(t.shape)), 0x38);
        codes[3] = 0x7e;   // 448
        t = io::TensorSource::raw(t.name, DType::f8_e4m3, t.shape, codes.data());
      } else if (t.name == kW + "_scale_inv") {
        scales.assign(size_t(shape_numel(t.shape)), 0.01f);
        scales[0] = 7.59e35f;
        t = io::TensorSource::raw(t.name, DType::f32, t.shape, scales.data());
      }
    }
  });
  expect_error<NumericsError>([&] { convert::dequantize(opts(tmp / "big", tmp / "outs" / "o")); },
                              kW + ": element (0, 3) is", tmp / "outs");
}

