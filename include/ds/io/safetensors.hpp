// safetensors files: the Hugging Face weight format. A file is an 8-byte little-endian header
// length n, n bytes of JSON ({name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__":
// {str: str}}, padded with spaces), then the tensor bytes (offsets relative to the data start).
// Readers mmap the file and validate every header entry; writers publish atomically. A model
// directory holds either model.safetensors or model-0000i-of-0000N.safetensors shards plus
// model.safetensors.index.json ({"metadata":{"total_size":N},"weight_map":{name: file}}).
// reference: huggingface/safetensors format description; spec §1.13, §3.3.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ds/core/tensor.hpp"

namespace ds::io {

namespace fs = std::filesystem;

// "F32" -> DType::f32 etc. (dtype_name's spelling); nullopt for names ds does not support.
std::optional<DType> dtype_from_name(std::string_view name);

// A tensor inside a mapped file: raw little-endian bytes, valid while the file object lives.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const { return shape_numel(shape); }
};

// F32/BF16/F16 -> a new F32 tensor of the same shape; FormatError for other dtypes
// (FP8 weights need their weight_scale_inv: dequantise them explicitly).
Tensor to_f32(const TensorView& v);
// The first NaN or infinite element of an F32/BF16/F16 tensor (nullopt: none, or another dtype).
std::optional<int64_t> first_nonfinite(const TensorView& v);

// One mmap'ed, fully validated .safetensors file. Any defect -> FormatError naming the file
// (and the tensor when one is at fault); open failures -> IoError.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const fs::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const fs::path& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }   // in data-offset order
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;             // FormatError if absent
  Tensor load_f32(const std::string& name) const { return to_f32(get(name)); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_size() const { return header_size_; }             // n (JSON incl. padding)

 private:
  void parse_header(std::string_view json, uint64_t data_size);
  fs::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t header_size_ = 0;
  std::vector<TensorView> tensors_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write. `data` points at numel elements of `src_dtype`; when `dtype` differs
// the writer converts (only f32 -> bf16 / f16 is supported), e.g. F32 master -> BF16 output.
struct TensorSource {
  std::string name;
  DType dtype = DType::f32;       // dtype stored in the file
  Shape shape;
  const void* data = nullptr;
  DType src_dtype = DType::f32;   // dtype of `data`
  Tensor device;                  // a GPU tensor (data null): copied to the host as it is written
  size_t nbytes() const { return size_t(shape_numel(shape)) * dtype_size(dtype); }

  static TensorSource raw(std::string name, DType dtype, Shape shape, const void* data);
  // A tensor, stored as `out` (out == t.dtype(), or t F32 and out BF16/F16). A device tensor
  // is copied to the host when the writer reaches it, one at a time (bounded host memory).
  static TensorSource from_tensor(std::string name, const Tensor& t, DType out);
};

// Writes one file atomically: metadata {"format":"pt"} plus `extra_metadata`, tensors laid out
// in the order given, header padded with spaces to a multiple of 8 bytes.
void write_safetensors(const fs::path& path, const std::vector<TensorSource>& tensors,
                       const std::map<std::string, std::string>& extra_metadata = {});

// Writes `tensors` into `dir` (which must exist): model.safetensors when the data fits in
// max_shard_bytes, otherwise model-0000i-of-0000N.safetensors shards (greedy, in the given
// order; a tensor larger than the limit gets a shard of its own) plus
// model.safetensors.index.json. Returns the file names written (index last).
std::vector<std::string> write_safetensors_dir(const fs::path& dir,
                                               const std::vector<TensorSource>& tensors,
                                               uint64_t max_shard_bytes);

inline constexpr const char* kSafetensorsSingle = "model.safetensors";
inline constexpr const char* kSafetensorsIndex = "model.safetensors.index.json";

// A model's tensors across one file or an indexed set of shards. Opened from a directory
// (index preferred, else model.safetensors) or from a single .safetensors / index file.
class SafetensorsDir {
 public:
  explicit SafetensorsDir(const fs::path& dir_or_file);
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;   // FormatError naming the tensor
  Tensor load_f32(const std::string& name) const { return to_f32(get(name)); }
  const fs::path& file_of(const std::string& name) const;
  // The __metadata__ of the file holding `name`.
  const std::map<std::string, std::string>& metadata_of(const std::string& name) const;
  size_t num_files() const { return files_.size(); }

 private:
  void open_index(const fs::path& index_path);
  fs::path source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> where_;          // name -> files_ index
};

}  // namespace ds::io

// ---- Streaming writer and page release (lib/io/safetensors_stream.cpp) ---------------------
// A safetensors header depends only on the names, dtypes and shapes, so a file can be written
// while its data is being produced, one tensor at a time, without holding the data in memory:
// the header first, then each tensor's bytes in the declared order. The bytes are identical to
// write_safetensors' for the same tensors and metadata ({"format":"pt"} plus extras, header
// padded with spaces to a multiple of 8 bytes).
namespace ds::io {

class AtomicFile;

// A tensor's name, stored dtype and shape: what the header needs before any data exists.
struct TensorDecl {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t nbytes() const { return uint64_t(shape_numel(shape)) * dtype_size(dtype); }
};

// The first bytes of a file holding `tensors` in this order: the 8-byte little-endian header
// length, then the JSON header padded with spaces. InternalError on a repeated name.
std::string safetensors_header(const std::vector<TensorDecl>& tensors,
                               const std::map<std::string, std::string>& extra_metadata = {});

// SafetensorsStreamWriter w(path, decls);
// for each declared tensor, in order: w.begin(name); w.write(bytes, n) ... (exactly nbytes());
// w.finish();   publishes the file atomically (temporary name, fsync, rename, fsync dir).
// Destroying the writer before finish() removes the temporary file. Writing out of order or
// more or fewer bytes than declared is an InternalError naming the file and tensor.
class SafetensorsStreamWriter {
 public:
  SafetensorsStreamWriter(const fs::path& path, std::vector<TensorDecl> tensors,
                          const std::map<std::string, std::string>& extra_metadata = {});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  void begin(const std::string& name);        // the next declared tensor
  void write(const void* data, size_t n);     // bytes of the current tensor
  void finish();
  uint64_t data_bytes() const { return data_bytes_; }   // sum of the declared sizes
  uint64_t file_bytes() const { return header_bytes_ + data_bytes_; }
  const fs::path& path() const { return path_; }

 private:
  void close_current();
  fs::path path_;
  std::vector<TensorDecl> tensors_;
  std::unique_ptr<AtomicFile> file_;
  uint64_t header_bytes_ = 0, data_bytes_ = 0;
  size_t next_ = 0;              // index of the next tensor to begin
  bool open_ = false;            // a tensor is being written (tensors_[next_ - 1])
  uint64_t remaining_ = 0;       // bytes still due for the current tensor
};

// Drops the resident pages of a mapped tensor from this process (madvise MADV_DONTNEED on the
// whole pages inside its bytes): the mapping stays valid and later reads fault the pages back
// in from the file. Streaming converters call it after each tensor so that their resident
// memory stays bounded however large the checkpoint is. A no-op for empty views.
void release_mapped_pages(const TensorView& v);

// first_nonfinite over 16 MiB pieces of a mapped tensor, each piece's pages released after it
// is read, so that checking a tensor (V3's 1.9 GB embedding) does not keep it resident. Only
// for views into a mapping (release_mapped_pages).
std::optional<int64_t> first_nonfinite_released(const TensorView& v);

}  // namespace ds::io
