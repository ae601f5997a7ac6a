// Dataset manifest (manifest.json): load with field-by-field validation, save atomically.
// Format: docs/formats.md ("Dataset manifest").
#include <nlohmann/json.hpp>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/io/json_fields.hpp"
#include "shard_format.hpp"

namespace ds::data {

namespace {

constexpr const char* kFormatName = "ds-token-dataset";
constexpr uint32_t kManifestVersion = 1;
using Json = nlohmann::ordered_json;

// A shard file name must stay inside the dataset directory.
bool safe_relative(const std::string& f) {
  if (f.empty() || f.find('\0') != std::string::npos) return false;
  const fs::path p(f);
  if (p.is_absolute() || p.has_root_path()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

void check_totals(const Manifest& m, const fs::path& path) {
  uint64_t tokens = 0, documents = 0;
  for (const auto& s : m.shards) {
    tokens += s.tokens;
    documents += s.documents;
  }
  if (tokens != m.tokens)
    DS_THROW(FormatError, "{}: field 'tokens' = {} but the shards hold {}", path.string(),
             m.tokens, tokens);
  if (documents != m.documents)
    DS_THROW(FormatError, "{}: field 'documents' = {} but the shards hold {}", path.string(),
             m.documents, documents);
}

}  // namespace

Manifest Manifest::load(const fs::path& manifest_path) {
  const std::string text = io::read_file(manifest_path);
  io::check_json_input(text, manifest_path.string());
  Json j;
  try {
    j = Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DS_THROW(FormatError, "{}: not valid JSON: {}", manifest_path.string(), e.what());
  }
  const io::JsonFields<Json> f(j, manifest_path.string());
  Manifest m;
  const std::string format = f.str("format");
  if (format != kFormatName)
    DS_THROW(FormatError, "{}: field 'format' is '{}', expected '{}'", manifest_path.string(),
             format, kFormatName);
  m.version = f.u32("version");
  if (m.version != kManifestVersion)
    DS_THROW(FormatError, "{}: unsupported manifest version {} (this build reads {})",
             manifest_path.string(), m.version, kManifestVersion);
  m.tokenizer_fingerprint = f.str("tokenizer_fingerprint");
  uint64_t fp = 0;
  if (!detail::parse_fingerprint(m.tokenizer_fingerprint, &fp))
    DS_THROW(FormatError, "{}: field 'tokenizer_fingerprint' is not 16 hex digits",
             manifest_path.string());
  m.vocab_size = f.u32("vocab_size");
  m.token_width = f.u32("token_width");
  if (m.vocab_size == 0 || m.token_width != detail::token_width_for(m.vocab_size))
    DS_THROW(FormatError, "{}: field 'token_width' = {} does not fit vocab_size {}",
             manifest_path.string(), m.token_width, m.vocab_size);
  m.tokens = f.u64("tokens");
  m.documents = f.u64("documents");
  const Json& shards = f.array("shards");
  for (size_t i = 0; i < shards.size(); ++i) {
    const io::JsonFields<Json> sf = f.element(shards, "shards", i);
    ShardEntry e;
    e.file = sf.str("file");
    if (!safe_relative(e.file))
      DS_THROW(FormatError, "{}: field '{}' = '{}' must be a relative path inside the "
               "dataset directory", manifest_path.string(), sf.name("file"), e.file);
    e.tokens = sf.u64("tokens");
    e.documents = sf.u64("documents");
    e.bytes = sf.u64("bytes");
    m.shards.push_back(std::move(e));
  }
  check_totals(m, manifest_path);
  auto prov = j.find("provenance");
  if (prov != j.end()) {
    if (!prov->is_object())
      DS_THROW(FormatError, "{}: field 'provenance' must be an object", manifest_path.string());
    m.extra_json = prov->dump();
  }
  return m;
}

void Manifest::save(const fs::path& manifest_path) const {
  Json extra;
  try {
    extra = Json::parse(extra_json.empty() ? std::string("{}") : extra_json);
  } catch (const nlohmann::json::exception& e) {
    DS_THROW(UsageError, "{}: provenance (extra_json) is not valid JSON: {}",
             manifest_path.string(), e.what());
  }
  if (!extra.is_object())
    DS_THROW(UsageError, "{}: provenance (extra_json) must be a JSON object",
             manifest_path.string());
  check_totals(*this, manifest_path);
  Json j;
  j["format"] = kFormatName;
  j["version"] = version;
  j["tokenizer_fingerprint"] = tokenizer_fingerprint;
  j["vocab_size"] = vocab_size;
  j["token_width"] = token_width;
  j["tokens"] = tokens;
  j["documents"] = documents;
  j["shards"] = Json::array();
  for (const auto& s : shards)
    j["shards"].push_back(
        {{"file", s.file}, {"tokens", s.tokens}, {"documents", s.documents}, {"bytes", s.bytes}});
  j["provenance"] = std::move(extra);
  io::write_file_atomic(manifest_path, j.dump(2) + "\n");
}

}  // namespace ds::data
