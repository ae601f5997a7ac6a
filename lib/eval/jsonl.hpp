// Internal helpers shared by the task loaders: JSONL reading with file:line errors and
// dotted field lookup ("choices.text") with errors that name the field.
// reference: JSON Lines (jsonlines.org): one JSON value per line; blank lines are skipped.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <utility>
#include <vector>
#include <string>
#include <string_view>

namespace ds::eval::detail {

// Calls fn(line_number, record) for every non-blank line (1-based numbers); FormatError
// "file:line: invalid JSON" for a malformed line, "file: no records" for an empty file.
void for_each_jsonl(const std::filesystem::path& path,
                    const std::function<void(size_t, const nlohmann::json&)>& fn);

// The value at a dotted path; FormatError "file:line: missing field 'a.b'".
const nlohmann::json& field(const nlohmann::json& rec, std::string_view path,
                            const std::filesystem::path& file, size_t line);
std::string string_field(const nlohmann::json& rec, std::string_view path,
                         const std::filesystem::path& file, size_t line);

// Non-blank lines of a text file with their 1-based numbers.
std::vector<std::pair<size_t, std::string>> read_lines(const std::filesystem::path& path);

}  // namespace ds::eval::detail
