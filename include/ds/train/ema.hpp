// Exponential moving average of the weights, kept in host memory and updated after each
// optimiser step on a background thread (spec §4.3, §4.8 step 8: DeepSeek-V3 keeps it on the
// CPU "for early estimation of the model performance after learning rate decay"). It covers
// every parameter and buffer (the routers' e_score_correction_bias) of a store, in FP32.
// Checkpoints hold it as a model directory of its own, <checkpoint>/ema/ (config.json, F32
// safetensors, tokenizer files), which every tool reads as a model; format: docs/formats.md.
// The decay of the paper is [unknown]; --ema-decay chooses it, with a warm-up (decay_at).
#pragma once
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/ops/ops.hpp"

namespace ds::train {

class WeightEma {
 public:
  // The average starts as a host copy of every value and buffer of `weights` (the store the
  // optimiser updates, on any device). decay in (0, 1).
  WeightEma(model::ParamStore& weights, double decay);
  ~WeightEma();
  WeightEma(const WeightEma&) = delete;
  WeightEma& operator=(const WeightEma&) = delete;

  // The decay of the average's update after optimiser update number n + 1 (n updates applied
  // before it): min(decay, (1 + n) / (10 + n)), so that the first updates follow the weights
  // and the random initial ones fade out (0.1 at n = 0, 0.5 at n = 8, 0.99 at n = 890).
  static double decay_at(double decay, int64_t n);

  // After optimiser update n + 1 changed the weights: avg = d avg + (1 - d) w with
  // d = decay_at(decay, n), for every tensor, on a background thread. Weights on the GPU are
  // first copied into host staging buffers (before this returns); host weights are read by the
  // thread, so they must not change until wait(). Waits for an update still running first.
  void start_update(int64_t n);
  // Waits for the running update (no-op when none); rethrows its error.
  void wait();

  // The average as a store (host, F32): its parameters and buffers carry the names and shapes
  // of the weights'. Call wait() first.
  const model::ParamStore& average() const { return avg_; }
  model::ParamStore& average() { return avg_; }

  // Exchanges the weights' values and buffers with the average (call again to undo): the
  // model then computes with the averaged weights. Waits first. The operand cache of `ctx`
  // (BF16/FP8 copies of the weights) is cleared, since it was made from the other values.
  void exchange(const ops::Context& ctx);

 private:
  void combine(double d);   // the update, on the thread

  model::ParamStore& weights_;
  double decay_;
  model::ParamStore avg_;             // host F32, the weights' names in the same order
  std::vector<Tensor> staging_;       // host copies of device weights (params, then buffers)
  std::thread worker_;
  std::exception_ptr error_;
};

// Loads the average from a checkpoint's ema/ directory (written by save_checkpoint with
// SaveSpec::ema) into `ema`: FormatError naming the directory for missing, unexpected (unless
// `subset`: a rank holding part of the model) or wrong-shaped tensors.
void load_ema(WeightEma& ema, const std::filesystem::path& ema_dir, bool subset);

// "<checkpoint>/ema".
std::filesystem::path ema_dir_of(const std::filesystem::path& checkpoint);

// A run's --ema-decay: nullptr when decay is 0 (with a warning when the resumed checkpoint
// holds an average that is then dropped); else the average of `weights`, continued from
// resume_from's ema/ when it has one (its config.json checked against `args`; config_hint
// says what the run must be given to match), or started from the weights at `step`.
std::unique_ptr<WeightEma> start_ema(model::ParamStore& weights, double decay,
                                     const std::filesystem::path& resume_from,
                                     const model::ModelArgs& args, const char* config_hint,
                                     bool subset, int64_t step);

// evaluate() with the weights exchanged for the average, and back (also when it throws).
double evaluate_average(WeightEma& ema, const ops::Context& ctx,
                        const std::function<double()>& evaluate);

}  // namespace ds::train
