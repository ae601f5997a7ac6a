// Document reader for ds-tokenize (text files split per file / line / blank line, and JSON
// Lines), with UTF-8 validation, FILE:LINE errors, and cutting of long documents at
// tokenization-neutral points so that a single huge file streams in bounded memory.
// reference: spec/deepseek-v3.md §8.3 (pre-tokenizer), man/ds-tokenize.1 (INPUT FORMATS).
#include "ds/tokenize/documents.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/io/json_depth.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::tokenize {

namespace fs = std::filesystem;

namespace {

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool is_blank_line(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

bool is_member(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v)
    if (x == s) return true;
  return false;
}

std::string display_name(const std::string& input) {
  return input == "-" ? std::string("<stdin>") : input;
}

}  // namespace

// Why a cut right after a '\n' that is followed by an ASCII letter (position p) cannot
// change the tokens, i.e. tokens(s) == tokens(s[0,p)) ++ tokens(s[p,)):
//  (a) Added tokens are matched first; cutting_is_neutral() requires that none contains
//      '\n', so no added-token match spans p, and none with lstrip starts with a letter
//      (it could absorb the '\n' on the left of p).
//  (b) Split P1 (\p{N}{1,3}) and P2 (CJK runs) match runs of digits / ideographs; neither
//      '\n' nor an ASCII letter belongs to them, so no run spans p and runs are unchanged.
//  (c) Split P3's alternatives: A1 [punct][A-Za-z]+ and A2 [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
//      cannot contain '\n' (A2's lead char excludes CR/LF explicitly). In A3
//      ` ?[\p{P}\p{S}]+[\r\n]*`, A4 `\s*[\r\n]+`, A5 `\s+(?!\S)` and A6 `\s+` a '\n' can only
//      be followed, inside the match, by CR/LF or other whitespace. So no pre-token
//      contains "\n" + letter, and no match spans p. Matching on each side is also
//      unchanged: A1-A4 and A6 have no look-around, so an attempt starting before p
//      succeeds the same way on s[0,p) as on s (every successful path ends at or before
//      p); the only context-dependent test is A5's (?!\S), which could differ only for a
//      whitespace run ending at p -- such a run ends in '\n' and A4, tried first, matches
//      it identically in both texts. No alternative looks behind, so s[p,) is matched as in s.
//  (d) BPE merges never cross pre-token boundaries.
// The proof needs DeepSeek-V3's pre-tokenizer; cutting_is_neutral() checks for it.
size_t last_cut_point(std::string_view text) {
  for (size_t i = text.size(); i >= 2; --i)
    if (text[i - 2] == '\n' && is_ascii_letter(text[i - 1])) return i - 1;
  return 0;
}

size_t next_cut_point(std::string_view text, size_t from) {
  for (size_t i = std::max<size_t>(from, 1); i < text.size(); ++i) {
    const void* nl = std::memchr(text.data() + i - 1, '\n', text.size() - (i - 1));
    if (!nl) break;
    i = size_t(static_cast<const char*>(nl) - text.data()) + 1;
    if (i < text.size() && is_ascii_letter(text[i])) return i;
  }
  return text.size();
}

bool cutting_is_neutral(const tok::Tokenizer& tok) {
  for (const auto& t : tok.added_tokens()) {
    if (t.content.find('\n') != std::string::npos) return false;
    if (t.lstrip && !t.content.empty() && is_ascii_letter(t.content[0])) return false;
  }
  try {
    const auto ours = nlohmann::json::parse(tok.pre_tokenizer().to_json());
    const auto v3 = nlohmann::json::parse(tok::PreTokenizer::deepseek_v3().to_json());
    return ours == v3;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

void check_inputs(const InputOptions& in) {
  if (!is_member(kFormats, in.format))
    DS_THROW(UsageError, "--format '{}': expected text or jsonl", in.format);
  if (!is_member(kDocSplits, in.doc_split))
    DS_THROW(UsageError, "--doc-split '{}': expected file, line or blank-line", in.doc_split);
  if (in.field.empty()) DS_THROW(UsageError, "--field must not be empty");
  if (in.chunk_bytes == 0) DS_THROW(UsageError, "--chunk-bytes must be positive");
  for (const auto& f : in.inputs) {
    if (f == "-") continue;
    std::error_code ec;
    const auto st = fs::status(f, ec);
    if (ec || !fs::exists(st)) DS_THROW(IoError, "{}: cannot open: No such file or directory", f);
    if (fs::is_directory(st)) DS_THROW(IoError, "{}: cannot open: Is a directory", f);
    std::FILE* fp = std::fopen(f.c_str(), "rb");
    if (!fp) DS_THROW(IoError, "{}: cannot open: {}", f, std::strerror(errno));
    std::fclose(fp);
  }
}

// ---------------------------------------------------------------------------------------

struct DocumentReader::Impl {
  InputOptions in;
  bool allow_cuts = true;
  bool jsonl = false;
  std::vector<std::string> inputs;   // "-" when none were given
  size_t next_input = 0;

  std::FILE* fp = nullptr;
  bool owns_fp = false;
  std::string name;                  // current input's display name
  char* lbuf = nullptr;
  size_t lcap = 0;
  uint64_t line_no = 0, offset = 0, line_offset = 0;

  std::string buf;                   // the current document so far (text modes)
  bool doc_started = false;          // a piece of the current document was returned
  uint64_t pieces = 0;
  uint64_t doc_index = 0;
  uint64_t doc_bytes = 0;            // bytes of the current document already returned
  ReaderStats stats;

  ~Impl() {
    close();
    std::free(lbuf);
  }
  bool open_next();
  void close();
  bool read_line(std::string_view& line);
  void emit(Segment& seg, std::string text, bool last);
  bool next_file_or_blocks(Segment& seg, bool blank_line_split);
  bool next_line_doc(Segment& seg);
  bool next_jsonl(Segment& seg);
  std::optional<std::string> parse_jsonl(std::string_view line, std::string& error) const;
};

bool DocumentReader::Impl::open_next() {
  if (next_input >= inputs.size()) return false;
  const std::string& f = inputs[next_input++];
  name = display_name(f);
  if (f == "-") {
    fp = stdin;
    owns_fp = false;
  } else {
    fp = std::fopen(f.c_str(), "rb");
    if (!fp) DS_THROW(IoError, "{}: cannot open: {}", f, std::strerror(errno));
    owns_fp = true;
  }
  line_no = 0;
  offset = 0;
  return true;
}

void DocumentReader::Impl::close() {
  if (fp && owns_fp) std::fclose(fp);
  fp = nullptr;
}

// Next line including its '\n' (the last line of a file may lack it). Text formats are
// validated here: UTF-8 sequences never contain 0x0A, so line-wise checking is exact.
bool DocumentReader::Impl::read_line(std::string_view& line) {
  errno = 0;
  const ssize_t n = ::getline(&lbuf, &lcap, fp);
  if (n < 0) {
    if (std::ferror(fp)) DS_THROW(IoError, "{}: read error: {}", name, std::strerror(errno));
    return false;
  }
  line = std::string_view(lbuf, size_t(n));
  ++line_no;
  line_offset = offset;
  offset += uint64_t(n);
  stats.bytes_read += uint64_t(n);
  if (!jsonl) {
    if (const auto bad = tok::first_invalid_utf8(line))
      DS_THROW(FormatError, "{}: invalid UTF-8 at byte {} (line {})", name,
               line_offset + *bad, line_no);
  }
  return true;
}

void DocumentReader::Impl::emit(Segment& seg, std::string text, bool last) {
  seg.text = std::move(text);
  seg.doc_index = doc_index;
  seg.first = !doc_started;
  seg.last = last;
  seg.doc_offset = seg.first ? 0 : doc_bytes;
  doc_bytes = seg.doc_offset + seg.text.size();
  ++pieces;
  if (last) {
    ++stats.documents;
    if (pieces > 1) ++stats.chunked_documents;
    ++doc_index;
    doc_started = false;
    pieces = 0;
  } else {
    doc_started = true;
  }
}

// --doc-split file (one document per input) and blank-line (documents separated by lines
// holding only whitespace; the final '\n' of a document is dropped). A document that
// reaches chunk_bytes is cut before the next line that starts with an ASCII letter.
bool DocumentReader::Impl::next_file_or_blocks(Segment& seg, bool blank_line_split) {
  auto finish_doc = [&]() {
    if (blank_line_split && !buf.empty() && buf.back() == '\n') buf.pop_back();
    emit(seg, std::move(buf), true);
    buf.clear();
  };
  std::string_view line;
  while (read_line(line)) {
    if (blank_line_split && is_blank_line(line)) {
      if (buf.empty() && !doc_started) continue;
      finish_doc();
      return true;
    }
    if (allow_cuts && buf.size() >= in.chunk_bytes && is_ascii_letter(line[0])) {
      emit(seg, std::move(buf), false);
      buf.assign(line);
      return true;
    }
    buf.append(line);
  }
  close();
  if (buf.empty() && !doc_started) {
    if (!blank_line_split) ++stats.empty_skipped;
    return false;
  }
  finish_doc();
  return true;
}

// --doc-split line: every line is a document (without its '\n'); empty lines are skipped.
bool DocumentReader::Impl::next_line_doc(Segment& seg) {
  std::string_view line;
  while (read_line(line)) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    if (line.empty()) {
      ++stats.empty_skipped;
      continue;
    }
    emit(seg, std::string(line), true);
    return true;
  }
  close();
  return false;
}

// The document of one JSONL line, or nullopt with `error` set.
std::optional<std::string> DocumentReader::Impl::parse_jsonl(std::string_view line,
                                                             std::string& error) const {
  if (const auto bad = tok::first_invalid_utf8(line)) {
    error = fmt::format("invalid UTF-8 at byte {}", line_offset + *bad);
    return std::nullopt;
  }
  if (const size_t nul = line.find('\0'); nul != std::string::npos) {   // (nlohmann stops there)
    error = fmt::format("a NUL byte at byte {} (not JSON text)", line_offset + nul);
    return std::nullopt;
  }
  if (!io::json_depth_ok(line)) {
    error = fmt::format("JSON nested deeper than {} levels", io::kMaxJsonDepth);
    return std::nullopt;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {   // parse errors, numbers out of range
    std::string what = e.what();
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    error = "not valid JSON: " + what;
    return std::nullopt;
  }
  if (!j.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  const auto it = j.find(in.field);
  if (it == j.end()) {
    error = fmt::format("no field \"{}\"", in.field);
    return std::nullopt;
  }
  if (!it->is_string()) {
    error = fmt::format("field \"{}\" is not a string", in.field);
    return std::nullopt;
  }
  return it->get<std::string>();
}

bool DocumentReader::Impl::next_jsonl(Segment& seg) {
  std::string_view line;
  while (read_line(line)) {
    if (is_blank_line(line)) continue;
    std::string error;
    auto text = parse_jsonl(line, error);
    if (!text) {
      if (!in.skip_bad_lines)
        DS_THROW(FormatError, "{}:{}: {} (--skip-bad-lines skips such lines)", name, line_no,
                 error);
      ++stats.bad_lines_skipped;
      continue;
    }
    if (text->empty()) {
      ++stats.empty_skipped;
      continue;
    }
    emit(seg, std::move(*text), true);
    return true;
  }
  close();
  return false;
}

DocumentReader::DocumentReader(const InputOptions& in, bool allow_cuts)
    : impl_(std::make_unique<Impl>()) {
  check_inputs(in);
  impl_->in = in;
  impl_->allow_cuts = allow_cuts;
  impl_->jsonl = in.format == "jsonl";
  impl_->inputs = in.inputs;
  if (impl_->inputs.empty()) impl_->inputs.push_back("-");
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::next(Segment& seg) {
  auto& s = *impl_;
  for (;;) {
    if (!s.fp && !s.open_next()) return false;
    bool produced = false;
    if (s.jsonl)
      produced = s.next_jsonl(seg);
    else if (s.in.doc_split == "line")
      produced = s.next_line_doc(seg);
    else
      produced = s.next_file_or_blocks(seg, s.in.doc_split == "blank-line");
    if (produced) return true;
  }
}

const ReaderStats& DocumentReader::stats() const { return impl_->stats; }

std::vector<std::string> DocumentReader::sources() const { return impl_->inputs; }

}  // namespace ds::tokenize
