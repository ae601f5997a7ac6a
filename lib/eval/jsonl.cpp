// JSONL reading and dotted field lookup for the task loaders (see jsonl.hpp).
// reference: JSON Lines (jsonlines.org).
#include "jsonl.hpp"

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"

namespace ds::eval::detail {

namespace {
bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r") == std::string_view::npos;
}
}  // namespace

std::vector<std::pair<size_t, std::string>> read_lines(const std::filesystem::path& path) {
  const std::string text = io::read_input(path);   // a FIFO too: fingerprinted later
  std::vector<std::pair<size_t, std::string>> out;
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    ++line;
    std::string_view s(text.data() + pos, nl - pos);
    if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    if (!blank(s)) out.emplace_back(line, std::string(s));
    pos = nl + 1;
  }
  return out;
}

void for_each_jsonl(const std::filesystem::path& path,
                    const std::function<void(size_t, const nlohmann::json&)>& fn) {
  const auto lines = read_lines(path);
  if (lines.empty()) DS_THROW(FormatError, "{}: no records (empty file)", path.string());
  for (const auto& [no, text] : lines) {
    io::check_json_input(text, fmt::format("{}:{}", path.string(), no));
    nlohmann::json rec;
    try {
      rec = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      DS_THROW(FormatError, "{}:{}: invalid JSON at column {}", path.string(), no, e.byte);
    } catch (const nlohmann::json::exception& e) {   // e.g. a number beyond a double's range
      DS_THROW(FormatError, "{}:{}: invalid JSON: {}", path.string(), no, e.what());
    }
    if (!rec.is_object())
      DS_THROW(FormatError, "{}:{}: record is not a JSON object", path.string(), no);
    fn(no, rec);
  }
}

const nlohmann::json& field(const nlohmann::json& rec, std::string_view path,
                            const std::filesystem::path& file, size_t line) {
  const nlohmann::json* cur = &rec;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string key(path.substr(pos, dot == std::string_view::npos ? path.npos : dot - pos));
    if (!cur->is_object() || !cur->contains(key))
      DS_THROW(FormatError, "{}:{}: missing field '{}'", file.string(), line, path);
    cur = &(*cur)[key];
    if (dot == std::string_view::npos) return *cur;
    pos = dot + 1;
  }
}

std::string string_field(const nlohmann::json& rec, std::string_view path,
                         const std::filesystem::path& file, size_t line) {
  const nlohmann::json& v = field(rec, path, file, line);
  if (!v.is_string())
    DS_THROW(FormatError, "{}:{}: field '{}' is not a string", file.string(), line, path);
  return v.get<std::string>();
}

}  // namespace ds::eval::detail
