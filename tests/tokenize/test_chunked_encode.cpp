// Chunked streaming gives the same tokens as encoding whole: tokens(s) equals the
// concatenation of tokens of the pieces cut at every "\n"+letter point, for a tokenizer
// trained here and for the DeepSeek-V3 tokenizer when the shared data is present; cutting
// anywhere else (e.g. "\n" + space) is shown to change tokens, so the test can fail.
// reference: lib/tokenize/documents.cpp (the argument for the cut rule).
#include <doctest/doctest.h>

#include <fstream>

#include "ds/tokenize/documents.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace ds::tokenize;
using ds::tok::Tokenizer;

namespace {

std::vector<uint32_t> encode_cut_everywhere(const Tokenizer& tok, std::string_view text,
                                            size_t* n_pieces) {
  std::vector<uint32_t> out;
  size_t pos = 0;
  *n_pieces = 0;
  while (pos < text.size()) {
    const size_t end = next_cut_point(text, pos + 1);
    tok.encode(text.substr(pos, end - pos), out);
    ++*n_pieces;
    pos = end;
  }
  return out;
}

void check_neutral(const Tokenizer& tok) {
  REQUIRE(cutting_is_neutral(tok));
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const std::string text = ds_test::tricky_text(30000, seed);
    size_t pieces = 0;
    const auto cut = encode_cut_everywhere(tok, text, &pieces);
    CHECK(pieces > 100);
    CHECK(cut == tok.encode(text));
  }
}

}  // namespace

TEST_CASE("cutting at \"\\n\"+letter is neutral: trained tokenizer") {
  check_neutral(ds_test::small_tokenizer());
}

TEST_CASE("cutting at \"\\n\"+letter is neutral: DeepSeek-V3 tokenizer") {
  const Tokenizer* tok = ds_test::deepseek_tokenizer();
  if (!tok) {
    MESSAGE("skipped: no DeepSeek-V3 tokenizer under DS_SHARED_DATA");
    return;
  }
  check_neutral(*tok);
}

TEST_CASE("a cut elsewhere does change tokens (the check above can fail)") {
  const Tokenizer* tok = ds_test::deepseek_tokenizer();
  const Tokenizer& t = tok ? *tok : ds_test::small_tokenizer();
  // "):\n" is one pre-token; cutting between ')' ':' and '\n' splits it.
  const std::string text = "f(x):\n    return x\n";
  auto pieces = t.encode("f(x):");
  const auto rest = t.encode("\n    return x\n");
  pieces.insert(pieces.end(), rest.begin(), rest.end());
  CHECK(pieces != t.encode(text));
}

TEST_CASE("DocumentReader pieces encode to the same tokens as the whole file") {
  const auto dir = ds_test::scratch_dir("chunked_reader");
  const std::string text = ds_test::tricky_text(200000, 9);
  const auto f = dir / "big.txt";
  { std::ofstream(f, std::ios::binary) << text; }
  const Tokenizer& tok = ds_test::small_tokenizer();
  InputOptions in;
  in.inputs = {f.string()};
  in.chunk_bytes = 4096;
  DocumentReader r(in, cutting_is_neutral(tok));
  std::vector<uint32_t> streamed;
  Segment s;
  size_t n = 0;
  while (r.next(s)) {
    tok.encode(s.text, streamed);
    ++n;
  }
  CHECK(n > 20);
  CHECK(streamed == tok.encode(text));
}
