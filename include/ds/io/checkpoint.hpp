// Checkpoint directories: a checkpoint is written into a hidden temporary directory next to
// its final place (<parent>/.<name>.tmp.<host>.<pid>/, see io/staging.hpp), every file is
// fsync'ed, and the directory is renamed to <parent>/<name> in one step, then the parent is
// fsync'ed. "Complete" therefore
// means "visible under its final name": no marker file is needed, and a crash leaves only a
// hidden .tmp directory that the finders ignore. Run directories keep the last N checkpoints.
// reference: docs/model.md (checkpoint = HF-style directory: config.json + safetensors).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ds::io {

namespace fs = std::filesystem;

class StagingLock;

// CheckpointWriter w(run_dir / "step-00001000");
// write files into w.path(); w.commit();   (destruction without commit removes w.path())
// If the final directory already exists it is replaced: swapped atomically with
// renameat2(RENAME_EXCHANGE) where the filesystem allows it, else renamed away to
// .<name>.old.<pid>, the new one renamed in, and the old one deleted.
class CheckpointWriter {
 public:
  explicit CheckpointWriter(fs::path final_dir);   // creates the parent and the temp dir
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  const fs::path& path() const { return temp_; }          // write files here
  const fs::path& final_path() const { return final_; }
  void commit();                                          // fsync all, rename, fsync parent
  bool committed() const { return committed_; }

 private:
  fs::path final_, temp_;
  std::unique_ptr<StagingLock> lock_;   // held until commit() (io/staging.hpp)
  bool committed_ = false;
};

// "step-" + zero-padded step (8 digits): lexical order == numeric order up to 10^8 steps.
std::string checkpoint_dir_name(uint64_t step, const std::string& prefix = "step-");
// The step of a directory named <prefix><digits>; nullopt for any other name.
std::optional<uint64_t> checkpoint_step(const fs::path& dir, const std::string& prefix = "step-");

// Complete checkpoints (directories named <prefix><digits>) in run_dir, oldest first by step.
std::vector<fs::path> list_checkpoints(const fs::path& run_dir,
                                       const std::string& prefix = "step-");
// The newest complete checkpoint, or nullopt (also when run_dir does not exist).
std::optional<fs::path> find_latest_checkpoint(const fs::path& run_dir,
                                               const std::string& prefix = "step-");
// The checkpoint a directory names: itself when it holds config.json, else its newest complete
// step-* checkpoint (a run directory), else nullopt.
std::optional<fs::path> checkpoint_in(const fs::path& dir);
// Deletes all but the keep_last newest checkpoints (keep_last >= 1); entries not matching
// <prefix><digits> are never touched. Returns the deleted directories.
std::vector<fs::path> prune_checkpoints(const fs::path& run_dir, int keep_last,
                                        const std::string& prefix = "step-");

// The tokenizer files a checkpoint gets: from `source` (a tokenizer directory, or a tokenizer
// .json file and the tokenizer_config.json beside it; "" = none), with tokenizer_config.json's
// add_bos_token set to what the training data did when that is known, so that ds-eval,
// ds-generate and ds-rl put BOS before a text exactly when the model was trained so. (It is
// the field transformers' Llama tokenizer classes read; its generic PreTrainedTokenizerFast,
// the class ds-tokenize's tokenizer_config.json names, adds no BOS whatever it says.)
struct TokenizerFiles {
  std::string source;
  std::optional<bool> add_bos_token;   // nullopt: tokenizer_config.json copied as it is
  TokenizerFiles() = default;
  TokenizerFiles(std::string src) : source(std::move(src)) {}   // NOLINT: implicit on purpose
  TokenizerFiles(const char* src) : source(src) {}              // NOLINT
  TokenizerFiles(const fs::path& src) : source(src.string()) {}  // NOLINT
  bool empty() const { return source.empty(); }
};

// Copies tokenizer.json and tokenizer_config.json (each if present) from a tokenizer
// directory, or from the directory of a given tokenizer .json file (copied as tokenizer.json),
// into dst_dir. With add_bos_token set and a tokenizer_config.json whose add_bos_token (absent
// = true) differs, the copy has the field set (other keys kept in order; FormatError naming the
// file when it is not a JSON object). Returns the number of files copied; IoError if the
// source does not exist.
int copy_tokenizer_files(const TokenizerFiles& src, const fs::path& dst_dir);

// tokenizer_config.json's add_bos_token: nullopt when the file or the key is absent (or null);
// FormatError naming the file when it is not a JSON object or the key is not a boolean.
// Hugging Face's Llama tokenizers, DeepSeek-V3's among them, default to true.
std::optional<bool> add_bos_token_in(const fs::path& tokenizer_config);

}  // namespace ds::io
