// Pre-tokenizer: Split(regex, Isolated) steps and ByteLevel, loaded from / written to the
// Hugging Face JSON layout. Each regex step re-splits every piece of the previous step
// (the regex sees one piece as its whole subject, so look-aheads stop at piece ends).
// reference: spec §8.3; HF tokenizers pre_tokenizers/{split,byte_level,sequence} (JSON).
#include "ds/tokenizer/pretokenizer.hpp"

#include <nlohmann/json.hpp>

#include <optional>

#include "ds/core/error.hpp"
#include "ds/io/json_depth.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "regex.hpp"

namespace ds::tok {

using nlohmann::json;
using detail::Regex;

namespace {

// GPT-2's split pattern, used by ByteLevel when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// DeepSeek-V3 patterns (spec §8.3); P3 has literal CR/LF inside two classes.
const std::string kDsP1 = R"(\p{N}{1,3})";
const std::string kDsP2 = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+";
const std::string kDsP3 =
    std::string(R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^)") + "\r\n" +
    R"(\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[)" + "\r\n" +
    R"(]*|\s*[)" + "\r\n" + R"(]+|\s+(?!\S)|\s+)";

struct Step {
  enum class Kind { kSplit, kByteLevel } kind = Kind::kSplit;
  std::optional<Regex> re;        // Split pattern, or GPT-2's for ByteLevel(use_regex)
  bool add_prefix_space = false;  // ByteLevel fields, kept for to_json
  bool trim_offsets = true;
  bool use_regex = false;
};

// Cuts `piece` at the matches of `re`; matches and gaps both become pieces (Isolated).
// `plain`: the text holds no code point that Unicode 16.0 recategorised (Regex::find).
void split_isolated(std::string_view piece, const Regex& re, bool plain,
                    std::vector<std::string_view>& out) {
  size_t pos = 0, last = 0, mb = 0, me = 0;
  while (pos <= piece.size() && re.find(piece, pos, mb, me, plain)) {
    if (me == mb) {   // empty match: no piece; resume after the next character
      if (mb >= piece.size()) break;
      char32_t cp;
      const size_t len = utf8_decode(piece, mb, cp);
      pos = mb + (len ? len : 1);
      continue;
    }
    if (mb > last) out.push_back(piece.substr(last, mb - last));
    out.push_back(piece.substr(mb, me - mb));
    last = pos = me;
  }
  if (last < piece.size()) out.push_back(piece.substr(last));
}

bool get_bool(const json& j, const char* key, bool dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) DS_THROW(FormatError, "{}.{}: expected a boolean", where, key);
  return it->get<bool>();
}

Step parse_split(const json& j, const std::string& where) {
  Step s;
  s.kind = Step::Kind::kSplit;
  auto pat = j.find("pattern");
  if (pat == j.end() || !pat->is_object() || pat->size() != 1)
    DS_THROW(FormatError, "{}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", where);
  const bool literal = pat->contains("String");
  const json& p = literal ? (*pat)["String"] : pat->value("Regex", json());
  if (!p.is_string())
    DS_THROW(FormatError, "{}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", where);
  auto beh = j.find("behavior");
  if (beh == j.end() || !beh->is_string())
    DS_THROW(FormatError, "{}.behavior: missing", where);
  if (beh->get<std::string>() != "Isolated")
    DS_THROW(FormatError, "{}.behavior: unsupported value '{}' (only Isolated)", where,
             beh->get<std::string>());
  if (get_bool(j, "invert", false, where))
    DS_THROW(FormatError, "{}.invert: unsupported value true", where);
  s.re.emplace(p.get<std::string>(), literal, where + ".pattern");
  return s;
}

Step parse_byte_level(const json& j, const std::string& where) {
  Step s;
  s.kind = Step::Kind::kByteLevel;
  // HF defaults: add_prefix_space true, trim_offsets true, use_regex true.
  s.add_prefix_space = get_bool(j, "add_prefix_space", true, where);
  s.trim_offsets = get_bool(j, "trim_offsets", true, where);
  s.use_regex = get_bool(j, "use_regex", true, where);
  if (s.add_prefix_space)
    DS_THROW(FormatError, "{}.add_prefix_space: unsupported value true", where);
  if (s.use_regex) s.re.emplace(std::string(kGpt2Pattern), false, where);
  return s;
}

void parse_steps(const json& j, const std::string& where, std::vector<Step>& steps,
                 bool& sequence, int depth) {
  if (!j.is_object()) DS_THROW(FormatError, "{}: expected an object", where);
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) DS_THROW(FormatError, "{}: missing \"type\"", where);
  const std::string type = t->get<std::string>();
  if (type == "Sequence") {
    if (depth > 8) DS_THROW(FormatError, "{}: Sequence nested too deeply", where);
    sequence = true;
    auto list = j.find("pretokenizers");
    if (list == j.end() || !list->is_array())
      DS_THROW(FormatError, "{}.pretokenizers: expected an array", where);
    for (size_t i = 0; i < list->size(); ++i)
      parse_steps((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]", steps,
                  sequence, depth + 1);
  } else if (type == "Split") {
    steps.push_back(parse_split(j, where));
  } else if (type == "ByteLevel") {
    steps.push_back(parse_byte_level(j, where));
  } else {
    DS_THROW(FormatError, "{}: unsupported type '{}'", where, type);
  }
}

json step_to_json(const Step& s) {
  if (s.kind == Step::Kind::kByteLevel) {
    return json{{"type", "ByteLevel"}, {"add_prefix_space", s.add_prefix_space},
                {"trim_offsets", s.trim_offsets}, {"use_regex", s.use_regex}};
  }
  json pattern = s.re->literal() ? json{{"String", s.re->pattern()}}
                                 : json{{"Regex", s.re->pattern()}};
  return json{{"type", "Split"}, {"pattern", pattern}, {"behavior", "Isolated"},
              {"invert", false}};
}

}  // namespace

struct PreTokenizer::Impl {
  std::vector<Step> steps;
  std::vector<const Regex*> regexes;   // the steps that split, in order
  bool sequence = false;               // serialise as a Sequence (vs a bare step / null)

  void finish() {
    for (const Step& s : steps)
      if (s.re) regexes.push_back(&*s.re);
  }
  void split_valid(std::string_view text, std::vector<std::string_view>& pieces) const;
};

void PreTokenizer::Impl::split_valid(std::string_view text,
                                     std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  if (regexes.empty()) {
    pieces.push_back(text);
    return;
  }
  thread_local std::vector<std::string_view> cur, next;
  cur.clear();
  cur.push_back(text);
  const bool plain = !detail::has_recategorised(text);   // one scan for every step's pieces
  for (size_t r = 0; r + 1 < regexes.size(); ++r) {
    next.clear();
    for (std::string_view p : cur) split_isolated(p, *regexes[r], plain, next);
    cur.swap(next);
  }
  for (std::string_view p : cur) split_isolated(p, *regexes.back(), plain, pieces);
}

PreTokenizer::PreTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

PreTokenizer PreTokenizer::deepseek_v3() {
  auto impl = std::make_unique<Impl>();
  const std::string where = "deepseek_v3 pre_tokenizer";
  for (const std::string* p : {&kDsP1, &kDsP2, &kDsP3}) {
    Step s;
    s.re.emplace(*p, false, where);
    impl->steps.push_back(std::move(s));
  }
  Step bl;
  bl.kind = Step::Kind::kByteLevel;
  impl->steps.push_back(std::move(bl));
  impl->sequence = true;
  impl->finish();
  return PreTokenizer(std::move(impl));
}

PreTokenizer PreTokenizer::from_json(std::string_view json_object, const std::string& where) {
  io::check_json_depth(json_object, where);
  json j = json::parse(json_object, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) DS_THROW(FormatError, "{}: invalid JSON", where);
  auto impl = std::make_unique<Impl>();
  if (!j.is_null()) {
    parse_steps(j, where, impl->steps, impl->sequence, 0);
  }
  impl->finish();
  return PreTokenizer(std::move(impl));
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  auto bad = first_invalid_utf8(text);
  if (!bad) {
    impl_->split_valid(text, pieces);
    return;
  }
  // Invalid UTF-8: split the valid runs normally; each invalid byte is a piece of its own.
  size_t pos = 0;
  while (pos < text.size()) {
    auto rel = first_invalid_utf8(text.substr(pos));
    const size_t end = rel ? pos + *rel : text.size();
    impl_->split_valid(text.substr(pos, end - pos), pieces);
    if (end < text.size()) pieces.push_back(text.substr(end, 1));
    pos = end + 1;
  }
}

bool PreTokenizer::ends_with_byte_level() const {
  const auto& s = impl_->steps;
  for (size_t i = 0; i < s.size(); ++i)
    if ((s[i].kind == Step::Kind::kByteLevel) != (i + 1 == s.size())) return false;
  return !s.empty();
}

std::string PreTokenizer::to_json() const {
  if (impl_->steps.empty() && !impl_->sequence) return "null";
  if (!impl_->sequence && impl_->steps.size() == 1) return step_to_json(impl_->steps[0]).dump();
  json list = json::array();
  for (const Step& s : impl_->steps) list.push_back(step_to_json(s));
  return json{{"type", "Sequence"}, {"pretokenizers", list}}.dump();
}

bool joins_punctuation_and_line_break(std::string_view bytes) {
  static const detail::Regex re(R"(\A ?[^\s\p{L}\p{N}]+[\r\n]+\z)", false,
                                "the punctuation + line-break rule");
  if (bytes.empty() || first_invalid_utf8(bytes)) return false;
  size_t mb = 0, me = 0;
  return re.find(bytes, 0, mb, me) && mb == 0 && me == bytes.size();
}

}  // namespace ds::tok
