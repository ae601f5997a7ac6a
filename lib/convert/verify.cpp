// ds-convert-fp8 verify: per-tensor maximum absolute and relative error between two
// checkpoints, streamed in row bands. FP8 weights are dequantised with their scales first
// (the loader's rule, spec §3.3), so an FP8 checkpoint compares directly with its BF16 source;
// scales consumed that way are not listed. Relative errors are taken against the reference
// tensor's largest magnitude (max |a - b| / max |b|), which stays meaningful where b is zero.
// reference: DeepGEMM / llm.c style "TENSOR OK, maxdiff" reports; docs/formats.md.
#include <spdlog/spdlog.h>

#include <cmath>
#include <map>
#include <numeric>
#include <ostream>

#include "convert_internal.hpp"
#include "ds/core/error.hpp"

namespace ds::convert {

using namespace detail;

namespace {

// A tensor as the comparison sees it: its bytes and, for an FP8 weight, its scale.
struct Logical {
  const io::TensorView* v = nullptr;
  const io::TensorView* scale = nullptr;   // FP8 with a scale
  bool raw_codes = false;                  // FP8 without a scale (allow_missing_scale)
};

std::map<std::string, Logical> logical_tensors(const InputCheckpoint& in,
                                               const VerifyOptions& opt) {
  std::map<std::string, Logical> out;
  for (const std::string& name : in.st->names()) {
    const io::TensorView& v = in.st->get(name);
    const std::string w = weight_of_scale(name);
    if (!w.empty() && in.st->contains(w) && in.st->get(w).dtype == DType::f8_e4m3) continue;
    Logical l{&v, nullptr, false};
    if (v.dtype == DType::f8_e4m3) {
      l.scale = find_scale(in, v);
      if (!l.scale) {
        DS_CHECK_AS(FormatError, opt.allow_missing_scale,
                    "{}: tensor {} is F8_E4M3 but its scale is missing (--allow-missing-scale "
                    "compares the unscaled codes)", in.st->file_of(name).string(), name);
        l.raw_codes = true;
      }
    } else {
      DS_CHECK_AS(FormatError,
                  v.dtype == DType::f32 || v.dtype == DType::bf16 || v.dtype == DType::f16,
                  "{}: tensor {}: cannot compare {} (F32, BF16, F16, F8_E4M3 only)",
                  in.st->file_of(name).string(), name, dtype_name(v.dtype));
    }
    out.emplace(name, l);
  }
  return out;
}

// Rows [r0, r1) of a logical tensor as F32.
Tensor read_rows(const InputCheckpoint& in, const Logical& l, int64_t r0, int64_t r1) {
  if (l.scale) return dequantize_rows(in, *l.v, *l.scale, r0, r1);
  if (!l.raw_codes) return rows_f32(*l.v, r0, r1);
  const io::TensorView b = row_view(*l.v, r0, r1);
  Tensor t = Tensor::empty(b.shape, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = e4m3_to_f32(b.data[i]);
  return t;
}

struct Acc {
  double max_abs = 0, amax_b = 0, sum_d2 = 0, sum_b2 = 0;
  int64_t nonfinite = 0;
  void add(const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
        const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
        nonfinite += same ? 0 : 1;
        continue;
      }
      const double d = std::fabs(double(a[i]) - double(b[i])), bb = std::fabs(double(b[i]));
      max_abs = std::max(max_abs, d);
      amax_b = std::max(amax_b, bb);
      sum_d2 += d * d;
      sum_b2 += bb * bb;
    }
  }
};

double ratio(double num, double den) {
  if (num == 0) return 0;
  return den > 0 ? num / den : std::numeric_limits<double>::infinity();
}

int64_t align_of(const InputCheckpoint& in, const Logical& l) {
  return l.scale ? in.block_rows : 1;
}

void compare(const InputCheckpoint& a, const Logical& la, const InputCheckpoint& b,
             const Logical& lb, TensorDiff& d) {
  const auto [rows, cols] = matrix_dims(la.v->shape);
  const int64_t band = band_rows(cols, std::lcm(align_of(a, la), align_of(b, lb)));
  Acc acc;
  for (int64_t r0 = 0; r0 < rows; r0 += band) {
    const int64_t r1 = std::min(rows, r0 + band);
    const Tensor ta = read_rows(a, la, r0, r1), tb = read_rows(b, lb, r0, r1);
    acc.add(ta.f32(), tb.f32(), ta.numel());
    io::release_mapped_pages(row_view(*la.v, r0, r1));
    io::release_mapped_pages(row_view(*lb.v, r0, r1));
  }
  cpu_cache_release();   // band buffers of every size would otherwise stay cached
  d.max_abs_error = acc.max_abs;
  d.reference_amax = acc.amax_b;
  d.max_rel_error = ratio(acc.max_abs, acc.amax_b);
  d.rms_rel_error = ratio(std::sqrt(acc.sum_d2), std::sqrt(acc.sum_b2));
  d.nonfinite_mismatches = acc.nonfinite;
}

bool exceeds(const TensorDiff& d, const VerifyOptions& opt) {
  return (opt.max_abs_error >= 0 && d.max_abs_error > opt.max_abs_error) ||
         (opt.max_rel_error >= 0 && d.max_rel_error > opt.max_rel_error);
}

// A number, or the string "inf" / "nan" where JSON has none (nlohmann would write null, which
// the summary's limits use for "none"): a relative error against an all-zero reference.
nlohmann::ordered_json number(double x) {
  if (std::isfinite(x)) return x;
  return std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf";
}

nlohmann::ordered_json diff_json(const TensorDiff& d) {
  nlohmann::ordered_json j{{"tensor", d.name}, {"status", d.status}};
  if (!d.dtype.empty()) j["shape"] = d.shape, j["dtype"] = d.dtype;
  if (!d.reference_dtype.empty())
    j["reference_shape"] = d.reference_shape, j["reference_dtype"] = d.reference_dtype;
  if (d.status == "ok" || d.status == "exceeds" || d.status == "nonfinite") {
    j["max_abs_error"] = number(d.max_abs_error);
    j["max_rel_error"] = number(d.max_rel_error);
    j["rms_rel_error"] = number(d.rms_rel_error);
    j["reference_amax"] = number(d.reference_amax);
    j["nonfinite_mismatches"] = d.nonfinite_mismatches;
  }
  return j;
}

nlohmann::ordered_json summary_json(const VerifyReport& r, const VerifyOptions& opt) {
  auto limit = [](double x) {
    return x >= 0 ? nlohmann::ordered_json(x) : nlohmann::ordered_json();
  };
  return {{"summary",
           {{"model", opt.model}, {"reference", opt.reference}, {"compared", r.compared},
            {"exceeded", r.exceeded}, {"nonfinite", r.nonfinite},
            {"missing_in_model", r.missing_in_model},
            {"missing_in_reference", r.missing_in_reference},
            {"shape_mismatch", r.shape_mismatch}, {"max_abs_error", number(r.max_abs_error)},
            {"max_rel_error", number(r.max_rel_error)},
            {"max_abs_error_limit", limit(opt.max_abs_error)},
            {"max_rel_error_limit", limit(opt.max_rel_error)}, {"ok", r.ok()}}}};
}

void print_table(const VerifyReport& r, const VerifyOptions& opt, std::ostream& out) {
  size_t w = 6;
  for (const TensorDiff& d : r.tensors) w = std::max(w, d.name.size());
  out << fmt::format("{:<{}}  {:<20}  {:<17}  {:<16}  {:>11}  {:>11}  {:>11}\n", "tensor", w,
                     "status", "dtype (ref)", "shape", "max_abs", "max_rel", "rms_rel");
  for (const TensorDiff& d : r.tensors) {
    const std::string dt = fmt::format("{} ({})", d.dtype.empty() ? "-" : d.dtype,
                                       d.reference_dtype.empty() ? "-" : d.reference_dtype);
    const bool num = d.status == "ok" || d.status == "exceeds" || d.status == "nonfinite";
    out << fmt::format("{:<{}}  {:<20}  {:<17}  {:<16}  {:>11}  {:>11}  {:>11}\n", d.name, w,
                       d.status, dt, shape_str(d.dtype.empty() ? d.reference_shape : d.shape),
                       num ? fmt::format("{:.4e}", d.max_abs_error) : "-",
                       num ? fmt::format("{:.4e}", d.max_rel_error) : "-",
                       num ? fmt::format("{:.4e}", d.rms_rel_error) : "-");
  }
  out << fmt::format("{} compared, {} exceeded, {} non-finite, {} missing in model, {} missing "
                     "in reference, {} shape mismatches; max abs {:.4e}, max rel {:.4e}: {}\n",
                     r.compared, r.exceeded, r.nonfinite, r.missing_in_model,
                     r.missing_in_reference, r.shape_mismatch, r.max_abs_error, r.max_rel_error,
                     r.ok() ? "OK" : "FAIL");
  (void)opt;
}

}  // namespace

VerifyReport compare_checkpoints(const VerifyOptions& opt) {
  DS_CHECK_AS(UsageError, !opt.model.empty() && !opt.reference.empty(),
              "--model and --reference are required");
  DS_CHECK_AS(UsageError, opt.format == "jsonl" || opt.format == "table",
              "--format must be jsonl or table (got {})", opt.format);
  // a NaN limit would compare false and switch the check off
  DS_CHECK_AS(UsageError, !std::isnan(opt.max_abs_error) && !std::isnan(opt.max_rel_error),
              "--max-abs-error / --max-rel-error: NaN is not a limit");
  const InputCheckpoint a = open_input(opt.model, false), b = open_input(opt.reference, false);
  const auto ta = logical_tensors(a, opt), tb = logical_tensors(b, opt);
  std::map<std::string, int> names;
  for (const auto& [n, l] : ta) names[n] |= 1;
  for (const auto& [n, l] : tb) names[n] |= 2;
  VerifyReport r;
  for (const auto& [name, sides] : names) {
    TensorDiff d;
    d.name = name;
    if (sides & 1) d.shape = ta.at(name).v->shape, d.dtype = dtype_name(ta.at(name).v->dtype);
    if (sides & 2)
      d.reference_shape = tb.at(name).v->shape,
      d.reference_dtype = dtype_name(tb.at(name).v->dtype);
    if (sides == 2) {
      d.status = "missing_in_model";
      ++r.missing_in_model;
    } else if (sides == 1) {
      d.status = "missing_in_reference";
      ++r.missing_in_reference;
    } else if (d.shape != d.reference_shape) {
      d.status = "shape_mismatch";
      ++r.shape_mismatch;
    } else {
      compare(a, ta.at(name), b, tb.at(name), d);
      ++r.compared;
      r.max_abs_error = std::max(r.max_abs_error, d.max_abs_error);
      r.max_rel_error = std::max(r.max_rel_error, d.max_rel_error);
      d.status = d.nonfinite_mismatches > 0 ? "nonfinite" : exceeds(d, opt) ? "exceeds" : "ok";
      r.nonfinite += d.status == "nonfinite";
      r.exceeded += d.status == "exceeds";
    }
    r.tensors.push_back(std::move(d));
  }
  return r;
}

VerifyReport verify(const VerifyOptions& opt, std::ostream& out) {
  VerifyReport r = compare_checkpoints(opt);
  if (opt.format == "table") {
    print_table(r, opt, out);
  } else {
    for (const TensorDiff& d : r.tensors) out << diff_json(d).dump() << "\n";
    out << summary_json(r, opt).dump() << "\n";
  }
  out.flush();
  if (r.missing_in_model + r.missing_in_reference + r.shape_mismatch > 0)
    DS_THROW(FormatError, "verify: {} and {} differ in structure: {} tensor(s) missing in the "
             "model, {} missing in the reference, {} shape mismatch(es)", opt.model,
             opt.reference, r.missing_in_model, r.missing_in_reference, r.shape_mismatch);
  if (!r.ok())
    DS_THROW(NumericsError, "verify: {} tensor(s) exceed the limits (max abs {:.4e}, max rel "
             "{:.4e}), {} with non-finite mismatches", r.exceeded, r.max_abs_error,
             r.max_rel_error, r.nonfinite);
  spdlog::info("verify: {} tensors compared, max abs {:.4e}, max rel {:.4e}", r.compared,
               r.max_abs_error, r.max_rel_error);
  return r;
}

}  // namespace ds::convert
