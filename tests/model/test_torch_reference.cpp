// Cross-check of the C++ model against the independent PyTorch reference
// (tests/model/torch_ref/deepseek_v3_ref.py, float64, autograd backward): for two configs,
// make_case.py writes random F32 weights, tokens and the reference's logits, loss terms, every
// parameter gradient, expert counts and a 10-step AdamW trajectory (clipping, router bias
// update) into case.safetensors; this test loads the same weights into ds::model::Transformer
// and compares everything, printing a "TENSOR OK ... maxdiff=" line per tensor (llm.c style).
// Skipped with a message when /usr/bin/python3 has no torch (set DS_REQUIRE_TORCH_REF=1 to
// make that a failure). reference: docs/model.md; spec §1.3-1.11, §4.8.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ds/io/safetensors.hpp"
#include "ds/model/config.hpp"
#include "ds/model/params.hpp"
#include "ds/model/transformer.hpp"
#include "ds/train/optimizer.hpp"
#include "ds/ops/ops.hpp"

namespace fs = std::filesystem;
using ds::Tensor;
using ds::io::SafetensorsFile;

namespace {

constexpr const char* kPython = "/usr/bin/python3";

// Tolerances: C++ computes in F32, the reference in F64. A comparison passes when
// maxdiff <= atol + rtol * max|ref| (per tensor). Measured C++ errors (CPU, 1-2 threads):
// logits 3e-7, losses 5e-8, gradients 1.2e-6, trajectory losses 3e-7 (relative); final weights
// max 1e-4 / RMS 2.2e-6 and biases 1.5e-8 (absolute) - the tolerances leave 10-50x headroom.
struct Tol {
  double rtol, atol;
  double rms = 0;   // > 0: also require sqrt(mean(diff^2)) <= rms
};
constexpr Tol kLogitsTol{1e-5, 1e-6};
constexpr Tol kLossTol{2e-6, 1e-8};
constexpr Tol kGradTol{5e-5, 1e-9};
constexpr Tol kTrajLossTol{1e-5, 1e-8};
// Final weights: a few elements whose gradient is at F32 noise level get a different Adam
// direction (lr 3e-3: one fully flipped step would be 6e-3), so the max is loose and the RMS
// of the difference is tight.
constexpr Tol kFinalWeightTol{0.0, 1e-3, 2e-5};
constexpr Tol kFinalBiasTol{0.0, 2e-7};      // multiples of gamma on F32 initial values

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("ds_torch_ref_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool torch_available() {
  static const bool ok = [] {
    if (!fs::exists(kPython)) return false;
    std::string cmd = std::string(kPython) + " -c \"import torch, numpy\" >/dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
  }();
  return ok;
}

bool require_torch() {
  const char* e = std::getenv("DS_REQUIRE_TORCH_REF");
  return e && std::string(e) == "1";
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Worst |got - ref| over a tensor, and whether it is within tol; prints one line per tensor.
bool compare(const std::string& what, const float* got, const float* ref, int64_t n, Tol tol) {
  double maxdiff = 0, maxref = 0, sumsq = 0;
  int64_t worst = n > 0 ? 0 : -1;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) finite = false;
    double d = std::fabs(double(got[i]) - double(ref[i]));
    sumsq += d * d;
    if (d > maxdiff) {
      maxdiff = d;
      worst = i;
    }
    maxref = std::max(maxref, std::fabs(double(ref[i])));
  }
  double limit = tol.atol + tol.rtol * maxref;
  double rms = n > 0 ? std::sqrt(sumsq / double(n)) : 0.0;
  bool ok = finite && maxdiff <= limit && (tol.rms <= 0 || rms <= tol.rms);
  std::printf("TENSOR %s %-62s maxdiff=%.3e rel=%.3e rms=%.2e (max|ref|=%.3e, tol=%.2e)%s\n",
              ok ? "OK    " : "NOT OK", what.c_str(), maxdiff, maxref > 0 ? maxdiff / maxref : 0.0,
              rms, maxref, limit, finite ? "" : " NON-FINITE");
  if (!ok && worst >= 0)
    std::printf("       worst element %lld: got %.9g ref %.9g\n", static_cast<long long>(worst),
                double(got[worst]), double(ref[worst]));
  return ok;
}

bool compare_scalar(const std::string& what, double got, double ref, Tol tol) {
  double d = std::fabs(got - ref);
  double limit = tol.atol + tol.rtol * std::fabs(ref);
  bool ok = std::isfinite(got) && d <= limit;
  std::printf("SCALAR %s %-62s got=%.9g ref=%.9g diff=%.3e (tol=%.2e)\n", ok ? "OK    " : "NOT OK",
              what.c_str(), got, ref, d, limit);
  return ok;
}

int layer_of_moe_name(const std::string& name) {   // "model.layers.{i}.mlp" -> i
  const std::string pre = "model.layers.";
  REQUIRE(name.rfind(pre, 0) == 0);
  return std::stoi(name.substr(pre.size()));
}

int layer_of_bias_name(const std::string& name) {  // "model.layers.{i}.mlp.gate.e_score..." -> i
  return layer_of_moe_name(name);
}

struct CaseSpec {
  std::string tag;
  std::string config;   // file under tests/model/torch_ref/configs
  int seed, batch, seq, steps;
  bool packing = false;   // SFT packing: positions, segments, loss_mask
  int threads = 1;        // ops::Context::threads of the gradient check (trajectory: 1, as
                          // OpenMP on a loaded 2-core machine is several times slower)
};

constexpr double kLr = 3e-3, kWd = 0.1, kBeta1 = 0.9, kBeta2 = 0.95, kEps = 1e-8, kClip = 1.0;
constexpr double kAlpha = 1e-2, kLambda = 0.3, kGamma = 1e-2;

// Runs make_case.py; returns false (after a message) when the case cannot be produced.
bool generate(const CaseSpec& cs, const fs::path& out) {
  const fs::path src = fs::path(DS_SOURCE_DIR) / "tests" / "model" / "torch_ref";
  const fs::path log = out.parent_path() / "make_case.log";
  std::ostringstream cmd;
  cmd.precision(17);
  cmd << kPython << " \"" << (src / "make_case.py").string() << "\" --config \""
      << (src / "configs" / cs.config).string() << "\" --out \"" << out.string() << "\" --seed "
      << cs.seed << " --batch " << cs.batch << " --seq " << cs.seq << " --steps " << cs.steps
      << " --lr " << kLr << " --weight-decay " << kWd << " --beta1 " << kBeta1 << " --beta2 "
      << kBeta2 << " --eps " << kEps << " --clip " << kClip << " --alpha " << kAlpha
      << " --mtp-lambda " << kLambda << " --gamma " << kGamma << " --min-margin 1e-4";
  if (cs.packing) cmd << " --packing";
  // Extra make_case.py arguments (experiments, e.g. mutation checks: --set rope_theta=10001).
  if (const char* extra = std::getenv("DS_TORCH_REF_EXTRA_ARGS")) cmd << " " << extra;
  cmd << " > \""
      << log.string() << "\" 2>&1";
  int rc = std::system(cmd.str().c_str());
  std::string text = read_text(log);
  std::printf("%s", text.c_str());
  if (rc != 0) {
    FAIL_CHECK("make_case.py failed (rc " << rc << "):\n" << cmd.str() << "\n" << text);
    return false;
  }
  return true;
}

Tensor i32_rows(const Tensor& src, int64_t row) {   // traj.tokens[row] as a fresh (B, T+1) tensor
  Tensor t = Tensor::empty({src.size(1), src.size(2)}, ds::DType::i32);
  const int64_t n = t.numel();
  std::copy(src.i32() + row * n, src.i32() + (row + 1) * n, t.i32());
  return t;
}

Tensor load_i32(const SafetensorsFile& f, const std::string& name) {
  const auto& v = f.get(name);
  REQUIRE(v.dtype == ds::DType::i32);
  Tensor t = Tensor::empty(v.shape, ds::DType::i32);
  std::memcpy(t.raw(), v.data, v.nbytes);
  return t;
}

void run_case(const CaseSpec& cs) {
  if (!torch_available()) {
    const std::string py = kPython;
    if (require_torch()) FAIL("DS_REQUIRE_TORCH_REF=1 but " << py << " cannot import torch");
    MESSAGE("skipped: " << py << " with torch (Debian python3-torch) not available");
    return;
  }
  TempDir dir(cs.tag);
  const fs::path file = dir.path / "case.safetensors";
  if (!generate(cs, file)) return;
  SafetensorsFile f(file);
  const auto& meta = f.metadata();
  INFO("case " << cs.tag << " seed_used " << meta.at("seed_used"));

  // The same config.json both sides read.
  const fs::path cfg_path = fs::path(DS_SOURCE_DIR) / "tests/model/torch_ref/configs" / cs.config;
  ds::model::ModelArgs args = ds::model::load_config(cfg_path);
  ds::model::ParamStore store;
  ds::model::Transformer model(args, store);

  // Parameter set, shapes, decay flags; copy the reference's initial weights in.
  std::set<std::string> ref_names;
  for (const auto& n : f.names())
    if (n.rfind("model.", 0) == 0 || n.rfind("lm_head.", 0) == 0) ref_names.insert(n);
  std::set<std::string> ours;
  for (auto& p : store.params()) {
    ours.insert(p.info.name);
    INFO("parameter " << p.info.name);
    REQUIRE(f.contains(p.info.name));
    Tensor w = f.load_f32(p.info.name);
    REQUIRE(w.shape() == p.info.shape);
    CHECK(p.info.decay == (p.info.shape.size() >= 2));
    p.value.copy_from(w);
  }
  for (auto& [name, buf] : store.buffers()) {
    ours.insert(name);
    INFO("buffer " << name);
    REQUIRE(f.contains(name));
    Tensor b = f.load_f32(name);
    REQUIRE(b.shape() == buf.shape());
    buf.copy_from(b);
  }
  CHECK_MESSAGE(ours == ref_names, "parameter/buffer names differ from the reference's");
  store.alloc_grads();
  store.zero_grads();

  ds::ops::Context ctx;
  ctx.threads = cs.threads;
  ds::model::LossWeights lw;
  lw.mtp_lambda = float(kLambda);
  lw.balance_alpha = float(kAlpha);
  Tensor tokens = load_i32(f, "tokens");
  const int64_t B = tokens.size(0), T = tokens.size(1) - 1;
  REQUIRE(B == cs.batch);
  REQUIRE(T == cs.seq);

  // Packing inputs (the same for every step).
  auto with_packing = [&](ds::model::Batch b) {
    if (cs.packing) {
      b.positions = load_i32(f, "positions");
      b.segments = load_i32(f, "segments");
      b.loss_mask = f.load_f32("loss_mask");
      const Tensor len = load_i32(f, "lengths");
      b.lengths.assign(len.i32(), len.i32() + len.numel());
    }
    return b;
  };
  REQUIRE(f.contains("segments") == cs.packing);

  // ---- logits (main head; forward_logits has no packing inputs) ----
  int bad = 0;
  if (!cs.packing) {
    Tensor x = Tensor::empty({B, T}, ds::DType::i32);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) x.i32()[b * T + t] = tokens.i32()[b * (T + 1) + t];
    Tensor logits;
    model.forward_logits(ctx, x, logits);
    Tensor want = f.load_f32("out.logits");
    REQUIRE(logits.shape() == want.shape());
    bad += !compare("out.logits", logits.f32(), want.f32(), want.numel(), kLogitsTol);
  }

  // ---- one forward + backward: losses, gradients, counts ----
  ds::model::Batch batch;
  batch.tokens = tokens;
  batch = with_packing(batch);
  ds::model::StepResult r = model.forward_backward(ctx, batch, lw, 1.0f);
  auto ref_scalar = [&](const std::string& n) { return double(f.load_f32(n).f32()[0]); };
  bad += !compare_scalar("out.loss", r.loss, ref_scalar("out.loss"), kLossTol);
  bad += !compare_scalar("out.loss_main", r.loss_main, ref_scalar("out.loss_main"), kLossTol);
  bad += !compare_scalar("out.loss_mtp", r.loss_mtp, ref_scalar("out.loss_mtp"), kLossTol);
  bad += !compare_scalar("out.loss_balance", r.loss_balance, ref_scalar("out.loss_balance"),
                         kLossTol);
  for (auto& p : store.params()) {
    Tensor g = f.load_f32("grad." + p.info.name);
    bad += !compare("grad." + p.info.name, p.grad.f32(), g.f32(), g.numel(), kGradTol);
  }
  const auto moe_names = model.moe_layer_names();
  REQUIRE(r.expert_counts.size() == moe_names.size());
  for (size_t l = 0; l < moe_names.size(); ++l) {
    const std::string key = "counts." + std::to_string(layer_of_moe_name(moe_names[l]));
    INFO(key);
    REQUIRE(f.contains(key));
    Tensor c = load_i32(f, key);
    std::vector<int32_t> want(c.i32(), c.i32() + c.numel());
    CHECK(r.expert_counts[l] == want);
  }
  CHECK(bad == 0);

  // ---- the trajectory: restart from the initial weights ----
  ctx.threads = 1;
  for (auto& p : store.params()) p.value.copy_from(f.load_f32(p.info.name));
  for (auto& [name, buf] : store.buffers()) buf.copy_from(f.load_f32(name));
  Tensor traj_tokens = load_i32(f, "traj.tokens");
  Tensor traj_loss = f.load_f32("traj.loss"), traj_norm = f.load_f32("traj.grad_norm");
  REQUIRE(traj_tokens.size(0) == cs.steps);
  // The shipped optimiser (FP32 moments, as torch.optim.AdamW keeps them).
  ds::train::OptimizerOptions oo;
  oo.beta1 = float(kBeta1);
  oo.beta2 = float(kBeta2);
  oo.eps = float(kEps);
  oo.weight_decay = float(kWd);
  oo.clip_norm = float(kClip);
  oo.bf16_moments = false;
  ds::train::AdamW opt(store, oo);
  std::vector<Tensor> traj_counts;
  for (const auto& n : moe_names)
    traj_counts.push_back(load_i32(f, "traj.counts." + std::to_string(layer_of_moe_name(n))));
  int traj_bad = 0;
  for (int s = 0; s < cs.steps; ++s) {
    store.zero_grads();
    ds::model::Batch bs;
    bs.tokens = i32_rows(traj_tokens, s);
    bs = with_packing(bs);
    ds::model::StepResult rs = model.forward_backward(ctx, bs, lw, 1.0f);
    traj_bad += !compare_scalar("traj.loss[" + std::to_string(s) + "]", rs.loss,
                                double(traj_loss.f32()[s]), kTrajLossTol);
    const ds::train::GradStats gs = opt.grad_stats(ctx);
    traj_bad += !compare_scalar("traj.grad_norm[" + std::to_string(s) + "]", gs.norm,
                                double(traj_norm.f32()[s]), kTrajLossTol);
    opt.step(ctx, float(kLr), gs);   // clip_grad_norm_ then AdamW
    REQUIRE(rs.expert_counts.size() == moe_names.size());
    for (size_t l = 0; l < moe_names.size(); ++l) {
      const Tensor& tc = traj_counts[l];
      const int64_t E = tc.size(1);
      std::vector<int32_t> want(tc.i32() + s * E, tc.i32() + (s + 1) * E);
      INFO("step " << s << " " << moe_names[l]);
      CHECK(rs.expert_counts[l] == want);
    }
    model.update_router_bias(rs.expert_counts, float(kGamma));
  }
  for (auto& p : store.params()) {
    Tensor w = f.load_f32("final." + p.info.name);
    traj_bad +=
        !compare("final." + p.info.name, p.value.f32(), w.f32(), w.numel(), kFinalWeightTol);
  }
  for (auto& [name, buf] : store.buffers()) {
    const std::string key = "final_bias." + std::to_string(layer_of_bias_name(name));
    REQUIRE(f.contains(key));
    Tensor want = f.load_f32(key);
    traj_bad += !compare(key, buf.f32(), want.f32(), want.numel(), kFinalBiasTol);
  }
  CHECK(traj_bad == 0);
}

}  // namespace

TEST_CASE("torch reference: q_lora, expert groups, YaRN, MTP depth 1") {
  run_case({"a", "case_a.json", 15, 2, 16, 10});
}

TEST_CASE("torch reference: no q_lora, ungrouped un-normalised routing, MTP depth 2") {
  CaseSpec cs{"b", "case_b.json", 17, 2, 16, 10};
  cs.threads = 2;
  run_case(cs);
}

TEST_CASE("torch reference: SFT packing (positions, segments, loss mask), MTP depth 1") {
  CaseSpec cs{"packed", "case_a.json", 10000051, 2, 16, 10};
  cs.packing = true;
  run_case(cs);
}
