// Dataset manifest (manifest.json): load with field-by-field validation, save atomically.
// Format: docs/formats.md ("Dataset manifest").
#include <nlohmann/json.hpp>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"
#include "shard_format.hpp"

namespace ds::data {

namespace {

constexpr const char* kFormatName = "ds-token-dataset";
constexpr uint32_t kManifestVersion = 1;
using Json = nlohmann::ordered_json;

// Field access that names the manifest and the field when it is missing or mistyped.
struct Fields {
  const fs::path& path;

  const Json& get(const Json& obj, const std::string& key, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end())
      DS_THROW(FormatError, "{}: missing field '{}{}'", path.string(), where, key);
    return *it;
  }
  uint64_t u64(const Json& obj, const std::string& key, const std::string& where = "") const {
    const Json& v = get(obj, key, where);
    if (!v.is_number_unsigned())
      DS_THROW(FormatError, "{}: field '{}{}' must be a non-negative integer", path.string(),
               where, key);
    return v.get<uint64_t>();
  }
  uint32_t u32(const Json& obj, const std::string& key) const {
    const uint64_t v = u64(obj, key);
    if (v > UINT32_MAX)
      DS_THROW(FormatError, "{}: field '{}' = {} is too large", path.string(), key, v);
    return uint32_t(v);
  }
  std::string str(const Json& obj, const std::string& key, const std::string& where = "") const {
    const Json& v = get(obj, key, where);
    if (!v.is_string())
      DS_THROW(FormatError, "{}: field '{}{}' must be a string", path.string(), where, key);
    return v.get<std::string>();
  }
};

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
  Json j;
  try {
    j = Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    DS_THROW(FormatError, "{}: not valid JSON: {}", manifest_path.string(), e.what());
  }
  if (!j.is_object()) DS_THROW(FormatError, "{}: not a JSON object", manifest_path.string());
  const Fields f{manifest_path};
  Manifest m;
  const std::string format = f.str(j, "format");
  if (format != kFormatName)
    DS_THROW(FormatError, "{}: field 'format' is '{}', expected '{}'", manifest_path.string(),
             format, kFormatName);
  m.version = f.u32(j, "version");
  if (m.version != kManifestVersion)
    DS_THROW(FormatError, "{}: unsupported manifest version {} (this build reads {})",
             manifest_path.string(), m.version, kManifestVersion);
  m.tokenizer_fingerprint = f.str(j, "tokenizer_fingerprint");
  uint64_t fp = 0;
  if (!detail::parse_fingerprint(m.tokenizer_fingerprint, &fp))
    DS_THROW(FormatError, "{}: field 'tokenizer_fingerprint' is not 16 hex digits",
             manifest_path.string());
  m.vocab_size = f.u32(j, "vocab_size");
  m.token_width = f.u32(j, "token_width");
  if (m.vocab_size == 0 || m.token_width != detail::token_width_for(m.vocab_size))
    DS_THROW(FormatError, "{}: field 'token_width' = {} does not fit vocab_size {}",
             manifest_path.string(), m.token_width, m.vocab_size);
  m.tokens = f.u64(j, "tokens");
  m.documents = f.u64(j, "documents");
  const Json& shards = f.get(j, "shards", "");
  if (!shards.is_array())
    DS_THROW(FormatError, "{}: field 'shards' must be an array", manifest_path.string());
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string where = fmt::format("shards[{}].", i);
    if (!shards[i].is_object())
      DS_THROW(FormatError, "{}: field 'shards[{}]' must be an object", manifest_path.string(), i);
    ShardEntry e;
    e.file = f.str(shards[i], "file", where);
    if (!safe_relative(e.file))
      DS_THROW(FormatError, "{}: field '{}file' = '{}' must be a relative path inside the "
               "dataset directory", manifest_path.string(), where, e.file);
    e.tokens = f.u64(shards[i], "tokens", where);
    e.documents = f.u64(shards[i], "documents", where);
    e.bytes = f.u64(shards[i], "bytes", where);
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
