// RL prompt files (see include/ds/rl/prompts.hpp): line-by-line JSONL parsing with errors
// that name file:line and the field.
#include "ds/rl/prompts.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <string>

#include "ds/core/error.hpp"
#include "ds/io/json_input.hpp"

namespace ds::rl {

namespace {

using nlohmann::json;

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// The text of a top-level field's number as written in the line: a JSON parse keeps a double
// (12345678901234567890123 became 1.2345678901234568e+22, 3.14159265358979323846 lost its
// digits), and a gold answer is compared as text. Read by a SAX pass over a parsed line.
struct RawNumbers : io::JsonSaxPass {
  int depth = 0;
  std::string current;   // the top-level key being read
  std::map<std::string, std::string> raw;   // top-level key -> number text (floats and big)
  bool number_float(number_float_t, const string_t& s) override {
    if (depth == 1) raw[current] = s;
    return true;
  }
  bool start_object(std::size_t) override { return ++depth, true; }
  bool key(string_t& k) override {
    if (depth == 1) current = k;
    return true;
  }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return ++depth, true; }
  bool end_array() override { return --depth, true; }
};

RlPrompt parse_record(const std::string& text, const std::string& src, size_t line) {
  io::check_json_input(text, src);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: invalid JSON ({})", src, e.what());
  }
  DS_CHECK_AS(FormatError, j.is_object(), "{}: expected a JSON object", src);
  RlPrompt p;
  p.line = line;
  const bool has_prompt = j.contains("prompt"), has_messages = j.contains("messages");
  DS_CHECK_AS(FormatError, has_prompt != has_messages,
              "{}: give exactly one of 'prompt' and 'messages'", src);
  if (has_prompt) {
    DS_CHECK_AS(FormatError, j["prompt"].is_string(), "{}: field 'prompt' must be a string", src);
    p.prompt = j["prompt"].get<std::string>();
  } else {
    DS_CHECK_AS(FormatError, j["messages"].is_array(), "{}: field 'messages' must be an array",
                src);
    p.messages = infer::parse_messages(j["messages"].dump(), src);
    for (size_t i = 0; i < p.messages.size(); ++i) {
      const std::string& role = p.messages[i].role;
      DS_CHECK_AS(FormatError,
                  role == "system" || role == "user" || role == "assistant" || role == "tool",
                  "{}: messages[{}]: unknown role \"{}\" (system, user, assistant, tool)", src,
                  i, role);
      if (role == "user" && p.messages[i].content) p.prompt = *p.messages[i].content;
    }
    DS_CHECK_AS(FormatError, !p.messages.empty() && p.messages.back().role == "user",
                "{}: field 'messages' must end with a user turn", src);
  }
  DS_CHECK_AS(FormatError, !blank(p.prompt), "{}: the prompt is empty", src);
  DS_CHECK_AS(FormatError, !(j.contains("reference") && j.contains("answer")),
              "{}: give at most one of 'reference' and 'answer'", src);
  for (const char* key : {"reference", "answer"}) {
    if (!j.contains(key)) continue;
    const json& r = j[key];
    if (r.is_string()) p.reference = r.get<std::string>();
    else if (r.is_number_float()) {   // a plain decimal as written (all its digits kept)
      RawNumbers raw;
      json::sax_parse(text, &raw);
      // kept as written when it is a plain decimal (all its digits); an exponent form such
      // as 1E2 is taken as the double's text (100.0), which completions can write
      const auto it = raw.raw.find(key);
      const bool plain = it != raw.raw.end() &&
                         it->second.find_first_not_of("-0123456789.") == std::string::npos;
      p.reference = plain ? it->second : r.dump();
    } else if (r.is_number()) p.reference = r.dump();   // {"answer": 72} is accepted as "72"
    else DS_THROW(FormatError, "{}: field '{}' must be a string or a number", src, key);
  }
  return p;
}

}  // namespace

std::vector<RlPrompt> load_prompts(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f) DS_THROW(IoError, "{}: cannot open the prompts file", path.string());
  std::vector<RlPrompt> out;
  std::string text;
  for (size_t line = 1; std::getline(f, text); ++line) {
    if (blank(text)) continue;
    out.push_back(parse_record(text, path.string() + ":" + std::to_string(line), line));
  }
  if (f.bad()) DS_THROW(IoError, "{}: read error", path.string());
  DS_CHECK_AS(FormatError, !out.empty(), "{}: no prompts", path.string());
  return out;
}

}  // namespace ds::rl
