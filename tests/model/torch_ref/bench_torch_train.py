# Training-throughput baseline: the PyTorch reference model (deepseek_v3_ref.py) trained in
# float32 on random tokens with AdamW + clipping + router bias update, exactly the step ds's
# pretrain performs, to compare ds's tokens/s against. Prints the median tokens/s of the steps
# after the warm-up. Usage: bench_torch_train.py [--preset tiny | --config config.json]
#   [--batch 8] [--seq 128] [--steps 8] [--warmup 2] [--threads 1]
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_ref as ref  # noqa: E402
import make_case  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--preset", default="tiny", choices=sorted(make_case.PRESETS))
    ap.add_argument("--set", action="append")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ref.Config(make_case.load_hf_config(args))
    gen = torch.Generator().manual_seed(0)
    W, Bf = make_case.random_weights(cfg, gen, 0.02, 0.0)
    P = {n: t.clone().requires_grad_(True) for n, t in W.items()}
    buf = dict(Bf)
    opt = ref.make_optimizer(P, args.lr)
    times, losses = [], []
    ntok = args.batch * args.seq
    for s in range(args.warmup + args.steps):
        tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = ref.forward(cfg, P, buf, tokens, alpha=1e-4, mtp_lambda=0.3)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
        opt.step()
        ref.update_router_bias(cfg, buf, out["counts"], 1e-3)
        dt = time.perf_counter() - t0
        losses.append(out["loss"].item())
        if s >= args.warmup:
            times.append(dt)
    nparams = sum(t.numel() for t in W.values())
    med = statistics.median(times)
    print("torch %s float32 params %d B=%d T=%d threads=%d: median step %.1f ms, %.0f tokens/s "
          "(loss %.3f -> %.3f)" % (torch.__version__, nparams, args.batch, args.seq, args.threads,
                                   med * 1e3, ntok / med, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
