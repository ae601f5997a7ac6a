// DatasetWriter (a directory of shards rolled over by compressed size, plus manifest.json)
// and Dataset (a manifest or a single shard opened for global token reads).
// Formats: docs/formats.md ("Token shards", "Dataset manifest").
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <system_error>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/data/shard.hpp"
#include "ds/io/file.hpp"
#include "shard_format.hpp"

namespace ds::data {

// ---------------------------------------------------------------------------------------
// DatasetWriter

struct DatasetWriter::Impl {
  fs::path dir;
  uint32_t vocab_size;
  std::string fingerprint;
  uint64_t max_shard_bytes;
  uint32_t block_tokens;
  std::unique_ptr<ShardWriter> current;
  std::string current_file;
  Manifest manifest;
  bool finished = false;

  void close_current();
};

DatasetWriter::DatasetWriter(const fs::path& dir, uint32_t vocab_size,
                             std::string tokenizer_fingerprint, uint64_t max_shard_bytes,
                             uint32_t block_tokens)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.dir = dir;
  s.vocab_size = vocab_size;
  s.fingerprint = std::move(tokenizer_fingerprint);
  s.max_shard_bytes = max_shard_bytes;
  s.block_tokens = block_tokens;
  uint64_t fp = 0;
  if (!detail::parse_fingerprint(s.fingerprint, &fp))
    DS_THROW(UsageError, "{}: tokenizer fingerprint '{}' is not 16 hex digits", dir.string(),
             s.fingerprint);
  if (vocab_size == 0) DS_THROW(UsageError, "{}: vocab_size must be positive", dir.string());
  s.fingerprint = hex64(fp);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) DS_THROW(IoError, "{}: cannot create directory: {}", dir.string(), ec.message());
  // A manifest left by an earlier run would describe shards this run is about to replace;
  // remove it first so that an interrupted rewrite never looks like a valid dataset.
  const fs::path old_manifest = dir / "manifest.json";
  if (io::exists(old_manifest)) {
    fs::remove(old_manifest, ec);
    if (ec) DS_THROW(IoError, "{}: cannot remove: {}", old_manifest.string(), ec.message());
    io::fsync_dir(dir);
  }
  s.manifest.tokenizer_fingerprint = s.fingerprint;
  s.manifest.vocab_size = vocab_size;
  s.manifest.token_width = detail::token_width_for(vocab_size);
}

// Without finish(): the open shard's temporary file is removed (ShardWriter's destructor),
// shards already published stay, and no manifest is written.
DatasetWriter::~DatasetWriter() = default;

void DatasetWriter::Impl::close_current() {
  if (!current) return;
  const ShardHeaderInfo info = current->finish();
  current.reset();
  ShardEntry e;
  e.file = current_file;
  e.tokens = info.n_tokens;
  e.documents = info.n_documents;
  std::error_code ec;
  e.bytes = fs::file_size(dir / current_file, ec);
  if (ec) DS_THROW(IoError, "{}: cannot stat: {}", (dir / current_file).string(), ec.message());
  manifest.tokens += e.tokens;
  manifest.documents += e.documents;
  manifest.shards.push_back(std::move(e));
}

void DatasetWriter::add_document(std::span<const TokenId> tokens) {
  auto& s = *impl_;
  DS_CHECK(!s.finished, "{}: add_document after finish", s.dir.string());
  if (!s.current) {
    s.current_file = fmt::format("shard-{:05d}.dst", s.manifest.shards.size());
    s.current = std::make_unique<ShardWriter>(s.dir / s.current_file, s.vocab_size,
                                              s.fingerprint, s.block_tokens);
  }
  s.current->append(tokens);
  s.current->end_document();
  // Roll over once the compressed blocks reach the limit; the next document opens a new
  // shard, so a shard exceeds max_shard_bytes by at most one document and one block.
  if (s.current->bytes_written() >= s.max_shard_bytes) s.close_current();
}

Manifest DatasetWriter::finish(const std::string& extra_json) {
  auto& s = *impl_;
  DS_CHECK(!s.finished, "{}: finish called twice", s.dir.string());
  s.close_current();
  s.manifest.extra_json = extra_json;
  s.manifest.save(s.dir / "manifest.json");
  s.finished = true;
  return s.manifest;
}

// ---------------------------------------------------------------------------------------
// Dataset

struct Dataset::Impl {
  fs::path manifest_path;   // empty when opened from a single shard
  Manifest manifest;
  std::vector<ShardReader> shards;
  std::vector<uint64_t> starts;   // global index of each shard's first token, plus the total
};

namespace {

// True when the file starts with the shard magic (anything else is taken for a manifest).
bool looks_like_shard(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) DS_THROW(IoError, "{}: cannot open", p.string());
  char head[8] = {};
  in.read(head, 8);
  return in.gcount() == 8 && std::memcmp(head, detail::kShardMagic, 8) == 0;
}

void check_shard_matches(const ShardReader& r, const ShardEntry& e, const Manifest& m) {
  const auto& i = r.info();
  const std::string name = r.path().string();
  if (i.n_tokens != e.tokens || i.n_documents != e.documents)
    DS_THROW(FormatError, "{}: shard holds {} tokens / {} documents but the manifest says "
             "{} / {}", name, i.n_tokens, i.n_documents, e.tokens, e.documents);
  if (i.vocab_size != m.vocab_size || i.token_width != m.token_width)
    DS_THROW(FormatError, "{}: shard vocab_size {} (width {}) differs from the manifest's {} "
             "(width {})", name, i.vocab_size, i.token_width, m.vocab_size, m.token_width);
}

}  // namespace

Dataset::Dataset(const fs::path& path, std::optional<std::string> expected_fingerprint)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  fs::path target = io::is_directory(path) ? path / "manifest.json" : path;
  if (!io::exists(target))
    DS_THROW(IoError, "{}: no such file (expected a dataset directory, manifest or shard)",
             target.string());
  const bool is_manifest = target.extension() == ".json" || !looks_like_shard(target);
  if (!is_manifest) {
    s.shards.emplace_back(target, expected_fingerprint);
    const auto& i = s.shards.back().info();
    s.manifest.tokenizer_fingerprint = i.tokenizer_fingerprint;
    s.manifest.vocab_size = i.vocab_size;
    s.manifest.token_width = i.token_width;
    s.manifest.tokens = i.n_tokens;
    s.manifest.documents = i.n_documents;
    s.manifest.shards.push_back(
        {target.filename().string(), i.n_tokens, i.n_documents, fs::file_size(target)});
  } else {
    s.manifest_path = target;
    s.manifest = Manifest::load(target);
    uint64_t want = 0, have = 0;
    detail::parse_fingerprint(s.manifest.tokenizer_fingerprint, &have);
    if (expected_fingerprint &&
        (!detail::parse_fingerprint(*expected_fingerprint, &want) || want != have))
      DS_THROW(FormatError, "{}: made with another tokenizer (manifest fingerprint {}, "
               "expected {})", target.string(), s.manifest.tokenizer_fingerprint,
               *expected_fingerprint);
    const fs::path dir = target.parent_path();
    for (const auto& e : s.manifest.shards) {
      s.shards.emplace_back(dir / e.file, s.manifest.tokenizer_fingerprint);
      check_shard_matches(s.shards.back(), e, s.manifest);
    }
  }
  uint64_t pos = 0;
  for (const auto& r : s.shards) {
    s.starts.push_back(pos);
    pos += r.info().n_tokens;
  }
  s.starts.push_back(pos);
}

Dataset::~Dataset() = default;
const Manifest& Dataset::manifest() const { return impl_->manifest; }
size_t Dataset::n_shards() const { return impl_->shards.size(); }
const ShardReader& Dataset::shard(size_t i) const {
  DS_CHECK(i < impl_->shards.size(), "shard index {} out of range ({} shards)", i,
           impl_->shards.size());
  return impl_->shards[i];
}
uint64_t Dataset::n_tokens() const { return impl_->starts.back(); }

void Dataset::read(uint64_t start, std::span<TokenId> out) const {
  const auto& s = *impl_;
  const uint64_t n = n_tokens();
  if (start > n || out.size() > n - start)
    DS_THROW(FormatError, "{}: read of tokens [{}, {}) is out of range (dataset holds {})",
             s.manifest_path.empty() ? s.shards.at(0).path().string() : s.manifest_path.string(),
             start, start + out.size(), n);
  // First shard whose range contains `start` (skipping empty shards).
  size_t i = size_t(std::upper_bound(s.starts.begin(), s.starts.end(), start) -
                    s.starts.begin()) - 1;
  uint64_t pos = start;
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t local = pos - s.starts[i];
    const uint64_t take = std::min<uint64_t>(out.size() - done, s.starts[i + 1] - pos);
    if (take > 0) s.shards[i].read(local, out.subspan(done, take));
    done += take;
    pos += take;
    ++i;
  }
}

}  // namespace ds::data
