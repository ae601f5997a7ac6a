# Generates one cross-check case for the C++ model: random F32 weights and tokens, then with the
# PyTorch reference (deepseek_v3_ref.py, float64): (a) forward + autograd backward -> logits,
# loss terms, every parameter gradient, expert counts; (b) an N-step AdamW trajectory (decay on
# >= 2-D tensors, global-norm clipping, router bias update after every step) -> per-step loss,
# final weights and biases. Everything goes into one safetensors file (layout: --help epilog).
# Cases whose routing comes within --min-margin of a tie anywhere are re-drawn (next sub-seed),
# so that an F32 implementation makes the same discrete choices. reference: docs/model.md.
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_ref as ref  # noqa: E402
import st_io  # noqa: E402

LAYOUT = """file layout: __metadata__ {config (HF JSON), seed, seed_used, batch, seq, steps, lr,
beta1, beta2, eps, weight_decay, clip, alpha, mtp_lambda, gamma, min_margin, dtype};
tokens I32 (B,T+1); <HF name> F32 initial weights; <bias name> F32 initial router biases;
out.logits (B,T,V), out.mtp_logits.<k> (B,T-k,V), out.loss, out.loss_main, out.loss_mtp,
out.loss_mtp.<k> (unscaled per-depth CE sum / (B*T)), out.loss_balance, out.loss_balance.<layer>;
grad.<HF name> F32; counts.<layer> I32 (E); traj.tokens I32 (steps,B,T+1); traj.loss (steps)
(loss before step s's update); traj.grad_norm (steps) (pre-clip); final.<HF name> F32;
final_bias.<layer> F32; traj.counts.<layer> I32 (steps,E); with --packing also positions I32,
segments I32, loss_mask F32 (B,T) and lengths I32 (B), used by every step."""

# Dimensions "tiny" as the lead defines it (include/ds/model/config.hpp preset), HF keys.
PRESETS = {
    "tiny": {
        "vocab_size": 4096, "hidden_size": 128, "intermediate_size": 384, "moe_intermediate_size": 64,
        "num_hidden_layers": 3, "first_k_dense_replace": 1, "num_attention_heads": 4,
        "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 4,
        "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "scoring_func": "sigmoid", "topk_method": "noaux_tc", "q_lora_rank": 64, "kv_lora_rank": 32,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "rope_theta": 10000.0,
        "rope_scaling": None, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
        "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
    },
    # lib/model/config.cpp preset("1b") (the GPU benchmark model: ~1.0B total, ~0.2B activated),
    # every key ds's to_hf_json writes; the rest are ModelArgs defaults (plain RoPE).
    "1b": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 4096,
        "moe_intermediate_size": 384, "num_hidden_layers": 12, "first_k_dense_replace": 1,
        "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_routed_experts": 64, "n_shared_experts": 1, "num_experts_per_tok": 6, "n_group": 8,
        "topk_group": 4, "scoring_func": "sigmoid", "routed_scaling_factor": 2.5,
        "norm_topk_prob": True, "topk_method": "noaux_tc", "q_lora_rank": 384, "kv_lora_rank": 256,
        "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 4096, "num_nextn_predict_layers": 1,
        "initializer_range": 0.006, "bos_token_id": 0, "eos_token_id": 1,
        "tie_word_embeddings": False, "attention_bias": False, "hidden_act": "silu",
        "moe_layer_freq": 1, "rope_scaling": None,
    },
    "micro": {
        "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
        "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2,
        "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2,
        "topk_group": 1, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "scoring_func": "sigmoid", "topk_method": "noaux_tc", "q_lora_rank": 8, "kv_lora_rank": 8,
        "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4,
                         "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
        "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "num_nextn_predict_layers": 2,
        "tie_word_embeddings": False,
    },
}


def load_hf_config(args):
    if args.config:
        with open(args.config) as f:
            hf = json.load(f)
    else:
        hf = dict(PRESETS[args.preset])
    for kv in args.set or []:
        k, v = kv.split("=", 1)
        hf[k] = json.loads(v)
    return hf


def random_weights(cfg, gen, std, bias_std):
    """F32 weights: matrices N(0, std) (embedding N(0, 1)), norm gains 1 + N(0, 0.1),
    router biases N(0, bias_std)."""
    W, Bf = {}, {}
    for name, shape in ref.param_specs(cfg):
        if len(shape) == 1:
            W[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif name == "model.embed_tokens.weight":
            W[name] = torch.randn(shape, generator=gen, dtype=torch.float32)
        else:
            W[name] = std * torch.randn(shape, generator=gen, dtype=torch.float32)
    for name, shape in ref.buffer_specs(cfg):
        Bf[name] = bias_std * torch.randn(shape, generator=gen, dtype=torch.float32)
    return W, Bf


def packing(B, T, gen):
    """SFT-style packing for every step: 2-3 samples per row (segment ids 0, 1, ..), positions
    restarting at each sample, loss mask 0 on each sample's first 1-3 targets ("prompt"); the
    last row ends in 3 padding tokens as ds-sft pads (a segment of its own, positions from 0,
    no target in it or predicting it), so lengths = (T+1, .., T-2): the balance losses skip it."""
    seg = torch.zeros(B, T, dtype=torch.int64)
    pos = torch.zeros(B, T, dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.float64)
    for b in range(B):
        n = int(torch.randint(2, 4, (1,), generator=gen))
        cuts = sorted(torch.randperm(T - 2, generator=gen)[:n - 1].add(1).tolist())
        starts = [0] + cuts
        for j, st in enumerate(starts):
            en = starts[j + 1] if j + 1 < len(starts) else T
            seg[b, st:en] = j
            pos[b, st:en] = torch.arange(en - st)
            prompt = int(torch.randint(1, 4, (1,), generator=gen))
            mask[b, st:min(en, st + prompt)] = 0.0
    lengths = torch.full((B,), T + 1, dtype=torch.int64)
    L = T - 2                                  # tokens L..T of the last row are padding
    lengths[B - 1] = L
    seg[B - 1, L:] = int(seg[B - 1].max()) + 1
    pos[B - 1, L:] = torch.arange(T - L)
    mask[B - 1, L - 1:] = 0.0
    return {"positions": pos, "segments": seg, "loss_mask": mask, "lengths": lengths}


def to_compute(W, dtype, grad):
    return {n: t.to(dtype).clone().requires_grad_(grad) for n, t in W.items()}


def min_margin(out):
    return min(out["margin"].values()) if out["margin"] else float("inf")


def run_case(cfg, args, seed):
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(seed)
    W, Bf = random_weights(cfg, gen, args.std, args.bias_std)
    B, T = args.batch, args.seq
    traj_tokens = torch.randint(0, cfg.vocab_size, (args.traj_batches, B, T + 1), generator=gen)
    traj_tokens = torch.stack([traj_tokens[s % args.traj_batches] for s in range(args.steps)])
    tokens = traj_tokens[0]
    kw = dict(alpha=args.alpha, mtp_lambda=args.mtp_lambda)
    res = {"W": W, "B": Bf, "tokens": tokens, "traj_tokens": traj_tokens}
    if args.packing:
        kw.update(packing(B, T, gen))
        res["packing"] = {k: kw[k] for k in ("positions", "segments", "loss_mask", "lengths")}

    # (a) one forward + backward
    P = to_compute(W, dtype, True)
    buf = {n: t.to(dtype) for n, t in Bf.items()}
    out = ref.forward(cfg, P, buf, tokens, **kw)
    out["loss"].backward()
    res["out"], res["grads"] = out, {n: p.grad for n, p in P.items()}
    margin = min_margin(out)

    # (b) trajectory
    P = to_compute(W, dtype, True)
    buf = {n: t.to(dtype) for n, t in Bf.items()}
    opt = ref.make_optimizer(P, args.lr, (args.beta1, args.beta2), args.eps, args.weight_decay)
    losses, norms, tcounts = [], [], {l: [] for l in cfg.moe_layers()}
    for s in range(args.steps):
        opt.zero_grad(set_to_none=True)
        o = ref.forward(cfg, P, buf, traj_tokens[s], **kw)
        o["loss"].backward()
        margin = min(margin, min_margin(o))
        losses.append(o["loss"].item())
        norms.append(torch.nn.utils.clip_grad_norm_(list(P.values()), args.clip).item())
        opt.step()
        ref.update_router_bias(cfg, buf, o["counts"], args.gamma)
        for l, c in o["counts"].items():
            tcounts[l].append(c)
    res.update(traj_loss=losses, traj_norm=norms, final=P, final_bias=buf, margin=margin,
               traj_counts={l: torch.stack(v) for l, v in tcounts.items()})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, epilog=LAYOUT,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="HF config.json (else --preset)")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--set", action="append", help="override an HF key: key=<JSON value>")
    ap.add_argument("--out", required=True, help="output .safetensors path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--traj-batches", type=int, default=2, help="distinct batches, cycled")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=1e-2, help="balance loss weight")
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--gamma", type=float, default=1e-2, help="router bias update speed")
    ap.add_argument("--std", type=float, default=0.1, help="std of the random matrices")
    ap.add_argument("--bias-std", type=float, default=0.05, help="std of the router biases")
    ap.add_argument("--min-margin", type=float, default=2e-5,
                    help="re-draw the case while a routing decision is closer than this to a tie")
    ap.add_argument("--max-tries", type=int, default=50)
    ap.add_argument("--packing", action="store_true",
                    help="SFT packing: positions, segments, loss_mask (same for every step)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf = load_hf_config(args)
    cfg = ref.Config(hf)
    t0 = time.time()
    for attempt in range(args.max_tries):
        seed = args.seed + 1000003 * attempt
        r = run_case(cfg, args, seed)
        if r["margin"] >= args.min_margin:
            break
        print("make_case: seed %d has routing margin %.3g < %.3g, re-drawing" %
              (seed, r["margin"], args.min_margin), file=sys.stderr)
    else:
        sys.exit("make_case: no seed with routing margin >= %g in %d tries" % (args.min_margin, args.max_tries))

    f32 = lambda t: t.detach().to(torch.float32)  # noqa: E731
    out = r["out"]
    T = {"tokens": r["tokens"].to(torch.int32)}
    T.update(r["W"])
    T.update(r["B"])
    T["out.logits"] = f32(out["logits"])
    for k, lk in enumerate(out["mtp_logits"], 1):
        T["out.mtp_logits.%d" % k] = f32(lk)
    for key in ("loss", "loss_main", "loss_mtp", "loss_balance"):
        T["out." + key] = f32(out[key]).reshape(1)
    for k, lk in enumerate(out["loss_mtp_k"], 1):
        T["out.loss_mtp.%d" % k] = f32(lk).reshape(1)
    for l, v in out["balance"].items():
        T["out.loss_balance.%d" % l] = f32(v).reshape(1)
    for n, g in r["grads"].items():
        T["grad." + n] = f32(g) if g is not None else torch.zeros_like(r["W"][n])
    for l, c in out["counts"].items():
        T["counts.%d" % l] = c.to(torch.int32)
    if "packing" in r:
        T["positions"] = r["packing"]["positions"].to(torch.int32)
        T["segments"] = r["packing"]["segments"].to(torch.int32)
        T["loss_mask"] = r["packing"]["loss_mask"].to(torch.float32)
        T["lengths"] = r["packing"]["lengths"].to(torch.int32)
    T["traj.tokens"] = r["traj_tokens"].to(torch.int32)
    T["traj.loss"] = torch.tensor(r["traj_loss"], dtype=torch.float32)
    T["traj.grad_norm"] = torch.tensor(r["traj_norm"], dtype=torch.float32)
    for n, p in r["final"].items():
        T["final." + n] = f32(p)
    for n, b in r["final_bias"].items():
        layer = n.split(".")[2]
        T["final_bias." + layer] = f32(b)
    for l, c in r["traj_counts"].items():
        T["traj.counts.%d" % l] = c.to(torch.int32)
    meta = {"config": json.dumps(hf), "seed": args.seed, "seed_used": seed, "batch": args.batch,
            "seq": args.seq, "steps": args.steps, "lr": repr(args.lr), "beta1": repr(args.beta1),
            "beta2": repr(args.beta2), "eps": repr(args.eps), "weight_decay": repr(args.weight_decay),
            "clip": repr(args.clip), "alpha": repr(args.alpha), "mtp_lambda": repr(args.mtp_lambda),
            "gamma": repr(args.gamma), "min_margin": repr(r["margin"]), "dtype": args.dtype, "packing": str(int(args.packing)),
            "loss": repr(out["loss"].item()), "traj_loss": json.dumps(r["traj_loss"])}
    st_io.save(args.out, T, meta)
    print("make_case: wrote %s (seed %d, loss %.6f, final loss %.6f, routing margin %.3g, %.1fs)" %
          (args.out, seed, out["loss"].item(), r["traj_loss"][-1], r["margin"], time.time() - t0))


if __name__ == "__main__":
    main()
