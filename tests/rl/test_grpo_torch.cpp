// The GRPO loss and every parameter gradient on a fixed batch against the PyTorch reference
// (tests/rl/grpo_ref.py, float64 autograd over tests/model/torch_ref/deepseek_v3_ref.py):
// random weights of the case_a config, 6 completions in groups of 2 (one group with equal
// rewards), pi_old != pi (rho != 1, tokens clipped on both sides), beta > 0, balance loss on.
// ds computes the same with model::Transformer::forward_backward_policy + rl::grpo_loss in
// F32. One "TENSOR OK ... maxdiff" line per tensor. Skipped without torch unless
// DS_REQUIRE_TORCH_REF=1 (CI sets it).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ds/io/safetensors.hpp"
#include "ds/model/config.hpp"
#include "ds/model/transformer.hpp"
#include "ds/rl/grpo.hpp"

namespace fs = std::filesystem;
using ds::Tensor;

namespace {

constexpr const char* kPython = "/usr/bin/python3";

bool have_torch() {
  const std::string cmd = std::string(kPython) + " -c \"import torch, numpy\" >/dev/null 2>&1";
  return fs::exists(kPython) && std::system(cmd.c_str()) == 0;
}

// maxdiff <= atol + rtol * max|ref|, finite; prints one line.
bool close(const std::string& what, const float* got, const float* want, int64_t n, double rtol,
           double atol) {
  double maxdiff = 0, maxref = 0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(got[i]);
    maxdiff = std::max(maxdiff, std::fabs(double(got[i]) - double(want[i])));
    maxref = std::max(maxref, std::fabs(double(want[i])));
  }
  const bool ok = finite && maxdiff <= atol + rtol * maxref;
  std::printf("TENSOR %s %-58s maxdiff=%.3e (max|ref|=%.3e)\n", ok ? "OK    " : "NOT OK",
              what.c_str(), maxdiff, maxref);
  return ok;
}
bool close(const std::string& what, double got, double want, double rtol, double atol) {
  const float g = float(got), w = float(want);
  return close(what, &g, &w, 1, rtol, atol);
}

}  // namespace

TEST_CASE("GRPO loss and gradients == PyTorch reference (float64)") {
  if (!have_torch()) {
    const char* req = std::getenv("DS_REQUIRE_TORCH_REF");
    if (req && std::string(req) == "1")
      FAIL("DS_REQUIRE_TORCH_REF=1 but " << kPython << " cannot import torch");
    MESSAGE("skipped: " << kPython << " with torch (Debian python3-torch) not available");
    return;
  }
  const fs::path src = fs::path(DS_SOURCE_DIR);
  const fs::path cfg_path = src / "tests/model/torch_ref/configs/case_a.json";
  const fs::path dir = fs::temp_directory_path() / ("ds_grpo_ref_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "case.safetensors";
  const std::string cmd = std::string(kPython) + " \"" + (src / "tests/rl/grpo_ref.py").string() +
                          "\" --config \"" + cfg_path.string() + "\" --out \"" + file.string() +
                          "\" --seed 11 --rows 6 --group 2 --seq 12 --clip-eps 0.2 --beta 0.04 "
                          "--adv-eps 1e-4 --alpha 0.01";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  ds::io::SafetensorsFile f(file);

  ds::model::ModelArgs args = ds::model::load_config(cfg_path);
  REQUIRE(args.n_mtp_layers > 0);   // the MTP chain exists and must be skipped
  ds::model::ParamStore store;
  ds::model::Transformer model(args, store);
  for (auto& p : store.params()) p.value.copy_from(f.load_f32(p.info.name));
  for (auto& [name, buf] : store.buffers()) buf.copy_from(f.load_f32(name));
  store.alloc_grads();
  store.zero_grads();

  ds::model::Batch batch;
  const auto& tv = f.get("tokens");
  batch.tokens = Tensor::empty(tv.shape, ds::DType::i32);
  REQUIRE(tv.dtype == ds::DType::i32);
  std::memcpy(batch.tokens.i32(), tv.data, size_t(tv.nbytes));
  batch.loss_mask = f.load_f32("loss_mask");
  const int64_t R = batch.tokens.size(0), T = batch.tokens.size(1) - 1;
  const Tensor rewards = f.load_f32("rewards"), old = f.load_f32("logp_old"),
               lref = f.load_f32("logp_ref");
  const int64_t G = std::stoll(f.metadata().at("group"));
  ds::rl::GrpoOptions o;
  o.clip_eps = std::stod(f.metadata().at("clip_eps"));
  o.beta = std::stod(f.metadata().at("beta"));
  o.adv_eps = std::stod(f.metadata().at("adv_eps"));
  const float alpha = std::stof(f.metadata().at("alpha"));

  const std::vector<double> r(rewards.f32(), rewards.f32() + R);
  const std::vector<double> adv = ds::rl::group_advantages(r, G, o.adv_eps);
  const std::vector<float> advf(adv.begin(), adv.end());
  int bad = 0;
  bad += !close("out.advantages", advf.data(), f.load_f32("out.advantages").f32(), R, 1e-6, 1e-6);
  CHECK(adv[size_t(R - 1)] == 0.0);
  CHECK(adv[size_t(R - 2)] == 0.0);

  std::vector<ds::rl::GrpoSeq> seqs;   // each row's completion: its masked targets
  for (int64_t b = 0; b < R; ++b) {
    const float* m = batch.loss_mask.f32() + b * T;
    const int64_t first = std::find(m, m + T, 1.0f) - m;
    const int64_t len = std::count(m, m + T, 1.0f);
    REQUIRE(len >= 1);
    seqs.push_back({b * T + first, len, adv[size_t(b)], 1.0 / (double(R) * double(len)),
                    old.f32() + b * T + first, lref.f32() + b * T + first});
  }
  ds::rl::GrpoStats gs;
  ds::model::TokenScores scores;
  ds::ops::Context ctx;
  ctx.threads = 1;
  const ds::model::StepResult res = model.forward_backward_policy(
      ctx, batch,
      [&](const ds::model::TokenScores& sc, std::vector<float>& d) {
        return ds::rl::grpo_loss(o, seqs, sc.logp, d, gs);
      },
      alpha, 1.0f, &scores);

  bad += !close("out.logp", scores.logp.data(), f.load_f32("out.logp").f32(), R * T, 2e-6, 2e-6);
  bad += !close("out.entropy", scores.entropy.data(), f.load_f32("out.entropy").f32(), R * T, 2e-6,
                2e-6);
  auto scalar = [&](const char* n) { return double(f.load_f32(n).f32()[0]); };
  bad += !close("out.loss", res.loss, scalar("out.loss"), 2e-5, 1e-7);
  bad += !close("out.loss_pg", res.loss_main, scalar("out.loss_pg"), 2e-5, 1e-7);
  bad += !close("out.loss_balance", res.loss_balance, scalar("out.loss_balance"), 2e-6, 1e-8);
  bad += !close("out.kl", gs.kl, scalar("out.kl"), 2e-5, 1e-7);
  CHECK(gs.clipped == scalar("out.clipped"));
  CHECK(gs.clipped >= 2);
  for (auto& p : store.params()) {
    const Tensor want = f.load_f32("grad." + p.info.name);
    bad += !close("grad." + p.info.name, p.grad.f32(), want.f32(), want.numel(), 5e-5, 1e-9);
  }
  CHECK(bad == 0);
  std::error_code ec;
  fs::remove_all(dir, ec);
}
