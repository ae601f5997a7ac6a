// Byte-level BPE model: initial symbols are the ids of the single-byte tokens; the adjacent
// pair with the lowest merge rank (leftmost on ties) is merged until no ranked pair is
// left. Short pieces use an O(n^2) scan, long ones a heap; a per-thread cache maps recent
// pieces to their ids.
// reference: spec §8.4; Sennrich et al. 2016 (BPE); HF tokenizers models/bpe semantics.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ds::tok::detail {

using Id = uint32_t;
inline constexpr Id kNoId = 0xFFFFFFFFu;

// Open-addressing map (left id, right id) -> (rank, merged id).
class PairTable {
 public:
  struct Value { uint32_t rank; Id merged; };
  void reserve(size_t n);
  void insert(Id a, Id b, Value v);            // a later insert of the same pair wins
  const Value* find(Id a, Id b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = uint64_t(a) << 32 | b;
    size_t i = hash(key) & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  struct Slot { uint64_t key = kEmpty; Value value{}; };
  static size_t hash(uint64_t k) { return size_t((k * 0x9E3779B97F4A7C15ull) >> 17); }
  void grow();
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

class BpeModel {
 public:
  BpeModel();
  // byte_ids[b]: id of the token for byte b, kNoId if the vocab lacks it (the byte is
  // then dropped, as HF does without an unk token).
  std::array<Id, 256> byte_ids;
  PairTable merges;
  bool ignore_merges = false;                       // whole-piece vocab hit wins
  std::unordered_map<std::string, Id> bytes_to_id;  // filled only when ignore_merges

  // Appends the ids of one pre-token piece (raw bytes) to `out`. Thread-safe.
  void encode_piece(std::string_view piece, std::vector<Id>& out) const;

 private:
  void merge_short(std::string_view piece, std::vector<Id>& out) const;
  void merge_long(std::string_view piece, std::vector<Id>& out) const;
  uint64_t instance_;   // distinguishes models in the per-thread cache
};

}  // namespace ds::tok::detail
