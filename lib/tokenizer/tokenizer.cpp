// Tokenizer: loads a Hugging Face byte-level BPE tokenizer.json, encodes (added tokens ->
// pre-tokenizer -> BPE per piece) and decodes (ByteLevel inverse, lossy UTF-8 repair).
// Anything outside the supported subset is a FormatError naming the file and JSON path.
// reference: spec §8; HF tokenizers JSON layout (tokenizer.json, model type BPE).
#include "ds/tokenizer/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <unordered_map>

#include "added_tokens.hpp"
#include "bpe.hpp"
#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_depth.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::tok {

using nlohmann::json;

namespace {

constexpr uint64_t kMaxId = 1u << 24;   // ids are dense table indices; refuse absurd ones

// HF ByteLevel decoder rule: a token whose characters are all in the byte alphabet maps
// to those bytes; any other token contributes its own UTF-8 bytes.
std::string token_string_to_bytes(const std::string& token) {
  std::string bytes;
  if (!unicode_to_bytes(token, bytes)) return token;
  return bytes;
}

// Message of a JSON exception on one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

bool is_null_or_absent(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null();
}

std::string type_of(const json& j) {
  auto t = j.find("type");
  return (t != j.end() && t->is_string()) ? t->get<std::string>() : std::string("?");
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  std::string fingerprint;
  detail::BpeModel bpe;
  std::vector<std::string> id_token;     // token string as written in the file ("" unknown)
  std::vector<std::string> id_bytes;     // decoded bytes of each id
  std::vector<uint8_t> id_kind;          // 0 unknown, 1 vocab, 2 added, 3 added special
  std::unordered_map<std::string, TokenId> token_ids;
  std::vector<AddedToken> added;
  detail::AddedMatcher raw_matcher;      // added tokens with normalized = false
  detail::AddedMatcher norm_matcher;     // normalized = true (empty normalizer: same text)
  PreTokenizer pre = PreTokenizer::from_json("null", "");
  std::optional<TokenId> bos, eos;

  void set_id(TokenId id, const std::string& token, uint8_t kind);
  void load(const json& root);
  void load_model(const json& m, const std::string& where);
  void load_vocab(const json& v, const std::string& where);
  void load_merges(const json& merges, const std::string& where);
  void load_added(const json& list, const std::string& where);
  void check_components(const json& root);
  void encode_plain(std::string_view text, std::vector<TokenId>& out) const;
  void encode_phase(std::string_view text, int phase, std::vector<TokenId>& out) const;
};

void Tokenizer::Impl::set_id(TokenId id, const std::string& token, uint8_t kind) {
  if (id >= id_kind.size()) {
    id_kind.resize(size_t(id) + 1, 0);
    id_token.resize(size_t(id) + 1);
    id_bytes.resize(size_t(id) + 1);
  }
  id_kind[id] = kind;
  id_token[id] = token;
  id_bytes[id] = token_string_to_bytes(token);
}

void Tokenizer::Impl::load_vocab(const json& v, const std::string& where) {
  if (!v.is_object()) DS_THROW(FormatError, "{}: expected an object", where);
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() >= kMaxId)
      DS_THROW(FormatError, "{}[\"{}\"]: expected an id in [0, {})", where,
               one_line(it.key()), kMaxId);
    const auto id = TokenId(it.value().get<uint64_t>());
    if (id < id_kind.size() && id_kind[id] != 0)
      DS_THROW(FormatError, "{}: id {} used by both \"{}\" and \"{}\"", where, id,
               one_line(id_token[id]), one_line(it.key()));
    set_id(id, it.key(), 1);
    token_ids.emplace(it.key(), id);
  }
  for (int b = 0; b < 256; ++b) {
    auto f = token_ids.find(byte_to_unicode(static_cast<unsigned char>(b)));
    // Without a token for every byte, text holding that byte could not be encoded (it would
    // be dropped), so such a vocab is refused here rather than corrupting encodes later.
    if (f == token_ids.end())
      DS_THROW(FormatError, "{}: no token for byte 0x{:02x} (\"{}\"); a byte-level BPE vocab "
               "needs all 256 byte tokens", where, b,
               one_line(byte_to_unicode(static_cast<unsigned char>(b))));
    bpe.byte_ids[size_t(b)] = f->second;
  }
}

void Tokenizer::Impl::load_merges(const json& merges, const std::string& where) {
  if (!merges.is_array()) DS_THROW(FormatError, "{}: expected an array", where);
  bpe.merges.reserve(merges.size());
  auto lookup = [&](const std::string& tok, size_t i) {
    auto f = token_ids.find(tok);
    if (f == token_ids.end())
      DS_THROW(FormatError, "{}[{}]: unknown token \"{}\"", where, i, one_line(tok));
    return f->second;
  };
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        DS_THROW(FormatError, "{}[{}]: expected \"left right\" (one space)", where, i);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      DS_THROW(FormatError, "{}[{}]: expected \"left right\" or [\"left\", \"right\"]", where, i);
    }
    const TokenId ia = lookup(a, i), ib = lookup(b, i), im = lookup(a + b, i);
    bpe.merges.insert(ia, ib, {uint32_t(i), im});
  }
}

void Tokenizer::Impl::load_model(const json& m, const std::string& where) {
  if (!m.is_object()) DS_THROW(FormatError, "{}: expected an object", where);
  if (m.contains("type") && type_of(m) != "BPE")
    DS_THROW(FormatError, "{}: unsupported type '{}' (only BPE)", where, type_of(m));
  for (const char* key : {"dropout", "unk_token"})
    if (!is_null_or_absent(m, key))
      DS_THROW(FormatError, "{}.{}: unsupported (must be null)", where, key);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (is_null_or_absent(m, key)) continue;
    if (!m[key].is_string() || !m[key].get<std::string>().empty())
      DS_THROW(FormatError, "{}.{}: unsupported (must be null)", where, key);
  }
  for (const char* key : {"byte_fallback", "ignore_merges"})
    if (!is_null_or_absent(m, key) && !m[key].is_boolean())
      DS_THROW(FormatError, "{}.{}: expected a boolean", where, key);
  if (m.value("byte_fallback", json(false)) == json(true))
    DS_THROW(FormatError, "{}.byte_fallback: unsupported value true", where);
  bpe.ignore_merges = m.value("ignore_merges", json(false)) == json(true);
  if (!m.contains("vocab")) DS_THROW(FormatError, "{}.vocab: missing", where);
  if (!m.contains("merges")) DS_THROW(FormatError, "{}.merges: missing", where);
  load_vocab(m["vocab"], where + ".vocab");
  load_merges(m["merges"], where + ".merges");
  if (bpe.ignore_merges)
    for (const auto& [tok, id] : token_ids) bpe.bytes_to_id.emplace(id_bytes[id], id);
}

void Tokenizer::Impl::load_added(const json& list, const std::string& where) {
  if (list.is_null()) return;
  if (!list.is_array()) DS_THROW(FormatError, "{}: expected an array", where);
  std::vector<size_t> raw, norm;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string w = where + "[" + std::to_string(i) + "]";
    if (!t.is_object()) DS_THROW(FormatError, "{}: expected an object", w);
    if (!t.contains("id") || !t["id"].is_number_unsigned() || t["id"].get<uint64_t>() >= kMaxId)
      DS_THROW(FormatError, "{}.id: expected an id in [0, {})", w, kMaxId);
    if (!t.contains("content") || !t["content"].is_string() ||
        t["content"].get_ref<const std::string&>().empty())
      DS_THROW(FormatError, "{}.content: expected a non-empty string", w);
    AddedToken a;
    a.id = TokenId(t["id"].get<uint64_t>());
    a.content = t["content"].get<std::string>();
    auto flag = [&](const char* key, bool dflt) {
      if (is_null_or_absent(t, key)) return dflt;
      if (!t[key].is_boolean()) DS_THROW(FormatError, "{}.{}: expected a boolean", w, key);
      return t[key].get<bool>();
    };
    a.special = flag("special", false);
    a.single_word = flag("single_word", false);
    a.lstrip = flag("lstrip", false);
    a.rstrip = flag("rstrip", false);
    a.normalized = flag("normalized", !a.special);
    if (a.id < id_kind.size() && id_kind[a.id] >= 2)
      DS_THROW(FormatError, "{}.id: duplicate added token id {}", w, a.id);
    for (const AddedToken& o : added)
      if (o.content == a.content)
        DS_THROW(FormatError, "{}.content: duplicate added token \"{}\"", w, one_line(a.content));
    // An added token the model's vocabulary also holds must have the vocabulary's id (Hugging
    // Face then uses that id, warning only), and an id of the vocabulary is its token's.
    if (const auto v = token_ids.find(a.content); v != token_ids.end() && v->second != a.id)
      DS_THROW(FormatError, "{}: \"{}\" has id {} in model.vocab, not {}", w,
               one_line(a.content), v->second, a.id);
    if (a.id < id_kind.size() && id_kind[a.id] == 1 && id_token[a.id] != a.content)
      DS_THROW(FormatError, "{}.id: {} is model.vocab's \"{}\", not \"{}\"", w, a.id,
               one_line(id_token[a.id]), one_line(a.content));
    set_id(a.id, a.content, a.special ? 3 : 2);
    token_ids[a.content] = a.id;
    (a.normalized ? norm : raw).push_back(added.size());
    added.push_back(std::move(a));
  }
  raw_matcher.build(added, raw);
  norm_matcher.build(added, norm);
}

// Components around the model: only the no-op / ByteLevel ones are accepted.
void Tokenizer::Impl::check_components(const json& root) {
  const std::string& src = source;
  auto only_types = [&](const json& j, const std::string& where, const char* list_key,
                        std::initializer_list<std::string_view> ok, auto&& self) -> void {
    if (j.is_null()) return;
    if (!j.is_object()) DS_THROW(FormatError, "{}: {}: expected an object", src, where);
    const std::string t = type_of(j);
    if (t == "Sequence") {
      auto it = j.find(list_key);
      if (it == j.end() || !it->is_array())
        DS_THROW(FormatError, "{}: {}.{}: expected an array", src, where, list_key);
      for (size_t i = 0; i < it->size(); ++i)
        self((*it)[i], where + "." + list_key + "[" + std::to_string(i) + "]", list_key, ok, self);
      return;
    }
    if (std::find(ok.begin(), ok.end(), t) == ok.end())
      DS_THROW(FormatError, "{}: {}: unsupported type '{}'", src, where, t);
  };
  only_types(root.value("normalizer", json()), "normalizer", "normalizers", {}, only_types);
  only_types(root.value("post_processor", json()), "post_processor", "processors",
             {"ByteLevel"}, only_types);
  if (is_null_or_absent(root, "decoder"))
    DS_THROW(FormatError, "{}: decoder: missing (expected ByteLevel)", src);
  only_types(root["decoder"], "decoder", "decoders", {"ByteLevel"}, only_types);
  if (!is_null_or_absent(root, "truncation"))
    DS_THROW(FormatError, "{}: truncation: unsupported (must be null)", src);
}

void Tokenizer::Impl::load(const json& root) {
  if (!root.is_object()) DS_THROW(FormatError, "{}: expected a JSON object", source);
  if (!root.contains("model")) DS_THROW(FormatError, "{}: model: missing", source);
  check_components(root);
  load_model(root["model"], source + ": model");
  load_added(root.value("added_tokens", json()), source + ": added_tokens");
  pre = PreTokenizer::from_json(root.value("pre_tokenizer", json()).dump(),
                                source + ": pre_tokenizer");
  if (!pre.ends_with_byte_level())
    DS_THROW(FormatError, "{}: pre_tokenizer: must end with its only ByteLevel step "
             "(byte-level BPE)", source);
  auto find_id = [&](std::string_view s) -> std::optional<TokenId> {
    auto it = token_ids.find(std::string(s));
    return it == token_ids.end() ? std::nullopt : std::optional<TokenId>(it->second);
  };
  bos = find_id(special::kBos);
  eos = find_id(special::kEos);
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<TokenId>& out) const {
  thread_local std::vector<std::string_view> pieces;
  pieces.clear();
  pre.split(text, pieces);
  for (std::string_view p : pieces) bpe.encode_piece(p, out);
}

// Phase 0 extracts raw added tokens, phase 1 normalized ones, phase 2 is plain text.
void Tokenizer::Impl::encode_phase(std::string_view text, int phase,
                                   std::vector<TokenId>& out) const {
  const detail::AddedMatcher* m = phase == 0 ? &raw_matcher : phase == 1 ? &norm_matcher : nullptr;
  if (!m) return encode_plain(text, out);
  if (m->empty()) return encode_phase(text, phase + 1, out);
  std::vector<detail::AddedMatcher::Span> spans;
  m->split(text, spans);
  for (const auto& s : spans) {
    if (s.token >= 0) out.push_back(added[size_t(s.token)].id);
    else encode_phase(text.substr(s.begin, s.end - s.begin), phase + 1, out);
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  const std::string text = io::read_file(path);
  return from_json(text, path.string());
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = source_name;
  impl->fingerprint = hex64(xxh64(text));
  io::check_json_depth(text, source_name);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: invalid JSON: {}", source_name, one_line(e.what()));
  }
  try {
    impl->load(root);
  } catch (const json::exception& e) {   // a type mismatch not caught by the checks
    DS_THROW(FormatError, "{}: unexpected JSON content: {}", source_name, one_line(e.what()));
  }
  return Tokenizer(std::move(impl));
}

void Tokenizer::encode(std::string_view text, std::vector<TokenId>& out,
                       bool match_added_tokens) const {
  if (match_added_tokens) impl_->encode_phase(text, 0, out);
  else impl_->encode_plain(text, out);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool match_added_tokens) const {
  std::vector<TokenId> out;
  encode(text, out, match_added_tokens);
  return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string bytes;
  for (TokenId id : ids) {
    if (id >= impl_->id_kind.size() || impl_->id_kind[id] == 0)
      DS_THROW(FormatError, "{}: decode: unknown token id {}", impl_->source, id);
    if (skip_special && impl_->id_kind[id] == 3) continue;
    bytes += impl_->id_bytes[id];
  }
  if (!first_invalid_utf8(bytes)) return bytes;
  return utf8_repair(bytes);
}

std::string Tokenizer::token_bytes(TokenId id) const {
  if (id >= impl_->id_kind.size() || impl_->id_kind[id] == 0)
    DS_THROW(FormatError, "{}: unknown token id {}", impl_->source, id);
  return impl_->id_bytes[id];
}

size_t Tokenizer::vocab_size() const { return impl_->id_kind.size(); }

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->token_ids.find(std::string(token));
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::id_to_token(TokenId id) const {
  return id < impl_->id_token.size() ? impl_->id_token[id] : std::string();
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const PreTokenizer& Tokenizer::pre_tokenizer() const { return impl_->pre; }
const std::string& Tokenizer::fingerprint() const { return impl_->fingerprint; }
const std::string& Tokenizer::source_name() const { return impl_->source; }
std::optional<TokenId> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<TokenId> Tokenizer::eos_id() const { return impl_->eos; }

}  // namespace ds::tok
