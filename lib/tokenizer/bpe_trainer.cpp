// Byte-level BPE trainer: documents are buffered, cut at safe boundaries and pre-tokenized
// in parallel (one word-count map per thread, merged after each batch), then the merge
// engine (bpe_merge.cpp) runs on the distinct words; the result is written as a Hugging
// Face tokenizer.json laid out like DeepSeek-V3's (spec §8.4-8.5).
// Token layout: the special tokens first (default BOS, EOS, pad = ids 0-2, special), then
// the 256 bytes in GPT-2 bytes_to_unicode order, then merge r as id (#specials + 256 + r),
// then (default set only) FIM hole/begin/end, <｜User｜>, <｜Assistant｜> (not special).
// A non-empty options.special_tokens replaces both lists: all of them go first, special.
#include "ds/tokenizer/bpe_trainer.hpp"

#include <algorithm>
#include <cstdio>
#include <unordered_map>

#include "bpe_trainer_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/tokenizer/pretokenizer.hpp"
#include "ds/tokenizer/tokenizer.hpp"
#include "ds/tokenizer/utf8.hpp"

namespace ds::tok {
namespace {

constexpr size_t kChunkBytes = 64 << 10;     // work item size for counting
constexpr size_t kFlushBytes = 16 << 20;     // buffered small documents before counting
constexpr size_t kInPlaceBytes = 1 << 20;    // documents this large are not copied

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using LocalCounts = std::unordered_map<std::string_view, uint64_t, SvHash>;
using WordCounts = std::unordered_map<std::string, uint64_t, SvHash, std::equal_to<>>;

struct TokenSpec {
  std::string content;
  bool special = false;
};

bool is_safe_cut(std::string_view t, size_t i) {
  unsigned char c = static_cast<unsigned char>(t[i]);
  return t[i - 1] == '\n' && c > 0x20 && c < 0x7F;
}

void progress_line(const char* fmt_text, size_t a, size_t b) {
  std::fprintf(stderr, "\r[bpe] ");
  std::fprintf(stderr, fmt_text, a, b);
  std::fflush(stderr);
}

void merge_progress(size_t done, size_t total) {
  progress_line("merges %zu / %zu   ", done, total);
}

}  // namespace

namespace detail {

std::vector<std::string_view> split_safe_chunks(std::string_view text, size_t target) {
  std::vector<std::string_view> out;
  target = std::max<size_t>(target, 1);
  size_t start = 0;
  while (text.size() - start > target) {
    size_t cut = start + target;
    while (cut < text.size() && !is_safe_cut(text, cut)) ++cut;
    if (cut >= text.size()) break;
    out.push_back(text.substr(start, cut - start));
    start = cut;
  }
  if (start < text.size() || out.empty()) out.push_back(text.substr(start));
  return out;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      static const char* hex = "0123456789abcdef";
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: out += "\\u00"; out += hex[c >> 4]; out += hex[c & 15];
      }
    } else {
      out += ch;
    }
  }
  out += '"';
}

}  // namespace detail

struct BpeTrainer::Impl {
  BpeTrainerOptions opts;
  std::shared_ptr<const PreTokenizer> pre;
  std::vector<TokenSpec> front, back;      // added tokens before the bytes / after merges
  std::vector<std::string> cut_tokens;     // all added strings, longest first
  bool first_byte[256] = {};
  ThreadPool pool;
  std::string pending;
  std::vector<std::pair<size_t, size_t>> pending_docs;   // (offset, size) in `pending`
  WordCounts words;
  uint64_t bytes_seen = 0;
  bool show_progress = false;

  explicit Impl(BpeTrainerOptions o);
  void flush();
  void count(const std::vector<std::string_view>& items);
  void count_text(std::string_view text, LocalCounts& m, std::vector<std::string_view>& p) const;
  size_t find_added(std::string_view text, size_t from, size_t& len) const;
  std::string to_json(const std::vector<detail::MergeStep>& merges) const;
};

BpeTrainer::Impl::Impl(BpeTrainerOptions o) : opts(std::move(o)), pool(opts.threads) {
  pre = opts.pre_tokenizer ? opts.pre_tokenizer
                           : std::make_shared<const PreTokenizer>(PreTokenizer::deepseek_v3());
  if (opts.special_tokens.empty()) {
    for (auto t : {special::kBos, special::kEos, special::kPad})
      front.push_back({std::string(t), true});
    for (auto t : {special::kFimHole, special::kFimBegin, special::kFimEnd, special::kUser,
                   special::kAssistant})
      back.push_back({std::string(t), false});
  } else {
    for (const auto& t : opts.special_tokens) {
      DS_CHECK_AS(UsageError, !t.empty(), "--special-tokens: empty token string");
      for (const auto& f : front)
        DS_CHECK_AS(UsageError, f.content != t, "--special-tokens: '{}' given twice", t);
      // A string in the byte-level alphabet can also be a vocabulary entry: one character is
      // always one, and one whose bytes differ from its spelling ("Ġthe" is " the") can be
      // made by a merge, since cutting the token out of the text does not stop that. HF
      // would give both the special token's id; refused here instead.
      std::string bytes;
      char32_t cp;
      const bool one_char = utf8_decode(t, 0, cp) == t.size();
      DS_CHECK_AS(UsageError, !unicode_to_bytes(t, bytes) || (!one_char && bytes == t),
                  "--special-tokens: '{}' is spelled in the byte-level alphabet, so a "
                  "vocabulary token (a byte or a merge) can have the same string", t);
      front.push_back({t, true});
    }
  }
  size_t fixed = front.size() + 256 + back.size();
  DS_CHECK_AS(UsageError, opts.vocab_size >= fixed,
              "--vocab-size {} is smaller than the {} special/added tokens + 256 byte tokens "
              "(minimum {})", opts.vocab_size, front.size() + back.size(), fixed);
  for (const auto* list : {&front, &back})
    for (const auto& t : *list) {
      cut_tokens.push_back(t.content);
      first_byte[static_cast<unsigned char>(t.content[0])] = true;
    }
  std::stable_sort(cut_tokens.begin(), cut_tokens.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  show_progress = opts.progress && log::stderr_is_tty();
}

// Position of the next added-token occurrence at or after `from` (npos if none).
size_t BpeTrainer::Impl::find_added(std::string_view text, size_t from, size_t& len) const {
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte[static_cast<unsigned char>(text[i])]) continue;
    for (const auto& t : cut_tokens) {
      if (text.compare(i, t.size(), t) == 0) {
        len = t.size();
        return i;
      }
    }
  }
  return std::string_view::npos;
}

// Counts the words of one work item; added-token strings are cut out (never merged into).
void BpeTrainer::Impl::count_text(std::string_view text, LocalCounts& m,
                                  std::vector<std::string_view>& pieces) const {
  size_t start = 0, len = 0;
  for (;;) {
    size_t pos = find_added(text, start, len);
    std::string_view seg = text.substr(start, pos == std::string_view::npos ? pos : pos - start);
    pieces.clear();
    if (!seg.empty()) pre->split(seg, pieces);
    for (auto p : pieces) ++m[p];
    if (pos == std::string_view::npos) break;
    start = pos + len;
  }
}

void BpeTrainer::Impl::count(const std::vector<std::string_view>& items) {
  std::vector<LocalCounts> local(size_t(pool.size()));
  pool.parallel_for(items.size(), [&](size_t b, size_t e, int t) {
    std::vector<std::string_view> pieces;
    for (size_t i = b; i < e; ++i) count_text(items[i], local[size_t(t)], pieces);
  });
  for (auto& m : local) {   // sums: the order of merging does not change the result
    for (const auto& [w, c] : m) {
      auto it = words.find(w);
      if (it == words.end()) words.emplace(std::string(w), c);
      else it->second += c;
    }
  }
  if (show_progress)
    progress_line("counted %zu MB, %zu distinct words   ", size_t(bytes_seen >> 20), words.size());
}

void BpeTrainer::Impl::flush() {
  if (pending_docs.empty()) return;
  std::vector<std::string_view> items;
  std::string_view all(pending);
  for (auto [off, size] : pending_docs)
    for (auto c : detail::split_safe_chunks(all.substr(off, size), kChunkBytes)) items.push_back(c);
  count(items);
  pending.clear();
  pending_docs.clear();
}

BpeTrainer::BpeTrainer(BpeTrainerOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}
BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add_text(std::string_view text) {
  Impl& m = *impl_;
  m.bytes_seen += text.size();
  if (text.empty()) return;
  if (text.size() >= kInPlaceBytes) {
    m.flush();
    m.count(detail::split_safe_chunks(text, kChunkBytes));
    return;
  }
  m.pending_docs.emplace_back(m.pending.size(), text.size());
  m.pending.append(text);
  if (m.pending.size() >= kFlushBytes) m.flush();
}

std::string BpeTrainer::train() {
  Impl& m = *impl_;
  m.flush();
  if (m.show_progress) std::fputc('\n', stderr);
  std::vector<std::pair<std::string, uint64_t>> words(m.words.begin(), m.words.end());
  std::sort(words.begin(), words.end());   // a fixed order, whatever the hash map did
  size_t max_merges = m.opts.vocab_size - m.front.size() - 256 - m.back.size();
  auto merges = detail::run_merges(words, max_merges, m.opts.min_frequency,
                                   m.show_progress ? &merge_progress : nullptr);
  if (m.show_progress) {
    progress_line("merges %zu / %zu   ", merges.size(), max_merges);
    std::fputc('\n', stderr);
  }
  return m.to_json(merges);
}

namespace {

// The 256 byte values in GPT-2 bytes_to_unicode order: printable ones, then the rest.
std::vector<int> gpt2_byte_order() {
  std::vector<int> order;
  auto printable = [](int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  };
  for (int b = 0; b < 256; ++b) if (printable(b)) order.push_back(b);
  for (int b = 0; b < 256; ++b) if (!printable(b)) order.push_back(b);
  return order;
}

void append_added(std::string& out, const std::string& content, size_t id, bool special,
                  bool last) {
  out += "    {\n      \"id\": " + std::to_string(id) + ",\n      \"content\": ";
  detail::append_json_string(out, content);
  out += ",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n";
  out += std::string("      \"normalized\": ") + (special ? "false" : "true") + ",\n";
  out += std::string("      \"special\": ") + (special ? "true" : "false") + "\n    }";
  out += last ? "\n" : ",\n";
}

}  // namespace

std::string BpeTrainer::Impl::to_json(const std::vector<detail::MergeStep>& merges) const {
  auto strs = detail::symbol_strings(merges);
  const size_t base = front.size() + 256;   // id of merge 0
  std::string out;
  out.reserve(64 * strs.size() + 4096);
  out += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
  out += "  \"added_tokens\": [\n";
  const size_t n_added = front.size() + back.size();
  for (size_t i = 0; i < front.size(); ++i)
    append_added(out, front[i].content, i, front[i].special, i + 1 == n_added);
  for (size_t i = 0; i < back.size(); ++i)
    append_added(out, back[i].content, base + merges.size() + i, back[i].special,
                 front.size() + i + 1 == n_added);
  out += "  ],\n  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": []},\n";
  out += "  \"pre_tokenizer\": " + pre->to_json() + ",\n";
  out += "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
         "\"trim_offsets\": false, \"use_regex\": true},\n";
  out += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
         "\"trim_offsets\": true, \"use_regex\": true},\n";
  out +=
      "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
      "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
      "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {\n";
  size_t id = 0;
  auto entry = [&](const std::string& s) {
    out += "      ";
    detail::append_json_string(out, s);
    out += ": " + std::to_string(id++);
    out += id == base + merges.size() ? "\n" : ",\n";
  };
  for (const auto& t : front) entry(t.content);
  for (int b : gpt2_byte_order()) entry(strs[size_t(b)]);
  for (size_t r = 0; r < merges.size(); ++r) entry(strs[256 + r]);
  out += "    },\n    \"merges\": [\n";
  for (size_t r = 0; r < merges.size(); ++r) {
    out += "      ";
    detail::append_json_string(out, strs[merges[r].left] + " " + strs[merges[r].right]);
    out += r + 1 == merges.size() ? "\n" : ",\n";
  }
  out += "    ]\n  }\n}\n";
  return out;
}

namespace {

// DeepSeek-V3 chat rendering (spec §8.6, plain conversations; written for this project):
// BOS + system contents joined by "\n\n", then <｜User｜>u / <｜Assistant｜>a<EOS> turns,
// and <｜Assistant｜> as the generation prompt.
constexpr std::string_view kChatTemplate =
    "{%- set ns = namespace(system='', seen=false) -%}"
    "{%- for m in messages if m['role'] == 'system' -%}"
    "{%- if ns.seen -%}{%- set ns.system = ns.system + '\\n\\n' -%}{%- endif -%}"
    "{%- set ns.system = ns.system + m['content'] -%}{%- set ns.seen = true -%}"
    "{%- endfor -%}"
    "{{- bos_token + ns.system -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- '<\xEF\xBD\x9CUser\xEF\xBD\x9C>' + m['content'] -}}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{- '<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>' + m['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>' -}}{%- endif -%}";

}  // namespace

std::string_view ds_chat_template() { return kChatTemplate; }

// PreTrainedTokenizerFast (loads with any transformers version); BOS is not added
// automatically: the chat template and the data pipeline write it. pad = the third
// special token when there is one (<｜▁pad▁｜> by default), else EOS.
std::string BpeTrainer::tokenizer_config_json() const {
  const auto& f = impl_->front;
  std::string out = "{\n  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n";
  auto field = [&](const char* name, std::string_view v) {
    out += std::string("  \"") + name + "\": ";
    detail::append_json_string(out, v);
    out += ",\n";
  };
  field("bos_token", f[0].content);
  if (f.size() > 1) field("eos_token", f[1].content);
  if (f.size() > 1) field("pad_token", f[f.size() > 2 ? 2 : 1].content);
  out += "  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": 131072,\n";
  field("tokenizer_class", "PreTrainedTokenizerFast");
  out += "  \"chat_template\": ";
  detail::append_json_string(out, kChatTemplate);
  out += "\n}\n";
  return out;
}

}  // namespace ds::tok
