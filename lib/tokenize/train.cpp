// `ds-tokenize train`: feeds documents (streamed in pieces cut at tokenization-neutral
// points) to ds::tok::BpeTrainer and writes DIR/tokenizer.json and DIR/tokenizer_config.json
// atomically; the summary carries vocab size, merge count, time and fingerprint.
// reference: include/ds/tokenizer/bpe_trainer.hpp; man/ds-tokenize.1 (train).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/log.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/file.hpp"
#include "ds/io/staging.hpp"
#include "ds/tokenize/documents.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

namespace fs = std::filesystem;

TrainSummary train(const TrainOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.out.empty()) DS_THROW(UsageError, "--out is required");
  io::check_output_dir(o.out, "--out");
  if (o.vocab_size < 256 + o.special_tokens.size())
    DS_THROW(UsageError, "--vocab-size {}: must hold the 256 byte tokens and the special "
             "tokens", o.vocab_size);
  check_threads(o.threads);
  if (!o.special_tokens.empty() &&
      std::find(o.special_tokens.begin(), o.special_tokens.end(), tok::special::kEos) ==
          o.special_tokens.end())
    DS_THROW(UsageError, "--special-tokens: must include the end-of-sentence token '{}' "
             "(ds-tokenize encode ends every document with it)", tok::special::kEos);
  check_inputs(o.input);
  tok::BpeTrainerOptions to;
  to.vocab_size = o.vocab_size;
  to.min_frequency = o.min_frequency;
  to.special_tokens = o.special_tokens;
  to.threads = o.threads;
  to.progress = log::stderr_is_tty();
  tok::BpeTrainer trainer(to);
  const std::string config = trainer.tokenizer_config_json();   // depends on the flags only

  std::error_code ec;
  if (fs::exists(o.out, ec) && !fs::is_directory(o.out, ec))
    DS_THROW(IoError, "{}: exists and is not a directory", o.out);
  const fs::path tj_path = fs::path(o.out) / "tokenizer.json";
  const fs::path tc_path = fs::path(o.out) / "tokenizer_config.json";
  for (const fs::path& f : {tj_path, tc_path}) {
    if (fs::is_directory(f, ec))
      DS_THROW(UsageError, "--out {}: {} is a directory (it cannot be replaced by the file)",
               o.out, f.string());
    // tokenizer_config.json is published first: alone, and what this run writes, it is the
    // half of a pair whose run was killed between the two renames
    const bool half_pair = f == tc_path && !fs::exists(tj_path, ec) && fs::is_regular_file(f, ec) &&
                           io::read_file(f) == config;
    if (!o.force && fs::exists(f, ec) && !half_pair)
      DS_THROW(UsageError, "{}: already exists (use --force to replace it)", f.string());
  }
  for (const fs::path& f : {tj_path, tc_path}) io::remove_stale_temp_files(f);
  InterruptScope interrupts;   // Ctrl-C: stop before anything is written

  // The trainer's pre-tokenizer is DeepSeek-V3's, so the reader's cut rule is neutral.
  DocumentReader reader(o.input, /*allow_cuts=*/true);
  Segment seg;
  while (reader.next(seg)) {
    check_interrupt();
    trainer.add_text(seg.text);
  }
  const auto& st = reader.stats();
  if (st.documents == 0) DS_THROW(FormatError, "no documents to train on (the input is empty)");
  spdlog::info("train: {} documents, {:.1f} MB; merging", st.documents, st.bytes_read / 1e6);

  const std::string json = trainer.train();
  // Validate our own output before publishing it.
  const tok::Tokenizer tok = tok::Tokenizer::from_json(json, "trained tokenizer.json");

  check_interrupt();
  const bool created = !fs::exists(o.out, ec);
  fs::create_directories(o.out, ec);
  if (ec) DS_THROW(IoError, "{}: cannot create directory: {}", o.out, ec.message());
  // Both files on disk before either is published: a full disk publishes neither. (A rename
  // failing between the two would still leave the new config beside the old tokenizer.json.)
  try {
    io::AtomicFile tj(fs::path(o.out) / "tokenizer.json");
    io::AtomicFile tc(fs::path(o.out) / "tokenizer_config.json");
    tj.write(json);
    tc.write(config);
    tj.sync();
    tc.sync();
    tc.commit();
    tj.commit();
  } catch (...) {
    if (created) fs::remove(o.out, ec);   // the directory this run made, if still empty
    throw;
  }

  TrainSummary s;
  s.out = o.out;
  s.vocab_size = tok.vocab_size();
  if (s.vocab_size < o.vocab_size)   // the corpus ran out of pairs seen --min-frequency times
    spdlog::warn("train: {} ids, fewer than --vocab-size {}: no pair left occurring at least "
                 "--min-frequency {} times in this input", s.vocab_size, o.vocab_size,
                 o.min_frequency);
  s.documents = st.documents;
  s.bytes = st.bytes_read;
  s.fingerprint = tok.fingerprint();
  try {
    s.merges = nlohmann::json::parse(json).at("model").at("merges").size();
  } catch (const nlohmann::json::exception& e) {
    DS_THROW(InternalError, "trained tokenizer.json has no model.merges: {}", e.what());
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

std::string to_json(const TrainSummary& s) {
  nlohmann::json j;
  j["out"] = s.out;
  j["vocab_size"] = s.vocab_size;
  j["merges"] = s.merges;
  j["documents"] = s.documents;
  j["bytes_in"] = s.bytes;
  j["seconds"] = s.seconds;
  j["fingerprint"] = s.fingerprint;
  return j.dump();
}

}  // namespace ds::tokenize
