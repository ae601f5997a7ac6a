# PyTorch reference of ds-rl's GRPO loss (float64, autograd): a fixed batch of completions of
# random prompts under random F32 weights (tests/model/torch_ref: the independent DeepSeek-V3
# reference, main model only: GRPO does not run the MTP chain), per-token log-probs and
# entropies, pi_old = logp + noise (rho != 1, some tokens clipped on both sides), pi_ref = logp
# + noise (beta > 0), group-normalised advantages (sample std + eps; one group with equal
# rewards gets exact zeros), the token-level clipped objective with the k3 KL, averaged over
# each completion's tokens then over completions, plus the main MoE layers' balance loss; the
# loss and every parameter gradient go into one safetensors file for tests/rl/test_grpo_torch.cpp.
# reference: spec §5.3; include/ds/rl/grpo.hpp (the formulas); docs/model.md "GRPO objective".
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "model", "torch_ref"))
import deepseek_v3_ref as ref  # noqa: E402
import make_case  # noqa: E402
import st_io  # noqa: E402

LAYOUT = """file layout: tokens I32 (R,T+1); loss_mask F32 (R,T) (1 on completion targets);
rewards F32 (R) (groups of --group consecutive rows); logp_old, logp_ref F32 (R,T) (0 off the
mask); <HF name> F32 weights, <bias name> F32 router biases; out.logp, out.entropy F32 (R,T);
out.advantages F32 (R); out.loss, out.loss_pg, out.loss_balance, out.kl, out.clipped (1);
grad.<HF name> F32 (zeros for the MTP parameters); metadata: config, seed_used, group,
clip_eps, beta, adv_eps, alpha."""


def main_forward(cfg, P, buf, x, alpha):
    """Main model only: logits (R, T, V), balance loss of the main MoE layers, routing margin."""
    R, T = x.shape
    stats = {"balance": {}, "counts": {}, "margin": {}, "alpha": alpha}
    pos = torch.arange(T)[None].expand(R, T)
    h = P["model.embed_tokens.weight"][x]
    for l in range(cfg.n_layers):
        h = ref.block(cfg, P, buf, l, h, pos, None, stats)
    g = ref.rms_norm(h, P["model.norm.weight"], cfg.norm_eps)
    logits = ref.linear(g, P["lm_head.weight"])
    bal = sum(stats["balance"].values()) if stats["balance"] else logits.new_zeros(())
    margin = min(stats["margin"].values()) if stats["margin"] else float("inf")
    return logits, bal, margin


def advantages(rewards, G, eps):
    r = rewards.view(-1, G)
    a = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=True, keepdim=True) + eps)
    flat = (r.max(1).values == r.min(1).values)[:, None]
    return torch.where(flat, torch.zeros_like(a), a).reshape(-1)


def make_batch(cfg, args, gen):
    R, T = args.rows, args.seq
    tokens = torch.randint(0, cfg.vocab_size, (R, T + 1), generator=gen)
    mask = torch.zeros(R, T, dtype=torch.float64)
    for r in range(R):
        p = int(torch.randint(2, 5, (1,), generator=gen))              # prompt tokens
        n = int(torch.randint(1, T + 2 - p, (1,), generator=gen))      # completion tokens
        tokens[r, p + n:] = 0                                           # padding
        mask[r, p - 1:p - 1 + n] = 1.0
    # rewards exactly representable in F32 (multiples of 1/8); the last group all equal
    rewards = torch.randint(0, 9, (R,), generator=gen).double() / 8
    rewards[R - args.group:] = 0.5
    return tokens, mask, rewards


def noisy(lp, mask, gen, lo, hi, eps=None):
    """lp + uniform noise on the mask, rounded to F32; with eps, rho = exp(-noise) keeps
    at least 0.01 away from the clip boundaries 1 -/+ eps."""
    d = lo + (hi - lo) * torch.rand(lp.shape, generator=gen, dtype=torch.float64)
    if eps is not None:
        for _ in range(100):
            rho = torch.exp(-d)
            bad = ((rho - (1 + eps)).abs() < 0.01) | ((rho - (1 - eps)).abs() < 0.01)
            if not bad.any():
                break
            d = torch.where(bad, lo + (hi - lo) * torch.rand(lp.shape, generator=gen,
                                                                dtype=torch.float64), d)
    return ((lp + d) * mask).float().double()


def run(cfg, args, seed):
    gen = torch.Generator().manual_seed(seed)
    W, Bf = make_case.random_weights(cfg, gen, args.std, args.bias_std)
    tokens, mask, rewards = make_batch(cfg, args, gen)
    P = {n: t.double().requires_grad_(True) for n, t in W.items()}
    buf = {n: t.double() for n, t in Bf.items()}
    x, y = tokens[:, :-1], tokens[:, 1:]
    logits, bal, margin = main_forward(cfg, P, buf, x, args.alpha)
    logprobs = torch.log_softmax(logits, dim=-1)
    lp = logprobs.gather(-1, y[..., None])[..., 0] * mask                       # (R, T)
    entropy = -(logprobs.exp() * logprobs).sum(-1) * mask
    old = noisy(lp.detach(), mask, gen, -0.5, 0.5, args.clip_eps)
    lref = noisy(lp.detach(), mask, gen, -0.8, 0.8)
    A = advantages(rewards, args.group, args.adv_eps)[:, None]                 # (R, 1)
    rho = torch.exp(lp - old)
    surr = torch.min(rho * A, torch.clamp(rho, 1 - args.clip_eps, 1 + args.clip_eps) * A)
    kl = torch.exp(lref - lp) - (lref - lp) - 1
    per_tok = (-surr + args.beta * kl) * mask
    L = mask.sum(1)
    loss_pg = (per_tok.sum(1) / L).mean()
    loss = loss_pg + bal
    loss.backward()
    clipped = (((rho > 1 + args.clip_eps) & (A > 0)) | ((rho < 1 - args.clip_eps) & (A < 0))) & (mask > 0)
    res = {"W": W, "B": Bf, "tokens": tokens, "mask": mask, "rewards": rewards, "old": old,
           "ref": lref, "logp": lp, "entropy": entropy, "adv": A[:, 0], "loss": loss,
           "loss_pg": loss_pg, "bal": bal, "kl": ((kl * mask).sum(1) / L).mean(),
           "clipped": clipped.sum(), "grads": {n: p.grad for n, p in P.items()}, "margin": margin}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, epilog=LAYOUT,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="HF config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=6, help="completions (a multiple of --group)")
    ap.add_argument("--group", type=int, default=2, help="G")
    ap.add_argument("--seq", type=int, default=12, help="T (row length - 1)")
    ap.add_argument("--clip-eps", type=float, default=0.2)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--adv-eps", type=float, default=1e-4)
    ap.add_argument("--alpha", type=float, default=1e-2, help="balance loss weight")
    ap.add_argument("--std", type=float, default=0.1)
    ap.add_argument("--bias-std", type=float, default=0.05)
    ap.add_argument("--min-margin", type=float, default=1e-4)
    args = ap.parse_args()
    if args.rows % args.group:
        sys.exit("grpo_ref: --rows must be a multiple of --group")
    with open(args.config) as f:
        hf = json.load(f)
    cfg = ref.Config(hf)
    for attempt in range(50):
        seed = args.seed + 1000003 * attempt
        r = run(cfg, args, seed)
        nclip = int(r["clipped"])
        if r["margin"] >= args.min_margin and nclip >= 2:
            break
    else:
        sys.exit("grpo_ref: no seed with routing margin >= %g and clipped tokens" % args.min_margin)
    f32 = lambda t: t.detach().to(torch.float32)  # noqa: E731
    T = {"tokens": r["tokens"].to(torch.int32), "loss_mask": f32(r["mask"]),
         "rewards": f32(r["rewards"]), "logp_old": f32(r["old"]), "logp_ref": f32(r["ref"])}
    T.update(r["W"])
    T.update(r["B"])
    T["out.logp"] = f32(r["logp"])
    T["out.entropy"] = f32(r["entropy"])
    T["out.advantages"] = f32(r["adv"])
    for k, v in (("loss", "loss"), ("loss_pg", "loss_pg"), ("loss_balance", "bal"), ("kl", "kl"),
                 ("clipped", "clipped")):
        T["out." + k] = f32(r[v]).reshape(1)
    for n, g in r["grads"].items():
        T["grad." + n] = f32(g) if g is not None else torch.zeros_like(r["W"][n])
    meta = {"config": json.dumps(hf), "seed_used": seed, "group": args.group,
            "clip_eps": repr(args.clip_eps), "beta": repr(args.beta), "adv_eps": repr(args.adv_eps),
            "alpha": repr(args.alpha), "loss": repr(r["loss"].item())}
    st_io.save(args.out, T, meta)
    print("grpo_ref: wrote %s (seed %d, loss %.6f, %d clipped tokens, routing margin %.3g)" %
          (args.out, seed, r["loss"].item(), nclip, r["margin"]))


if __name__ == "__main__":
    main()
