// `ds-tokenize inspect`: a one-line JSON report on a dataset (shards, tokens, documents,
// tokenizer fingerprint, vocab size, token width, compressed size, bytes per token, the
// encode provenance) and, with --verify, a full decompression and checksum pass.
// reference: include/ds/data/shard.hpp (Dataset, ShardReader::verify); man/ds-tokenize.1.
#include <nlohmann/json.hpp>

#include <ostream>

#include "ds/core/error.hpp"
#include "ds/data/shard.hpp"
#include "ds/tokenize/tokenize.hpp"
#include "ds/tokenizer/tokenizer.hpp"

namespace ds::tokenize {

void inspect(const InspectOptions& o, std::ostream& out) {
  if (o.data.empty()) DS_THROW(UsageError, "--data is required");
  const data::Dataset ds(o.data);
  const data::Manifest& m = ds.manifest();
  nlohmann::json r;
  r["data"] = o.data;
  r["shards"] = ds.n_shards();
  r["tokens"] = ds.n_tokens();
  r["documents"] = m.documents;
  r["tokenizer_fingerprint"] = m.tokenizer_fingerprint;
  r["vocab_size"] = m.vocab_size;
  r["token_width"] = m.token_width;
  uint64_t compressed = 0;
  for (const auto& e : m.shards) compressed += e.bytes;
  r["compressed_bytes"] = compressed;
  r["bytes_per_token"] = ds.n_tokens() ? double(compressed) / double(ds.n_tokens()) : 0.0;
  try {
    r["provenance"] = nlohmann::json::parse(m.extra_json.empty() ? "{}" : m.extra_json);
  } catch (const nlohmann::json::exception&) {
    r["provenance"] = m.extra_json;
  }

  std::vector<std::string> failures;
  if (!o.tokenizer.empty()) {
    const tok::Tokenizer tok = tok::Tokenizer::from_file(o.tokenizer);
    const bool match = tok.fingerprint() == m.tokenizer_fingerprint;
    r["tokenizer"] = o.tokenizer;
    r["tokenizer_matches"] = match;
    if (!match)
      failures.push_back(fmt::format("made with another tokenizer (dataset {}, {} is {})",
                                     m.tokenizer_fingerprint, o.tokenizer, tok.fingerprint()));
  }
  if (o.verify) {
    uint64_t bad = 0;
    std::vector<std::string> problems;
    for (size_t i = 0; i < ds.n_shards(); ++i) bad += ds.shard(i).verify(&problems);
    r["checksums"] = bad == 0 ? "ok" : "bad";
    r["bad_blocks"] = bad;
    r["problems"] = problems;
    if (bad)   // the first problem names its file and block; the JSON lists them all
      failures.push_back(fmt::format("{} bad block(s), the first: {}", bad,
                                     problems.empty() ? std::string("?") : problems.front()));
  } else {
    r["checksums"] = "not verified (use --verify)";
  }
  out << r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  out.flush();
  if (!failures.empty())
    DS_THROW(FormatError, "{}: {}", o.data, fmt::format("{}", fmt::join(failures, "; ")));
}

}  // namespace ds::tokenize
