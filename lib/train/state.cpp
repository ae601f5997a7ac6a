// Saving and loading training checkpoints (see include/ds/train/state.hpp).
#include "ds/train/state.hpp"

#include <nlohmann/json.hpp>

#include <cstring>

#include "ds/core/error.hpp"
#include "ds/io/checkpoint.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"

namespace ds::train {

namespace fs = std::filesystem;
using nlohmann::json;

static json state_to_json(const TrainerState& st) {
  json j{{"format", "ds-trainer-state"}, {"version", 1}, {"kind", st.kind},
         {"step", st.step}, {"tokens_seen", st.tokens_seen},
         {"data", {{"epoch", st.data.epoch}, {"position", st.data.position}}},
         {"nonfinite_skipped", st.nonfinite_skipped},
         {"optimizer_steps", st.optimizer_steps}, {"seed", st.seed},
         {"seq_len", st.seq_len}, {"total_steps", st.total_steps},
         {"total_tokens", st.total_tokens}};
  if (!st.data_fingerprint.empty()) j["data_fingerprint"] = st.data_fingerprint;
  return j;
}

static TrainerState state_from_json(const std::string& text, const std::string& src) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) DS_THROW(FormatError, "{}: not a JSON object", src);
  if (j.value("format", "") != "ds-trainer-state")
    DS_THROW(FormatError, "{}: field 'format' is not \"ds-trainer-state\"", src);
  TrainerState st;
  auto get = [&](const char* key, auto& out) {
    if (!j.contains(key)) DS_THROW(FormatError, "{}: missing field '{}'", src, key);
    try { j.at(key).get_to(out); } catch (const json::exception&) {
      DS_THROW(FormatError, "{}: field '{}' has the wrong type", src, key);
    }
  };
  get("kind", st.kind);
  get("step", st.step);
  get("tokens_seen", st.tokens_seen);
  get("nonfinite_skipped", st.nonfinite_skipped);
  get("optimizer_steps", st.optimizer_steps);
  get("seed", st.seed);
  get("seq_len", st.seq_len);
  get("total_steps", st.total_steps);
  get("total_tokens", st.total_tokens);
  if (j.contains("data_fingerprint")) get("data_fingerprint", st.data_fingerprint);
  if (!j.contains("data") || !j["data"].is_object())
    DS_THROW(FormatError, "{}: missing field 'data'", src);
  st.data.epoch = j["data"].value("epoch", int64_t(-1));
  st.data.position = j["data"].value("position", int64_t(-1));
  if (st.data.epoch < 0 || st.data.position < 0 || st.step < 0)
    DS_THROW(FormatError, "{}: negative step or data position", src);
  return st;
}

void save_checkpoint(const SaveSpec& spec, const model::ModelArgs& args,
                     const model::ParamStore& params, AdamW& opt, const TrainerState& st) {
  io::CheckpointWriter w(spec.dir);
  model::save_model(params, args, w.path(), spec.bf16, spec.max_shard_bytes);
  if (!spec.tokenizer.empty()) io::copy_tokenizer_files(spec.tokenizer, w.path());
  fs::path sd = w.path() / "training_state";
  fs::create_directories(sd);
  std::vector<io::TensorSource> moments;
  for (auto& [name, t] : opt.state_tensors())
    moments.push_back(io::TensorSource::from_tensor(name, *t, t->dtype()));
  io::write_safetensors(sd / "optimizer.safetensors", moments);
  if (spec.bf16) {
    std::vector<io::TensorSource> masters;
    for (auto& p : params.params())
      masters.push_back(io::TensorSource::from_tensor(p.info.name, p.value, DType::f32));
    io::write_safetensors(sd / "master.safetensors", masters);
  }
  io::write_file_atomic(sd / "trainer_state.json", state_to_json(st).dump(2) + "\n");
  w.commit();
}

TrainerState load_checkpoint(const fs::path& dir, model::ParamStore& params, AdamW& opt) {
  fs::path sd = dir / "training_state";
  fs::path state_file = sd / "trainer_state.json";
  if (!fs::exists(state_file))
    DS_THROW(FormatError, "{}: not a training checkpoint (no training_state/trainer_state.json)",
             dir.string());
  TrainerState st = state_from_json(io::read_file(state_file), state_file.string());
  model::load_model(params, dir);
  if (fs::exists(sd / "master.safetensors")) {
    io::SafetensorsFile masters(sd / "master.safetensors");
    for (auto& p : params.params()) {
      const auto& v = masters.get(p.info.name);
      if (v.dtype != DType::f32 || v.shape != p.info.shape)
        DS_THROW(FormatError, "{}: tensor {} has the wrong dtype or shape", masters.path().string(),
                 p.info.name);
      std::memcpy(p.value.raw(), v.data, v.nbytes);
    }
  }
  io::SafetensorsFile moments(sd / "optimizer.safetensors");
  for (auto& [name, t] : opt.state_tensors()) {
    const auto& v = moments.get(name);
    if (v.dtype != t->dtype() || v.shape != t->shape())
      DS_THROW(FormatError, "{}: tensor {} is {} {}, expected {} {}", moments.path().string(), name,
               dtype_name(v.dtype), shape_str(v.shape), dtype_name(t->dtype()),
               shape_str(t->shape()));
    std::memcpy(t->raw(), v.data, v.nbytes);
  }
  opt.set_steps_done(st.optimizer_steps);
  return st;
}

}  // namespace ds::train
