// Token shard round trips (2- and 4-byte widths, random documents and reads), corruption
// and truncation detection, tokenizer fingerprint checks, atomic publication and
// byte-identical output. Format: docs/formats.md ("Token shards").
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>

#include "data_test_util.hpp"
#include "ds/core/hash.hpp"

using namespace ds_test;
using ds::data::ShardReader;
using ds::data::ShardWriter;

namespace {

struct Written {
  std::vector<TokenId> all;
  std::vector<uint64_t> offsets{0};
};

// Writes `docs` to `path` appending each in a few random-size pieces.
Written write_shard(const fs::path& path, const std::vector<std::vector<TokenId>>& docs,
                    uint32_t vocab, uint32_t block_tokens, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  ShardWriter w(path, vocab, kFp, block_tokens);
  Written out;
  for (const auto& d : docs) {
    size_t pos = 0;
    while (pos < d.size()) {
      const size_t take = std::min<size_t>(d.size() - pos, 1 + rng() % (block_tokens + 7));
      w.append(std::span<const TokenId>(d.data() + pos, take));
      pos += take;
    }
    w.end_document();
    out.all.insert(out.all.end(), d.begin(), d.end());
    out.offsets.push_back(out.all.size());
  }
  CHECK(w.n_tokens() == out.all.size());
  CHECK(w.n_documents() == docs.size());
  const auto info = w.finish();
  CHECK(info.n_tokens == out.all.size());
  CHECK(info.n_documents == docs.size());
  return out;
}

void check_round_trip(uint32_t vocab, uint32_t block_tokens, uint64_t seed) {
  TempDir dir("rt");
  const fs::path p = dir.path / "a.dst";
  const auto docs = random_docs(seed, 40, 3 * block_tokens, vocab);
  const Written w = write_shard(p, docs, vocab, block_tokens, seed);
  ShardReader r(p, std::string(kFp));
  const auto& info = r.info();
  CHECK(info.version == 1);
  CHECK(info.token_width == (vocab <= 65536 ? 2u : 4u));
  CHECK(info.vocab_size == vocab);
  CHECK(info.tokenizer_fingerprint == kFp);
  CHECK(info.n_tokens == w.all.size());
  CHECK(info.n_documents == docs.size());
  CHECK(info.block_tokens == block_tokens);
  CHECK(info.n_blocks == (w.all.size() + block_tokens - 1) / block_tokens);
  CHECK(r.document_offsets() == w.offsets);
  CHECK(r.read(0, w.all.size()) == w.all);
  CHECK(r.verify() == 0);
  std::mt19937_64 rng(seed + 99);
  for (int i = 0; i < 200; ++i) {
    const uint64_t a = rng() % (w.all.size() + 1);
    const uint64_t n = rng() % (w.all.size() - a + 1);
    const auto got = r.read(a, n);
    REQUIRE(got.size() == n);
    CHECK(std::equal(got.begin(), got.end(), w.all.begin() + ptrdiff_t(a)));
  }
}

// Byte offsets of interest in a finished shard (see lib/data/shard_format.hpp).
constexpr size_t kHeader = 128;

}  // namespace

TEST_CASE("shard round trip, 2-byte tokens") {
  check_round_trip(50000, 97, 1);
  check_round_trip(65536, 1000, 2);   // largest vocab that still fits 2 bytes
}

TEST_CASE("shard round trip, 4-byte tokens") {
  check_round_trip(65537, 97, 3);
  check_round_trip(129280, 512, 4);  // DeepSeek-V3's vocabulary size
}

TEST_CASE("empty shard and empty documents") {
  TempDir dir("empty");
  {
    ShardWriter w(dir.path / "e.dst", 100, kFp, 16);
    w.finish();
  }
  ShardReader r(dir.path / "e.dst");
  CHECK(r.info().n_tokens == 0);
  CHECK(r.info().n_blocks == 0);
  CHECK(r.document_offsets() == std::vector<uint64_t>{0});
  CHECK(r.read(0, 0).empty());
  require_format_error([&] { r.read(0, 1); }, {"e.dst", "out of range"});

  // Empty documents are kept; tokens after the last end_document() form a final document.
  {
    ShardWriter w(dir.path / "d.dst", 100, kFp, 16);
    w.end_document();
    const TokenId t[3] = {1, 2, 3};
    w.append(t);
    w.end_document();
    w.end_document();
    w.append(std::span<const TokenId>(t, 2));
    CHECK(w.n_documents() == 4);
    w.finish();
  }
  ShardReader d(dir.path / "d.dst");
  CHECK(d.document_offsets() == std::vector<uint64_t>{0, 0, 3, 3, 5});
  CHECK(d.read(0, 5) == std::vector<TokenId>{1, 2, 3, 1, 2});
}

TEST_CASE("out-of-range reads and out-of-vocabulary tokens") {
  TempDir dir("range");
  const auto docs = random_docs(5, 10, 50, 1000);
  const Written w = write_shard(dir.path / "s.dst", docs, 1000, 32);
  ShardReader r(dir.path / "s.dst");
  const uint64_t n = w.all.size();
  require_format_error([&] { r.read(n, 1); }, {"s.dst", "out of range"});
  require_format_error([&] { r.read(n + 1, 0); }, {"s.dst", "out of range"});
  require_format_error([&] { r.read(1, n); }, {"s.dst", "out of range"});
  std::vector<TokenId> buf(2);
  require_format_error([&] { r.read(UINT64_MAX, buf); }, {"out of range"});

  ShardWriter bad(dir.path / "bad.dst", 1000, kFp, 32);
  const TokenId t[1] = {1000};
  CHECK_THROWS_AS(bad.append(t), ds::FormatError);
  CHECK_THROWS_AS(ShardWriter(dir.path / "x.dst", 10, "not-hex", 32), ds::UsageError);
  CHECK_THROWS_AS(ShardWriter(dir.path / "x.dst", 10, kFp, 0), ds::UsageError);
}

TEST_CASE("corrupt block: read names the file and the block") {
  TempDir dir("corrupt");
  const fs::path p = dir.path / "c.dst";
  const auto docs = random_docs(7, 30, 200, 30000);
  const Written w = write_shard(p, docs, 30000, 64);
  std::string bytes = read_bytes(p);
  // Block 2 starts at the index entry's offset; find it through a clean reader first.
  uint64_t n_blocks;
  {
    ShardReader r(p);
    n_blocks = r.info().n_blocks;
    REQUIRE(n_blocks > 4);
  }
  // The index is at header.index_offset (u64 at byte 56); entry b is 40 bytes at +40*b.
  uint64_t index_offset, block2;
  std::memcpy(&index_offset, bytes.data() + 56, 8);
  std::memcpy(&block2, bytes.data() + index_offset + 2 * 40, 8);
  bytes[block2 + 3] = char(bytes[block2 + 3] ^ 0x5a);
  write_bytes(p, bytes);
  ShardReader r(p);   // the header, index and document table are intact
  CHECK(r.read(0, 64) == std::vector<TokenId>(w.all.begin(), w.all.begin() + 64));
  require_format_error([&] { r.read(2 * 64 + 5, 3); }, {"c.dst", "block 2", "checksum"});
  require_format_error([&] { r.read(0, w.all.size()); }, {"c.dst", "block 2"});
  std::vector<std::string> problems;
  CHECK(r.verify(&problems) == 1);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("block 2") != std::string::npos);
}

TEST_CASE("corrupt header, index or document table: open throws") {
  TempDir dir("hdr");
  const fs::path p = dir.path / "h.dst";
  write_shard(p, random_docs(8, 20, 100, 500), 500, 32);
  const std::string good = read_bytes(p);
  uint64_t index_offset, doc_offset;
  std::memcpy(&index_offset, good.data() + 56, 8);
  std::memcpy(&doc_offset, good.data() + 72, 8);
  // Every header byte, one at a time (magic, fields, reserved, checksum).
  for (size_t i = 0; i < kHeader; ++i) {
    std::string b = good;
    b[i] = char(b[i] ^ 0x01);
    write_bytes(p, b);
    INFO("header byte " << i);
    CHECK_THROWS_AS(ShardReader{p}, ds::FormatError);
  }
  for (uint64_t off : {index_offset, index_offset + 17, doc_offset, uint64_t(good.size() - 1)}) {
    std::string b = good;
    b[off] = char(b[off] ^ 0x80);
    write_bytes(p, b);
    INFO("byte " << off);
    CHECK_THROWS_AS(ShardReader{p}, ds::FormatError);
  }
  write_bytes(p, good + "x");
  require_format_error([&] { ShardReader r(p); }, {"h.dst", "trailing"});
  write_bytes(p, "{\"format\": \"ds-token-dataset\"}");
  require_format_error([&] { ShardReader r(p); }, {"h.dst", "bad magic"});
}

TEST_CASE("truncated shard: open throws 'truncated'") {
  TempDir dir("trunc");
  const fs::path p = dir.path / "t.dst";
  write_shard(p, random_docs(9, 20, 100, 500), 500, 32);
  const std::string good = read_bytes(p);
  for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(127), size_t(128), size_t(200),
                     good.size() / 2, good.size() - 25, good.size() - 24, good.size() - 1}) {
    write_bytes(p, good.substr(0, cut));
    INFO("cut at " << cut << " of " << good.size());
    require_format_error([&] { ShardReader r(p); }, {"t.dst", "truncated"});
  }
  write_bytes(p, good);
  CHECK_NOTHROW(ShardReader{p});
}

TEST_CASE("wrong tokenizer fingerprint names both fingerprints") {
  TempDir dir("fp");
  const fs::path p = dir.path / "f.dst";
  write_shard(p, random_docs(10, 3, 10, 100), 100, 16);
  require_format_error([&] { ShardReader r(p, std::string(kOtherFp)); },
                       {"f.dst", "another tokenizer", kFp, kOtherFp});
  CHECK_NOTHROW(ShardReader(p, std::string("0123456789ABCDEF")));   // case-insensitive
  CHECK(ShardReader(p).info().tokenizer_fingerprint == kFp);
}

TEST_CASE("ShardWriter without finish leaves nothing") {
  TempDir dir("abort");
  {
    ShardWriter w(dir.path / "x.dst", 1000, kFp, 16);
    const auto docs = random_docs(11, 10, 100, 1000);
    for (const auto& d : docs) { w.append(d); w.end_document(); }
    CHECK(w.bytes_written() > 0);
    CHECK(dir.count_entries() == 1);   // the temporary file exists while writing
    CHECK_FALSE(fs::exists(dir.path / "x.dst"));
  }
  CHECK(dir.count_entries() == 0);
}

TEST_CASE("shards are byte-identical for identical input") {
  TempDir dir("det");
  const auto docs = random_docs(12, 50, 300, 70000);
  write_shard(dir.path / "a.dst", docs, 70000, 100, 1);
  write_shard(dir.path / "b.dst", docs, 70000, 100, 2);   // different append splits
  const std::string a = read_bytes(dir.path / "a.dst");
  CHECK(a.size() > 128);
  CHECK(a == read_bytes(dir.path / "b.dst"));
  CHECK(a.compare(0, 8, std::string("DSTOKSH\0", 8)) == 0);
}

TEST_CASE("concurrent reads from one reader") {
  TempDir dir("mt");
  const auto docs = random_docs(13, 40, 500, 5000);
  const Written w = write_shard(dir.path / "m.dst", docs, 5000, 64);
  ShardReader r(dir.path / "m.dst");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 300; ++i) {
        const uint64_t a = rng() % w.all.size();
        const uint64_t n = std::min<uint64_t>(rng() % 200, w.all.size() - a);
        const auto got = r.read(a, n);
        if (!std::equal(got.begin(), got.end(), w.all.begin() + ptrdiff_t(a))) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == 0);
}

TEST_CASE("a block holding a token >= vocab_size is rejected on read") {
  TempDir dir("vocab");
  const fs::path p = dir.path / "v.dst";
  {
    ShardWriter w(p, 1000, kFp, 16);
    std::vector<TokenId> t(40, 3);
    t[20] = 999;   // in block 1
    w.append(t);
    w.finish();
  }
  // Lower vocab_size (u32 at byte 16) to 500 and re-seal the header and footer checksums,
  // giving a well-formed shard whose block 1 holds an out-of-vocabulary id.
  std::string b = read_bytes(p);
  const uint32_t vocab = 500;
  std::memcpy(b.data() + 16, &vocab, 4);
  const uint64_t h = ds::xxh64(b.data(), 120);
  std::memcpy(b.data() + 120, &h, 8);
  std::memcpy(b.data() + b.size() - 16, &h, 8);
  write_bytes(p, b);
  ShardReader r(p);
  CHECK(r.info().vocab_size == 500);
  CHECK(r.read(0, 16) == std::vector<TokenId>(16, 3));
  require_format_error([&] { r.read(0, 40); }, {"v.dst", "block 1", "999", "vocab_size 500"});
  CHECK(r.verify() == 1);
}
