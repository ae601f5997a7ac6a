// generation_config.json as ds-generate's defaults: DeepSeek-V3's released file, do_sample
// semantics (sampling fields ignored when false; temperature 1.0 when absent), eos ids and
// stop strings as one item or a list, fields ds does not apply, and one-line FormatErrors
// naming the file and field for mistyped or out-of-range values.
#include <doctest/doctest.h>

#include <string>
#include <sys/stat.h>

#include "../temp_dir.hpp"
#include "ds/core/error.hpp"
#include "ds/infer/hf_generation_config.hpp"

using namespace ds::infer;
using ds::FormatError;

namespace {

GenerationDefaults parse(const std::string& text, int64_t vocab = 129280) {
  return parse_generation_config(text, "gc.json", vocab);
}

}  // namespace

TEST_CASE("generation_config: DeepSeek-V3's released file") {
  const GenerationDefaults d = parse(R"({"_from_model_config": true, "bos_token_id": 0,
      "eos_token_id": 1, "do_sample": true, "temperature": 0.6, "top_p": 0.95,
      "transformers_version": "4.46.3"})");
  CHECK(d.do_sample);
  REQUIRE(d.temperature);
  CHECK(*d.temperature == doctest::Approx(0.6));
  REQUIRE(d.top_p);
  CHECK(*d.top_p == doctest::Approx(0.95));
  CHECK_FALSE(d.top_k);   // not transformers' implicit 50
  CHECK_FALSE(d.max_new_tokens);
  CHECK(d.eos_ids == std::vector<ds::tok::TokenId>{1});
  CHECK(d.not_applied.empty());
}

TEST_CASE("generation_config: do_sample semantics") {
  // absent do_sample is false: greedy, the sampling fields are reported as not applied
  GenerationDefaults d = parse(R"({"temperature": 0.7, "top_k": 20, "max_new_tokens": 64})");
  CHECK_FALSE(d.do_sample);
  CHECK_FALSE(d.temperature);
  CHECK_FALSE(d.top_k);
  CHECK(d.max_new_tokens == 64);
  CHECK(d.not_applied == std::vector<std::string>{"temperature (do_sample is false)",
                                                  "top_k (do_sample is false)"});
  // ... unless at transformers' defaults (1.0, 50, 1.0), as its own validation warns
  CHECK(parse(R"({"temperature": 1.0, "top_k": 50, "top_p": 1})").not_applied.empty());
  // do_sample without a temperature samples at 1.0
  d = parse(R"({"do_sample": true, "top_k": 0})");
  CHECK(d.temperature == 1.0f);
  CHECK(d.top_k == 0);
  CHECK_FALSE(d.top_p);
  // null is absent
  d = parse(R"({"do_sample": null, "temperature": null, "eos_token_id": null})");
  CHECK_FALSE(d.do_sample);
  CHECK(d.not_applied.empty());
  CHECK(d.eos_ids.empty());
}

TEST_CASE("generation_config: lists, neutral values and fields not applied") {
  const GenerationDefaults d = parse(R"({"eos_token_id": [1, 7, 129279],
      "stop_strings": ["\n\n", "User:"], "num_beams": 1, "repetition_penalty": 1.0,
      "early_stopping": false, "use_cache": true, "output_scores": false, "pad_token_id": 2,
      "num_return_sequences": 1, "min_p": 0.05, "no_repeat_ngram_size": 3, "max_length": 4096})");
  CHECK(d.eos_ids == std::vector<ds::tok::TokenId>{1, 7, 129279});
  CHECK(d.stop_strings == std::vector<std::string>{"\n\n", "User:"});
  CHECK(d.not_applied == std::vector<std::string>{"max_length = 4096", "min_p = 0.05",
                                                  "no_repeat_ngram_size = 3"});
  CHECK(parse(R"({"stop_strings": "###"})").stop_strings == std::vector<std::string>{"###"});
  CHECK(parse(R"({"repetition_penalty": 1.1})").not_applied ==
        std::vector<std::string>{"repetition_penalty = 1.1"});
}

TEST_CASE("generation_config: bad values name the file and the field") {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {R"({"do_sample": "yes"})", "gc.json: field 'do_sample' must be true or false"},
      {R"({"do_sample": true, "temperature": 0})",
       "gc.json: field 'temperature' = 0 must be > 0 when do_sample is true"},
      {R"({"do_sample": true, "temperature": -1})", "'temperature' = -1 must be >= 0"},
      // ranges hold whether or not do_sample uses the field
      {R"({"temperature": -5})", "gc.json: field 'temperature' = -5 must be >= 0"},
      {R"({"do_sample": false, "top_p": 7})", "gc.json: field 'top_p' = 7 must be in (0, 1]"},
      // values the sampler's float would turn into 0 or inf
      {R"({"do_sample": true, "temperature": 1e-50})", "'temperature' = 1e-50 must be > 0"},
      {R"({"do_sample": true, "temperature": 1e300})",
       "'temperature' = 1e+300 must be >= 0 (and at most 3.4028235e+38)"},
      {R"({"do_sample": true, "top_p": 1e-50})", "field 'top_p' = 1e-50 must be in (0, 1]"},
      {R"({"temperature": "0.6"})", "gc.json: field 'temperature' must be a number"},
      {R"({"do_sample": true, "top_p": 1.5})", "gc.json: field 'top_p' = 1.5 must be in (0, 1]"},
      {R"({"do_sample": true, "top_p": 0})", "field 'top_p' = 0 must be in (0, 1]"},
      {R"({"top_k": 1.5})", "gc.json: field 'top_k' must be an integer"},
      {R"({"top_k": -3})", "gc.json: field 'top_k' = -3 is out of range (0..2147483647)"},
      {R"({"max_new_tokens": 0})", "field 'max_new_tokens' = 0 is out of range"},
      {R"({"max_new_tokens": 18446744073709551615})", "field 'max_new_tokens' = 1844"},
      {R"({"eos_token_id": [1, 129280]})",
       "gc.json: field 'eos_token_id[1]' = 129280 is not a token id (0..129279)"},
      {R"({"eos_token_id": -1})", "field 'eos_token_id' = -1 is not a token id"},
      {R"({"eos_token_id": "1"})", "field 'eos_token_id' = \"1\" is not a token id"},
      {R"({"stop_strings": ["a", ""]})", "field 'stop_strings[1]' must be a non-empty string"},
      {"{\"stop_strings\": \"\xff\"}", "gc.json: not valid JSON"},   // not UTF-8
      {R"({"do_sample": true, "do_sample": false})", "key \"do_sample\" appears twice"},
      {R"([1, 2])", "gc.json: not a JSON object"},
      {R"({"temperature": 0.6)", "gc.json: not valid JSON"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK_THROWS_WITH_AS(parse(c.text), doctest::Contains(c.message), FormatError);
  }
}

TEST_CASE("generation_config: read from a file; absent is nullopt, a broken entry an error") {
  ds::testing::TempDir dir("gencfg");
  const auto file = dir / "generation_config.json";
  CHECK_FALSE(read_generation_config(file, 100));
  dir.write("generation_config.json", R"({"do_sample": true, "temperature": 0.5,
      "eos_token_id": 99})");
  const auto d = read_generation_config(file, 100);
  REQUIRE(d);
  CHECK(d->src == file.string());
  CHECK(d->temperature == 0.5f);
  CHECK_THROWS_WITH_AS(read_generation_config(file, 99),
                       doctest::Contains("'eos_token_id' = 99 is not a token id (0..98)"),
                       FormatError);
  // a dangling link (a half-downloaded hub cache) is not "no file"
  const auto link = dir / "link.json";
  std::filesystem::create_symlink(dir / "blob-missing", link);
  CHECK_THROWS_WITH_AS(read_generation_config(link, 100),
                       doctest::Contains("link.json: symbolic link to a missing file"),
                       ds::IoError);
  std::filesystem::create_symlink(file, dir / "good-link.json");
  CHECK(read_generation_config(dir / "good-link.json", 100)->temperature == 0.5f);
  // not a regular file (a directory, a FIFO: read_file would wait for a writer), too large
  std::filesystem::create_directory(dir / "d.json");
  CHECK_THROWS_WITH_AS(read_generation_config(dir / "d.json", 100),
                       doctest::Contains("d.json: not a regular file"), FormatError);
  REQUIRE(::mkfifo((dir / "fifo.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(read_generation_config(dir / "fifo.json", 100),
                       doctest::Contains("fifo.json: not a regular file"), FormatError);
  dir.write("big.json", "{\"do_sample\": true" + std::string(1 << 20, ' ') + "}");
  CHECK_THROWS_WITH_AS(read_generation_config(dir / "big.json", 100),
                       doctest::Contains("big.json: 1048595 bytes, too large"), FormatError);
}
