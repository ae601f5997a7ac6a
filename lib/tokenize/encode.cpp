// `ds-tokenize encode`: documents -> token shards. A reader thread fills the next batch
// of document pieces while the pool encodes the current one; pieces are written in input
// order, so the shards are byte-identical for any thread count. Every document ends with
// EOS; FIM (PSM) is applied per document from an RNG keyed by (seed, document index), and
// punctuation + line-break tokens are split at --punct-newline-split-rate (punct_split.hpp).
// reference: spec/deepseek-v3.md §4.2; man/ds-tokenize.1 (encode).
#include <nlohmann/json.hpp>

#include <chrono>
#include <future>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/log.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/file.hpp"
#include "ds/core/version.hpp"
#include "ds/tokenize/documents.hpp"
#include "ds/tokenize/fim.hpp"
#include "ds/tokenize/output_dir.hpp"
#include "ds/tokenize/punct_split.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

namespace {

using Clock = std::chrono::steady_clock;

struct Batch {
  std::vector<Segment> segs;
  bool end = false;   // the reader is exhausted
  ReaderStats stats;  // the reader's counters after this batch (copied on the reader thread)
};

Batch read_batch(DocumentReader& reader, uint64_t max_bytes, size_t max_segs) {
  Batch b;
  uint64_t bytes = 0;
  while (bytes < max_bytes && b.segs.size() < max_segs) {
    Segment s;
    if (!reader.next(s)) {
      b.end = true;
      break;
    }
    bytes += s.text.size();
    b.segs.push_back(std::move(s));
  }
  b.stats = reader.stats();
  return b;
}

enum class Fim : uint8_t { kNone, kApplied, kSkippedLarge };

// A unit of parallel work: bytes [begin, end) of one piece, or the whole piece in PSM form.
struct Unit {
  size_t seg = 0, begin = 0, end = 0;
  bool psm = false;
  std::vector<uint32_t> tokens;
  uint64_t joined = 0, split = 0;   // punctuation + line-break tokens seen / split
};

struct Encoder {
  const tok::Tokenizer& tok;
  const EncodeOptions& o;
  bool cuts = false;         // splitting at last_cut_point()/next_cut_point() is neutral
  uint32_t eos = 0;
  std::optional<uint32_t> bos;
  std::optional<FimIds> fim_ids;
  std::optional<PunctNewlineSplitter> splitter;

  Fim fim_state(const Segment& s) const {
    if (!fim_ids || !s.first || !fim_selected(o.seed, s.doc_index, o.fim_rate)) return Fim::kNone;
    return s.last ? Fim::kApplied : Fim::kSkippedLarge;   // a document in several pieces
  }
  // Splits piece `i` into units of about kUnitBytes at neutral cut points, so that one
  // long document still keeps every thread busy; the tokens do not depend on the split.
  void plan(const Segment& s, size_t i, Fim state, std::vector<Unit>& units) const {
    constexpr size_t kUnitBytes = 256u << 10;
    if (state == Fim::kApplied || !cuts) {
      units.push_back({i, 0, s.text.size(), state == Fim::kApplied, {}});
      return;
    }
    size_t pos = 0;
    do {
      size_t end = s.text.size();
      if (end - pos > kUnitBytes) end = std::min(end, next_cut_point(s.text, pos + kUnitBytes));
      units.push_back({i, pos, end, false, {}});
      pos = end;
    } while (pos < s.text.size());
  }
  void run(const Segment& s, Unit& u) const {
    const std::string_view text = std::string_view(s.text).substr(u.begin, u.end - u.begin);
    if (u.psm)
      encode_psm(tok, *fim_ids, text, fim_split(o.seed, s.doc_index, text), o.match_added_tokens,
                 u.tokens);
    else
      tok.encode(text, u.tokens, o.match_added_tokens);
    if (splitter)
      splitter->apply(s.doc_index, s.doc_offset + u.begin, u.tokens, u.joined, u.split);
  }
};

std::string provenance_json(const EncodeOptions& o, const tok::Tokenizer& tok,
                            const std::vector<std::string>& sources, const EncodeSummary& s) {
  nlohmann::json j;
  j["tool"] = std::string("ds-tokenize ") + DS_VERSION;
  j["sources"] = sources;
  j["tokenizer"] = o.tokenizer;
  j["tokenizer_fingerprint"] = tok.fingerprint();
  j["format"] = o.input.format;
  if (o.input.format == "jsonl") j["field"] = o.input.field;
  else j["doc_split"] = o.input.doc_split;
  j["fim_rate"] = o.fim_rate;
  j["punct_newline_split_rate"] = o.punct_newline_split_rate;
  j["seed"] = o.seed;
  j["add_bos"] = o.add_bos;
  j["match_added_tokens"] = o.match_added_tokens;
  j["chunk_bytes"] = o.input.chunk_bytes;
  j["documents"] = s.documents;
  j["tokens"] = s.tokens;
  j["bytes_in"] = s.bytes_in;
  j["fim_documents"] = s.fim_documents;
  j["fim_skipped_large"] = s.fim_skipped_large;
  j["chunked_documents"] = s.chunked_documents;
  j["punct_newline_tokens"] = s.punct_newline_tokens;
  j["punct_newline_split"] = s.punct_newline_split;
  j["bad_lines_skipped"] = s.bad_lines_skipped;
  j["empty_skipped"] = s.empty_skipped;
  return j.dump();
}

void check_encode_options(const EncodeOptions& o) {
  if (o.tokenizer.empty()) DS_THROW(UsageError, "--tokenizer is required");
  if (o.out.empty()) DS_THROW(UsageError, "--out is required (or use --jsonl)");
  io::check_output_dir(o.out, "--out", /*replaced=*/true);   // built beside, renamed over
  if (!(o.fim_rate >= 0.0 && o.fim_rate <= 1.0))
    DS_THROW(UsageError, "--fim-rate {}: expected a value in [0, 1]", o.fim_rate);
  if (!(o.punct_newline_split_rate >= 0.0 && o.punct_newline_split_rate <= 1.0))
    DS_THROW(UsageError, "--punct-newline-split-rate {}: expected a value in [0, 1]",
             o.punct_newline_split_rate);
  if (o.max_shard_bytes == 0) DS_THROW(UsageError, "--max-shard-bytes must be positive");
  check_threads(o.threads);
  check_inputs(o.input);
}

// Logs read progress every few seconds when stderr is a terminal.
struct Progress {
  bool on;
  Clock::time_point t0 = Clock::now(), last = t0;
  void tick(uint64_t bytes, uint64_t docs, uint64_t tokens) {
    if (!on) return;
    const auto now = Clock::now();
    if (now - last < std::chrono::seconds(2)) return;
    last = now;
    const double sec = std::chrono::duration<double>(now - t0).count();
    spdlog::info("encode: {:.1f} MB read, {:.2f} MB/s, {} documents, {} tokens", bytes / 1e6,
                 bytes / 1e6 / sec, docs, tokens);
  }
};

// Encodes one batch in parallel (units of work in any order) and writes it in input order.
void encode_batch(const Encoder& enc, ThreadPool& pool, const Batch& b, ShardSink& sink,
                  EncodeSummary& sum) {
  std::vector<Fim> fim(b.segs.size());
  std::vector<Unit> units;
  for (size_t i = 0; i < b.segs.size(); ++i) {
    fim[i] = enc.fim_state(b.segs[i]);
    enc.plan(b.segs[i], i, fim[i], units);
  }
  pool.parallel_for(units.size(), [&](size_t lo, size_t hi, int) {
    for (size_t k = lo; k < hi; ++k) enc.run(b.segs[units[k].seg], units[k]);
  });
  size_t k = 0;
  for (size_t i = 0; i < b.segs.size(); ++i) {
    const Segment& seg = b.segs[i];
    if (seg.first && enc.bos) sink.append(std::span<const uint32_t>(&*enc.bos, 1));
    for (; k < units.size() && units[k].seg == i; ++k) {
      sink.append(units[k].tokens);
      sum.tokens += units[k].tokens.size();
      sum.punct_newline_tokens += units[k].joined;
      sum.punct_newline_split += units[k].split;
    }
    if (seg.last && fim[i] != Fim::kApplied) sink.append(std::span<const uint32_t>(&enc.eos, 1));
    if (seg.last) sink.end_document();
    sum.tokens += (seg.first && enc.bos) + (seg.last && fim[i] != Fim::kApplied);
    sum.fim_documents += fim[i] == Fim::kApplied;
    sum.fim_skipped_large += fim[i] == Fim::kSkippedLarge;
  }
}

}  // namespace

EncodeSummary encode(const EncodeOptions& o) {
  const auto t0 = Clock::now();
  check_encode_options(o);
  const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
  const auto t_loaded = Clock::now();
  Encoder enc{tok, o, false, 0, std::nullopt, std::nullopt, std::nullopt};
  const auto eos = tok.eos_id();
  if (!eos)
    DS_THROW(FormatError, "{}: no end-of-sentence token '{}'", o.tokenizer, tok::special::kEos);
  enc.eos = *eos;
  if (o.add_bos) {
    enc.bos = tok.bos_id();
    if (!enc.bos) DS_THROW(FormatError, "{}: no begin-of-sentence token (--add-bos)", o.tokenizer);
  }
  if (o.fim_rate > 0) enc.fim_ids = FimIds::from(tok);
  if (o.punct_newline_split_rate > 0) {
    enc.splitter.emplace(tok, o.seed, o.punct_newline_split_rate);
    if (enc.splitter->joined_tokens() == 0)
      DS_THROW(UsageError, "--punct-newline-split-rate: {} has no token joining punctuation and "
               "line breaks", o.tokenizer);
    spdlog::info("encode: {} tokens join punctuation and line breaks; each split with "
                 "probability {}", enc.splitter->joined_tokens(), o.punct_newline_split_rate);
  }
  enc.cuts = cutting_is_neutral(tok);
  if (!enc.cuts)
    spdlog::warn("{}: pre-tokenizer is not DeepSeek-V3's or an added token contains a newline; "
                 "long documents are encoded whole (memory grows with the largest document)",
                 o.tokenizer);

  InterruptScope interrupts;   // Ctrl-C or SIGTERM: the staging directory is removed
  std::vector<std::string> reads = o.input.inputs;
  reads.push_back(o.tokenizer);
  StagedDir staged(o.out, o.force, reads);
  ShardSink sink(staged.path(), uint32_t(tok.vocab_size()), tok.fingerprint(), o.max_shard_bytes);
  DocumentReader reader(o.input, enc.cuts);
  ThreadPool pool(resolve_threads(o.threads));
  Progress progress{o.progress && log::stderr_is_tty()};
  spdlog::info("encode: {} thread(s), tokenizer {} ({})", pool.size(), o.tokenizer,
               tok.fingerprint());

  EncodeSummary sum;
  const size_t max_segs = 1u << 16;
  auto next = std::async(std::launch::async, read_batch, std::ref(reader), o.batch_bytes, max_segs);
  for (;;) {
    Batch b = next.get();
    check_interrupt();
    if (!b.end)
      next = std::async(std::launch::async, read_batch, std::ref(reader), o.batch_bytes, max_segs);
    encode_batch(enc, pool, b, sink, sum);
    if (!b.end) progress.tick(b.stats.bytes_read, b.stats.documents, sum.tokens);
    if (b.end) break;
  }
  const ReaderStats& st = reader.stats();   // the reader thread has finished
  sum.documents = st.documents;
  sum.bytes_in = st.bytes_read;
  sum.chunked_documents = st.chunked_documents;
  sum.bad_lines_skipped = st.bad_lines_skipped;
  sum.empty_skipped = st.empty_skipped;
  check_interrupt();   // one that arrived during the last batch
  const data::Manifest m = sink.finish(provenance_json(o, tok, reader.sources(), sum));
  staged.commit();
  sum.out = o.out;
  sum.shards = m.shards.size();
  for (const auto& e : m.shards) sum.compressed_bytes += e.bytes;
  sum.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  sum.tokenizer_seconds = std::chrono::duration<double>(t_loaded - t0).count();
  spdlog::info("encode: {} documents, {} tokens, {} shard(s) in {:.2f} s ({:.2f} MB/s)",
               sum.documents, sum.tokens, sum.shards, sum.seconds,
               sum.bytes_in / 1e6 / std::max(sum.seconds - sum.tokenizer_seconds, 1e-9));
  return sum;
}

std::string to_json(const EncodeSummary& s) {
  nlohmann::json j;
  j["out"] = s.out;
  j["documents"] = s.documents;
  j["tokens"] = s.tokens;
  j["shards"] = s.shards;
  j["bytes_in"] = s.bytes_in;
  j["compressed_bytes"] = s.compressed_bytes;
  j["fim_documents"] = s.fim_documents;
  j["fim_skipped_large"] = s.fim_skipped_large;
  j["chunked_documents"] = s.chunked_documents;
  j["punct_newline_tokens"] = s.punct_newline_tokens;
  j["punct_newline_split"] = s.punct_newline_split;
  j["bad_lines_skipped"] = s.bad_lines_skipped;
  j["empty_skipped"] = s.empty_skipped;
  j["seconds"] = s.seconds;
  j["tokenizer_seconds"] = s.tokenizer_seconds;
  const double t = s.seconds - s.tokenizer_seconds;   // encoding time proper
  j["mb_per_s"] = t > 0 ? s.bytes_in / 1e6 / t : 0.0;
  return j.dump();
}

}  // namespace ds::tokenize
