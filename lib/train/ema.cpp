// The weights' exponential moving average (see include/ds/train/ema.hpp).
#include "ds/train/ema.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include <spdlog/spdlog.h>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/checkpoint_io.hpp"
#include "ds/train/trainer.hpp"

namespace ds::train {

namespace fs = std::filesystem;

namespace {

// Every tensor of a store: parameter values in registration order, then buffers.
std::vector<Tensor*> tensors_of(model::ParamStore& ps) {
  std::vector<Tensor*> out;
  for (model::Param& p : ps.params()) out.push_back(&p.value);
  for (auto& [name, t] : ps.buffers()) out.push_back(&t);
  return out;
}

// A host F32 copy of t (any device).
Tensor host_copy(const Tensor& t) {
  Tensor h = Tensor::empty(t.shape(), DType::f32);
  h.copy_from(t);
  return h;
}

}  // namespace

WeightEma::WeightEma(model::ParamStore& weights, double decay)
    : weights_(weights), decay_(decay) {
  DS_CHECK_AS(UsageError, std::isfinite(decay) && decay > 0 && decay < 1,
              "--ema-decay {}: expected a number in (0, 1)", decay);
  DS_CHECK(weights.allocate(), "WeightEma over a shape-only store");
  for (const model::Param& p : weights.params()) {
    DS_CHECK(p.value.dtype() == DType::f32, "WeightEma: {} is not F32", p.info.name);
    avg_.add(p.info).value.copy_from(p.value);
  }
  for (const auto& [name, t] : weights.buffers()) avg_.add_buffer(name, t.shape()).copy_from(t);
  if (weights.device() != Device::cpu)
    for (Tensor* t : tensors_of(weights)) staging_.push_back(Tensor::empty(t->shape()));
}

WeightEma::~WeightEma() {
  if (worker_.joinable()) worker_.join();
}

double WeightEma::decay_at(double decay, int64_t n) {
  return std::min(decay, double(1 + n) / double(10 + n));
}

void WeightEma::start_update(int64_t n) {
  wait();
  const std::vector<Tensor*> w = tensors_of(weights_);
  if (!staging_.empty())   // device weights: the thread reads host copies made now
    for (size_t i = 0; i < w.size(); ++i) staging_[i].copy_from(*w[i]);
  const double d = decay_at(decay_, n);
  worker_ = std::thread([this, d] {
    try {
      combine(d);
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

void WeightEma::wait() {
  if (worker_.joinable()) worker_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void WeightEma::combine(double d) {
  const std::vector<Tensor*> a = tensors_of(avg_), w = tensors_of(weights_);
  const double c = 1.0 - d;
  for (size_t i = 0; i < a.size(); ++i) {
    const float* src = staging_.empty() ? w[i]->f32() : staging_[i].f32();   // (n)
    float* dst = a[i]->f32();                                                // (n)
    const int64_t n = a[i]->numel();
    for (int64_t k = 0; k < n; ++k) dst[k] = float(d * double(dst[k]) + c * double(src[k]));
  }
}

void WeightEma::exchange(const ops::Context& ctx) {
  wait();
  if (ctx.operands) ctx.operands->clear();   // made from the values being replaced
  const std::vector<Tensor*> a = tensors_of(avg_), w = tensors_of(weights_);
  for (size_t i = 0; i < a.size(); ++i) {
    if (w[i]->device() == Device::cpu) {
      std::swap_ranges(a[i]->f32(), a[i]->f32() + a[i]->numel(), w[i]->f32());
    } else {
      const Tensor old = host_copy(*w[i]);
      w[i]->copy_from(*a[i]);
      a[i]->copy_from(old);
    }
  }
}

void load_ema(WeightEma& ema, const fs::path& ema_dir, bool subset) {
  ema.wait();
  io::SafetensorsDir st(ema_dir);
  model::LoadOptions lo;
  lo.subset = subset;
  model::load_model(ema.average(), st, ema_dir.string(), lo);
}

fs::path ema_dir_of(const fs::path& checkpoint) { return checkpoint / "ema"; }

std::unique_ptr<WeightEma> start_ema(model::ParamStore& weights, double decay,
                                     const fs::path& resume_from, const model::ModelArgs& args,
                                     const char* config_hint, bool subset, int64_t step) {
  const fs::path saved = resume_from.empty() ? fs::path() : ema_dir_of(resume_from);
  const bool has_saved = !saved.empty() && io::exists(saved);   // (a broken one fails to load)
  if (decay <= 0) {
    if (has_saved)
      spdlog::warn("{}: the checkpoint's weight average is not continued (no --ema-decay); "
                   "this run's checkpoints will have none", saved.string());
    return nullptr;
  }
  auto ema = std::make_unique<WeightEma>(weights, decay);
  if (has_saved) {
    check_resume_config(saved, args, config_hint);
    load_ema(*ema, saved, subset);
    spdlog::info("weight average (decay {}) continued from {}", decay, saved.string());
  } else if (step > 0) {
    spdlog::info("weight average (decay {}) starts from the weights of step {}", decay, step);
  }
  return ema;
}

double evaluate_average(WeightEma& ema, const ops::Context& ctx,
                        const std::function<double()>& evaluate) {
  ema.exchange(ctx);
  double v = NAN;
  try {
    v = evaluate();
  } catch (...) {
    try {
      ema.exchange(ctx);
    } catch (...) {   // the evaluation's error is the one reported
    }
    throw;
  }
  ema.exchange(ctx);
  return v;
}

}  // namespace ds::train
