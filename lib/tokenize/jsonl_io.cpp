// JSON Lines on stdio, for scripts and co-processes: `encode --jsonl` turns {"text": ...}
// lines into {"ids": [...]} lines, `decode --jsonl` does the reverse. One output line per
// input line, in order, flushed after each, so the tool can run as a co-process.
// reference: man/ds-tokenize.1; HF semantics: no BOS/EOS unless asked, added tokens matched.
#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <istream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "ds/core/error.hpp"
#include "ds/io/json_input.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "jsonl_io.hpp"

namespace ds::tokenize {

namespace {

constexpr const char* kStdin = "<stdin>";

// A read error ends getline like the end of the input: std::cin (stdio-synced) records it in
// ferror(stdin), a file stream in badbit.
void check_read(const std::istream& in) {
  if (in.bad() || (&in == &std::cin && std::ferror(stdin)))
    DS_THROW(IoError, "{}: read error{}", kStdin,
             errno ? ": " + std::string(std::strerror(errno)) : std::string());
}

nlohmann::json parse_line(const std::string& line, uint64_t line_no) {
  if (line.find_first_not_of(" \t\r") == std::string::npos)   // one output line per input line
    DS_THROW(FormatError, "{}:{}: blank line (expected one JSON object per line)", kStdin,
             line_no);
  try {
    io::check_json_input(line, fmt::format("{}:{}", kStdin, line_no));
    auto j = nlohmann::json::parse(line);
    if (!j.is_object()) DS_THROW(FormatError, "{}:{}: not a JSON object", kStdin, line_no);
    return j;
  } catch (const nlohmann::json::exception& e) {   // parse errors, numbers out of range
    std::string what = e.what();
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    DS_THROW(FormatError, "{}:{}: not valid JSON: {}", kStdin, line_no, what);
  }
}

}  // namespace

void encode_jsonl(const EncodeJsonlOptions& o, std::istream& in, std::ostream& out) {
  if (o.tokenizer.empty()) DS_THROW(UsageError, "--tokenizer is required");
  const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
  std::optional<tok::TokenId> bos;
  if (o.add_special_tokens) {
    bos = tok.bos_id();
    if (!bos) DS_THROW(FormatError, "{}: no begin-of-sentence token (--add-special-tokens)",
                       o.tokenizer);
  }
  std::string line;
  std::vector<tok::TokenId> ids;
  uint64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const nlohmann::json j = parse_line(line, line_no);
    const auto it = j.find(o.field);
    if (it == j.end()) DS_THROW(FormatError, "{}:{}: no field \"{}\"", kStdin, line_no, o.field);
    if (!it->is_string())
      DS_THROW(FormatError, "{}:{}: field \"{}\" is not a string", kStdin, line_no, o.field);
    ids.clear();
    if (bos) ids.push_back(*bos);
    tok.encode(it->get_ref<const std::string&>(), ids, o.match_added_tokens);
    out << "{\"ids\":[" << fmt::format("{}", fmt::join(ids, ",")) << "]}\n";
    out.flush();
    if (!out) DS_THROW(IoError, "<stdout>: write failed");
  }
  check_read(in);
}

namespace detail {

void decode_jsonl(const DecodeOptions& o, std::istream& in, std::ostream& out) {
  const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
  std::string line;
  std::vector<tok::TokenId> ids;
  uint64_t line_no = 0;
  const auto vocab = tok.vocab_size();
  while (std::getline(in, line)) {
    ++line_no;
    const nlohmann::json j = parse_line(line, line_no);
    const auto it = j.find("ids");
    if (it == j.end() || !it->is_array())
      DS_THROW(FormatError, "{}:{}: no array field \"ids\"", kStdin, line_no);
    ids.clear();
    for (const auto& v : *it) {
      if (!v.is_number_unsigned() || v.get<uint64_t>() >= vocab)
        DS_THROW(FormatError, "{}:{}: \"ids\" holds {} (expected integers in [0, {}))", kStdin,
                 line_no, v.dump(), vocab);
      ids.push_back(tok::TokenId(v.get<uint64_t>()));
    }
    std::string text;
    try {
      text = tok.decode(ids, o.skip_special_tokens);
    } catch (const FormatError& e) {
      DS_THROW(FormatError, "{}:{}: {}", kStdin, line_no, e.what());
    }
    nlohmann::json r;
    r["text"] = std::move(text);
    out << r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out.flush();
    if (!out) DS_THROW(IoError, "<stdout>: write failed");
  }
  check_read(in);
}

}  // namespace detail

}  // namespace ds::tokenize
