// Deterministic random numbers: xoshiro256** seeded through splitmix64 from (seed, stream).
// Streams are derived from a purpose, e.g. Rng(seed, rng_stream("init", layer)), so every
// random decision is a pure function of the run seed and what it is for; the state is four
// integers, saved in the training state for exact resume.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace ds {

uint64_t rng_stream(std::string_view purpose, uint64_t index = 0);

class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0);
  uint64_t next_u64();
  uint32_t next_u32() { return uint32_t(next_u64() >> 32); }
  double uniform();                    // [0, 1), 53 random bits
  uint64_t below(uint64_t n);          // uniform integer in [0, n), unbiased
  double normal();                     // standard normal (Box-Muller, both values used)
  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; has_spare_ = false; }

 private:
  std::array<uint64_t, 4> s_{};
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace ds
