// `ds-tokenize encode`: documents -> token shards. A reader thread fills the next batch
// of document pieces while the pool encodes the current one; pieces are written in input
// order, so the shards are byte-identical for any thread count. Every document ends with
// EOS; FIM (PSM) is applied per document from an RNG keyed by (seed, document index).
// reference: spec/deepseek-v3.md §4.2; man/ds-tokenize.1 (encode).
#include <nlohmann/json.hpp>

#include <chrono>
#include <future>
#include <optional>

#include "ds/core/error.hpp"
#include "ds/core/log.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/core/version.hpp"
#include "ds/tokenize/documents.hpp"
#include "ds/tokenize/fim.hpp"
#include "ds/tokenize/output_dir.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

namespace {

using Clock = std::chrono::steady_clock;

struct Batch {
  std::vector<Segment> segs;
  bool end = false;   // the reader is exhausted
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
  return b;
}

enum class Fim : uint8_t { kNone, kApplied, kSkippedLarge };

struct Encoder {
  const tok::Tokenizer& tok;
  const EncodeOptions& o;
  uint32_t eos = 0;
  std::optional<uint32_t> bos;
  std::optional<FimIds> fim_ids;

  // Tokens of one piece: [BOS] text [EOS], or [BOS] PSM form (which ends with EOS).
  Fim encode(const Segment& s, std::vector<uint32_t>& out) const {
    Fim state = Fim::kNone;
    if (s.first && bos) out.push_back(*bos);
    if (fim_ids && s.first && fim_selected(o.seed, s.doc_index, o.fim_rate)) {
      if (s.last) {
        encode_psm(tok, *fim_ids, s.text, fim_split(o.seed, s.doc_index, s.text),
                   o.match_added_tokens, out);
        return Fim::kApplied;
      }
      state = Fim::kSkippedLarge;   // the document spans several pieces
    }
    tok.encode(s.text, out, o.match_added_tokens);
    if (s.last) out.push_back(eos);
    return state;
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
  j["bad_lines_skipped"] = s.bad_lines_skipped;
  j["empty_skipped"] = s.empty_skipped;
  return j.dump();
}

void check_encode_options(const EncodeOptions& o) {
  if (o.tokenizer.empty()) DS_THROW(UsageError, "--tokenizer is required");
  if (o.out.empty()) DS_THROW(UsageError, "--out is required (or use --jsonl)");
  if (!(o.fim_rate >= 0.0 && o.fim_rate <= 1.0))
    DS_THROW(UsageError, "--fim-rate {}: expected a value in [0, 1]", o.fim_rate);
  if (o.max_shard_bytes == 0) DS_THROW(UsageError, "--max-shard-bytes must be positive");
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

}  // namespace

EncodeSummary encode(const EncodeOptions& o) {
  const auto t0 = Clock::now();
  check_encode_options(o);
  const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
  Encoder enc{tok, o, 0, std::nullopt, std::nullopt};
  const auto eos = tok.eos_id();
  if (!eos) DS_THROW(FormatError, "{}: no end-of-sentence token '{}'", o.tokenizer, tok::special::kEos);
  enc.eos = *eos;
  if (o.add_bos) {
    enc.bos = tok.bos_id();
    if (!enc.bos) DS_THROW(FormatError, "{}: no begin-of-sentence token (--add-bos)", o.tokenizer);
  }
  if (o.fim_rate > 0) enc.fim_ids = FimIds::from(tok);
  const bool cuts = cutting_is_neutral(tok);
  if (!cuts)
    spdlog::warn("{}: pre-tokenizer is not DeepSeek-V3's or an added token contains a newline; "
                 "long documents are encoded whole (memory grows with the largest document)",
                 o.tokenizer);

  StagedDir staged(o.out, o.force);
  ShardSink sink(staged.path(), uint32_t(tok.vocab_size()), tok.fingerprint(), o.max_shard_bytes);
  DocumentReader reader(o.input, cuts);
  ThreadPool pool(resolve_threads(o.threads));
  Progress progress{o.progress && log::stderr_is_tty()};
  spdlog::info("encode: {} thread(s), tokenizer {} ({})", pool.size(), o.tokenizer, tok.fingerprint());

  EncodeSummary sum;
  const size_t max_segs = 1u << 16;
  auto next = std::async(std::launch::async, read_batch, std::ref(reader), o.batch_bytes, max_segs);
  for (;;) {
    Batch b = next.get();
    if (!b.end)
      next = std::async(std::launch::async, read_batch, std::ref(reader), o.batch_bytes, max_segs);
    std::vector<std::vector<uint32_t>> toks(b.segs.size());
    std::vector<Fim> fim(b.segs.size(), Fim::kNone);
    pool.parallel_for(b.segs.size(), [&](size_t lo, size_t hi, int) {
      for (size_t i = lo; i < hi; ++i) fim[i] = enc.encode(b.segs[i], toks[i]);
    });
    for (size_t i = 0; i < b.segs.size(); ++i) {
      sink.append(toks[i]);
      sum.tokens += toks[i].size();
      if (b.segs[i].last) sink.end_document();
      sum.fim_documents += fim[i] == Fim::kApplied;
      sum.fim_skipped_large += fim[i] == Fim::kSkippedLarge;
    }
    const auto& st = reader.stats();   // read by this thread only between batches
    if (!b.end) progress.tick(st.bytes_read, st.documents, sum.tokens);
    if (b.end) break;
  }
  const auto& st = reader.stats();
  sum.documents = st.documents;
  sum.bytes_in = st.bytes_read;
  sum.chunked_documents = st.chunked_documents;
  sum.bad_lines_skipped = st.bad_lines_skipped;
  sum.empty_skipped = st.empty_skipped;
  const data::Manifest m = sink.finish(provenance_json(o, tok, reader.sources(), sum));
  staged.commit();
  sum.out = o.out;
  sum.shards = m.shards.size();
  for (const auto& e : m.shards) sum.compressed_bytes += e.bytes;
  sum.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  spdlog::info("encode: {} documents, {} tokens, {} shard(s) in {:.2f} s ({:.2f} MB/s)",
               sum.documents, sum.tokens, sum.shards, sum.seconds,
               sum.bytes_in / 1e6 / std::max(sum.seconds, 1e-9));
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
  j["bad_lines_skipped"] = s.bad_lines_skipped;
  j["empty_skipped"] = s.empty_skipped;
  j["seconds"] = s.seconds;
  j["mb_per_s"] = s.seconds > 0 ? s.bytes_in / 1e6 / s.seconds : 0.0;
  return j.dump();
}

}  // namespace ds::tokenize
