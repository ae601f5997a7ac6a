// Best-fit-decreasing packing against a direct O(n x bins) reference, and the pre-training
// loader's best-fit rows: every document of the training region appears once per epoch as the
// chunks the rule gives (whole when it fits a row), padding masked, the held-out windows the
// same as with stride rows, and the order resumable from (epoch, position).
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/train/best_fit.hpp"
#include "ds/train/data_loader.hpp"

using namespace ds::train;
namespace fs = std::filesystem;

namespace {

// Best fit decreasing the slow way: every open bin looked at for every item.
std::vector<int64_t> reference_loads(const std::vector<int64_t>& sizes, int64_t cap) {
  std::vector<int64_t> sorted = sizes;
  std::stable_sort(sorted.begin(), sorted.end(), std::greater<>());
  std::vector<int64_t> loads;
  for (int64_t L : sorted) {
    int64_t best = -1;
    for (size_t b = 0; b < loads.size(); ++b)
      if (cap - loads[b] >= L && (best < 0 || loads[b] > loads[size_t(best)])) best = int64_t(b);
    if (best < 0) loads.push_back(L);
    else loads[size_t(best)] += L;
  }
  std::sort(loads.begin(), loads.end());
  return loads;
}

}  // namespace

TEST_CASE("best fit decreasing: a worked example and the reference on random items") {
  // capacity 10: 6 opens bin 0, 5 bin 1, 4 fills bin 0 exactly, 3 and 2 go to bin 1
  const std::vector<int64_t> ex{6, 5, 4, 3, 2};
  const BinPacking p = best_fit_decreasing(ex, 10);
  CHECK(p.n_bins() == 2);
  CHECK(p.first == std::vector<int64_t>{0, 2, 5});
  CHECK(p.items == std::vector<int64_t>{0, 2, 1, 3, 4});
  // 8 opens bin 0 (2 left), 6 bin 1 (4 left), 3 joins bin 1 (1 left); the 1 goes where it
  // fits best, bin 1, which first fit would have missed for bin 0
  const BinPacking q = best_fit_decreasing(std::vector<int64_t>{8, 6, 3, 1}, 10);
  CHECK(q.first == std::vector<int64_t>{0, 1, 4});
  CHECK(q.items == std::vector<int64_t>{0, 1, 2, 3});

  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t cap = 1 + int64_t(rng() % 40);
    std::vector<int64_t> sizes(size_t(rng() % 120));
    for (int64_t& s : sizes) s = 1 + int64_t(rng() % uint64_t(cap));
    const BinPacking b = best_fit_decreasing(sizes, cap);
    std::vector<int64_t> seen(sizes.size(), 0), loads;
    REQUIRE(b.first.front() == 0);
    REQUIRE(b.first.back() == int64_t(sizes.size()));
    for (int64_t k = 0; k < b.n_bins(); ++k) {
      int64_t load = 0;
      REQUIRE(b.first[size_t(k)] < b.first[size_t(k + 1)]);   // no empty bin
      for (int64_t j = b.first[size_t(k)]; j < b.first[size_t(k + 1)]; ++j) {
        seen[size_t(b.items[size_t(j)])]++;
        load += sizes[size_t(b.items[size_t(j)])];
      }
      CHECK(load <= cap);
      loads.push_back(load);
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int64_t c) { return c == 1; }));
    std::sort(loads.begin(), loads.end());
    CHECK(loads == reference_loads(sizes, cap));   // the same bins, up to equal-space ties
  }
  CHECK_THROWS_AS(best_fit_decreasing(std::vector<int64_t>{3, 11}, 10), ds::UsageError);
  CHECK_THROWS_AS(best_fit_decreasing(std::vector<int64_t>{0}, 10), ds::UsageError);
}

namespace {

constexpr uint32_t kStride = 1000;   // token of document d, position i: d * kStride + i + 1

struct Corpus {
  fs::path dir;
  std::vector<int64_t> lens;         // tokens per document, in stream order
};

Corpus make_corpus(uint64_t seed, int n_docs, int64_t max_len) {
  Corpus c;
  c.dir = fs::temp_directory_path() / ("ds_test_best_fit_" + std::to_string(seed));
  fs::remove_all(c.dir);
  // small shards: documents never span one, so this also crosses shard boundaries
  ds::data::DatasetWriter w(c.dir, 1u << 24, "0123456789abcdef", 256, 64);
  std::mt19937_64 rng(seed);
  for (int d = 0; d < n_docs; ++d) {
    const int64_t len = 1 + int64_t(rng() % uint64_t(max_len));
    std::vector<uint32_t> doc;
    for (int64_t i = 0; i < len; ++i) doc.push_back(uint32_t(d) * kStride + uint32_t(i) + 1);
    w.add_document(doc);
    c.lens.push_back(len);
  }
  w.finish();
  return c;
}

using ChunkKey = std::tuple<int64_t, int64_t, int64_t>;   // document, first position, tokens

}  // namespace

TEST_CASE("packed loader, best-fit: whole documents, chunked long ones, padding masked") {
  const int64_t T = 16, cap = T + 1, n_val = 2;
  const Corpus c = make_corpus(3, 300, 3 * T);
  ds::data::Dataset ds(c.dir);
  REQUIRE(ds.n_shards() > 1);
  const int64_t n_tokens = std::accumulate(c.lens.begin(), c.lens.end(), int64_t(0));
  const int64_t train_end = ((n_tokens - 1) / T - n_val) * T;   // the first held-out window

  // the chunks the rule gives for the training region
  std::map<ChunkKey, int> want;
  std::vector<int64_t> region_len;   // tokens of each document in the training region
  int64_t split = 0, dropped = 0, docs = 0, start = 0;
  for (int64_t d = 0; d < int64_t(c.lens.size()) && start < train_end; ++d) {
    const int64_t len = std::min(c.lens[size_t(d)], train_end - start);
    region_len.push_back(len);
    start += c.lens[size_t(d)];
    docs++;
    if (len < 2) { dropped++; continue; }
    if (len > cap) split++;
    for (int64_t i = 0;; i += T) {
      const int64_t n = std::min(cap, len - i);
      want[{d, i, n}]++;
      if (i + n >= len) break;
    }
  }

  PackedLoader l(ds, T, 9, n_val, Packing::best_fit);
  const PackingStats& s = l.stats();
  CHECK(s.documents == docs);
  CHECK(s.split_documents == split);
  CHECK(s.dropped == dropped);
  CHECK(s.rows == l.n_train());
  CHECK(s.tokens + s.padding == l.n_train() * cap);

  // one epoch, read in uneven batches
  std::map<ChunkKey, int> got;
  std::map<std::pair<int64_t, int64_t>, int> targets;   // (document, position) -> times
  std::vector<std::vector<int32_t>> epoch0;
  int64_t real = 0;
  for (int64_t done = 0; done < l.n_train();) {
    const int64_t B = std::min<int64_t>(1 + done % 5, l.n_train() - done);
    const ds::model::Batch b = l.next(B);
    REQUIRE(b.lengths.size() == size_t(B));
    REQUIRE(b.loss_mask.defined());
    for (int64_t r = 0; r < B; ++r) {
      const int32_t* t = b.tokens.i32() + r * cap;
      const float* m = b.loss_mask.f32() + r * T;
      const int64_t n = b.lengths[size_t(r)];
      real += n;
      epoch0.emplace_back(t, t + cap);
      for (int64_t j = n; j < cap; ++j) CHECK(t[j] == 0);   // padding after the real tokens
      for (int64_t j = n - 1; j < T; ++j) CHECK(m[j] == 0.0f);   // padding targets masked
      for (int64_t j = 0; j < n;) {   // split the row into runs of one document's positions
        const int64_t d = (t[j] - 1) / kStride, i0 = (t[j] - 1) % kStride;
        int64_t k = j + 1;
        while (k < n && t[k] == t[k - 1] + 1 && (t[k] - 1) / kStride == d) ++k;
        got[{d, i0, k - j}]++;
        for (int64_t q = j; q + 1 < k; ++q) {   // inside a chunk: every target counts
          CHECK(m[q] == 1.0f);
          targets[{d, i0 + q - j + 1}]++;
        }
        if (j > 0) {   // the target between two chunks: kept only from an ended document
          const int64_t pd = (t[j - 1] - 1) / kStride, pi = (t[j - 1] - 1) % kStride;
          const bool ends = pi + 1 == c.lens[size_t(pd)];
          CHECK(m[j - 1] == (ends && i0 == 0 ? 1.0f : 0.0f));
          if (m[j - 1] != 0.0f) targets[{d, 0}]++;
        }
        j = k;
      }
    }
    done += B;
  }
  CHECK(real == s.tokens);
  CHECK(got == want);
  // every token of the region but a document's first is a target exactly once; a first one
  // at most once (after another document's end)
  for (int64_t d = 0; d < int64_t(region_len.size()); ++d) {
    if (region_len[size_t(d)] < 2) continue;
    for (int64_t i = 0; i < region_len[size_t(d)]; ++i) {
      const auto it = targets.find({d, i});
      const int times = it == targets.end() ? 0 : it->second;
      INFO(d << ":" << i);
      CHECK(times == (i == 0 ? std::min(times, 1) : 1));
    }
  }
  CHECK(l.state().epoch == 0);
  CHECK(l.state().position == l.n_train());

  // a resumed loader continues with the same rows; the next epoch is another order of them
  const ds::model::Batch e1 = l.next(7);
  PackedLoader r(ds, T, 9, n_val, Packing::best_fit);
  r.set_state({1, 0});
  const ds::model::Batch e1r = r.next(7);
  CHECK(std::equal(e1.tokens.i32(), e1.tokens.i32() + 7 * cap, e1r.tokens.i32()));
  CHECK(e1.lengths == e1r.lengths);
  bool reordered = false;
  for (int64_t k = 0; k < 7; ++k)
    reordered |= !std::equal(epoch0[size_t(k)].begin(), epoch0[size_t(k)].end(),
                             e1.tokens.i32() + k * cap);
  CHECK(reordered);

  // the held-out windows are those of stride rows, after every training token
  PackedLoader st(ds, T, 9, n_val, Packing::stride);
  CHECK(st.n_val() == l.n_val());
  ds::Tensor a = ds::Tensor::empty({n_val, cap}, ds::DType::i32);
  ds::Tensor b = ds::Tensor::empty({n_val, cap}, ds::DType::i32);
  l.val_batch(0, n_val, a);
  st.val_batch(0, n_val, b);
  CHECK(std::equal(a.i32(), a.i32() + a.numel(), b.i32()));
  std::vector<uint32_t> first(1);
  ds.read(uint64_t(train_end), first);
  CHECK(a.i32()[0] == int32_t(first[0]));
  fs::remove_all(c.dir);
}

TEST_CASE("packed loader, stride: documents not held whole by one window are counted") {
  const int64_t T = 16;
  const Corpus c = make_corpus(4, 120, 2 * T);
  ds::data::Dataset ds(c.dir);
  PackedLoader l(ds, T, 1, 0, Packing::stride);
  const int64_t end = l.n_train() * T + 1;   // tokens the training windows cover
  int64_t docs = 0, split = 0, s = 0;
  for (const int64_t len : c.lens) {
    if (s >= end) break;
    const int64_t e = std::min(s + len, end);
    docs++;
    bool whole = false;
    for (int64_t k = 0; k < l.n_train(); ++k) whole |= k * T <= s && e <= k * T + T + 1;
    split += whole ? 0 : 1;
    s += len;
  }
  CHECK(l.stats().documents == docs);
  CHECK(l.stats().split_documents == split);
  CHECK(l.stats().padding == 0);
  const ds::model::Batch b = l.next(3);   // full rows: no lengths, no mask
  CHECK(b.lengths.empty());
  CHECK_FALSE(b.loss_mask.defined());
  CHECK(parse_packing("best-fit") == Packing::best_fit);
  CHECK_THROWS_AS(parse_packing("first-fit"), ds::UsageError);
  fs::remove_all(c.dir);
}
