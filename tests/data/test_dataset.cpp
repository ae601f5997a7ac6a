// Dataset directories: roll-over into several shards, reads across shard boundaries,
// manifest validation (missing and mistyped fields named), shard/manifest mismatches,
// interrupted writers, and single-shard datasets. Format: docs/formats.md.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "data_test_util.hpp"

using namespace ds_test;
using ds::data::Dataset;
using ds::data::DatasetWriter;
using ds::data::Manifest;
using ds::data::ShardReader;

namespace {

struct Built {
  std::vector<TokenId> all;
  Manifest manifest;
};

Built build(const fs::path& dir, uint32_t vocab, uint64_t max_bytes, uint32_t block_tokens,
            size_t n_docs, size_t max_len, uint64_t seed,
            const std::string& extra = R"({"source": "unit test", "fim_rate": 0.5})") {
  const auto docs = random_docs(seed, n_docs, max_len, vocab);
  DatasetWriter w(dir, vocab, kFp, max_bytes, block_tokens);
  Built b;
  for (const auto& d : docs) {
    w.add_document(d);
    b.all.insert(b.all.end(), d.begin(), d.end());
  }
  b.manifest = w.finish(extra);
  return b;
}

nlohmann::json load_json(const fs::path& p) { return nlohmann::json::parse(read_bytes(p)); }

}  // namespace

TEST_CASE("dataset rolls over into several shards and reads across them") {
  TempDir dir("roll");
  const Built b = build(dir.path, 20000, 2000, 64, 120, 400, 21);
  const Manifest& m = b.manifest;
  REQUIRE(m.shards.size() >= 3);
  CHECK(m.tokens == b.all.size());
  CHECK(m.documents == 120);
  CHECK(m.token_width == 2);
  uint64_t docs = 0;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    CHECK(m.shards[i].file == fmt::format("shard-{:05d}.dst", i));
    CHECK(m.shards[i].bytes == fs::file_size(dir.path / m.shards[i].file));
    ShardReader r(dir.path / m.shards[i].file);
    CHECK(r.info().n_tokens == m.shards[i].tokens);
    CHECK(r.info().n_documents == m.shards[i].documents);
    docs += m.shards[i].documents;
    // Documents never span shards: every shard but the last reached the limit with whole
    // documents, so each ends exactly at a document boundary.
    CHECK(r.document_offsets().back() == r.info().n_tokens);
  }
  CHECK(docs == 120);

  Dataset ds(dir.path, std::string(kFp));
  CHECK(ds.n_shards() == m.shards.size());
  CHECK(ds.n_tokens() == b.all.size());
  std::vector<TokenId> all(b.all.size());
  ds.read(0, all);
  CHECK(all == b.all);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 300; ++i) {
    const uint64_t a = rng() % (b.all.size() + 1);
    std::vector<TokenId> out(rng() % (b.all.size() - a + 1));
    ds.read(a, out);
    CHECK(std::equal(out.begin(), out.end(), b.all.begin() + ptrdiff_t(a)));
  }
  std::vector<TokenId> one(1);
  require_format_error([&] { ds.read(b.all.size(), one); }, {"manifest.json", "out of range"});
  // Opening via the manifest path gives the same dataset.
  Dataset by_manifest(dir.path / "manifest.json");
  CHECK(by_manifest.n_tokens() == ds.n_tokens());
}

TEST_CASE("a document larger than the limit goes whole into one shard") {
  TempDir dir("big");
  DatasetWriter w(dir.path, 100000, kFp, 100, 32);
  std::vector<TokenId> big(5000), small(10, 7);
  for (size_t i = 0; i < big.size(); ++i) big[i] = TokenId(i * 7919 % 100000);
  w.add_document(small);
  w.add_document(big);
  w.add_document(small);
  const Manifest m = w.finish();
  REQUIRE(m.shards.size() == 2);
  CHECK(m.shards[0].tokens == 5010);
  CHECK(m.shards[0].documents == 2);
  CHECK(m.shards[1].tokens == 10);
  CHECK(m.token_width == 4);
  Dataset ds(dir.path);
  std::vector<TokenId> got(5000);
  ds.read(10, got);
  CHECK(got == big);
}

TEST_CASE("manifest fields are written and validated") {
  TempDir dir("man");
  build(dir.path, 3000, 1 << 20, 128, 10, 100, 22);
  const fs::path mp = dir.path / "manifest.json";
  const nlohmann::json good = load_json(mp);
  CHECK(good["format"] == "ds-token-dataset");
  CHECK(good["version"] == 1);
  CHECK(good["tokenizer_fingerprint"] == kFp);
  CHECK(good["provenance"]["source"] == "unit test");
  CHECK(good["provenance"]["fim_rate"] == 0.5);
  CHECK(nlohmann::json::parse(Manifest::load(mp).extra_json) == good["provenance"]);

  for (const char* field : {"format", "version", "tokenizer_fingerprint", "vocab_size",
                            "token_width", "tokens", "documents", "shards"}) {
    nlohmann::json j = good;
    j.erase(field);
    write_bytes(mp, j.dump());
    require_format_error([&] { Manifest::load(mp); }, {"manifest.json", "missing", field});
  }
  for (const char* field : {"file", "tokens", "documents", "bytes"}) {
    nlohmann::json j = good;
    j["shards"][0].erase(field);
    write_bytes(mp, j.dump());
    require_format_error([&] { Manifest::load(mp); },
                         {"manifest.json", std::string("shards[0].") + field});
  }
  auto mutate = [&](auto&& fn, std::initializer_list<std::string> parts) {
    nlohmann::json j = good;
    fn(j);
    write_bytes(mp, j.dump());
    require_format_error([&] { Manifest::load(mp); }, parts);
  };
  mutate([](auto& j) { j["tokens"] = "many"; }, {"'tokens'", "integer"});
  mutate([](auto& j) { j["tokens"] = -1; }, {"'tokens'"});
  mutate([](auto& j) { j["tokens"] = j["tokens"].template get<uint64_t>() + 1; }, {"'tokens'"});
  mutate([](auto& j) { j["format"] = "other"; }, {"'format'"});
  mutate([](auto& j) { j["version"] = 2; }, {"version 2"});
  mutate([](auto& j) { j["token_width"] = 4; }, {"'token_width'"});
  mutate([](auto& j) { j["tokenizer_fingerprint"] = "xyz"; }, {"'tokenizer_fingerprint'"});
  mutate([](auto& j) { j["shards"][0]["file"] = "../escape.dst"; }, {"shards[0].file"});
  mutate([](auto& j) { j["shards"][0]["file"] = "/abs.dst"; }, {"shards[0].file"});
  mutate([](auto& j) { j["shards"] = nlohmann::json::object(); }, {"'shards'"});
  mutate([](auto& j) { j["provenance"] = 3; }, {"'provenance'"});
  write_bytes(mp, "{ not json");
  require_format_error([&] { Manifest::load(mp); }, {"manifest.json", "JSON"});
}

TEST_CASE("dataset checks shards against the manifest") {
  TempDir dir("mismatch");
  build(dir.path, 3000, 3000, 64, 60, 200, 23, "{}");
  const fs::path mp = dir.path / "manifest.json";
  const nlohmann::json good = load_json(mp);
  REQUIRE(good["shards"].size() >= 2);
  {  // shard token count disagrees (totals kept consistent so the manifest itself loads)
    nlohmann::json j = good;
    j["shards"][1]["tokens"] = j["shards"][1]["tokens"].get<uint64_t>() + 1;
    j["tokens"] = j["tokens"].get<uint64_t>() + 1;
    write_bytes(mp, j.dump());
    require_format_error([&] { Dataset d(dir.path); }, {"shard-00001.dst", "manifest"});
  }
  {  // the manifest was made with another tokenizer than the caller expects
    write_bytes(mp, good.dump());
    require_format_error([&] { Dataset d(dir.path, std::string(kOtherFp)); },
                         {"manifest.json", "another tokenizer", kOtherFp});
  }
  {  // a shard from another tokenizer slipped into the directory
    nlohmann::json j = good;
    j["tokenizer_fingerprint"] = kOtherFp;
    write_bytes(mp, j.dump());
    require_format_error([&] { Dataset d(dir.path); }, {"shard-00000.dst", "another tokenizer"});
  }
  {  // a missing shard file
    write_bytes(mp, good.dump());
    fs::remove(dir.path / "shard-00001.dst");
    CHECK_THROWS_AS(Dataset{dir.path}, ds::IoError);
  }
}

TEST_CASE("interrupted DatasetWriter leaves no manifest") {
  TempDir dir("interrupt");
  build(dir.path, 3000, 1500, 64, 40, 200, 24);   // an earlier, complete dataset
  REQUIRE(fs::exists(dir.path / "manifest.json"));
  {
    DatasetWriter w(dir.path, 3000, kFp, 1500, 64);
    CHECK_FALSE(fs::exists(dir.path / "manifest.json"));   // stale manifest removed first
    for (const auto& d : random_docs(25, 40, 200, 3000)) w.add_document(d);
  }  // destroyed without finish()
  CHECK_FALSE(fs::exists(dir.path / "manifest.json"));
  for (auto& e : fs::directory_iterator(dir.path))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  CHECK_THROWS_AS(Dataset{dir.path}, ds::IoError);
}

TEST_CASE("single shard and empty datasets") {
  TempDir dir("single");
  {
    ds::data::ShardWriter w(dir.path / "only.dst", 300, kFp, 16);
    const std::vector<TokenId> t{1, 2, 3, 4, 5};
    w.append(t);
    w.finish();
  }
  Dataset one(dir.path / "only.dst", std::string(kFp));
  CHECK(one.n_shards() == 1);
  CHECK(one.manifest().tokens == 5);
  CHECK(one.manifest().shards[0].file == "only.dst");
  std::vector<TokenId> got(3);
  one.read(2, got);
  CHECK(got == std::vector<TokenId>{3, 4, 5});
  require_format_error([&] { Dataset d(dir.path / "only.dst", std::string(kOtherFp)); },
                       {"only.dst", "another tokenizer"});

  TempDir empty("emptyds");
  DatasetWriter w(empty.path, 300, kFp, 1000, 16);
  const Manifest m = w.finish();
  CHECK(m.shards.empty());
  Dataset ds(empty.path);
  CHECK(ds.n_tokens() == 0);
  std::vector<TokenId> none;
  CHECK_NOTHROW(ds.read(0, none));
}
