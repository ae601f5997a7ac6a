// Writes a few small valid token shards (2- and 4-byte tokens, empty documents, several
// blocks) into a directory, as the seed corpus of fuzz_shard_reader (scripts/fuzz.sh).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "ds/data/shard.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  struct Seed { const char* name; uint32_t vocab; uint32_t block; int docs; };
  const Seed seeds[] = {{"seed-w2.dst", 300, 16, 3}, {"seed-w4.dst", 129280, 8, 4},
                        {"seed-empty.dst", 50, 4, 0}};
  for (const auto& s : seeds) {
    ds::data::ShardWriter w(dir / s.name, s.vocab, "0123456789abcdef", s.block);
    for (int d = 0; d < s.docs; ++d) {
      std::vector<uint32_t> toks;
      for (int i = 0; i < 5 + 7 * d; ++i) toks.push_back(uint32_t((i * 37 + d) % s.vocab));
      if (d == 1) toks.clear();   // an empty document
      w.append(toks);
      w.end_document();
    }
    w.finish();
  }
  return 0;
}
