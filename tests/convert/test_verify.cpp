// ds-convert-fp8 verify (per-tensor errors, FP8 dequantised first; thresholds; missing and
// mismatched tensors; JSONL and table output) and the end-to-end property that matters: a
// quantised checkpoint loads with load_pretrained (as ds-generate / ds-eval do) and gives
// logits close to the original's.
// reference: include/ds/convert/fp8_convert.hpp; spec §3.1 (E4M3 precision), §3.3.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "../model/model_test_util.hpp"
#include "convert_test_util.hpp"
#include "ds/convert/fp8_convert.hpp"
#include "ds/core/error.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/pretrained.hpp"
#include "ds/ops/ops.hpp"

using namespace ds;
using namespace ds::convert::testing;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

convert::ConvertOptions opts(const fs::path& in, const fs::path& out) {
  convert::ConvertOptions o;
  o.model = in.string();
  o.out = out.string();
  o.threads = 1;
  return o;
}

convert::VerifyOptions vopts(const fs::path& a, const fs::path& b) {
  convert::VerifyOptions o;
  o.model = a.string();
  o.reference = b.string();
  return o;
}

std::vector<json> lines(const std::string& s) {
  std::vector<json> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
  return out;
}

// Main-model logits (B, T, V) of a checkpoint on fixed random tokens.
Tensor logits_of(const fs::path& dir, int64_t T) {
  model::Pretrained pt = model::load_pretrained(dir);
  const Tensor tok = model::testing::random_tokens(2, T - 1, pt.args.vocab_size, 99);   // (2, T)
  Tensor logits;
  ops::Context ctx;
  pt.model->forward_logits(ctx, tok, logits);
  return logits;
}

}  // namespace

TEST_CASE("verify: FP8 against its source within the E4M3 bound; identical checkpoints") {
  TempDir tmp;
  const model::ModelArgs a = wide_args();
  write_model(tmp / "in", a, 13);
  convert::quantize(opts(tmp / "in", tmp / "fp8"));

  std::ostringstream out;
  const convert::VerifyReport r = convert::verify(vopts(tmp / "fp8", tmp / "in"), out);
  CHECK(r.ok());
  const auto ls = lines(out.str());
  REQUIRE(ls.size() == r.tensors.size() + 1);
  CHECK(ls.back()["summary"]["ok"] == true);
  CHECK(ls.back()["summary"]["compared"] == r.compared);
  std::set<std::string> fp8;
  for (const model::ParamInfo& p : model::describe_params(a))
    if (p.fp8) fp8.insert(p.name);
  int64_t n_fp8 = 0;
  for (const convert::TensorDiff& d : r.tensors) {
    CHECK_FALSE(d.name.ends_with("_scale_inv"));   // consumed by their weights
    CHECK(d.status == "ok");
    if (fp8.count(d.name)) {
      ++n_fp8;
      CHECK(d.dtype == "F8_E4M3");
      CHECK(d.reference_dtype == "F32");
      // Half a step at the top binade [256, 448] is 16 codes' worth of s = amax / 448.
      CHECK(d.max_rel_error <= 16.0 / 448.0 * (1 + 1e-5));
      CHECK(d.max_rel_error > 0);
      CHECK(d.rms_rel_error < 0.05);
    } else {
      CHECK(d.max_abs_error == 0);
    }
  }
  CHECK(n_fp8 == int64_t(fp8.size()));

  const convert::VerifyReport same = convert::compare_checkpoints(vopts(tmp / "in", tmp / "in"));
  CHECK(same.ok());
  CHECK(same.max_abs_error == 0);

  std::ostringstream table;
  convert::VerifyOptions t = vopts(tmp / "fp8", tmp / "in");
  t.format = "table";
  convert::verify(t, table);
  CHECK(table.str().find("max_rel") != std::string::npos);
  CHECK(table.str().find(": OK") != std::string::npos);
}

TEST_CASE("verify: thresholds, missing tensors and shape mismatches fail after the report") {
  TempDir tmp;
  write_model(tmp / "in", wide_args(), 13);
  convert::quantize(opts(tmp / "in", tmp / "fp8"));

  convert::VerifyOptions o = vopts(tmp / "fp8", tmp / "in");
  o.max_rel_error = 1e-3;
  std::ostringstream out;
  CHECK_THROWS_AS(convert::verify(o, out), NumericsError);
  const auto ls = lines(out.str());
  CHECK(ls.back()["summary"]["ok"] == false);
  CHECK(ls.back()["summary"]["exceeded"].get<int64_t>() > 0);
  CHECK(ls.back()["summary"]["max_rel_error_limit"] == 1e-3);
  o.max_rel_error = 0.04;
  o.max_abs_error = 1.0;
  CHECK(convert::compare_checkpoints(o).ok());
  o.max_abs_error = 0;
  CHECK(convert::compare_checkpoints(o).exceeded > 0);

  // Another model: the MTP layer is missing and the vocabulary differs.
  model::ModelArgs b = wide_args();
  b.n_mtp_layers = 0;
  b.vocab_size = 280;
  write_model(tmp / "other", b, 13);
  std::ostringstream out2;
  CHECK_THROWS_AS(convert::verify(vopts(tmp / "other", tmp / "in"), out2), FormatError);
  const convert::VerifyReport r = convert::compare_checkpoints(vopts(tmp / "other", tmp / "in"));
  CHECK(r.missing_in_model > 0);
  CHECK(r.missing_in_reference == 0);
  CHECK(r.shape_mismatch == 2);   // embedding and head
  bool listed = false;
  for (const json& l : lines(out2.str()))
    listed = listed || (l.value("tensor", "") == "model.embed_tokens.weight" &&
                        l["status"] == "shape_mismatch");
  CHECK(listed);
}

TEST_CASE("verify: an all-zero reference gives an infinite relative error, written as \"inf\"") {
  TempDir tmp;
  const float a[4] = {0, 0.5f, 0, 0}, z[4] = {0, 0, 0, 0};
  io::write_safetensors(tmp / "a.safetensors", {io::TensorSource::raw("x", DType::f32, {2, 2}, a)});
  io::write_safetensors(tmp / "z.safetensors", {io::TensorSource::raw("x", DType::f32, {2, 2}, z)});
  std::ostringstream out;
  convert::verify(vopts(tmp / "a.safetensors", tmp / "z.safetensors"), out);
  const auto ls = lines(out.str());
  REQUIRE(ls.size() == 2);
  CHECK(ls[0]["max_abs_error"] == 0.5);
  CHECK(ls[0]["max_rel_error"] == "inf");   // not null, which nlohmann writes for infinity
  CHECK(ls[0]["rms_rel_error"] == "inf");
  CHECK(ls[1]["summary"]["max_rel_error"] == "inf");
  CHECK(ls[1]["summary"]["max_rel_error_limit"].is_null());   // null: no limit
  convert::VerifyOptions o = vopts(tmp / "a.safetensors", tmp / "z.safetensors");
  o.max_rel_error = 1e9;
  std::ostringstream out2;
  CHECK_THROWS_AS(convert::verify(o, out2), NumericsError);
}

TEST_CASE(
    "a quantised checkpoint loads like ds-generate / ds-eval do, logits close to the original") {
  // Tolerance, per position: the relative RMS of the logit difference. Each FP8 weight has a
  // relative rounding error of at most 2^-4 per element, about 2.6% RMS (uniform over a 3-bit
  // mantissa); errors are independent across elements, so every quantised GEMM adds about that
  // much to its output, and a position's path here crosses ~10 of them (q_a, q_b, kv_a, kv_b,
  // o, gate/up/down of the FFN, in 2 layers): ~9% measured, so the median must stay under 15%.
  // A position whose routed experts change (top-k is discontinuous) can differ by O(1); at most
  // 10% of positions may exceed 25%. Greedy predictions agree on at least 75% of positions
  // (random weights give nearly flat logits, so argmax is fragile).
  TempDir tmp;
  const model::ModelArgs a = wide_args();
  write_model(tmp / "in", a, 17);
  const convert::ConvertStats st = convert::quantize(opts(tmp / "in", tmp / "fp8"));
  const model::Pretrained pt = model::load_pretrained(tmp / "fp8");
  CHECK(pt.stats.fp8_dequantised == st.quantized);
  CHECK(pt.quant.fp8);
  CHECK(pt.args.n_mtp_layers == 1);

  const int64_t T = 24;
  const Tensor l0 = logits_of(tmp / "in", T), l1 = logits_of(tmp / "fp8", T);
  REQUIRE(l0.shape() == l1.shape());
  const int64_t V = a.vocab_size, rows = l0.numel() / V;
  std::vector<double> rel;
  double n2 = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float *x = l0.f32() + r * V, *y = l1.f32() + r * V;
    agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
    double rd = 0, rn = 0;
    for (int64_t v = 0; v < V; ++v) {
      rd += double(x[v] - y[v]) * (x[v] - y[v]);
      rn += double(x[v]) * x[v];
    }
    n2 += rn;
    rel.push_back(std::sqrt(rd / rn));
  }
  std::vector<double> sorted = rel;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const auto far = std::count_if(rel.begin(), rel.end(), [](double v) { return v > 0.25; });
  MESSAGE("logits: median relative RMS difference ", median, ", ", far, "/", rows,
          " positions above 0.25, argmax agreement ", agree, "/", rows);
  CHECK(median > 0);
  CHECK(median < 0.15);
  CHECK(far * 10 <= rows);
  CHECK(agree * 4 >= rows * 3);

  // The dequantised BF16 checkpoint gives the FP8 checkpoint's logits up to BF16 rounding.
  convert::dequantize(opts(tmp / "fp8", tmp / "bf16"));
  const Tensor l2 = logits_of(tmp / "bf16", T);
  double e2 = 0;
  for (int64_t i = 0; i < l1.numel(); ++i)
    e2 += double(l1.f32()[i] - l2.f32()[i]) * (l1.f32()[i] - l2.f32()[i]);
  CHECK(std::sqrt(e2 / n2) < 0.02);
}
