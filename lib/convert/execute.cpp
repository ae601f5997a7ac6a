// ds-convert-fp8's streaming executor: writes a conversion plan file by file with the streaming
// safetensors writer, each tensor in row bands (copy, quantise with ops::fp8_quantize's 128x128
// blocks, dequantise with model::dequantize_fp8_blocks), releasing the input pages after each
// band so that resident memory stays bounded; then config.json, the index and the other files,
// all in a temporary directory published in one rename (io::CheckpointWriter).
// reference: spec §3.3 (block quantisation, producer side); docs/formats.md "FP8 checkpoints".
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>

#include "convert_internal.hpp"
#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/thread_pool.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/ops/fp8.hpp"

namespace ds::convert::detail {

namespace {

class Executor {
 public:
  Executor(const InputCheckpoint& in, const ops::Context& ctx) : in_(in), ctx_(ctx) {}

  // Writes one output file; returns its data bytes.
  uint64_t write_file(const fs::path& path, const OutFile& f) {
    std::vector<io::TensorDecl> decls;
    for (const OutTensor& t : f.tensors) decls.push_back(t.decl);
    // the input file's __metadata__ is kept (its "format" is the writer's "pt")
    std::map<std::string, std::string> meta;
    if (!f.tensors.empty()) meta = in_.st->metadata_of(f.tensors.front().src);
    meta.erase("format");
    io::SafetensorsStreamWriter w(path, decls, meta);
    for (const OutTensor& t : f.tensors) {
      check_interrupt();
      w.begin(t.decl.name);
      switch (t.op) {
        case Op::copy: copy(w, in_.st->get(t.src)); break;
        case Op::quantize: quantize(w, in_.st->get(t.src)); break;
        case Op::scale: write_scales(w, t); break;
        case Op::dequantize: dequantize(w, in_.st->get(t.src), in_.st->get(t.scale_src)); break;
      }
      cpu_cache_release();   // band buffers of every size would otherwise stay cached
    }
    w.finish();
    return w.data_bytes();
  }

 private:
  void copy(io::SafetensorsStreamWriter& w, const io::TensorView& v) {
    constexpr size_t kChunk = size_t(16) << 20;   // resident at a time
    for (size_t off = 0; off < v.nbytes; off += kChunk) {
      io::TensorView part = v;
      part.data = v.data + off;
      part.nbytes = std::min(kChunk, v.nbytes - off);
      w.write(part.data, part.nbytes);
      io::release_mapped_pages(part);
    }
  }

  // E4M3 codes band by band; the scales of every band are kept for the scale tensor.
  void quantize(io::SafetensorsStreamWriter& w, const io::TensorView& v) {
    const int64_t M = v.shape[0], N = v.shape[1];
    std::vector<float>& scales = scales_[v.name];
    scales.clear();
    scales.reserve(size_t(((M + kBlock - 1) / kBlock) * ((N + kBlock - 1) / kBlock)));
    const int64_t band = band_rows(N, kBlock);
    for (int64_t r0 = 0; r0 < M; r0 += band) {
      const int64_t r1 = std::min(M, r0 + band);
      const Tensor x = rows_f32(v, r0, r1);   // (r1 - r0, N)
      const float* xp = x.f32();
      for (int64_t i = 0; i < x.numel(); ++i)
        if (!std::isfinite(xp[i]))
          DS_THROW(NumericsError, "{}: tensor {}: non-finite value {} at row {} column {}",
                   in_.st->file_of(v.name).string(), v.name, xp[i], r0 + i / N, i % N);
      Tensor q = Tensor::empty(x.shape(), DType::f8_e4m3), s;
      if (ctx_.device == Device::cpu) {
        ops::fp8_quantize(ctx_, x, ops::Fp8Group::block_128x128, in_.scale_fmt,
                          /*act=*/false, q, s);
      } else {   // the band goes to the GPU and its codes and scales come back
        Tensor xd = Tensor::empty(x.shape(), DType::f32, ctx_.device), qd, sd;
        xd.copy_from(x);
        ops::fp8_quantize(ctx_, xd, ops::Fp8Group::block_128x128, in_.scale_fmt,
                          /*act=*/false, qd, sd);
        q = Tensor::empty(qd.shape(), qd.dtype());
        q.copy_from(qd);
        s = Tensor::empty(sd.shape());
        s.copy_from(sd);
      }
      // a power-of-two scale (ue8m0) rounds up past what the readers take (FLT_MAX / 448)
      // only for an amax above 2^119 * 448 = 3e38
      for (int64_t g = 0; g < s.numel(); ++g)
        if (!(s.f32()[g] <= std::numeric_limits<float>::max() / kE4M3Max))
          DS_THROW(NumericsError, "{}: tensor {}: a block's largest value needs the scale {}, "
                   "beyond FLT_MAX / 448 (scale_fmt ue8m0 rounds scales up to a power of two)",
                   in_.st->file_of(v.name).string(), v.name, s.f32()[g]);
      w.write(q.raw(), q.nbytes());
      scales.insert(scales.end(), s.f32(), s.f32() + s.numel());
      io::release_mapped_pages(row_view(v, r0, r1));
    }
  }

  void write_scales(io::SafetensorsStreamWriter& w, const OutTensor& t) {
    auto it = scales_.find(t.src);
    DS_CHECK(it != scales_.end(), "scale {} planned before its weight {}", t.decl.name, t.src);
    DS_CHECK(it->second.size() * 4 == t.decl.nbytes(), "scale {}: {} values, declared {}",
             t.decl.name, it->second.size(), shape_str(t.decl.shape));
    w.write(it->second.data(), it->second.size() * 4);
    scales_.erase(it);
  }

  void dequantize(io::SafetensorsStreamWriter& w, const io::TensorView& v,
                  const io::TensorView& s) {
    const int64_t M = v.shape[0], N = v.shape[1];
    const int64_t band = band_rows(N, in_.block_rows);
    std::vector<uint16_t> out;
    for (int64_t r0 = 0; r0 < M; r0 += band) {
      const int64_t r1 = std::min(M, r0 + band);
      const Tensor x = dequantize_rows(in_, v, s, r0, r1);
      const float* xp = x.f32();
      out.resize(size_t(x.numel()));
      for (int64_t i = 0; i < x.numel(); ++i) {
        out[size_t(i)] = f32_to_bf16(xp[i]);
        // a value within FLT_MAX that rounds past BF16's largest (scales near FLT_MAX / 448)
        if ((out[size_t(i)] & 0x7f80) == 0x7f80)
          DS_THROW(NumericsError, "{}: tensor {}: element ({}, {}) is {} after dequantisation, "
                   "beyond BF16's range", in_.st->file_of(v.name).string(), v.name,
                   r0 + i / N, i % N, xp[i]);
      }
      w.write(out.data(), out.size() * 2);
      io::release_mapped_pages(row_view(v, r0, r1));
    }
  }

  const InputCheckpoint& in_;
  const ops::Context& ctx_;
  std::map<std::string, std::vector<float>> scales_;   // quantised weight -> its scales
};

// Every top-level regular file that is not a weight file, the index or config.json.
void copy_other_files(const InputCheckpoint& in, const fs::path& dst) {
  for (const auto& e : fs::directory_iterator(in.dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory()) {
      spdlog::info("{}: subdirectory {} is not copied", in.dir.string(), n);
      continue;
    }
    if (!e.is_regular_file() || n == "config.json" || n == io::kSafetensorsIndex ||
        n.ends_with(".safetensors"))
      continue;
    io::copy_file(e.path(), dst / n);   // errors name the file and the cause
  }
}

void write_index(const Plan& plan, const std::vector<uint64_t>& sizes, const fs::path& dir) {
  std::map<std::string, std::string> weight_map;   // sorted by tensor name
  uint64_t total = 0;
  for (size_t i = 0; i < plan.files.size(); ++i) {
    for (const OutTensor& t : plan.files[i].tensors) weight_map[t.decl.name] = plan.files[i].name;
    total += sizes[i];
  }
  nlohmann::ordered_json wm = nlohmann::ordered_json::object();
  for (const auto& [k, v] : weight_map) wm[k] = v;
  const nlohmann::ordered_json idx{{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
  io::write_file_atomic(dir / io::kSafetensorsIndex, idx.dump(2) + "\n");
}

}  // namespace

fs::path check_output(const ConvertOptions& opt) {
  DS_CHECK_AS(UsageError, !opt.model.empty(), "--model is required");
  DS_CHECK_AS(UsageError, !opt.out.empty(), "--out is required");
  check_threads(opt.threads);
  fs::path out = fs::path(opt.out);
  if (out.filename().empty()) out = out.parent_path();   // trailing slash
  DS_CHECK_AS(UsageError, !io::is_inside(out, opt.model) && !io::is_inside(opt.model, out),
              "--out {} must be neither the input checkpoint {} nor inside it (nor contain it)",
              out.string(), opt.model);
  std::error_code ec;
  const fs::file_status entry = fs::symlink_status(out, ec);
  DS_CHECK_AS(UsageError, !fs::is_symlink(entry) || fs::exists(out, ec),
              "{}: a symbolic link to a missing {} (remove it or name another --out)",
              out.string(), fs::read_symlink(out, ec).string());
  if (fs::exists(out, ec)) {
    DS_CHECK_AS(UsageError, opt.force, "{}: already exists (use --force to replace it)",
                out.string());
    DS_CHECK_AS(UsageError, io::is_directory(out), "{}: exists and is not a directory",
                out.string());
    // a file of the input that is a link into --out would be destroyed with it
    const bool dir = io::is_directory(opt.model);   // (a lone .safetensors file otherwise)
    for (fs::directory_iterator it = dir ? fs::directory_iterator(opt.model, ec)
                                         : fs::directory_iterator(), end;
         !ec && it != end; it.increment(ec))
      DS_CHECK_AS(UsageError, !io::is_inside(it->path(), out),
                  "--out {}: the input's {} links into it (--force would destroy it)",
                  out.string(), it->path().string());
    DS_CHECK_AS(IoError, !ec, "{}: cannot list: {}", opt.model, ec.message());
  }
  return out;
}

ConvertStats execute(const InputCheckpoint& in, Plan plan, const nlohmann::ordered_json& config,
                     const ConvertOptions& opt, const fs::path& out) {
  const auto t0 = std::chrono::steady_clock::now();
  const ops::Context ctx = make_context(opt.threads, opt.device);
  InterruptScope interrupts;   // Ctrl-C or SIGTERM: the temporary directory is removed
  io::CheckpointWriter writer(out);
  Executor ex(in, ctx);
  std::vector<uint64_t> sizes;
  ConvertStats st = plan.stats;
  std::erase_if(plan.files, [](const OutFile& f) { return f.tensors.empty(); });   // scales only
  for (const OutFile& f : plan.files) {
    spdlog::info("{}: writing {} ({} tensors)", st.command, f.name, f.tensors.size());
    sizes.push_back(ex.write_file(writer.path() / f.name, f));
    st.bytes_out += sizes.back();
    st.tensors_out += int64_t(f.tensors.size());
    ++st.files;
  }
  for (const InputFile& f : in.files)
    for (const std::string& n : f.tensors) st.bytes_in += in.st->get(n).nbytes;
  if (plan.indexed) write_index(plan, sizes, writer.path());
  io::write_file_atomic(writer.path() / "config.json", config.dump(2) + "\n");
  copy_other_files(in, writer.path());
  check_interrupt();
  writer.commit();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace ds::convert::detail
