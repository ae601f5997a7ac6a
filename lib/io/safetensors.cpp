// safetensors reader (mmap + strict header validation) and writers (single file, sharded
// directory with model.safetensors.index.json). See include/ds/io/safetensors.hpp.
// reference: huggingface/safetensors README "Format" section; spec §1.13.
#include "ds/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"

namespace ds::io {

namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

constexpr uint64_t kMaxHeader = uint64_t(100) << 20;   // HF's limit is 100 MB too

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// shape -> numel with checks; FormatError on negative dims or overflow.
uint64_t checked_numel(const Shape& s, const std::string& file, const std::string& name) {
  uint64_t n = 1;
  for (int64_t d : s) {
    DS_CHECK_AS(FormatError, d >= 0, "{}: tensor {}: negative dimension", file, name);
    if (d != 0 && n > (uint64_t(1) << 62) / uint64_t(d))
      DS_THROW(FormatError, "{}: tensor {}: shape too large", file, name);
    n *= uint64_t(d);
  }
  return n;
}

}  // namespace

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3, DType::f8_e5m2,
                  DType::i32, DType::i64, DType::u8, DType::u16, DType::u32})
    if (dtype_name(t) == name) return t;
  return std::nullopt;
}

Tensor to_f32(const TensorView& v) {
  Tensor out = Tensor::empty(v.shape, DType::f32);
  float* dst = out.f32();
  const int64_t n = v.numel();
  switch (v.dtype) {
    case DType::f32:
      if (n > 0) std::memcpy(dst, v.data, size_t(n) * 4);
      break;
    case DType::bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, v.data + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      break;
    case DType::f16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, v.data + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      break;
    default:
      DS_THROW(FormatError, "tensor {}: cannot convert {} to F32 here (F32/BF16/F16 only)",
               v.name, dtype_name(v.dtype));
  }
  return out;
}

namespace {

// The index of the first element whose exponent bits are all ones (NaN or infinity), or -1:
// one branch-free pass (vectorised), the position searched only when there is one.
template <class Bits>
int64_t first_all_ones(const uint8_t* data, int64_t n, Bits exp_mask) {
  Bits bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, data + i * int64_t(sizeof(Bits)), sizeof(Bits));
    bad |= Bits((b & exp_mask) == exp_mask);
  }
  for (int64_t i = 0; bad && i < n; ++i) {
    Bits b;
    std::memcpy(&b, data + i * int64_t(sizeof(Bits)), sizeof(Bits));
    if ((b & exp_mask) == exp_mask) return i;
  }
  return -1;
}

}  // namespace

std::optional<int64_t> first_nonfinite(const TensorView& v) {
  int64_t i = -1;
  switch (v.dtype) {
    case DType::f32: i = first_all_ones<uint32_t>(v.data, v.numel(), 0x7f800000u); break;
    case DType::bf16: i = first_all_ones<uint16_t>(v.data, v.numel(), uint16_t(0x7f80)); break;
    case DType::f16: i = first_all_ones<uint16_t>(v.data, v.numel(), uint16_t(0x7c00)); break;
    default: break;
  }
  if (i < 0) return std::nullopt;
  return i;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  const std::string f = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DS_THROW(IoError, "{}: cannot open: {}", f, std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    DS_THROW(IoError, "{}: stat failed: {}", f, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {   // (a directory's mmap said "No such device")
    ::close(fd);
    DS_THROW(IoError, "{}: not a regular file ({})", f,
             S_ISDIR(st.st_mode) ? "a directory" : "a FIFO, socket or device");
  }
  map_size_ = size_t(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    DS_THROW(FormatError, "{}: not a safetensors file ({} bytes, need an 8-byte header length)",
             f, map_size_);
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    DS_THROW(IoError, "{}: mmap failed: {}", f, std::strerror(err));
  }
  try {
    auto base = static_cast<const uint8_t*>(map_);
    header_size_ = read_le64(base);
    DS_CHECK_AS(FormatError, header_size_ <= kMaxHeader && header_size_ <= map_size_ - 8,
                "{}: header length {} exceeds the file ({} bytes)", f, header_size_, map_size_);
    std::string_view js(reinterpret_cast<const char*>(base + 8), size_t(header_size_));
    parse_header(js, uint64_t(map_size_ - 8 - header_size_));
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

namespace {

// One tensor entry of the header -> (view, [begin, end)); every defect names file and tensor.
std::pair<TensorView, std::pair<uint64_t, uint64_t>> parse_entry(
    const std::string& f, const std::string& name, const json& e, const uint8_t* data,
    uint64_t data_size) {
  DS_CHECK_AS(FormatError, e.is_object() && e.contains("dtype") && e.contains("shape") &&
                               e.contains("data_offsets"),
              "{}: tensor {}: entry needs dtype, shape and data_offsets", f, name);
  DS_CHECK_AS(FormatError, e["dtype"].is_string(), "{}: tensor {}: dtype is not a string", f,
              name);
  auto dt = dtype_from_name(e["dtype"].get<std::string>());
  DS_CHECK_AS(FormatError, dt.has_value(), "{}: tensor {}: unknown dtype {}", f, name,
              e["dtype"].get<std::string>());
  const json& js_shape = e["shape"];
  DS_CHECK_AS(FormatError, js_shape.is_array(), "{}: tensor {}: shape is not an array", f, name);
  Shape shape;
  for (const json& d : js_shape) {
    DS_CHECK_AS(FormatError, d.is_number_unsigned(),
                "{}: tensor {}: shape entries must be non-negative integers", f, name);
    DS_CHECK_AS(FormatError, d.get<uint64_t>() < (uint64_t(1) << 62),
                "{}: tensor {}: dimension too large", f, name);
    shape.push_back(int64_t(d.get<uint64_t>()));
  }
  const json& off = e["data_offsets"];
  DS_CHECK_AS(FormatError,
              off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                  off[1].is_number_unsigned(),
              "{}: tensor {}: data_offsets must be two non-negative integers", f, name);
  uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
  DS_CHECK_AS(FormatError, b <= en && en <= data_size,
              "{}: tensor {}: data_offsets [{}, {}] out of range (data is {} bytes)", f, name, b,
              en, data_size);
  // (numel times the element size can wrap: [2^31, 2^31] F32 is 2^64 bytes, "0")
  const uint64_t n = checked_numel(shape, f, name), es = dtype_size(*dt);
  DS_CHECK_AS(FormatError, n <= UINT64_MAX / es, "{}: tensor {}: {} {} needs 2^64 bytes or more",
              f, name, dtype_name(*dt), shape_str(shape));
  const uint64_t want = n * es;
  DS_CHECK_AS(FormatError, en - b == want,
              "{}: tensor {}: data_offsets span {} bytes but {} {} needs {}", f, name, en - b,
              dtype_name(*dt), shape_str(shape), want);
  return {TensorView{name, *dt, shape, data + b, size_t(want)}, {b, en}};
}

}  // namespace

void SafetensorsFile::parse_header(std::string_view js, uint64_t data_size) {
  const std::string f = path_.string();
  check_json_input(js, f);   // depth, and a tensor listed twice (the last would win silently)
  json h;
  try {
    h = json::parse(js.begin(), js.end());
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: header is not valid JSON: {}", f, e.what());
  }
  DS_CHECK_AS(FormatError, h.is_object(), "{}: header is not a JSON object", f);
  const uint8_t* data = static_cast<const uint8_t*>(map_) + 8 + header_size_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;   // [begin, end) per tensor
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      DS_CHECK_AS(FormatError, it->is_object(), "{}: __metadata__ is not an object", f);
      for (auto m = it->begin(); m != it->end(); ++m) {
        DS_CHECK_AS(FormatError, m->is_string(), "{}: __metadata__.{} is not a string", f,
                    m.key());
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    auto [view, range] = parse_entry(f, it.key(), *it, data, data_size);
    tensors_.push_back(std::move(view));
    ranges.push_back(range);
  }
  // Order by offset; the ranges must tile [0, data_size) exactly (no overlap, no hole).
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  uint64_t pos = 0;
  std::vector<TensorView> sorted;
  for (size_t i : order) {
    DS_CHECK_AS(FormatError, ranges[i].first >= pos, "{}: tensor {}: data overlaps another tensor",
                f, tensors_[i].name);
    DS_CHECK_AS(FormatError, ranges[i].first == pos,
                "{}: tensor {}: {} unused bytes before its data", f, tensors_[i].name,
                ranges[i].first - pos);
    pos = ranges[i].second;
    sorted.push_back(std::move(tensors_[i]));
  }
  DS_CHECK_AS(FormatError, pos == data_size, "{}: {} bytes after the last tensor's data", f,
              data_size - pos);
  tensors_ = std::move(sorted);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    names_.push_back(tensors_[i].name);
    index_[tensors_[i].name] = i;
  }
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  DS_CHECK_AS(FormatError, it != index_.end(), "{}: no tensor named {}", path_.string(), name);
  return tensors_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writers

TensorSource TensorSource::raw(std::string name, DType dtype, Shape shape, const void* data) {
  return TensorSource{std::move(name), dtype, std::move(shape), data, dtype, Tensor()};
}

TensorSource TensorSource::from_tensor(std::string name, const Tensor& t, DType out) {
  DS_CHECK(out == t.dtype() || (t.dtype() == DType::f32 && (out == DType::bf16 ||
                                                            out == DType::f16)),
           "tensor {}: cannot store {} as {}", name, dtype_name(t.dtype()), dtype_name(out));
  if (t.device() == Device::cpu)
    return TensorSource{std::move(name), out, t.shape(), t.raw(), t.dtype(), Tensor()};
  return TensorSource{std::move(name), out, t.shape(), nullptr, t.dtype(), t};
}

namespace {

// Streams one tensor's bytes into the file, converting f32 -> bf16/f16 in chunks.
void write_tensor_bytes(AtomicFile& out, const TensorSource& t) {
  const size_t n = size_t(shape_numel(t.shape));
  if (n == 0) return;
  Tensor host;   // a device tensor's bytes, for the time of this write
  const void* data = t.data;
  if (!data && t.device.defined()) {
    host = Tensor::empty(t.device.shape(), t.device.dtype());
    host.copy_from(t.device);
    data = host.raw();
  }
  if (t.src_dtype == t.dtype) {
    out.write(data, t.nbytes());
    return;
  }
  DS_CHECK(t.src_dtype == DType::f32 && (t.dtype == DType::bf16 || t.dtype == DType::f16),
           "tensor {}: unsupported conversion {} -> {}", t.name, dtype_name(t.src_dtype),
           dtype_name(t.dtype));
  const float* src = static_cast<const float*>(data);
  constexpr size_t kChunk = size_t(1) << 20;
  std::vector<uint16_t> buf(std::min(n, kChunk));
  for (size_t i = 0; i < n; i += kChunk) {
    size_t m = std::min(kChunk, n - i);
    for (size_t j = 0; j < m; ++j)
      buf[j] = t.dtype == DType::bf16 ? f32_to_bf16(src[i + j]) : f32_to_f16(src[i + j]);
    out.write(buf.data(), m * 2);
  }
}

}  // namespace

void write_safetensors(const fs::path& path, const std::vector<TensorSource>& tensors,
                       const std::map<std::string, std::string>& extra_metadata) {
  std::vector<TensorDecl> decls;
  decls.reserve(tensors.size());
  for (const TensorSource& t : tensors) {
    DS_CHECK(t.data != nullptr || t.device.defined() || shape_numel(t.shape) == 0,
             "{}: tensor {} has no data",
             path.string(), t.name);
    decls.push_back(TensorDecl{t.name, t.dtype, t.shape});
  }
  const std::string header = safetensors_header(decls, extra_metadata);
  AtomicFile out(path);
  out.write(header);
  for (const TensorSource& t : tensors) write_tensor_bytes(out, t);
  out.commit();
}

std::vector<std::string> write_safetensors_dir(const fs::path& dir,
                                               const std::vector<TensorSource>& tensors,
                                               uint64_t max_shard_bytes) {
  DS_CHECK(max_shard_bytes > 0, "max_shard_bytes must be positive");
  // Greedy split in the given order.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t cur = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t nb = tensors[i].nbytes();
    if (!shards.back().empty() && cur + nb > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += nb;
    total += nb;
  }
  if (shards.size() == 1) {
    write_safetensors(dir / kSafetensorsSingle, tensors);
    return {kSafetensorsSingle};
  }
  std::vector<std::string> written;
  ojson weight_map = ojson::object();
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s) {
    std::string fname = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n);
    std::vector<TensorSource> part;
    for (size_t i : shards[s]) {
      part.push_back(tensors[i]);
      weight_map[tensors[i].name] = fname;
    }
    write_safetensors(dir / fname, part);
    written.push_back(fname);
  }
  ojson index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic(dir / kSafetensorsIndex, index.dump(2) + "\n");
  written.push_back(kSafetensorsIndex);
  return written;
}

// ---------------------------------------------------------------------------------------------
// Directory reader

SafetensorsDir::SafetensorsDir(const fs::path& dir_or_file) : source_(dir_or_file) {
  fs::path p = dir_or_file;
  if (io::is_directory(p)) {
    if (io::exists(p / kSafetensorsIndex)) {
      // transformers loads model.safetensors when both are there, ds the index: the same
      // tensors only when the index maps every one to model.safetensors itself
      const bool single = io::exists(p / kSafetensorsSingle);
      bool same = !single;
      try {
        open_index(p / kSafetensorsIndex);
        same = same || (files_.size() == 1 && files_[0]->path().filename() == kSafetensorsSingle);
      } catch (const Error&) {
        if (!single) throw;   // (with both, a broken index is reported as a stale one)
      }
      DS_CHECK_AS(FormatError, same,
                  "{}: both {} and {} (a stale one? transformers would load the single file, ds "
                  "the shards): remove one", p.string(), kSafetensorsSingle, kSafetensorsIndex);
      return;
    }
    DS_CHECK_AS(IoError, io::exists(p / kSafetensorsSingle), "{}: neither {} nor {} found",
                p.string(), kSafetensorsIndex, kSafetensorsSingle);
    p /= kSafetensorsSingle;
  } else if (p.string().ends_with(".json")) {
    open_index(p);
    return;
  }
  files_.push_back(std::make_unique<SafetensorsFile>(p));
  for (const std::string& name : files_[0]->names()) {
    names_.push_back(name);
    where_[name] = 0;
  }
}

void SafetensorsDir::open_index(const fs::path& index_path) {
  const std::string f = index_path.string();
  const std::string text = read_file(index_path);
  check_json_input(text, f);
  json idx;
  try {
    idx = json::parse(text);
  } catch (const json::exception& e) {
    DS_THROW(FormatError, "{}: not valid JSON: {}", f, e.what());
  }
  DS_CHECK_AS(FormatError, idx.is_object() && idx.contains("weight_map") &&
                               idx["weight_map"].is_object(),
              "{}: missing weight_map object", f);
  std::unordered_map<std::string, size_t> file_index;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    DS_CHECK_AS(FormatError, it.value().is_string(), "{}: weight_map.{} is not a file name", f,
                it.key());
    std::string shard = it.value().get<std::string>();
    DS_CHECK_AS(FormatError, fs::path(shard).filename() == fs::path(shard) && shard != ".." &&
                                 shard != ".",
                "{}: weight_map.{}: shard name {} must be a plain file name", f, it.key(), shard);
    auto fi = file_index.find(shard);
    if (fi == file_index.end()) {
      fs::path sp = index_path.parent_path() / shard;
      DS_CHECK_AS(IoError, io::exists(sp), "{}: shard {} (holding {}) is missing", f, shard,
                  it.key());
      files_.push_back(std::make_unique<SafetensorsFile>(sp));
      fi = file_index.emplace(shard, files_.size() - 1).first;
    }
    DS_CHECK_AS(FormatError, files_[fi->second]->contains(it.key()),
                "{}: tensor {} is mapped to {} but that shard does not contain it", f, it.key(),
                shard);
    names_.push_back(it.key());
    where_[it.key()] = fi->second;
  }
  // the other way: a shard's tensor the index does not map would be silently left out
  for (size_t i = 0; i < files_.size(); ++i)
    for (const std::string& name : files_[i]->names()) {
      const auto w = where_.find(name);
      DS_CHECK_AS(FormatError, w != where_.end() && w->second == i,
                  "{}: tensor {} is not in {}'s weight_map{}", files_[i]->path().string(), name,
                  f, w == where_.end() ? "" : " (it maps the name to another shard)");
    }
}

const TensorView& SafetensorsDir::get(const std::string& name) const {
  auto it = where_.find(name);
  DS_CHECK_AS(FormatError, it != where_.end(), "{}: no tensor named {}", source_.string(), name);
  return files_[it->second]->get(name);
}

const fs::path& SafetensorsDir::file_of(const std::string& name) const {
  auto it = where_.find(name);
  DS_CHECK_AS(FormatError, it != where_.end(), "{}: no tensor named {}", source_.string(), name);
  return files_[it->second]->path();
}

const std::map<std::string, std::string>& SafetensorsDir::metadata_of(
    const std::string& name) const {
  auto it = where_.find(name);
  DS_CHECK_AS(FormatError, it != where_.end(), "{}: no tensor named {}", source_.string(), name);
  return files_[it->second]->metadata();
}

}  // namespace ds::io
