// The fixture of the ds-eval end-to-end tests (test_eval_run.cpp, test_eval_sampling.cpp): a
// tiny random FP8 Hugging Face-format checkpoint (tests/model/hf_checkpoint_util.hpp) loaded
// as eval::Pretrained, the NLL of a token sequence by one forward_logits, a report's metric by
// name, and the ds-eval binary run through a shell (DS_EVAL_BIN) with its exit code and output.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../model/hf_checkpoint_util.hpp"
#include "../model/model_test_util.hpp"
#include "ds/eval/run.hpp"
#include "ds/ops/ops.hpp"
#include "eval_test_util.hpp"

namespace ds::eval::testing {

struct Fixture {
  TempDir tmp;
  fs::path ckpt;
  model::Pretrained pt;
  Fixture() {
    model::ModelArgs a = model::testing::micro_args();
    a.vocab_size = 264;
    a.max_seq_len = 64;
    model::ParamStore ps;
    model::Transformer m(a, ps);
    ps.init(77);
    model::testing::HfWriteOptions o;
    o.block = 8;
    ckpt = tmp.path() / "ckpt";
    model::testing::write_hf_checkpoint(ckpt, ps, a, o);
    pt = model::load_pretrained(ckpt);
  }
  eval::CommonEvalOptions common(size_t batch = 4) const {
    eval::CommonEvalOptions c;
    c.model = ckpt.string();
    c.batch_size = int64_t(batch);
    c.threads = 1;
    c.progress = false;
    return c;
  }
  std::vector<tok::TokenId> doc(const std::string& text) const {
    std::vector<tok::TokenId> t{*pt.tokenizer->bos_id()};
    pt.tokenizer->encode(text, t, false);
    return t;
  }
  // Σ −ln p(t[i+1] | t[0..i]) for targets [first, last] with inputs t[0, last), one forward.
  double nll(const std::vector<tok::TokenId>& t, size_t first = 1) {
    Tensor in = Tensor::empty({1, int64_t(t.size() - 1)}, DType::i32);
    for (size_t i = 0; i + 1 < t.size(); ++i) in.i32()[i] = int32_t(t[i]);
    Tensor logits;
    ops::Context ctx;
    pt.model->forward_logits(ctx, in, logits);
    const int64_t V = pt.args.vocab_size;
    double s = 0;
    for (size_t i = first; i < t.size(); ++i) {
      const float* row = logits.f32() + int64_t(i - 1) * V;
      double mx = -1e30, z = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      s += -(double(row[t[i]]) - mx - std::log(z));
    }
    return s;
  }
};

inline double metric(const eval::EvalReport& r, const std::string& name) {
  for (const auto& m : r.metrics)
    if (m.name == name) return m.value;
  FAIL("no metric " << name);
  return 0;
}

struct Cmd {
  int rc;
  std::string out;
};
inline Cmd run_cli(const std::string& args) {
  const std::string cmd = std::string(DS_EVAL_BIN) + " " + args + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f);
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), f)) out.append(buf.data(), n);
  const int st = pclose(f);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace ds::eval::testing
