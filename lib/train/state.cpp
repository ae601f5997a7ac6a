// Saving and loading training checkpoints (see include/ds/train/state.hpp).
#include "ds/train/state.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "ds/core/error.hpp"
#include "ds/core/name_list.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/json_input.hpp"
#include "ds/io/json_fields.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/ops/ops.hpp"

namespace ds::train {

namespace fs = std::filesystem;
using nlohmann::json;

// The trainer state's version: 4 with a data order of its own (--data-seed), else 3 with
// several data sources, else 2 with best-fit rows, else 1. Each marks what older builds cannot
// resume (they read lower versions only), so that they refuse the state instead of resuming it
// at a meaningless data position.
static int state_version(const TrainerState& st) {
  if (st.data_seed.value_or(st.seed) != st.seed) return 4;
  if (!st.data_sources.empty()) return 3;
  return st.packing == "best-fit" ? 2 : 1;
}

static json state_to_json(const TrainerState& st) {
  json j{{"format", "ds-trainer-state"}, {"version", state_version(st)},
         {"kind", st.kind},
         {"step", st.step}, {"tokens_seen", st.tokens_seen},
         {"data", {{"epoch", st.data.epoch}, {"position", st.data.position}}},
         {"nonfinite_skipped", st.nonfinite_skipped},
         {"optimizer_steps", st.optimizer_steps}, {"seed", st.seed},
         {"seq_len", st.seq_len}, {"total_steps", st.total_steps},
         {"total_tokens", st.total_tokens}};
  if (!st.data_sources.empty()) {
    json& s = j["data"]["sources"] = json::array();
    for (const LoaderState& d : st.data_sources)
      s.push_back({{"epoch", d.epoch}, {"position", d.position}});
  }
  if (st.data_seed.value_or(st.seed) != st.seed) j["data_seed"] = *st.data_seed;
  if (!st.data_fingerprint.empty()) j["data_fingerprint"] = st.data_fingerprint;
  if (!st.packing.empty()) j["packing"] = st.packing;
  if (!st.branched_from.empty()) j["branched_from"] = st.branched_from;
  if (!st.init_checkpoint.empty()) j["init_checkpoint"] = st.init_checkpoint;
  if (!st.init_weights.empty()) j["init_weights"] = st.init_weights;
  if (!st.pending_metrics.empty()) j["pending_metrics"] = json::parse(st.pending_metrics);
  return j;
}

TrainerState parse_trainer_state(const std::string& text, const std::string& src) {
  io::check_json_input(text, src);
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) DS_THROW(FormatError, "{}: not a JSON object", src);
  const io::JsonFields f(j, src);
  if (!f.has("format") || f.get("format") != "ds-trainer-state")
    DS_THROW(FormatError, "{}: field 'format' is not \"ds-trainer-state\"", src);
  // Counters are JSON integers in [0, 2^63): a float, a negative or a larger number is a
  // corrupt file, never truncated or wrapped.
  const int64_t version = f.count("version");
  if (version < 1 || version > 4)
    DS_THROW(FormatError, "{}: unsupported trainer state version {} (this build reads 1 to 4)",
             src, j["version"].dump());
  TrainerState st;
  st.kind = f.str("kind");
  st.step = f.count("step");
  st.tokens_seen = f.count("tokens_seen");
  st.nonfinite_skipped = f.count("nonfinite_skipped");
  st.optimizer_steps = f.count("optimizer_steps");
  st.seed = f.u64("seed");
  if (f.has("data_seed")) st.data_seed = f.u64("data_seed");
  st.seq_len = f.count("seq_len");
  st.total_steps = f.count("total_steps");
  st.total_tokens = f.count("total_tokens");
  if (f.has("data_fingerprint")) st.data_fingerprint = f.str("data_fingerprint");
  if (f.has("branched_from")) st.branched_from = f.str("branched_from");
  if (f.has("init_checkpoint")) st.init_checkpoint = f.str("init_checkpoint");
  if (f.has("init_weights")) st.init_weights = f.str("init_weights");
  if (f.has("pending_metrics")) {   // the metrics line of this very step
    if (f.object("pending_metrics").count("step") != st.step)
      DS_THROW(FormatError, "{}: field 'pending_metrics.step' is not the state's step {}", src,
               st.step);
    st.pending_metrics = f.get("pending_metrics").dump();
  }
  if (f.has("packing")) {
    st.packing = f.str("packing");
    if (st.packing != "stride" && st.packing != "best-fit")
      DS_THROW(FormatError, "{}: field 'packing' is \"{}\", not \"stride\" or \"best-fit\"", src,
               st.packing);
  }
  const io::JsonFields data = f.object("data");
  st.data.epoch = data.count("epoch");
  st.data.position = data.count("position");
  if (data.has("sources")) {
    const json& a = data.array("sources");
    for (size_t i = 0; i < a.size(); ++i) {
      const io::JsonFields e = data.element(a, "sources", i);
      st.data_sources.push_back({e.count("epoch"), e.count("position")});
    }
    if (st.data_sources.size() < 2)
      DS_THROW(FormatError, "{}: field 'data.sources' holds {} position(s) (a mixture has 2 or "
               "more)", src, st.data_sources.size());
    if (st.data_sources[0].epoch != st.data.epoch ||
        st.data_sources[0].position != st.data.position)
      DS_THROW(FormatError, "{}: field 'data.sources[0]' is not 'data' (the first source's "
               "position)", src);
  }
  if (version != state_version(st))
    DS_THROW(FormatError, "{}: version {} with packing \"{}\", {} data source(s) and {} "
             "(version 4 is for a data_seed of its own, else 3 for several sources, else 2 for "
             "best-fit rows, 1 for the others)", src, version, st.packing,
             std::max<size_t>(1, st.data_sources.size()),
             st.data_seed.value_or(st.seed) != st.seed ? "a data_seed of its own" : "no data_seed");
  return st;
}

namespace {

// Copies a mapped checkpoint tensor (checked for dtype and shape by the caller) into t, which
// may live on the GPU.
void copy_in(Tensor& t, const io::TensorView& v) {
  t.copy_from(Tensor::borrow(const_cast<uint8_t*>(v.data), v.shape, v.dtype));
}

// No checkpoint is published with non-finite weights (an update that diverged right before a
// save): NumericsError naming the first such tensor; the run's earlier checkpoints stay.
void check_weights_finite(const model::ParamStore& params, const fs::path& dir) {
  ops::Context ctx;
  if (!params.params().empty()) ctx.device = params.params().front().value.device();
  if (const auto bad = first_nonfinite_param(ctx, params))
    DS_THROW(NumericsError, "{}: not saved: the weights are not finite ({}: {} of {} values "
             "NaN or infinite): an update diverged (--lr too high?); the checkpoints already "
             "saved are kept", dir.string(), bad->param->info.name, bad->count,
             bad->param->value.numel());
}

// The files one process writes besides config.json: shared by save_checkpoint for AdamW and
// for a ZeRO-1 optimiser on a world of one, so both give the same bytes.
void save_single(const SaveSpec& spec, const model::ModelArgs& args,
                 const model::ParamStore& params, const std::vector<io::TensorSource>& moments,
                 const TrainerState& st) {
  check_weights_finite(params, spec.dir);
  io::CheckpointWriter w(spec.dir);
  model::save_model(params, args, w.path(), spec.bf16, spec.max_shard_bytes);
  if (!spec.tokenizer.empty()) io::copy_tokenizer_files(spec.tokenizer, w.path());
  if (spec.ema) {
    const fs::path ed = w.path() / "ema";
    fs::create_directories(ed);
    model::save_model(*spec.ema, args, ed, /*bf16=*/false, spec.max_shard_bytes);
    if (!spec.tokenizer.empty()) io::copy_tokenizer_files(spec.tokenizer, ed);
  }
  fs::path sd = w.path() / "training_state";
  fs::create_directories(sd);
  io::write_safetensors(sd / "optimizer.safetensors", moments);
  if (spec.bf16) {
    std::vector<io::TensorSource> masters;
    for (auto& p : params.params())
      masters.push_back(io::TensorSource::from_tensor(p.info.name, p.value, DType::f32));
    io::write_safetensors(sd / "master.safetensors", masters);
  }
  io::write_file_atomic(sd / "trainer_state.json", state_to_json(st).dump(2) + "\n");
  w.commit();
  if (spec.keep_last > 0) io::prune_checkpoints(w.final_path().parent_path(), spec.keep_last);
}

}  // namespace

std::optional<NonfiniteParam> first_nonfinite_param(const ops::Context& ctx,
                                                    const model::ParamStore& params) {
  for (const model::Param& p : params.params())
    if (const int64_t n = ops::count_nonfinite(ctx, p.value); n > 0)
      return NonfiniteParam{&p, n};
  return std::nullopt;
}

void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, AdamW& opt, const TrainerState& st) {
  std::vector<io::TensorSource> moments;
  for (auto& [name, t] : opt.state_tensors())
    moments.push_back(io::TensorSource::from_tensor(name, *t, t->dtype()));
  save_single(spec, args, params, moments, st);
}


// ---- Checkpoints written by several ranks -----------------------------------------------

namespace {

// "<what>-RRRRR-of-WWWWW.safetensors": the file of world rank `rank` (numbered from 1, as HF
// numbers shards; ranks that write nothing leave gaps, the index names only existing files).
std::string rank_file(const char* what, int rank, int world) {
  return fmt::format("{}-{:05d}-of-{:05d}.safetensors", what, rank + 1, world);
}

// Every rank learns whether any rank failed since the last call; the failed rank rethrows its
// own error, the others throw one naming it. Also a barrier.
void agree_or_throw(dist::Comm& world, const std::exception_ptr& err, const fs::path& dir,
                    const char* phase) {
  int64_t who = err ? world.rank() + 1 : 0;
  world.all_reduce_max(&who, 1, DType::i64);
  if (err) std::rethrow_exception(err);
  if (who != 0)
    DS_THROW(IoError, "checkpoint {}: rank {} failed while {}; nothing was published",
             dir.string(), who - 1, phase);
}

// The names every rank writes into its model file, in rank order (for the index).
std::vector<std::vector<std::string>> gather_names(dist::Comm& world,
                                                   const std::vector<io::TensorSource>& mine) {
  std::string blob;
  for (const auto& t : mine) blob += t.name + '\n';
  std::vector<int64_t> counts(size_t(world.size()));
  int64_t n = int64_t(blob.size());
  world.all_gather(&n, counts.data(), 1, DType::i64);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::string all(size_t(total), '\0');
  world.all_gather_v(blob.data(), all.data(), counts, DType::u8);
  std::vector<std::vector<std::string>> out(size_t(world.size()));
  size_t pos = 0;
  for (size_t r = 0; r < out.size(); ++r) {
    const size_t end = pos + size_t(counts[r]);
    while (pos < end) {
      const size_t nl = all.find('\n', pos);
      out[r].push_back(all.substr(pos, nl - pos));
      pos = nl + 1;
    }
  }
  return out;
}

// model.safetensors.index.json over the rank files (weight_map in rank order, then each
// rank's order; the format write_safetensors_dir writes).
void write_rank_index(const fs::path& dir, const std::vector<std::vector<std::string>>& names,
                      int64_t total_bytes) {
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const int world = int(names.size());
  for (int r = 0; r < world; ++r)
    for (const std::string& n : names[size_t(r)]) {
      if (weight_map.contains(n))
        DS_THROW(InternalError, "checkpoint {}: tensor {} written by two ranks", dir.string(), n);
      weight_map[n] = rank_file("model", r, world);
    }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}},
                                  {"weight_map", weight_map}};
  io::write_file_atomic(dir / io::kSafetensorsIndex, index.dump(2) + "\n");
}

// Rank 0 creates the temporary directory (and training_state/, ema/ in it); every rank gets
// its path.
fs::path open_shared_dir(dist::Comm& world, const SaveSpec& spec,
                         std::unique_ptr<io::CheckpointWriter>& w) {
  std::exception_ptr err;
  std::string path;
  if (world.rank() == 0) {
    try {
      w = std::make_unique<io::CheckpointWriter>(spec.dir);
      fs::create_directories(w->path() / "training_state");
      if (spec.ema) fs::create_directories(w->path() / "ema");
      path = w->path().string();
    } catch (...) {
      err = std::current_exception();
    }
  }
  agree_or_throw(world, err, spec.dir, "creating the temporary directory");
  int64_t n = int64_t(path.size());
  world.broadcast(&n, 1, DType::i64, 0);
  path.resize(size_t(n));
  world.broadcast(path.data(), n, DType::u8, 0);
  return path;
}

}  // namespace

void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, ShardedAdamW& opt, const TrainerState& st,
                     dist::Comm& world) {
  DS_CHECK(&params == &opt.params(), "save_checkpoint: the store is not the optimiser's");
  std::vector<std::pair<std::string, Tensor>> state = opt.gather_state();   // collective
  std::vector<io::TensorSource> moments;
  for (auto& [name, t] : state)
    moments.push_back(io::TensorSource::from_tensor(name, t, t.dtype()));
  if (world.size() == 1) {
    save_single(spec, args, params, moments, st);
    return;
  }
  auto keep = [&](const std::string& name) {
    const model::Param* p = params.find(name);
    return p ? opt.writes(*p) : opt.writes_buffers();
  };
  const std::vector<io::TensorSource> weights =
      model::model_tensor_sources(params, spec.bf16, keep);
  // the average has the weights' names in the same order, so the same index names, in F32
  std::vector<io::TensorSource> ema;
  if (spec.ema) ema = model::model_tensor_sources(*spec.ema, false, keep);
  const auto names = gather_names(world, weights);                           // collective
  std::vector<int64_t> bytes{0, 0};
  for (const auto& t : weights) bytes[0] += int64_t(t.nbytes());
  for (const auto& t : ema) bytes[1] += int64_t(t.nbytes());
  world.all_reduce_sum(bytes);

  std::unique_ptr<io::CheckpointWriter> w;
  const fs::path dir = open_shared_dir(world, spec, w);
  const fs::path sd = dir / "training_state";
  const int rank = world.rank(), size = world.size();
  std::exception_ptr err;
  try {
    check_weights_finite(params, spec.dir);
    if (!weights.empty()) io::write_safetensors(dir / rank_file("model", rank, size), weights);
    if (!ema.empty()) io::write_safetensors(dir / "ema" / rank_file("model", rank, size), ema);
    if (!moments.empty()) io::write_safetensors(sd / rank_file("optimizer", rank, size), moments);
    if (spec.bf16) {
      std::vector<io::TensorSource> masters;
      for (const model::Param& p : params.params())
        if (opt.writes(p))
          masters.push_back(io::TensorSource::from_tensor(p.info.name, p.value, DType::f32));
      if (!masters.empty()) io::write_safetensors(sd / rank_file("master", rank, size), masters);
    }
    if (rank == 0) {
      model::save_model_config(args, dir, spec.bf16);
      write_rank_index(dir, names, bytes[0]);
      if (!spec.tokenizer.empty()) io::copy_tokenizer_files(spec.tokenizer, dir);
      if (spec.ema) {
        model::save_model_config(args, dir / "ema", /*bf16=*/false);
        write_rank_index(dir / "ema", names, bytes[1]);
        if (!spec.tokenizer.empty()) io::copy_tokenizer_files(spec.tokenizer, dir / "ema");
      }
      io::write_file_atomic(sd / "trainer_state.json", state_to_json(st).dump(2) + "\n");
    }
  } catch (...) {
    err = std::current_exception();
  }
  agree_or_throw(world, err, spec.dir, "writing its files");
  if (rank == 0) {
    try {
      w->commit();
      if (spec.keep_last > 0) io::prune_checkpoints(w->final_path().parent_path(), spec.keep_last);
    } catch (...) {
      err = std::current_exception();
    }
  }
  // Nobody returns before the checkpoint is visible under its final name (or has failed).
  agree_or_throw(world, err, spec.dir, "publishing the checkpoint");
}

// ---- Loading ------------------------------------------------------------------------------

namespace {

// The first element < 0 (not -0) of an F32 or BF16 tensor, or -1.
int64_t first_negative(const io::TensorView& v) {
  const size_t es = v.dtype == DType::f32 ? 4 : v.dtype == DType::bf16 ? 2 : 0;
  for (int64_t i = 0; es && i < v.numel(); ++i) {
    uint32_t b = 0;
    std::memcpy(&b, v.data + size_t(i) * es, es);
    const uint32_t sign = es == 4 ? 0x80000000u : 0x8000u;
    if ((b & sign) && (b & (sign - 1))) return i;
  }
  return -1;
}

// A moment or master tensor as a resume reads it: every value finite, second moments >= 0.
// One bad value would make the first update's weights NaN (and --skip-nonfinite then skip
// every later step), so it is a FormatError naming the file and tensor.
void check_state_values(const fs::path& file, const io::TensorView& v) {
  if (const auto bad = io::first_nonfinite(v))
    DS_THROW(FormatError, "{}: {}: a non-finite value (NaN or infinity) at element {} of {}",
             file.string(), v.name, *bad, v.numel());
  if (v.name.ends_with(".exp_avg_sq"))
    if (const int64_t neg = first_negative(v); neg >= 0)
      DS_THROW(FormatError, "{}: {}: a negative second moment at element {} of {}",
               file.string(), v.name, neg, v.numel());
}

// Every training_state/<stem>.safetensors and <stem>-*.safetensors file, mapped, with an index
// of their tensors (a name in two files is a FormatError).
struct StateFiles {
  std::vector<std::unique_ptr<io::SafetensorsFile>> files;
  std::unordered_map<std::string, const io::SafetensorsFile*> index;   // tensor -> its file
  // The tensor `name` (nullptr if absent), its values checked (check_state_values) once.
  const io::TensorView* find(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) return nullptr;
    const io::TensorView& v = it->second->get(name);
    if (checked.insert(name).second) check_state_values(it->second->path(), v);
    return &v;
  }
  // Tensors no lookup asked for, when the loader holds the whole model: FormatError.
  void check_all_used(const fs::path& sd, const std::string& what) const {
    std::vector<std::string> extra;
    for (const auto& [name, file] : index)
      if (!checked.count(name)) extra.push_back(name);
    std::sort(extra.begin(), extra.end());
    if (!extra.empty())
      DS_THROW(FormatError, "{}: {} unexpected {} tensor(s): {}", sd.string(), extra.size(), what,
               name_list(extra));
  }
  mutable std::unordered_set<std::string> checked;
};

StateFiles open_state_files(const fs::path& sd, const std::string& stem) {
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sd, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file() && n.ends_with(".safetensors") &&
        (n == stem + ".safetensors" || n.starts_with(stem + "-")))
      paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  StateFiles sf;
  for (const fs::path& p : paths) {
    sf.files.push_back(std::make_unique<io::SafetensorsFile>(p));
    const io::SafetensorsFile& f = *sf.files.back();
    for (const std::string& name : f.names())
      if (!sf.index.emplace(name, &f).second)
        DS_THROW(FormatError, "{}: tensor {} is also in another {}*.safetensors file", p.string(),
                 name, stem);
  }
  return sf;
}

// The trainer state, the weights and buffers, and the FP32 masters when present.
TrainerState load_model_state(const fs::path& dir, model::ParamStore& params,
                              const CheckpointLoadOptions& lo) {
  fs::path sd = dir / "training_state";
  fs::path state_file = sd / "trainer_state.json";
  if (!io::exists(state_file))
    DS_THROW(FormatError, "{}: not a training checkpoint (no training_state/trainer_state.json)",
             dir.string());
  TrainerState st = parse_trainer_state(io::read_file(state_file), state_file.string());
  if (const auto named = io::checkpoint_step(dir); named && *named != uint64_t(st.step))
    DS_THROW(FormatError, "{}: step {} does not match its checkpoint directory {}",
             state_file.string(), st.step, dir.filename().string());
  io::SafetensorsDir weights(dir);
  model::LoadOptions mo;
  mo.subset = lo.subset;
  model::load_model(params, weights, dir.string(), mo);
  StateFiles masters = open_state_files(sd, "master");
  if (masters.files.empty()) return st;
  std::vector<std::string> missing;
  for (auto& p : params.params()) {
    const io::TensorView* v = masters.find(p.info.name);
    if (!v) { missing.push_back(p.info.name); continue; }
    if (v->dtype != DType::f32 || v->shape != p.info.shape)
      DS_THROW(FormatError, "{}: master tensor {} has the wrong dtype or shape", sd.string(),
               p.info.name);
    copy_in(p.value, *v);
  }
  if (!missing.empty())
    DS_THROW(FormatError, "{}: {} master tensors missing: {}", sd.string(), missing.size(),
             name_list(missing));
  if (!lo.subset) masters.check_all_used(sd, "master");
  return st;
}

StateFiles open_moments(const fs::path& dir) {
  StateFiles sf = open_state_files(dir / "training_state", "optimizer");
  if (sf.files.empty())
    DS_THROW(FormatError, "{}: no training_state/optimizer*.safetensors (optimizer moments)",
             dir.string());
  return sf;
}

}  // namespace

TrainerState load_checkpoint(const fs::path& dir, model::ParamStore& params, AdamW& opt,
                             const CheckpointLoadOptions& lo) {
  TrainerState st = load_model_state(dir, params, lo);
  StateFiles moments = open_moments(dir);
  std::vector<std::string> missing;
  for (auto& [name, t] : opt.state_tensors()) {
    const io::TensorView* v = moments.find(name);
    if (!v) { missing.push_back(name); continue; }
    if (v->shape == t->shape()) check_moment_dtype(dir.string(), name, v->dtype, t->dtype());
    if (v->dtype != t->dtype() || v->shape != t->shape())
      DS_THROW(FormatError, "{}: tensor {} is {} {}, expected {} {}", dir.string(), name,
               dtype_name(v->dtype), shape_str(v->shape), dtype_name(t->dtype()),
               shape_str(t->shape()));
    copy_in(*t, *v);
  }
  if (!missing.empty())
    DS_THROW(FormatError, "{}: {} optimizer moments missing: {}", dir.string(), missing.size(),
             name_list(missing));
  if (!lo.subset) moments.check_all_used(dir / "training_state", "optimizer");
  opt.set_steps_done(st.optimizer_steps);
  return st;
}

TrainerState load_checkpoint(const fs::path& dir, model::ParamStore& params, ShardedAdamW& opt,
                             const CheckpointLoadOptions& lo) {
  DS_CHECK(&params == &opt.params(), "load_checkpoint: the store is not the optimiser's");
  TrainerState st = load_model_state(dir, params, lo);
  StateFiles moments = open_moments(dir);
  opt.load_state([&](const std::string& name) { return moments.find(name); });
  opt.set_steps_done(st.optimizer_steps);
  return st;
}

}  // namespace ds::train
