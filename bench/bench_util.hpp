// Helpers shared by the CPU benchmark programs: the median of a sample of timings, a preset's
// model with random weights, and the CPU context of --threads.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"
#include "ds/ops/ops.hpp"

namespace ds::bench {

// The upper median (the element at n / 2 once sorted); 0 for no values.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// A preset's model, its weights drawn from seed 1234.
struct RandomModel {
  model::ModelArgs args;
  model::ParamStore store;
  std::unique_ptr<model::Transformer> tf;
  explicit RandomModel(const std::string& preset) : args(model::preset(preset)) {
    tf = std::make_unique<model::Transformer>(args, store);
    store.init(1234);
  }
};

// The CPU with `threads` threads (0: every core), set for the GEMMs too.
inline ops::Context cpu_context(int threads) {
  ops::Context ctx;
  ctx.threads = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ops::set_cpu_threads(ctx.threads);
  return ctx;
}

}  // namespace ds::bench
