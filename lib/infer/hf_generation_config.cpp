// generation_config.json as ds-generate's defaults (see hf_generation_config.hpp).
// reference: transformers GenerationConfig (field names, defaults, do_sample semantics).
#include "ds/infer/hf_generation_config.hpp"

#include <cfloat>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <system_error>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"

namespace ds::infer {

namespace {

using json = nlohmann::json;

// Fields ds reads, or accepts and does not need.
bool used_or_inert(const std::string& k) {
  static const char* const kNames[] = {
      "do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "eos_token_id",
      "stop_strings", "bos_token_id", "pad_token_id", "decoder_start_token_id",
      "_from_model_config", "transformers_version", "use_cache", "return_dict_in_generate"};
  for (const char* n : kNames)
    if (k == n) return true;
  return k.starts_with("output_");   // output_scores, output_attentions, ...
}

// transformers' neutral values of fields that would change decoding: present at these values
// they change nothing.
const json* neutral_value(const std::string& k) {
  static const json kNeutral = {
      {"repetition_penalty", 1.0},   {"encoder_repetition_penalty", 1.0},
      {"num_beams", 1},              {"num_beam_groups", 1},
      {"num_return_sequences", 1},   {"typical_p", 1.0},
      {"epsilon_cutoff", 0.0},       {"eta_cutoff", 0.0},
      {"diversity_penalty", 0.0},    {"length_penalty", 1.0},
      {"no_repeat_ngram_size", 0},   {"encoder_no_repeat_ngram_size", 0},
      {"min_length", 0},             {"min_new_tokens", 0},
      {"early_stopping", false},     {"renormalize_logits", false},
      {"remove_invalid_values", false}};
  auto it = kNeutral.find(k);
  return it == kNeutral.end() ? nullptr : &*it;
}

struct Reader {
  const json& j;
  const std::string& src;

  const json* find(const char* k) const {
    auto it = j.find(k);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> number(const char* k) const {
    const json* v = find(k);
    if (!v) return std::nullopt;
    DS_CHECK_AS(FormatError, v->is_number(), "{}: field '{}' must be a number", src, k);
    const double x = v->get<double>();
    DS_CHECK_AS(FormatError, std::isfinite(x), "{}: field '{}' must be finite", src, k);
    return x;
  }
  // A JSON integer in [lo, hi] (1.0 and "5" are not integers).
  std::optional<int64_t> integer(const char* k, int64_t lo, int64_t hi) const {
    const json* v = find(k);
    if (!v) return std::nullopt;
    DS_CHECK_AS(FormatError, v->is_number_integer(), "{}: field '{}' must be an integer", src,
                k);
    bool ok;
    if (v->is_number_unsigned()) {
      const uint64_t x = v->get<uint64_t>();
      ok = x <= uint64_t(hi) && (lo <= 0 || x >= uint64_t(lo));
    } else {
      const int64_t x = v->get<int64_t>();
      ok = x >= lo && x <= hi;
    }
    DS_CHECK_AS(FormatError, ok, "{}: field '{}' = {} is out of range ({}..{})", src, k,
                v->dump(), lo, hi);
    return v->get<int64_t>();
  }
  // An item or a list of items (`one` reads and checks one, naming "k" or "k[i]").
  template <class F>
  void one_or_list(const char* k, F&& one) const {
    const json* v = find(k);
    if (!v) return;
    if (!v->is_array()) return one(*v, std::string(k));
    for (size_t i = 0; i < v->size(); ++i) one((*v)[i], fmt::format("{}[{}]", k, i));
  }
};

}  // namespace

GenerationDefaults parse_generation_config(const std::string& text, const std::string& src,
                                           int64_t vocab_size) {
  io::check_json_input(text, src);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: not valid JSON: {}", src, e.what());
  }
  DS_CHECK_AS(FormatError, j.is_object(), "{}: not a JSON object", src);
  const Reader r{j, src};
  GenerationDefaults d;
  d.src = src;
  if (const json* v = r.find("do_sample")) {
    DS_CHECK_AS(FormatError, v->is_boolean(), "{}: field 'do_sample' must be true or false", src);
    d.do_sample = v->get<bool>();
  }
  const auto temperature = r.number("temperature");
  const auto top_k = r.integer("top_k", 0, INT32_MAX);
  const auto top_p = r.number("top_p");
  // ranges as the floats the sampler would get (1e-50 is 0, 1e300 is inf), whether or not
  // do_sample uses them
  const float t = float(temperature.value_or(1.0));
  DS_CHECK_AS(FormatError, t >= 0 && std::isfinite(t),
              "{}: field 'temperature' = {} must be >= 0 (and at most {})", src, *temperature,
              FLT_MAX);
  DS_CHECK_AS(FormatError, !top_p || (float(*top_p) > 0 && float(*top_p) <= 1),
              "{}: field 'top_p' = {} must be in (0, 1]", src, *top_p);
  if (d.do_sample) {
    DS_CHECK_AS(FormatError, t > 0,
                "{}: field 'temperature' = {} must be > 0 when do_sample is true", src,
                *temperature);
    d.temperature = t;
    if (top_k) d.top_k = int(*top_k);
    if (top_p) d.top_p = float(*top_p);
  } else {   // transformers decodes greedily and ignores them (warning unless at its defaults)
    if (temperature && *temperature != 1.0)
      d.not_applied.push_back("temperature (do_sample is false)");
    if (top_k && *top_k != 50) d.not_applied.push_back("top_k (do_sample is false)");
    if (top_p && *top_p != 1.0) d.not_applied.push_back("top_p (do_sample is false)");
  }
  d.max_new_tokens = r.integer("max_new_tokens", 1, INT64_MAX);
  const int64_t max_id = vocab_size > 0 ? vocab_size - 1 : int64_t(UINT32_MAX);
  r.one_or_list("eos_token_id", [&](const json& v, const std::string& name) {
    DS_CHECK_AS(FormatError, v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t(max_id),
                "{}: field '{}' = {} is not a token id (0..{})", src, name, v.dump(), max_id);
    d.eos_ids.push_back(tok::TokenId(v.get<uint64_t>()));
  });
  r.one_or_list("stop_strings", [&](const json& v, const std::string& name) {
    DS_CHECK_AS(FormatError, v.is_string() && !v.get<std::string>().empty(),
                "{}: field '{}' must be a non-empty string", src, name);
    d.stop_strings.push_back(v.get<std::string>());   // (UTF-8: the parser checked it)
  });
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (used_or_inert(it.key()) || it->is_null()) continue;
    if (const json* n = neutral_value(it.key()); n && *it == *n) continue;
    d.not_applied.push_back(fmt::format("{} = {}", it.key(), it->dump()));
  }
  return d;
}

std::optional<GenerationDefaults> read_generation_config(const std::filesystem::path& file,
                                                         int64_t vocab_size) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status entry = fs::symlink_status(file, ec);
  if (entry.type() == fs::file_type::not_found) return std::nullopt;
  if (ec) DS_THROW(IoError, "{}: cannot read: {}", file.string(), ec.message());
  // a link to nothing is a broken download (the hub cache links its blobs), not "no file"
  if (fs::is_symlink(entry) && !io::exists(file))
    DS_THROW(IoError, "{}: symbolic link to a missing file ({})", file.string(),
             fs::read_symlink(file, ec).string());
  DS_CHECK_AS(FormatError, io::is_regular_file(file), "{}: not a regular file", file.string());
  constexpr uintmax_t kMaxBytes = uintmax_t(1) << 20;   // the released ones hold ~200 bytes
  const uintmax_t size = fs::file_size(file, ec);
  DS_CHECK_AS(FormatError, ec || size <= kMaxBytes,
              "{}: {} bytes, too large for a generation_config.json (at most {})", file.string(),
              size, kMaxBytes);
  return parse_generation_config(io::read_file(file), file.string(), vocab_size);
}

}  // namespace ds::infer
