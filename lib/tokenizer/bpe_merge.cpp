// The BPE merge engine of the trainer: words as symbol arrays, a pair table holding each
// pair's weighted count and the words it occurs in, and a max-heap of (count, pair) with
// lazy invalidation. Counts of existing pairs only ever decrease (new pairs always
// contain the newly created symbol), so a popped entry whose stored count is stale is
// re-queued with the current count; one that is current is the true maximum.
// reference: bpe_trainer_internal.hpp (tie-break and stopping rules).
#include <algorithm>
#include <string>
#include <unordered_set>

#include "bpe_trainer_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/tokenizer/pretokenizer.hpp"

namespace ds::tok::detail {
namespace {

inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }

struct PairInfo {
  uint64_t key = 0;
  int64_t count = 0;
  std::vector<uint32_t> words;   // may hold stale or repeated entries; checked on use
};

// Open-addressing map pair key -> index into a vector of PairInfo (entries never erased).
class PairTable {
 public:
  PairTable() { slots_.assign(1024, kEmpty); }
  uint32_t index(uint64_t key) {
    size_t mask = slots_.size() - 1;
    for (size_t s = hash(key) & mask;; s = (s + 1) & mask) {
      uint32_t i = slots_[s];
      if (i == kEmpty) {
        i = uint32_t(infos_.size());
        infos_.push_back(PairInfo{key, 0, {}});
        slots_[s] = i;
        if (infos_.size() * 2 > slots_.size()) grow();
        return i;
      }
      if (infos_[i].key == key) return i;
    }
  }
  PairInfo& at(uint32_t i) { return infos_[i]; }
  const PairInfo& at(uint32_t i) const { return infos_[i]; }
  size_t size() const { return infos_.size(); }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  size_t hash(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 20); }
  void grow() {
    std::vector<uint32_t> next(slots_.size() * 2, kEmpty);
    size_t mask = next.size() - 1;
    for (uint32_t i = 0; i < infos_.size(); ++i) {
      size_t s = hash(infos_[i].key) & mask;
      while (next[s] != kEmpty) s = (s + 1) & mask;
      next[s] = i;
    }
    slots_.swap(next);
  }
  std::vector<uint32_t> slots_;
  std::vector<PairInfo> infos_;
};

struct HeapEntry {
  uint64_t count;
  uint32_t pair;   // index into the PairTable
};

class MergeEngine {
 public:
  MergeEngine(const std::vector<std::pair<std::string, uint64_t>>& words, uint64_t min_freq);
  std::vector<MergeStep> run(size_t max_merges, void (*on_progress)(size_t, size_t));

 private:
  void add(uint32_t a, uint32_t b, int64_t delta, uint32_t word);
  void merge_word(uint32_t w, uint32_t a, uint32_t b, uint32_t z);
  bool lower(const HeapEntry& x, const HeapEntry& y) const;   // x ranks below y
  void push(uint32_t pair_index);
  HeapEntry pop();

  std::vector<std::vector<uint32_t>> sym_;
  std::vector<int64_t> freq_;
  PairTable pairs_;
  std::vector<std::string> str_;                // GPT-2 alphabet string per symbol
  std::unordered_set<std::string> known_;      // all symbol strings so far
  std::vector<HeapEntry> heap_;
  std::vector<uint32_t> touched_;               // pairs incremented during one merge
  uint64_t min_freq_;
};

MergeEngine::MergeEngine(const std::vector<std::pair<std::string, uint64_t>>& words,
                         uint64_t min_freq)
    : min_freq_(std::max<uint64_t>(min_freq, 1)) {
  for (int b = 0; b < 256; ++b) {
    str_.push_back(byte_to_unicode(static_cast<unsigned char>(b)));
    known_.insert(str_.back());
  }
  sym_.reserve(words.size());
  for (const auto& [bytes, f] : words) {
    if (bytes.size() < 2) continue;   // no pairs: never changes
    sym_.emplace_back(bytes.begin(), bytes.end());
    for (auto& s : sym_.back()) s &= 0xFFu;   // char may be signed
    freq_.push_back(int64_t(f));
  }
  for (uint32_t w = 0; w < sym_.size(); ++w) {
    const auto& s = sym_[w];
    for (size_t i = 0; i + 1 < s.size(); ++i) add(s[i], s[i + 1], freq_[w], w);
  }
  touched_.clear();
  for (uint32_t i = 0; i < pairs_.size(); ++i) {
    if (uint64_t(pairs_.at(i).count) >= min_freq_)
      heap_.push_back({uint64_t(pairs_.at(i).count), i});
  }
  std::make_heap(heap_.begin(), heap_.end(),
                 [this](const HeapEntry& x, const HeapEntry& y) { return lower(x, y); });
}

void MergeEngine::add(uint32_t a, uint32_t b, int64_t delta, uint32_t word) {
  uint32_t i = pairs_.index(pair_key(a, b));
  PairInfo& p = pairs_.at(i);
  p.count += delta;
  if (delta > 0) {
    if (p.words.empty() || p.words.back() != word) p.words.push_back(word);
    touched_.push_back(i);
  }
}

bool MergeEngine::lower(const HeapEntry& x, const HeapEntry& y) const {
  if (x.count != y.count) return x.count < y.count;
  uint64_t kx = pairs_.at(x.pair).key, ky = pairs_.at(y.pair).key;
  int c = str_[kx >> 32].compare(str_[ky >> 32]);
  if (c == 0) c = str_[kx & 0xFFFFFFFFu].compare(str_[ky & 0xFFFFFFFFu]);
  return c > 0;   // the smaller strings rank higher
}

void MergeEngine::push(uint32_t pair_index) {
  heap_.push_back({uint64_t(pairs_.at(pair_index).count), pair_index});
  std::push_heap(heap_.begin(), heap_.end(),
                 [this](const HeapEntry& x, const HeapEntry& y) { return lower(x, y); });
}

HeapEntry MergeEngine::pop() {
  std::pop_heap(heap_.begin(), heap_.end(),
                [this](const HeapEntry& x, const HeapEntry& y) { return lower(x, y); });
  HeapEntry top = heap_.back();
  heap_.pop_back();
  return top;
}

// Replaces every non-overlapping (a, b), left to right, by z and updates neighbour pairs.
void MergeEngine::merge_word(uint32_t w, uint32_t a, uint32_t b, uint32_t z) {
  auto& s = sym_[w];
  const int64_t f = freq_[w];
  size_t n = s.size(), o = 0, i = 0;
  while (i < n) {
    if (i + 1 < n && s[i] == a && s[i + 1] == b) {
      if (o > 0) {   // the left neighbour is already in output form (may be a new z)
        add(s[o - 1], a, -f, w);
        add(s[o - 1], z, f, w);
      }
      if (i + 2 < n) {
        add(b, s[i + 2], -f, w);
        add(z, s[i + 2], f, w);
      }
      s[o++] = z;
      i += 2;
    } else {
      s[o++] = s[i++];
    }
  }
  s.resize(o);
}

std::vector<MergeStep> MergeEngine::run(size_t max_merges,
                                        void (*on_progress)(size_t, size_t)) {
  std::vector<MergeStep> steps;
  while (steps.size() < max_merges && !heap_.empty()) {
    check_interrupt();   // a no-op outside an InterruptScope
    HeapEntry top = pop();
    int64_t current = pairs_.at(top.pair).count;
    if (uint64_t(current) != top.count) {   // stale: counts only decrease
      if (current > 0 && uint64_t(current) >= min_freq_) push(top.pair);
      continue;
    }
    uint64_t key = pairs_.at(top.pair).key;
    uint32_t a = uint32_t(key >> 32), b = uint32_t(key & 0xFFFFFFFFu);
    std::vector<uint32_t> words = std::move(pairs_.at(top.pair).words);
    pairs_.at(top.pair).words = {};
    std::string merged = str_[a] + str_[b];
    if (!known_.insert(merged).second) {
      // Same string as an earlier token: drop the pair. It can never re-form (new
      // adjacencies always involve a new symbol); later neighbour updates may push its
      // count below zero, which keeps it out of the heap.
      pairs_.at(top.pair).count = 0;
      continue;
    }
    uint32_t z = uint32_t(str_.size());
    str_.push_back(std::move(merged));
    steps.push_back({a, b, top.count});
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    touched_.clear();
    for (uint32_t w : words) merge_word(w, a, b, z);
    pairs_.at(top.pair).count = 0;
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (uint32_t p : touched_) {
      int64_t c = pairs_.at(p).count;
      if (c > 0 && uint64_t(c) >= min_freq_) push(p);
    }
    if (on_progress && steps.size() % 1000 == 0) on_progress(steps.size(), max_merges);
  }
  return steps;
}

}  // namespace

std::vector<MergeStep> run_merges(const std::vector<std::pair<std::string, uint64_t>>& words,
                                  size_t max_merges, uint64_t min_frequency,
                                  void (*on_progress)(size_t, size_t)) {
  MergeEngine engine(words, min_frequency);
  return engine.run(max_merges, on_progress);
}

std::vector<std::string> symbol_strings(const std::vector<MergeStep>& merges) {
  std::vector<std::string> s;
  s.reserve(256 + merges.size());
  for (int b = 0; b < 256; ++b) s.push_back(byte_to_unicode(static_cast<unsigned char>(b)));
  for (const auto& m : merges) {
    DS_CHECK(m.left < s.size() && m.right < s.size(), "bpe: merge refers to a later symbol");
    s.push_back(s[m.left] + s[m.right]);
  }
  return s;
}

}  // namespace ds::tok::detail
