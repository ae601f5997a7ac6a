// Byte-level BPE merging (see bpe.hpp): pair table, short-piece scan, long-piece heap,
// and the per-thread piece cache.
// reference: spec §8.4; HF tokenizers models/bpe/word.rs merge order (rank, position).
#include "bpe.hpp"

#include <atomic>
#include <cstring>
#include <functional>
#include <queue>

namespace ds::tok::detail {

namespace {

constexpr uint32_t kNoRank = 0xFFFFFFFFu;
constexpr size_t kShortPiece = 96;       // scan below this many bytes, heap above
constexpr size_t kCacheMaxPiece = 64;    // longer pieces are not cached
constexpr size_t kCacheMaxEntries = 1 << 17;

std::atomic<uint64_t> g_next_instance{1};

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

// Per-thread cache: piece bytes -> ids (a slice of `arena`). Belongs to one model at a
// time; switching models clears it.
struct PieceCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, SvHash, std::equal_to<>> map;
  std::vector<Id> arena;
  void reset(uint64_t new_owner) {
    owner = new_owner;
    map.clear();
    arena.clear();
  }
};

PieceCache& cache_for(uint64_t owner) {
  thread_local PieceCache c;
  if (c.owner != owner || c.map.size() >= kCacheMaxEntries) c.reset(owner);
  return c;
}

}  // namespace

void PairTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
  for (const Slot& s : old)
    if (s.key != kEmpty) insert(Id(s.key >> 32), Id(s.key & 0xFFFFFFFFu), s.value);
}

void PairTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void PairTable::insert(Id a, Id b, Value v) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = uint64_t(a) << 32 | b;
  size_t i = hash(key) & mask_;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  if (slots_[i].key == kEmpty) ++size_;
  slots_[i].key = key;
  slots_[i].value = v;
}

BpeModel::BpeModel() : instance_(g_next_instance.fetch_add(1)) { byte_ids.fill(kNoId); }

void BpeModel::encode_piece(std::string_view piece, std::vector<Id>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    const Id id = byte_ids[static_cast<unsigned char>(piece[0])];
    if (id != kNoId) out.push_back(id);
    return;
  }
  if (ignore_merges) {
    auto it = bytes_to_id.find(std::string(piece));
    if (it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() > kCacheMaxPiece) {
    if (piece.size() < kShortPiece) merge_short(piece, out);
    else merge_long(piece, out);
    return;
  }
  PieceCache& c = cache_for(instance_);
  auto it = c.map.find(piece);
  if (it != c.map.end()) {
    out.insert(out.end(), c.arena.begin() + it->second.first,
               c.arena.begin() + it->second.first + it->second.second);
    return;
  }
  const size_t before = out.size();
  merge_short(piece, out);
  const uint32_t off = uint32_t(c.arena.size());
  c.arena.insert(c.arena.end(), out.begin() + before, out.end());
  c.map.emplace(std::string(piece), std::make_pair(off, uint32_t(out.size() - before)));
}

// O(n^2) merging for short pieces: sym[i] are the symbols, rk[i]/mg[i] the rank and
// result of the pair (sym[i], sym[i+1]).
void BpeModel::merge_short(std::string_view piece, std::vector<Id>& out) const {
  Id sym[kShortPiece];
  uint32_t rk[kShortPiece];
  Id mg[kShortPiece];
  size_t n = 0;
  for (unsigned char b : piece)
    if (byte_ids[b] != kNoId) sym[n++] = byte_ids[b];
  auto pair_at = [&](size_t i) {
    const PairTable::Value* v = merges.find(sym[i], sym[i + 1]);
    rk[i] = v ? v->rank : kNoRank;
    mg[i] = v ? v->merged : kNoId;
  };
  for (size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (rk[i] < rk[best]) best = i;
    if (rk[best] == kNoRank) break;
    sym[best] = mg[best];
    // Drop sym[best+1] and pair best+1's slot: pairs after it shift down by one.
    std::memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof(Id));
    if (best + 3 < n) {
      std::memmove(rk + best + 1, rk + best + 2, (n - best - 3) * sizeof(uint32_t));
      std::memmove(mg + best + 1, mg + best + 2, (n - best - 3) * sizeof(Id));
    }
    --n;
    if (best > 0) pair_at(best - 1);
    if (best + 1 < n) pair_at(best);
  }
  out.insert(out.end(), sym, sym + n);
}

// Heap-driven merging for long pieces: symbols in a linked list; heap entries are
// (rank, left position) and are dropped when stale (a neighbour changed since).
void BpeModel::merge_long(std::string_view piece, std::vector<Id>& out) const {
  struct Sym { Id id; int prev, next; };
  struct Cand {
    uint32_t rank;
    int pos;
    Id left, right;
    bool operator>(const Cand& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Sym> s;
  s.reserve(piece.size());
  for (unsigned char b : piece) {
    if (byte_ids[b] == kNoId) continue;
    const int i = int(s.size());
    s.push_back({byte_ids[b], i - 1, -1});
    if (i > 0) s[size_t(i - 1)].next = i;
  }
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int i) {
    const int j = s[size_t(i)].next;
    if (j < 0) return;
    if (const auto* v = merges.find(s[size_t(i)].id, s[size_t(j)].id))
      heap.push({v->rank, i, s[size_t(i)].id, s[size_t(j)].id});
  };
  for (int i = 0; i + 1 < int(s.size()); ++i) push(i);
  std::vector<bool> dead(s.size(), false);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = s[size_t(c.pos)];
    if (dead[size_t(c.pos)] || l.next < 0 || l.id != c.left || s[size_t(l.next)].id != c.right)
      continue;
    const PairTable::Value* v = merges.find(c.left, c.right);
    if (!v || v->rank != c.rank) continue;
    const int r = l.next;
    l.id = v->merged;
    dead[size_t(r)] = true;
    l.next = s[size_t(r)].next;
    if (l.next >= 0) s[size_t(l.next)].prev = c.pos;
    if (l.prev >= 0) push(l.prev);
    push(c.pos);
  }
  for (int i = s.empty() ? -1 : 0; i >= 0; i = s[size_t(i)].next) out.push_back(s[size_t(i)].id);
}

}  // namespace ds::tok::detail
