// Typed, named access to the fields of one JSON object, for the readers of the project's own
// JSON files (training_state/trainer_state.json, a dataset's manifest.json): a missing or
// mistyped field, or an integer out of its range, is a FormatError that names the source file
// and the field's path ("data.epoch", "shards[2].tokens"). Numbers are never converted across
// types (1.5, -1, 1e30 or "12" are not counts), so a corrupt file can not be read as a small
// wrong value. Works with nlohmann::json and nlohmann::ordered_json; the library targets that
// include it link nlohmann_json themselves.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "ds/core/error.hpp"

namespace ds::io {

template <class Json>
class JsonFields {
 public:
  // `obj` must be a JSON object; `path` is its own path in the file ("" for the top level,
  // "data", "shards[3]"), used to name it and its fields in errors.
  JsonFields(const Json& obj, std::string src, std::string path = "")
      : obj_(obj), src_(std::move(src)), path_(std::move(path)) {
    if (obj_.is_object()) return;
    if (path_.empty()) DS_THROW(FormatError, "{}: not a JSON object", src_);
    DS_THROW(FormatError, "{}: field '{}' must be an object", src_, path_);
  }

  const std::string& src() const { return src_; }
  std::string name(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  bool has(std::string_view key) const { return obj_.find(std::string(key)) != obj_.end(); }

  const Json& get(std::string_view key) const {
    auto it = obj_.find(std::string(key));
    if (it == obj_.end()) DS_THROW(FormatError, "{}: missing field '{}'", src_, name(key));
    return *it;
  }
  // A JSON integer in [0, max].
  uint64_t u64(std::string_view key, uint64_t max = UINT64_MAX) const {
    const Json& v = get(key);
    if (!v.is_number_unsigned())
      DS_THROW(FormatError, "{}: field '{}' must be a non-negative integer", src_, name(key));
    const uint64_t x = v.template get<uint64_t>();
    if (x > max)
      DS_THROW(FormatError, "{}: field '{}' = {} is too large (at most {})", src_, name(key), x,
               max);
    return x;
  }
  uint32_t u32(std::string_view key) const { return uint32_t(u64(key, UINT32_MAX)); }
  // A counter: a JSON integer in [0, 2^63).
  int64_t count(std::string_view key) const { return int64_t(u64(key, uint64_t(INT64_MAX))); }
  std::string str(std::string_view key) const {
    const Json& v = get(key);
    if (!v.is_string()) DS_THROW(FormatError, "{}: field '{}' must be a string", src_, name(key));
    return v.template get<std::string>();
  }
  const Json& array(std::string_view key) const {
    const Json& v = get(key);
    if (!v.is_array()) DS_THROW(FormatError, "{}: field '{}' must be an array", src_, name(key));
    return v;
  }
  // The object under `key`, its fields named "key.field".
  JsonFields object(std::string_view key) const { return JsonFields(get(key), src_, name(key)); }
  // The i-th element of the array `key` as an object ("key[i].field").
  JsonFields element(const Json& array, std::string_view key, size_t i) const {
    return JsonFields(array[i], src_, name(key) + "[" + std::to_string(i) + "]");
  }

 private:
  const Json& obj_;
  std::string src_, path_;
};

}  // namespace ds::io
