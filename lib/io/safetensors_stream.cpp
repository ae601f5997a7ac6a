// Streaming safetensors writer: the header is computed from names, dtypes and shapes alone,
// then each tensor's bytes are appended as they are produced and the file is published
// atomically; plus madvise-based release of a mapped tensor's pages. Used by ds-convert-fp8
// to convert checkpoints larger than memory. See include/ds/io/safetensors.hpp.
// reference: huggingface/safetensors README "Format"; madvise(2) MADV_DONTNEED.
#include <sys/mman.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <unordered_set>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"

namespace ds::io {

std::string safetensors_header(const std::vector<TensorDecl>& tensors,
                               const std::map<std::string, std::string>& extra_metadata) {
  using ojson = nlohmann::ordered_json;
  ojson meta = ojson::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : extra_metadata) meta[k] = v;
  ojson h = ojson::object();
  h["__metadata__"] = std::move(meta);
  uint64_t pos = 0;
  for (const TensorDecl& t : tensors) {
    DS_CHECK(t.name != "__metadata__" && !h.contains(t.name),
             "safetensors header: tensor name {} used twice or reserved", t.name);
    const uint64_t nb = t.nbytes();
    h[t.name] = ojson{{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {pos, pos + nb}}};
    pos += nb;
  }
  std::string js = h.dump();
  js.append((8 - js.size() % 8) % 8, ' ');   // 8 + size is a multiple of 8: aligned data
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(uint64_t(js.size()) >> (8 * i)));
  return out + js;
}

SafetensorsStreamWriter::SafetensorsStreamWriter(const fs::path& path,
                                                 std::vector<TensorDecl> tensors,
                                                 const std::map<std::string, std::string>& extra)
    : path_(path), tensors_(std::move(tensors)) {
  const std::string header = safetensors_header(tensors_, extra);
  header_bytes_ = header.size();
  for (const TensorDecl& t : tensors_) data_bytes_ += t.nbytes();
  file_ = std::make_unique<AtomicFile>(path_);
  file_->write(header);
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;   // AtomicFile removes the temp

void SafetensorsStreamWriter::close_current() {
  if (!open_) return;
  DS_CHECK(remaining_ == 0, "{}: tensor {}: {} bytes missing", path_.string(),
           tensors_[next_ - 1].name, remaining_);
  open_ = false;
}

void SafetensorsStreamWriter::begin(const std::string& name) {
  DS_CHECK(file_, "{}: write after finish", path_.string());
  close_current();
  DS_CHECK(next_ < tensors_.size(), "{}: tensor {} was not declared (all {} written)",
           path_.string(), name, tensors_.size());
  DS_CHECK(tensors_[next_].name == name, "{}: tensor {} written where {} was declared",
           path_.string(), name, tensors_[next_].name);
  remaining_ = tensors_[next_].nbytes();
  ++next_;
  open_ = true;
}

void SafetensorsStreamWriter::write(const void* data, size_t n) {
  DS_CHECK(open_, "{}: write() without begin()", path_.string());
  DS_CHECK(n <= remaining_, "{}: tensor {}: {} bytes written beyond its declared size",
           path_.string(), tensors_[next_ - 1].name, n - remaining_);
  if (n == 0) return;
  file_->write(data, n);
  remaining_ -= n;
}

void SafetensorsStreamWriter::finish() {
  DS_CHECK(file_, "{}: finished twice", path_.string());
  close_current();
  DS_CHECK(next_ == tensors_.size(), "{}: only {} of {} declared tensors written (next: {})",
           path_.string(), next_, tensors_.size(), tensors_[next_].name);
  file_->commit();
  file_.reset();
}

void release_mapped_pages(const TensorView& v) {
  if (v.data == nullptr || v.nbytes == 0) return;
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(v.data);
  const uintptr_t first = (b + page - 1) / page * page;   // whole pages inside the view only:
  const uintptr_t last = (b + v.nbytes) / page * page;    // neighbours may still be in use
  if (last > first)
    (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);   // advisory
}

std::optional<int64_t> first_nonfinite_released(const TensorView& v) {
  const int64_t es = int64_t(dtype_size(v.dtype)), n = v.numel();
  const int64_t piece = std::max<int64_t>(1, (int64_t(16) << 20) / es);
  for (int64_t e0 = 0; e0 < n; e0 += piece) {
    TensorView part = v;
    part.shape = {std::min(piece, n - e0)};
    part.data = v.data + e0 * es;
    part.nbytes = size_t(part.shape[0] * es);
    const auto bad = first_nonfinite(part);
    release_mapped_pages(part);
    if (bad) return e0 + *bad;
  }
  return std::nullopt;
}

}  // namespace ds::io
