// Checkpoint directories: publish on commit only, replace an existing one, keep the last N,
// find the newest, copy tokenizer files.
// reference: include/ds/io/checkpoint.hpp.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "ds/core/error.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"

namespace fs = std::filesystem;
using ds::io::CheckpointWriter;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("ds_test_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::set<std::string> entries(const fs::path& d) {
  std::set<std::string> s;
  for (auto& e : fs::directory_iterator(d)) s.insert(e.path().filename().string());
  return s;
}

}  // namespace

TEST_CASE("CheckpointWriter publishes on commit, leaves nothing without it") {
  fs::path run = fresh_dir("commit");
  fs::path fin = run / "step-00000010";
  {
    CheckpointWriter w(fin);
    CHECK(fs::is_directory(w.path()));
    CHECK(w.path().parent_path() == run);
    CHECK(w.path().filename().string().rfind(".step-00000010.tmp.", 0) == 0);
    ds::io::write_file_atomic(w.path() / "config.json", "{}");
    fs::create_directories(w.path() / "sub");
    ds::io::write_file_atomic(w.path() / "sub" / "x.bin", "abc");
    CHECK_FALSE(fs::exists(fin));
    CHECK_FALSE(ds::io::find_latest_checkpoint(run).has_value());   // hidden temp ignored
    w.commit();
    CHECK(w.committed());
  }
  CHECK(entries(run) == std::set<std::string>{"step-00000010"});
  CHECK(ds::io::read_file(fin / "sub" / "x.bin") == "abc");
  {
    CheckpointWriter w(run / "step-00000020");
    ds::io::write_file_atomic(w.path() / "config.json", "{}");
  }  // abandoned
  CHECK(entries(run) == std::set<std::string>{"step-00000010"});
  CHECK(ds::io::find_latest_checkpoint(run) == fin);
  fs::remove_all(run);
}

TEST_CASE("CheckpointWriter replaces an existing checkpoint") {
  fs::path run = fresh_dir("replace");
  fs::path fin = run / "final";
  fs::create_directories(fin);
  ds::io::write_file_atomic(fin / "old.txt", "old");
  {
    CheckpointWriter w(fin);
    ds::io::write_file_atomic(w.path() / "new.txt", "new");
    w.commit();
  }
  CHECK(entries(run) == std::set<std::string>{"final"});
  CHECK(entries(fin) == std::set<std::string>{"new.txt"});
  CHECK(ds::io::read_file(fin / "new.txt") == "new");
  fs::remove_all(run);
}

TEST_CASE("prune keeps exactly the N newest by step; other entries untouched") {
  fs::path run = fresh_dir("prune");
  for (const char* n : {"step-1", "step-2", "step-9", "step-10", "step-00000011", "step-100"})
    fs::create_directories(run / n);
  for (const char* n : {"step-abc", "other", ".step-00000200.tmp.123", "step-"})
    fs::create_directories(run / n);
  ds::io::write_file_atomic(run / "step-500", "a file, not a checkpoint");
  CHECK(ds::io::checkpoint_step(run / "step-00000011") == 11u);
  CHECK_FALSE(ds::io::checkpoint_step(run / "step-abc").has_value());
  CHECK(ds::io::checkpoint_dir_name(42) == "step-00000042");
  CHECK(ds::io::find_latest_checkpoint(run) == run / "step-100");

  auto removed = ds::io::prune_checkpoints(run, 3);
  CHECK(removed.size() == 3);
  CHECK(entries(run) == std::set<std::string>{"step-10", "step-00000011", "step-100", "step-abc",
                                              "other", ".step-00000200.tmp.123", "step-",
                                              "step-500"});
  CHECK(ds::io::prune_checkpoints(run, 3).empty());   // already at N
  CHECK(ds::io::prune_checkpoints(run, 1).size() == 2);
  CHECK(ds::io::list_checkpoints(run) == std::vector<fs::path>{run / "step-100"});
  CHECK_THROWS_AS(ds::io::prune_checkpoints(run, 0), ds::UsageError);
  CHECK_FALSE(ds::io::find_latest_checkpoint(run / "absent").has_value());
  fs::remove_all(run);
}

TEST_CASE("copy_tokenizer_files copies what is present") {
  fs::path src = fresh_dir("tok_src"), dst = fresh_dir("tok_dst"), dst2 = fresh_dir("tok_dst2");
  ds::io::write_file_atomic(src / "tokenizer.json", "{\"model\":1}");
  CHECK(ds::io::copy_tokenizer_files(src, dst) == 1);
  CHECK(entries(dst) == std::set<std::string>{"tokenizer.json"});
  ds::io::write_file_atomic(src / "tokenizer_config.json", "{\"cfg\":1}");
  fs::rename(src / "tokenizer.json", src / "my_tok.json");
  CHECK(ds::io::copy_tokenizer_files(src / "my_tok.json", dst2) == 2);
  CHECK(ds::io::read_file(dst2 / "tokenizer.json") == "{\"model\":1}");
  CHECK(ds::io::read_file(dst2 / "tokenizer_config.json") == "{\"cfg\":1}");
  CHECK_THROWS_AS(ds::io::copy_tokenizer_files(src / "absent", dst), ds::IoError);
  fs::remove_all(src);
  fs::remove_all(dst);
  fs::remove_all(dst2);
}

TEST_CASE("copy_tokenizer_files sets add_bos_token as the training data had BOS") {
  using ds::io::TokenizerFiles;
  fs::path src = fresh_dir("tokb_src"), dst = fresh_dir("tokb_dst");
  ds::io::write_file_atomic(src / "tokenizer.json", "{\"model\":1}");
  const fs::path tc = src / "tokenizer_config.json", out = dst / "tokenizer_config.json";
  auto copy = [&](std::optional<bool> bos) {
    TokenizerFiles f(src);
    f.add_bos_token = bos;
    return ds::io::copy_tokenizer_files(f, dst);
  };
  // absent key = true (transformers' Llama default): "true" keeps the bytes, "false" sets it
  // after the other keys, which keep their order
  const std::string cfg = "{\"z\": 1, \"chat_template\": \"\u00e9\", \"a\": [2]}";
  ds::io::write_file_atomic(tc, cfg);
  CHECK(copy(true) == 2);
  CHECK(ds::io::read_file(out) == cfg);
  CHECK(ds::io::add_bos_token_in(out) == std::nullopt);
  CHECK(copy(false) == 2);
  CHECK(ds::io::read_file(out) ==
        "{\n  \"z\": 1,\n  \"chat_template\": \"\u00e9\",\n  \"a\": [\n    2\n  ],\n"
        "  \"add_bos_token\": false\n}\n");
  CHECK(ds::io::add_bos_token_in(out) == false);
  // a config that says false, trained with BOS: set to true in place; nullopt copies as is
  ds::io::write_file_atomic(tc, "{\"add_bos_token\": false, \"b\": 1}");
  CHECK(copy(std::nullopt) == 2);
  CHECK(ds::io::read_file(out) == "{\"add_bos_token\": false, \"b\": 1}");
  CHECK(copy(true) == 2);
  CHECK(ds::io::read_file(out) == "{\n  \"add_bos_token\": true,\n  \"b\": 1\n}\n");
  CHECK(ds::io::add_bos_token_in(out) == true);
  // null is "not said"; a missing file too; the wrong type or not an object: FormatError
  ds::io::write_file_atomic(tc, "{\"add_bos_token\": null}");
  CHECK(ds::io::add_bos_token_in(tc) == std::nullopt);
  CHECK(ds::io::add_bos_token_in(src / "absent.json") == std::nullopt);
  ds::io::write_file_atomic(tc, "{\"add_bos_token\": \"yes\"}");
  CHECK_THROWS_WITH_AS(ds::io::add_bos_token_in(tc),
                       doctest::Contains("add_bos_token must be true or false"), ds::FormatError);
  CHECK_THROWS_AS(copy(false), ds::FormatError);
  ds::io::write_file_atomic(tc, "[1, 2]");
  CHECK_THROWS_WITH_AS(copy(false), doctest::Contains("tokenizer_config.json: not a JSON object"),
                       ds::FormatError);
  ds::io::write_file_atomic(tc, "{\"add_bos_token\": tru");
  CHECK_THROWS_WITH_AS(copy(false),
                       doctest::Contains("tokenizer_config.json: invalid JSON at byte"),
                       ds::FormatError);
  fs::remove_all(src);
  fs::remove_all(dst);
}
