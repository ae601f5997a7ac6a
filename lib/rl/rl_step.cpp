// One GRPO step (see include/ds/rl/rl.hpp, grpo.hpp): rollouts of G completions per prompt with
// the inference engine on the current weights, rewards, group advantages, reference log-probs
// (beta > 0), then `updates` optimiser steps. The first update's forward also records pi_old
// (the policy that sampled: rho = 1 there), so each update costs one forward + one backward.
// Micro-batches are consecutive completions, each row = prompt + completion padded to the
// longest row; only completion tokens are scored.
// Several ranks (data parallel): rank r takes the contiguous slice dp_slice(P, dp, r) of the
// step's prompts with all G completions of each (a group's advantages stay on one rank). Its
// sampler streams are the global sequence numbers p0*G + i (GenerationConfig::first_seq), so
// the rollouts are those of one process; the rewards are gathered so every statistic is
// computed on one process's numbers in its order; the loss weights use the global n, so the
// ranks' gradients sum (ZeRO-1 reduce-scatter) to the single-process objective's; the other
// metrics are summed (counts, losses) or the slowest rank's (timings) over the ranks.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <utility>

#include "ds/core/error.hpp"
#include "ds/core/interrupt.hpp"
#include "ds/core/rng.hpp"
#include "ds/infer/generator.hpp"
#include "ds/rl/grpo.hpp"
#include "ds/tokenizer/utf8.hpp"
#include "ds/train/trainer.hpp"
#include "ds/train/zero.hpp"
#include "rl_internal.hpp"

namespace ds::rl::detail {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The visible text of a completion: the final stop token dropped, special tokens empty, ids
// the tokenizer does not know (the head's padding rows beyond the tokenizer's vocabulary can
// be sampled: they are actions of the policy like any other) as U+FFFD, UTF-8 repaired.
std::string completion_text(const Run& r, const std::vector<int32_t>& ids) {
  const tok::Tokenizer& tk = *r.policy.tokenizer;
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto id = tok::TokenId(ids[i]);
    if (i + 1 == ids.size() && ids[i] == r.eos) break;
    if (id >= tk.vocab_size() || tk.id_to_token(id).empty()) bytes += "\xEF\xBF\xBD";
    else bytes += r.text->bytes(id);
  }
  return tok::utf8_repair(bytes);
}

// This rank's prompts of the step: [first, first + count) of the P picks (all of them on one
// process).
std::pair<int64_t, int64_t> my_prompts(Run& r) {
  if (!r.distributed()) return {0, r.o.prompts_per_step};
  dist::Topology& t = r.ranks->topo();
  return train::dp_slice(r.o.prompts_per_step, t.layout().dp, t.dp_rank());
}

// Sampling: every prompt repeated G times in one engine pass over the current weights. picks:
// this rank's prompts, the first being prompt p0 of the step (sampler streams p0*G + i).
std::vector<Sample> rollout(Run& r, const std::vector<int64_t>& picks, int64_t p0,
                            StepReport& rep) {
  const int64_t G = r.o.group_size;
  std::vector<std::vector<int32_t>> batch;
  int64_t longest = 0;
  for (int64_t p : picks)
    for (int64_t g = 0; g < G; ++g) {
      batch.push_back(r.prompt_ids[size_t(p)]);
      longest = std::max<int64_t>(longest, int64_t(batch.back().size()));
    }
  infer::EngineOptions eo;
  eo.slots = int(batch.size());
  eo.capacity = longest + r.o.max_new_tokens + 1;
  eo.bf16_weights = false;   // share the F32 weights being trained (the engine is per step)
  infer::Engine engine(r.policy.args, *r.policy.store, r.ctx, eo);
  infer::GenerationConfig cfg;
  cfg.sampling.temperature = r.o.temperature;
  cfg.sampling.top_p = r.o.top_p;
  cfg.sampling.top_k = r.o.top_k;
  cfg.sampling.seed = Rng(r.st.seed, rng_stream("rl-sample", uint64_t(r.st.step))).next_u64();
  cfg.first_seq = uint64_t(p0 * G);
  infer::validate(cfg.sampling);
  cfg.stop.max_new_tokens = size_t(r.o.max_new_tokens);
  cfg.stop.stop_ids = {tok::TokenId(r.eos)};
  infer::GenerationStats gs;
  const auto comps = infer::generate(engine, batch, cfg, nullptr, &gs);
  std::vector<Sample> out(comps.size());
  for (size_t i = 0; i < comps.size(); ++i) {
    out[i].prompt = picks[i / size_t(G)];
    out[i].tokens = comps[i].tokens;
    out[i].text = completion_text(r, comps[i].tokens);
    rep.completion_tokens += int64_t(comps[i].tokens.size());
    rep.max_len = std::max<int64_t>(rep.max_len, int64_t(comps[i].tokens.size()));
  }
  rep.prompt_tokens = gs.prompt_tokens;
  return out;
}

// The whole step's scores from every rank's part, in global sample order (the ranks' slices
// are contiguous and in rank order). Doubles travel bit for bit as 8-byte elements.
RewardScores gather_scores(Run& r, const RewardScores& mine) {
  dist::Topology& t = r.ranks->topo();
  const int D = t.layout().dp;
  const int64_t G = r.o.group_size;
  std::vector<int64_t> counts(static_cast<size_t>(D));
  for (int k = 0; k < D; ++k)
    counts[size_t(k)] = train::dp_slice(r.o.prompts_per_step, D, k).second * G;
  const auto gather = [&](const std::vector<double>& v) {
    DS_CHECK(int64_t(v.size()) == counts[size_t(t.dp_rank())],
             "gather_scores: {} scores, {} samples", v.size(), counts[size_t(t.dp_rank())]);
    std::vector<double> all(size_t(r.o.prompts_per_step * G));
    t.dp().all_gather_v(v.data(), all.data(), counts, DType::i64);
    return all;
  };
  RewardScores all;
  all.total = gather(mine.total);
  for (const auto& part : mine.parts) all.parts.push_back(gather(part));
  if (!mine.correct.empty())
    for (double c : gather(std::vector<double>(mine.correct.begin(), mine.correct.end())))
      all.correct.push_back(uint8_t(c));
  return all;
}

// Rewards of this rank's samples (the first is sample p0*G of the step); the advantages and
// the step's statistics from the whole step's scores.
void score(Run& r, std::vector<Sample>& samples, int64_t p0, StepReport& rep) {
  std::vector<RewardItem> items;
  std::vector<std::string> golds;
  for (const Sample& s : samples) {
    const RlPrompt& p = r.prompts[size_t(s.prompt)];
    items.push_back({p.prompt, s.text, p.reference.value_or("")});
    golds.push_back(r.golds[size_t(s.prompt)]);
  }
  RewardScores sc;
  if (!r.distributed()) {
    sc = r.rewards->score(items, golds);
  } else {
    // Each rank runs its own reward command. A stop request that ends one rank's command
    // (Interrupted) abandons the step on every rank, once each rank's command has returned:
    // the ranks then stop after the same finished step and save together (rl_run.cpp).
    int64_t stop = 0;
    try {
      sc = r.rewards->score(items, golds);
    } catch (const Interrupted& e) {
      stop = e.signal_number();
    }
    r.ranks->topo().world().all_reduce_max(&stop, 1, DType::i64);
    if (stop != 0) throw Interrupted(int(stop));
    sc = gather_scores(r, sc);
  }
  const double n = double(sc.total.size());
  std::vector<double> total(sc.total);
  for (size_t i = 0; i < sc.total.size(); ++i) rep.reward_mean += sc.total[i] / n;
  // in units of the largest |reward|: squares of 1e200 overflow, and so does v - mean near
  // the largest doubles
  double scale = 0;
  for (double v : sc.total) scale = std::max(scale, std::abs(v));
  if (scale > 0) {
    const double mean = rep.reward_mean / scale;
    for (double v : sc.total) {
      const double d = v / scale - mean;
      rep.reward_std += d * d / n;
    }
    rep.reward_std = scale * std::sqrt(rep.reward_std);
  }
  for (const auto& part : sc.parts) {
    double m = 0;
    for (double v : part) m += v / n;
    rep.term_means.push_back(m);
  }
  if (!sc.correct.empty()) {
    rep.accuracy = 0;
    for (uint8_t c : sc.correct) rep.accuracy += double(c) / n;
  }
  const auto adv = group_advantages(total, r.o.group_size, r.o.grpo.adv_eps);
  int64_t flat = 0;
  const size_t first = size_t(p0 * r.o.group_size);
  for (size_t i = 0; i < samples.size(); ++i) {
    samples[i].reward = sc.total[first + i];
    samples[i].advantage = adv[first + i];
  }
  for (size_t g = 0; g < adv.size(); g += size_t(r.o.group_size)) {
    bool all_zero = true;
    for (size_t i = g; i < g + size_t(r.o.group_size); ++i) all_zero = all_zero && adv[i] == 0.0;
    flat += all_zero;
  }
  rep.no_signal_groups = double(flat) / double(r.o.prompts_per_step);
}

// The rollout counts over every rank: tokens summed, the longest completion.
void sum_counts(Run& r, StepReport& rep) {
  dist::Comm& w = r.ranks->topo().world();
  std::vector<int64_t> c{rep.prompt_tokens, rep.completion_tokens};
  w.all_reduce_sum(c);
  rep.prompt_tokens = c[0];
  rep.completion_tokens = c[1];
  w.all_reduce_max(&rep.max_len, 1, DType::i64);
}

// The timings of the slowest rank (the step waits for it).
void slowest_timings(Run& r, StepReport& rep) {
  dist::Comm& w = r.ranks->topo().world();
  double* t[] = {&rep.rollout_s, &rep.reward_s, &rep.reference_s, &rep.update_s};
  const size_t k = std::size(t);
  std::vector<double> mine(k), all(k * size_t(w.size()));
  for (size_t i = 0; i < k; ++i) mine[i] = *t[i];
  w.all_gather(mine.data(), all.data(), int64_t(k), DType::i64);   // doubles, bit for bit
  for (size_t i = 0; i < k; ++i)
    for (int q = 0; q < w.size(); ++q) *t[i] = std::max(*t[i], all[size_t(q) * k + i]);
}

// Completions of the whole step (all ranks): the loss weights 1 / (n |o_i|) use it.
double step_samples(const Run& r) { return double(r.o.prompts_per_step * r.o.group_size); }

MicroBatch make_micro(const Run& r, const std::vector<Sample>& samples, size_t first, size_t rows) {
  MicroBatch m;
  m.first = first;
  m.rows = rows;
  int64_t len = 2;
  for (size_t i = first; i < first + rows; ++i)
    len = std::max<int64_t>(len, int64_t(r.prompt_ids[size_t(samples[i].prompt)].size() +
                                         samples[i].tokens.size()));
  const int64_t B = int64_t(rows), T = len - 1;
  m.batch.tokens = Tensor::zeros({B, T + 1}, DType::i32);
  m.batch.loss_mask = Tensor::zeros({B, T});
  const double n = step_samples(r);
  for (int64_t b = 0; b < B; ++b) {
    const Sample& s = samples[first + size_t(b)];
    const auto& p = r.prompt_ids[size_t(s.prompt)];
    int32_t* row = m.batch.tokens.i32() + b * (T + 1);
    std::copy(p.begin(), p.end(), row);
    std::copy(s.tokens.begin(), s.tokens.end(), row + p.size());
    const int64_t start = int64_t(p.size()) - 1, L = int64_t(s.tokens.size());   // y[start] = o_0
    std::fill_n(m.batch.loss_mask.f32() + b * T + start, L, 1.0f);
    m.batch.lengths.push_back(int32_t(int64_t(p.size()) + L));   // padding: no balance loss
    GrpoSeq q;
    q.offset = b * T + start;
    q.length = L;
    q.advantage = s.advantage;
    q.weight = 1.0 / (n * double(L));
    m.seqs.push_back(q);
  }
  return m;
}

}  // namespace

std::vector<MicroBatch> make_micros(const Run& r, const std::vector<Sample>& samples) {
  const size_t n = samples.size();
  const size_t mb = r.o.micro_batch_size > 0 ? size_t(r.o.micro_batch_size) : n;
  std::vector<MicroBatch> out;
  for (size_t i = 0; i < n; i += mb) out.push_back(make_micro(r, samples, i, std::min(mb, n - i)));
  return out;
}

void reference_logprobs(Run& r, std::vector<Sample>& samples, std::vector<MicroBatch>& micros) {
  for (MicroBatch& m : micros) {
    const model::TokenScores sc = r.ref->model->token_scores(r.ctx, m.batch);
    for (size_t b = 0; b < m.rows; ++b) {
      const GrpoSeq& q = m.seqs[b];
      auto first = sc.logp.begin() + q.offset;
      samples[m.first + b].logp_ref.assign(first, first + q.length);
    }
  }
}

// One optimiser step over all micro-batches (update u of the step; rl_internal.hpp).
void update(Run& r, std::vector<Sample>& samples, std::vector<MicroBatch>& micros, int64_t u,
            StepReport& rep, GrpoStats& all) {
  r.policy.store->zero_grads();
  train::StepAccumulator acc;
  GrpoStats gs;
  double entropy_sum = 0;
  const double n = step_samples(r);
  for (MicroBatch& m : micros) {
    for (size_t b = 0; b < m.rows; ++b) {
      Sample& s = samples[m.first + b];
      m.seqs[b].logp_old = u == 0 ? nullptr : s.logp_old.data();
      m.seqs[b].logp_ref = r.o.grpo.beta > 0 ? s.logp_ref.data() : nullptr;
    }
    const model::PolicyLossFn fn = [&](const model::TokenScores& sc, std::vector<float>& d) {
      if (u == 0)
        for (size_t b = 0; b < m.rows; ++b) {
          const GrpoSeq& q = m.seqs[b];
          samples[m.first + b].logp_old.assign(sc.logp.begin() + q.offset,
                                               sc.logp.begin() + q.offset + q.length);
          for (int64_t t = 0; t < q.length; ++t) entropy_sum += sc.entropy[size_t(q.offset + t)];
        }
      return grpo_loss(r.o.grpo, m.seqs, sc.logp, d, gs);
    };
    // the balance loss is a mean over sequences: micro-batch m weighs rows / n of it
    const float alpha = float(r.o.balance_alpha * double(m.rows) / n);
    acc.add(r.policy.model->forward_backward_policy(r.ctx, m.batch, fn, alpha, 1.0f), 1.0);
  }
  if (r.distributed()) {   // the step's sums over every rank's completions
    r.ranks->step().reduce(acc);
    std::vector<double> v{gs.loss, gs.kl, gs.tokens, gs.clipped, entropy_sum};
    r.ranks->topo().world().all_reduce_sum(v);
    gs.loss = v[0];
    gs.kl = v[1];
    gs.tokens = v[2];
    gs.clipped = v[3];
    entropy_sum = v[4];
  }
  train::UpdateResult ur;
  if (r.ema) r.ema->wait();   // its thread reads the weights the update writes
  try {   // gamma 0: the router biases stay as the checkpoint has them
    ur = r.distributed()
             ? train::apply_update(r.ctx, r.ranks->step(), r.ranks->opt(), r.st, acc, r.o.lr, 0.0,
                                   false, r.o.out)
             : train::apply_update(r.ctx, *r.policy.model, *r.opt, r.st, acc, r.o.lr, 0.0, false,
                                   r.o.out);
  } catch (const NumericsError&) {
    DS_THROW(NumericsError, "step {} update {}: non-finite loss ({}) or gradient; stopped without "
             "saving (checkpoints already in {} are kept)", r.st.step, u + 1, acc.loss, r.o.out);
  }
  if (r.ema && ur.applied) r.ema->start_update(r.st.optimizer_steps - 1);
  all.add(gs);
  rep.grad_norm += ur.grads.norm / double(r.o.updates);
  if (u == 0) {
    rep.loss = acc.loss;
    rep.loss_pg = acc.loss_main;
    rep.loss_balance = acc.loss_balance;
    rep.kl = gs.kl;
    rep.entropy = entropy_sum / std::max(1.0, gs.tokens);
  }
}

StepReport Run::step() {
  StepReport rep;
  const auto all_picks = next_prompts();
  const auto [p0, count] = my_prompts(*this);
  const std::vector<int64_t> picks(all_picks.begin() + p0, all_picks.begin() + p0 + count);
  auto t0 = Clock::now();
  std::vector<Sample> samples = rollout(*this, picks, p0, rep);
  rep.rollout_s = since(t0);
  if (distributed()) sum_counts(*this, rep);
  t0 = Clock::now();
  score(*this, samples, p0, rep);
  rep.reward_s = since(t0);
  std::vector<MicroBatch> micros = make_micros(*this, samples);
  t0 = Clock::now();
  if (o.grpo.beta > 0) reference_logprobs(*this, samples, micros);
  rep.reference_s = since(t0);
  t0 = Clock::now();
  st.step++;
  st.tokens_seen += rep.completion_tokens;
  GrpoStats all;
  for (int64_t u = 0; u < o.updates; ++u) update(*this, samples, micros, u, rep, all);
  rep.update_s = since(t0);
  if (distributed()) slowest_timings(*this, rep);
  rep.clip_fraction = all.tokens > 0 ? all.clipped / all.tokens : 0.0;
  rollout_s += rep.rollout_s;
  update_s += rep.update_s;
  rollout_tokens += rep.completion_tokens;
  steps_run++;
  return rep;
}

}  // namespace ds::rl::detail
