// StagedDir: OUT.tmp.PID is renamed to OUT only on commit(), removed otherwise; a
// non-empty OUT is refused unless forced. ShardSink: pieces of one document make one
// document, and roll-over happens between documents.
#include <doctest/doctest.h>

#include <fstream>

#include "ds/core/error.hpp"
#include "ds/tokenize/output_dir.hpp"
#include "test_util.hpp"

using namespace ds::tokenize;

TEST_CASE("StagedDir publishes on commit and cleans up otherwise") {
  const auto root = ds_test::scratch_dir("staged");
  const auto out = root / "out";
  fs::path tmp;
  {
    StagedDir s(out, false);
    tmp = s.path();
    CHECK(fs::is_directory(tmp));
    std::ofstream(tmp / "f") << "x";
  }
  CHECK(!fs::exists(tmp));
  CHECK(!fs::exists(out));
  {
    StagedDir s(out, false);
    std::ofstream(s.path() / "f") << "x";
    s.commit();
  }
  CHECK(fs::exists(out / "f"));
  CHECK_THROWS_AS(StagedDir(out, false), ds::IoError);
  {
    StagedDir s(out, true);
    std::ofstream(s.path() / "g") << "y";
    s.commit();
  }
  CHECK(!fs::exists(out / "f"));
  CHECK(fs::exists(out / "g"));
  int entries = 0;
  for (auto& e : fs::directory_iterator(root)) entries += !e.path().empty();
  CHECK(entries == 1);   // no .tmp or .old left behind
}

TEST_CASE("ShardSink joins pieces into documents and rolls over between documents") {
  const auto dir = ds_test::scratch_dir("sink");
  const std::string fp = "0123456789abcdef";
  ShardSink sink(dir, 1000, fp, /*max_shard_bytes=*/1);
  // Compressed bytes are counted per full block, so the first document fills one.
  std::vector<uint32_t> a(70000), b{4, 5};
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint32_t(i % 1000);
  sink.append(a);
  sink.append(b);
  sink.end_document();
  sink.append(b);
  sink.end_document();
  const auto m = sink.finish("{\"k\":1}");
  CHECK(m.documents == 2);
  CHECK(m.tokens == 70004);
  CHECK(m.shards.size() == 2);
  ds::data::Dataset ds(dir);
  std::vector<uint32_t> all(70004);
  ds.read(0, all);
  auto want = a;
  want.insert(want.end(), {4, 5, 4, 5});
  CHECK(all == want);
  CHECK(ds.shard(0).document_offsets() == std::vector<uint64_t>{0, 70002});
  CHECK(ds.shard(1).document_offsets() == std::vector<uint64_t>{0, 2});
}
