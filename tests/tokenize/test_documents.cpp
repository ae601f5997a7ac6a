// DocumentReader and the cut-point helpers: documents per file / line / blank line / JSONL,
// pieces of long documents that concatenate to the document and start at "\n"+letter,
// error messages with FILE:LINE and byte offsets, --skip-bad-lines counting.
// reference: include/ds/tokenize/documents.hpp; man/ds-tokenize.1 (Input formats).
#include <doctest/doctest.h>

#include <fstream>

#include "ds/core/error.hpp"
#include "ds/tokenize/documents.hpp"
#include "test_util.hpp"

using namespace ds::tokenize;
namespace fs = std::filesystem;

namespace {

fs::path write(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

std::vector<Segment> read_all(const InputOptions& in, bool cuts = true) {
  DocumentReader r(in, cuts);
  std::vector<Segment> out;
  Segment s;
  while (r.next(s)) out.push_back(s);
  return out;
}

std::string error_of(const InputOptions& in) {
  try {
    read_all(in);
  } catch (const ds::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cut points are right after a newline followed by an ASCII letter") {
  CHECK(last_cut_point("abc") == 0);
  CHECK(last_cut_point("a\nb") == 2);
  CHECK(last_cut_point("a\nb\n c\nZ9") == 7);
  CHECK(last_cut_point("a\n1\n \n\xc3\xa9") == 0);
  CHECK(next_cut_point("a\nb\nc", 0) == 2);
  CHECK(next_cut_point("a\nb\nc", 3) == 4);
  CHECK(next_cut_point("a\nb\nc", 5) == 5);
  CHECK(next_cut_point("xx\n\n\nq", 1) == 5);
}

TEST_CASE("file documents are cut into pieces that concatenate back") {
  const auto dir = ds_test::scratch_dir("docs_file");
  const std::string text = ds_test::tricky_text(50000, 3);
  InputOptions in;
  in.inputs = {write(dir / "a.txt", text).string(), write(dir / "b.txt", "short\n").string(),
               write(dir / "empty.txt", "").string()};
  in.chunk_bytes = 1000;
  const auto segs = read_all(in);
  REQUIRE(segs.size() > 10);
  std::string joined;
  for (size_t i = 0; i + 1 < segs.size(); ++i) {
    CHECK(segs[i].doc_index == 0);
    CHECK(segs[i].first == (i == 0));
    CHECK(segs[i].last == (i + 2 == segs.size()));
    joined += segs[i].text;
    if (!segs[i].last) {
      REQUIRE(!segs[i].text.empty());
      CHECK(segs[i].text.back() == '\n');
      CHECK(std::isalpha(static_cast<unsigned char>(segs[i + 1].text[0])));
      CHECK(segs[i].text.size() >= 1000);
    }
  }
  CHECK(joined == text);
  CHECK(segs.back().text == "short\n");
  CHECK((segs.back().first && segs.back().last && segs.back().doc_index == 1));

  DocumentReader r(in, true);
  Segment s;
  while (r.next(s)) {}
  CHECK(r.stats().documents == 2);
  CHECK(r.stats().chunked_documents == 1);
  CHECK(r.stats().empty_skipped == 1);
  CHECK(r.stats().bytes_read == text.size() + 6);

  // Without cuts the document comes whole.
  const auto whole = read_all(in, false);
  REQUIRE(whole.size() == 2);
  CHECK(whole[0].text == text);
}

TEST_CASE("line and blank-line splitting") {
  const auto dir = ds_test::scratch_dir("docs_lines");
  const auto f = write(dir / "x.txt", "one\n\ntwo words\nthree\n  \n\nfour\n").string();
  InputOptions in;
  in.inputs = {f};
  in.doc_split = "line";
  auto segs = read_all(in);
  REQUIRE(segs.size() == 5);
  CHECK(segs[0].text == "one");
  CHECK(segs[1].text == "two words");
  CHECK(segs[3].text == "  ");
  CHECK(segs[4].doc_index == 4);
  in.doc_split = "blank-line";
  segs = read_all(in);
  REQUIRE(segs.size() == 3);
  CHECK(segs[0].text == "one");
  CHECK(segs[1].text == "two words\nthree");
  CHECK(segs[2].text == "four");
}

TEST_CASE("JSONL documents, malformed lines and --skip-bad-lines") {
  const auto dir = ds_test::scratch_dir("docs_jsonl");
  const auto f = write(dir / "d.jsonl",
                       "{\"text\": \"a\\nb\"}\n"
                       "\n"
                       "{\"text\": 5}\n"
                       "not json\n"
                       "{\"body\": \"x\"}\n"
                       "[1]\n"
                       "{\"text\": \"bad \xff byte\"}\n"
                       "{\"text\": \"\"}\n"
                       "{\"text\": \"last\", \"other\": 1}\n").string();
  InputOptions in;
  in.inputs = {f};
  in.format = "jsonl";
  const std::string err = error_of(in);
  CHECK(err.find(f + ":3: field \"text\" is not a string") == 0);
  in.skip_bad_lines = true;
  DocumentReader r(in, true);
  std::vector<std::string> docs;
  Segment s;
  while (r.next(s)) docs.push_back(s.text);
  CHECK(docs == std::vector<std::string>{"a\nb", "last"});
  CHECK(r.stats().bad_lines_skipped == 5);
  CHECK(r.stats().empty_skipped == 1);
  in.field = "body";
  in.skip_bad_lines = false;
  CHECK(error_of(in).find(f + ":1: no field \"body\"") == 0);
  // a NUL byte ended the parse there: the rest of the line was dropped without a word
  in.field = "text";
  // (on line 2: the byte is counted in the file, as invalid UTF-8's is)
  const std::string nul =
      std::string("{\"text\": \"z\"}\n{\"text\": \"a\"}") + '\0' + "{\"text\": \"b\"}\n";
  in.inputs = {write(dir / "nul.jsonl", nul).string()};
  CHECK(error_of(in).find(":2: a NUL byte at byte 27 (not JSON text)") != std::string::npos);
}

TEST_CASE("invalid UTF-8 is reported with its byte offset; missing files fail early") {
  const auto dir = ds_test::scratch_dir("docs_utf8");
  const std::string text = "fine line\nsecond \xc3\xa9 ok\nthird \xe4\xbd here\n";
  const auto f = write(dir / "u.txt", text).string();
  InputOptions in;
  in.inputs = {f};
  const size_t off = text.find("\xe4\xbd");
  CHECK(error_of(in) == f + ": invalid UTF-8 at byte " + std::to_string(off) + " (line 3)");
  in.inputs = {(dir / "missing.txt").string()};
  CHECK_THROWS_AS(check_inputs(in), ds::IoError);
  CHECK(error_of(in).find("missing.txt: cannot open") != std::string::npos);
  in.inputs = {f};
  in.doc_split = "words";
  CHECK_THROWS_AS(check_inputs(in), ds::UsageError);
}
