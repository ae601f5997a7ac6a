// check_json_input (ds/io/json_input.hpp): the nesting limit, duplicate keys, which a parse
// alone would keep silently (the last one wins), and NUL bytes, where a parse stops.
#include <doctest/doctest.h>

#include <string>

#include "ds/core/error.hpp"
#include "ds/io/json_input.hpp"

namespace {

std::string message(std::string_view text) {
  try {
    ds::io::check_json_input(text, "f.jsonl:3");
  } catch (const ds::FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("check_json_input: duplicate keys at any level, escapes decoded") {
  CHECK(message(R"({"prompt": "a", "answer": 1})") == "");
  CHECK(message(R"({"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 1}, {"x": 2}]})") == "");
  CHECK(message(R"([{"k": 1}, {"k": 2}])") == "");
  CHECK(message(R"({"prompt": "a", "prompt": "b"})") ==
        "f.jsonl:3: key \"prompt\" appears twice in one object");
  CHECK(message(R"({"m": [{"role": "user", "role": "assistant"}]})").find("\"role\"") !=
        std::string::npos);
  CHECK(message(R"({"a": 1, "\u0061": 2})").find("key \"a\" appears twice") != std::string::npos);
  // malformed text is the parser's to report
  CHECK(message(R"({"a": 1, "b")") == "");
  CHECK(message(std::string(300, '[')).find("nested deeper") != std::string::npos);
  // a NUL byte: nlohmann takes it for the end of the text (what follows was never read)
  CHECK(message(std::string("{\"a\": 1}\0{\"b\": 2}", 17)) ==
        "f.jsonl:3: a NUL byte at byte 8 of the line (not JSON text)");
}
