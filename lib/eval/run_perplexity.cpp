// ds-eval perplexity: mean NLL, perplexity and bits per byte of text files or token shards,
// long documents in sliding windows (see include/ds/eval/run.hpp for the conventions).
// reference: spec §6.1 (BPB = Σ −ln p / (ln 2 × UTF-8 bytes)).
#include <nlohmann/json.hpp>

#include <cmath>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/data/shard.hpp"
#include "ds/eval/lm_scorer.hpp"
#include "ds/io/file.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "run_internal.hpp"

namespace ds::eval {

namespace {

struct Doc {
  std::string source;                  // "file" or "shard:doc"
  std::vector<tok::TokenId> tokens;    // detail::document_start first (or the shard's BOS)
  uint64_t bytes = 0;
};

std::vector<Doc> text_documents(const model::Pretrained& pt, const PerplexityOptions& o) {
  const tok::Tokenizer& tk = detail::tokenizer_of(pt);
  std::vector<Doc> docs;
  for (size_t i = 0; i < detail::limited(o.files.size(), o.common.limit); ++i) {
    Doc d;
    d.source = o.files[i];
    const std::string text = io::read_input(o.files[i]);   // fingerprinted later
    DS_CHECK_AS(FormatError, !text.empty(), "{}: empty file", o.files[i]);
    // bits per byte are per UTF-8 byte of text, as ds-tokenize reads documents
    if (const auto bad = tok::first_invalid_utf8(text))
      DS_THROW(FormatError, "{}: invalid UTF-8 at byte {} (a text document is UTF-8)",
               o.files[i], *bad);
    d.tokens.push_back(detail::document_start(pt));
    tk.encode(text, d.tokens, /*match_added_tokens=*/false);
    d.bytes = text.size();
    docs.push_back(std::move(d));
  }
  return docs;
}

// The FIM markers {begin, hole, end} of a dataset that ds-tokenize encoded with --fim-rate > 0
// (its provenance's fim_rate), else none.
std::vector<tok::TokenId> fim_markers(const data::Dataset& ds, const tok::Tokenizer& tk) {
  const auto p = nlohmann::json::parse(ds.manifest().extra_json, nullptr, false);
  const auto it = p.is_object() ? p.find("fim_rate") : p.end();
  if (it == p.end() || !it->is_number() || !(it->get<double>() > 0)) return {};
  std::vector<tok::TokenId> ids;
  namespace sp = tok::special;
  for (std::string_view m : {sp::kFimBegin, sp::kFimHole, sp::kFimEnd})
    if (const auto id = tk.token_to_id(m)) ids.push_back(*id);
  return ids.size() == 3 ? ids : std::vector<tok::TokenId>{};
}

// A document's tokens (its start token first: BOS or detail::document_start) without the three
// markers of its PSM form (<begin> prefix <hole> suffix <end> middle: the text's bytes
// rearranged; the markers' NLL is still scored), when it is in that form (<begin> right after
// the start); else all of them (a marker written in a document's text is its text).
std::vector<tok::TokenId> without_psm_markers(const std::vector<tok::TokenId>& t,
                                              const std::vector<tok::TokenId>& markers) {
  if (markers.empty() || t.size() < 2 || t[1] != markers[0]) return t;
  std::vector<tok::TokenId> out{t[0]};
  size_t next = 0;   // the marker looked for: begin, hole, end, in that order
  for (size_t i = 1; i < t.size(); ++i) {
    if (next < 3 && t[i] == markers[next]) { ++next; continue; }
    out.push_back(t[i]);
  }
  return out;
}

std::vector<Doc> shard_documents(const model::Pretrained& pt, const PerplexityOptions& o) {
  const tok::Tokenizer& tk = detail::tokenizer_of(pt);
  data::Dataset ds(o.data, tk.fingerprint());
  const std::vector<tok::TokenId> markers = fim_markers(ds, tk);
  const tok::TokenId bos = detail::bos_of(pt), start = detail::document_start(pt);
  const std::optional<tok::TokenId> eos = tk.eos_id();
  std::vector<Doc> docs;
  for (size_t s = 0; s < ds.n_shards(); ++s) {
    const data::ShardReader& sh = ds.shard(s);
    const auto& off = sh.document_offsets();
    for (size_t k = 0; k + 1 < off.size(); ++k) {
      if (o.common.limit > 0 && docs.size() >= size_t(o.common.limit)) return docs;
      Doc d;
      d.source = fmt::format("{}:{}", sh.path().filename().string(), k);
      const std::vector<uint32_t> ids = sh.read(off[k], off[k + 1] - off[k]);
      if (ids.empty() || ids.front() != bos) d.tokens.push_back(start);
      d.tokens.insert(d.tokens.end(), ids.begin(), ids.end());
      // the EOS that ds-tokenize encode ends every document with is not scored: a document
      // then scores as its text file does (the same tokens and bytes)
      if (eos && d.tokens.size() > 2 && d.tokens.back() == *eos) d.tokens.pop_back();
      d.bytes = tk.decode(without_psm_markers(d.tokens, markers), /*skip_special=*/true).size();
      docs.push_back(std::move(d));
    }
  }
  DS_CHECK_AS(FormatError, !docs.empty(), "{}: the dataset holds no documents", o.data);
  return docs;
}

void check_options(const model::Pretrained& pt, const PerplexityOptions& o, int64_t& w,
                   int64_t& s) {
  DS_CHECK_AS(UsageError, o.data.empty() != o.files.empty(),
              "perplexity: give either --data SHARDS or text FILEs (not both, not neither)");
  w = o.window > 0 ? o.window : std::min<int64_t>(pt.args.max_seq_len, 2048);
  s = o.stride > 0 ? o.stride : w;
  DS_CHECK_AS(UsageError, o.window >= 0 && o.stride >= 0, "--window and --stride must be >= 0");
  DS_CHECK_AS(UsageError, w <= pt.args.max_seq_len,
              "--window {} exceeds the model's max_seq_len {}", w, pt.args.max_seq_len);
  DS_CHECK_AS(UsageError, s <= w, "--stride {} exceeds --window {}", s, w);
}

std::vector<std::string> perplexity_inputs(const PerplexityOptions& o) {
  std::vector<std::string> in = o.files;
  if (!o.data.empty()) {   // a dataset directory, or its manifest.json or a shard in it
    in.push_back(o.data);
    if (std::error_code ec; fs::is_regular_file(o.data, ec))
      in.push_back(fs::absolute(o.data, ec).parent_path().string());
  }
  return in;
}

}  // namespace

EvalReport eval_perplexity(model::Pretrained& pt, const PerplexityOptions& o, SampleLog* log) {
  detail::check_common(o.common);
  detail::check_outputs_not_inputs(o.common, perplexity_inputs(o));
  int64_t W = 0, S = 0;
  check_options(pt, o, W, S);
  const ops::Context ctx = detail::make_context(o.common);
  const std::vector<Doc> docs = o.files.empty() ? shard_documents(pt, o) : text_documents(pt, o);

  std::vector<ScoreRequest> reqs;
  std::vector<size_t> doc_of;
  for (size_t d = 0; d < docs.size(); ++d)
    for (const Window& w : sliding_windows(docs[d].tokens.size(), size_t(W), size_t(S))) {
      reqs.push_back({std::span(docs[d].tokens).subspan(w.begin, w.end + 1 - w.begin),
                      w.score_begin - w.begin, w.score_end - w.begin});
      doc_of.push_back(d);
    }
  detail::Progress bar("perplexity", reqs.size(), o.common.progress);
  const auto res = score_requests(*pt.model, ctx, reqs, size_t(o.common.batch_size),
                                  [&](size_t n) { bar.update(n); });

  std::vector<LossTotals> per_doc(docs.size());
  for (size_t r = 0; r < reqs.size(); ++r) {
    per_doc[doc_of[r]].sum_nll -= res[r].logprob;
    per_doc[doc_of[r]].tokens += res[r].n;
  }
  LossTotals total;
  std::unique_ptr<SampleLog> own;   // no caller's log: this function publishes its own
  if (!log && !o.common.log_samples.empty()) {
    own = std::make_unique<SampleLog>(o.common.log_samples);
    log = own.get();
  }
  for (size_t d = 0; d < docs.size(); ++d) {
    per_doc[d].bytes = docs[d].bytes;
    total.add(per_doc[d]);
    if (log)
      log->write({{"index", d}, {"source", docs[d].source}, {"tokens", per_doc[d].tokens},
                  {"bytes", per_doc[d].bytes}, {"sum_nll", per_doc[d].sum_nll},
                  {"nll", per_doc[d].tokens ? per_doc[d].mean_nll() : 0.0}});
  }
  DS_CHECK_AS(FormatError, total.tokens > 0, "perplexity: no document has a token to predict");

  if (own) own->close();

  EvalReport rep;
  rep.task = "perplexity";
  rep.task_file = o.files.empty() ? o.data
                                  : (o.files.size() == 1 ? o.files[0]
                                                         : fmt::format("{} files", o.files.size()));
  if (o.files.size() == 1) rep.task_fingerprint = file_fingerprint(o.files[0]);
  rep.checkpoint_fingerprint = pt.fingerprint;
  rep.settings = {{"window", W}, {"stride", S}, {"input", o.files.empty() ? "shards" : "text"},
                  {"limit", o.common.limit}, {"batch_size", o.common.batch_size},
                  {"document_start", pt.add_bos_token ? "bos" : "eos"}};
  // standard errors over the documents (null with one: nothing to estimate the spread from)
  const LossStderrs se = loss_stderrs(per_doc);
  auto maybe = [](double v) { return std::isfinite(v) ? std::optional<double>(v) : std::nullopt; };
  rep.metrics.push_back({"nll", total.mean_nll(), maybe(se.nll)});
  rep.metrics.push_back({"perplexity", total.perplexity(), maybe(se.perplexity)});
  if (total.bytes > 0) rep.metrics.push_back({"bpb", total.bits_per_byte(), maybe(se.bpb)});
  rep.counts = {{"documents", docs.size()}, {"tokens", total.tokens}, {"bytes", total.bytes},
                {"windows", reqs.size()}};
  return rep;
}

EvalReport run_perplexity(const PerplexityOptions& o) {
  detail::check_common(o.common);
  detail::check_outputs_not_inputs(o.common, perplexity_inputs(o));
  model::Pretrained pt = detail::load_model_for_eval(o.common);
  // from here SIGINT/SIGTERM stop at the next batch: the sample log's temporary file and a
  // report being written are removed, and the tool exits 128 + the signal
  InterruptScope interrupts;
  std::unique_ptr<SampleLog> log;   // published by write_report, with the report
  if (!o.common.log_samples.empty()) log = std::make_unique<SampleLog>(o.common.log_samples);
  EvalReport r = eval_perplexity(pt, o, log.get());
  check_interrupt();   // one that came during the last batch: no report
  detail::write_report(r, o.common, log.get());
  return r;
}

}  // namespace ds::eval
