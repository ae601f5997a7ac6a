// JsonFields: typed field reads that name the file and the field's path, and never convert a
// number across types (a float, a negative or an out-of-range integer is an error). Also the
// nesting limit checked before parsing (json_depth.hpp).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "ds/core/error.hpp"
#include "ds/io/json_depth.hpp"
#include "ds/io/json_fields.hpp"

using ds::io::JsonFields;
using nlohmann::json;
using nlohmann::ordered_json;

TEST_CASE("JsonFields reads typed fields, nested objects and array elements") {
  const auto j = json::parse(R"({"n": 18446744073709551615, "c": 9223372036854775807, "s": "x",
                                 "o": {"k": 3}, "a": [{"v": 1}, {"v": 2}]})");
  const JsonFields f(j, "f.json");
  CHECK(f.u64("n") == UINT64_MAX);
  CHECK(f.count("c") == INT64_MAX);
  CHECK(f.str("s") == "x");
  CHECK(f.has("o"));
  CHECK_FALSE(f.has("z"));
  CHECK(f.object("o").u32("k") == 3);
  CHECK(f.object("o").name("k") == "o.k");
  const json& a = f.array("a");
  REQUIRE(a.size() == 2);
  CHECK(f.element(a, "a", 1).u64("v") == 2);
  CHECK(f.element(a, "a", 1).name("v") == "a[1].v");
  const auto oj = ordered_json::parse(R"({"v": 4294967295})");
  CHECK(JsonFields(oj, "o.json").u32("v") == UINT32_MAX);
}

TEST_CASE("JsonFields errors name the file and the field") {
  const auto j = json::parse(R"({"f": 1.5, "neg": -1, "big": 1e30, "s": "12", "u": 4294967296,
                                 "c": 9223372036854775808, "o": {"k": "x"}, "arr": [1],
                                 "notobj": [1]})");
  const JsonFields f(j, "dir/f.json");
  const auto expect = [&](auto read, const std::string& says) {
    INFO(says);
    CHECK_THROWS_WITH_AS(read(), doctest::Contains(("dir/f.json: " + says).c_str()),
                         ds::FormatError);
  };
  expect([&] { return f.u64("f"); }, "field 'f' must be a non-negative integer");
  expect([&] { return f.u64("neg"); }, "field 'neg' must be a non-negative integer");
  expect([&] { return f.u64("big"); }, "field 'big' must be a non-negative integer");
  expect([&] { return f.u64("s"); }, "field 's' must be a non-negative integer");
  expect([&] { return f.u32("u"); }, "field 'u' = 4294967296 is too large");
  expect([&] { return f.count("c"); }, "field 'c' = 9223372036854775808 is too large");
  expect([&] { return f.u64("missing"); }, "missing field 'missing'");
  expect([&] { return f.str("f"); }, "field 'f' must be a string");
  expect([&] { return f.object("o").u64("k"); },
         "field 'o.k' must be a non-negative integer");
  expect([&] { return f.object("o").u64("gone"); }, "missing field 'o.gone'");
  expect([&] { return f.object("notobj").has("x"); }, "field 'notobj' must be an object");
  expect([&] { return f.element(f.array("arr"), "arr", 0).has("x"); },
         "field 'arr[0]' must be an object");
  expect([&] { return f.array("s").size(); }, "field 's' must be an array");
  CHECK_THROWS_WITH_AS(JsonFields(json::parse("[1]"), "top.json"),
                       doctest::Contains("top.json: not a JSON object"), ds::FormatError);
}

TEST_CASE("check_json_depth: 256 levels pass, 257 fail; brackets in strings do not count") {
  const auto nested = [](int n) {
    return std::string(size_t(n), '[') + std::string(size_t(n), ']');
  };
  CHECK(ds::io::json_depth_ok(nested(256)));
  CHECK_FALSE(ds::io::json_depth_ok(nested(257)));
  CHECK_FALSE(ds::io::json_depth_ok("{\"a\": " + nested(300) + "}"));
  // brackets inside strings, escaped quotes included, are text
  CHECK(ds::io::json_depth_ok("[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') +
                              "\"]"));
  CHECK_FALSE(ds::io::json_depth_ok("[\"\\\\\"" + nested(300) + "]"));   // "\\" ends the string
  try {
    ds::io::check_json_depth(nested(1000), "f.jsonl:3");
    FAIL("no FormatError");
  } catch (const ds::FormatError& e) {
    CHECK(std::string(e.what()) == "f.jsonl:3: JSON nested deeper than 256 levels");
  }
}
