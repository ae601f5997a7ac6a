#!/usr/bin/env python3
# Training throughput: ds-pretrain vs the PyTorch reference (tests/model/torch_ref/
# bench_torch_train.py) on one config.json (the preset at its own vocab, or --vocab tokenizer:
# resized to the generated corpus's 2048-id tokenizer), same batch and length, at 1 and 2
# threads; torch's OpenBLAS capped at the thread count. Prints median tokens/s after warm-up,
# the ratio, ds's GEMM share / GFLOP/s / peak RSS (--profile); with --baseline-bin, another
# build's ds-pretrain alternating with ours (--repeats each) and our speed-up over it (the
# median over the pairs of runs).
# Usage: bench_train.py --bin BUILD/bin [--presets tiny,small] [--threads 1,2] [--steps 8]
#   [--vocab preset|tokenizer] [--torch-python /usr/bin/python3] [--json out.json]
#   [--baseline-bin OTHER/bin] [--repeats N]
import argparse
import glob
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TORCH_BENCH = os.path.join(ROOT, "tests", "model", "torch_ref", "bench_torch_train.py")
SHAPES = {"tiny": (8, 128), "small": (4, 256)}   # preset -> (batch, seq_len)
VOCAB = {"tiny": 4096, "small": 32000}           # the presets' own vocab_size


def sh(cmd, env=None):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, text=True)
    if p.returncode != 0:
        sys.exit("FAIL %s -> %d\n%s" % (" ".join(map(str, cmd)), p.returncode, p.stderr[-4000:]))
    return p.stdout, p.stderr


def make_data(work, tok_bin):
    # A generated corpus (seeded grammar), tokenizer of 2048 ids, shards.
    rng = random.Random(5)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 400))) + "."
            for _ in range(3000)]
    text = os.path.join(work, "corpus.txt")
    with open(text, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    sh([tok_bin, "--log-level", "warn", "train", "--vocab-size", 2048, "--out",
        os.path.join(work, "tok"), "--doc-split", "blank-line", text])
    tok = os.path.join(work, "tok", "tokenizer.json")
    sh([tok_bin, "--log-level", "warn", "encode", "--tokenizer", tok, "--out",
        os.path.join(work, "data"), "--doc-split", "blank-line", "--force", text])
    return tok, os.path.join(work, "data")


def preset_config(bin_dir, preset, tok, data, work, vocab):
    # config.json of the preset as ds-pretrain writes it, vocab_size set to `vocab`
    out = os.path.join(work, "cfg-" + preset)
    sh([os.path.join(bin_dir, "ds-pretrain"), "--log-level", "warn", "--preset", preset,
        "--tokenizer", tok, "--data", data, "--out", out, "--steps", 1, "--batch-size", 1,
        "--seq-len", 16, "--val-sequences", 0])
    cfg = json.load(open(glob.glob(os.path.join(out, "step-*", "config.json"))[0]))
    if vocab:
        cfg["vocab_size"] = vocab
    path = os.path.join(work, "config-%s.json" % preset)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def run_ds(bin_dir, config, preset, B, T, threads, steps, warmup, tok, data, work, profile):
    out = tempfile.mkdtemp(prefix="run-%s-%d-" % (preset, threads), dir=work)   # one per run
    metrics = os.path.join(out, "metrics.jsonl")
    cmd = [os.path.join(bin_dir, "ds-pretrain"), "--log-level", "warn", "--model-config", config,
           "--tokenizer", tok, "--data", data, "--out", out, "--steps", warmup + steps,
           "--batch-size", B, "--seq-len", T, "--threads", threads, "--lr", "1e-3",
           "--warmup-steps", 1, "--batch-ramp-end", 0, "--metrics", metrics, "--val-sequences", 0, "--keep-last", 1]
    if profile:
        cmd.append("--profile")
    stdout, _ = sh(cmd)
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    tps = [r["tokens_per_s"] for r in rows[warmup:]]
    prof = None
    for line in stdout.splitlines():
        if line.startswith("{") and '"profile"' in line:
            prof = json.loads(line)["profile"]
    return statistics.median(tps), prof


def run_torch(python, config, B, T, threads, steps, warmup, extra_env):
    env = dict(os.environ)
    env.update(extra_env)
    stdout, _ = sh([python, TORCH_BENCH, "--config", config, "--batch", B, "--seq", T,
                    "--threads", threads, "--steps", steps, "--warmup", warmup], env=env)
    m = re.search(r"([0-9.]+) tokens/s", stdout)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with ds-pretrain and ds-tokenize")
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--torch-python", default="/usr/bin/python3")
    ap.add_argument("--no-profile", action="store_true", help="ds-pretrain without --profile")
    ap.add_argument("--vocab", choices=["preset", "tokenizer"], default="preset")
    ap.add_argument("--no-uncapped", action="store_true",
                    help="skip the 1-thread torch run with OpenBLAS on all cores")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--baseline-bin", help="another build's bin directory (say, of the parent "
                    "commit): its ds-pretrain runs alternately with ours, same data and config, "
                    "and the table gains its tokens/s and our speed-up over it")
    ap.add_argument("--repeats", type=int, default=1,
                    help="ds runs per case (alternating with the baseline's); medians reported")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ds-bench-train-") as work:
        tok, data = make_data(work, os.path.join(a.bin, "ds-tokenize"))
        for preset in a.presets.split(","):
            B, T = SHAPES[preset]
            config = preset_config(a.bin, preset, tok, data, work,
                                   VOCAB[preset] if a.vocab == "preset" else None)
            V = json.load(open(config))["vocab_size"]
            for nt in [int(x) for x in a.threads.split(",")]:
                ours_runs, base_runs, prof = [], [], None
                for _ in range(max(1, a.repeats)):
                    if a.baseline_bin:
                        base_runs.append(run_ds(a.baseline_bin, config, preset, B, T, nt, a.steps,
                                                a.warmup, tok, data, work, False)[0])
                    tps, p = run_ds(a.bin, config, preset, B, T, nt, a.steps, a.warmup, tok,
                                    data, work, not a.no_profile)
                    ours_runs.append(tps)
                    prof = prof or p
                ours = statistics.median(ours_runs)
                # torch.set_num_threads() does not reach OpenBLAS, whose own pthreads use every
                # core unless OPENBLAS_NUM_THREADS says otherwise: cap it at the thread count
                # (torch's best of the settings below is reported; "uncapped" for reference).
                variants = {"blas%d" % nt: {"OPENBLAS_NUM_THREADS": str(nt)}}
                if nt > 1:
                    variants["blas%d_passive" % nt] = {"OPENBLAS_NUM_THREADS": str(nt),
                                                       "OMP_WAIT_POLICY": "passive"}
                    variants["blas1"] = {"OPENBLAS_NUM_THREADS": "1"}
                th = {k: run_torch(a.torch_python, config, B, T, nt, a.steps, a.warmup, e)
                      for k, e in variants.items()}
                best_k = max(th, key=th.get)
                best = th[best_k]
                unc = run_torch(a.torch_python, config, B, T, nt, a.steps, a.warmup,
                                {}) if nt == 1 and not a.no_uncapped else None
                r = {"preset": preset, "vocab": V, "B": B, "T": T, "threads": nt, "ds_tok_s": ours,
                     "torch_tok_s": best, "torch_setting": best_k, "torch_variants": th,
                     "torch_uncapped_blas": unc, "ratio": ours / best, "ds_runs": ours_runs}
                if base_runs:
                    base = statistics.median(base_runs)
                    # each run against the baseline run just before it: the machine's load
                    # drifts less within a pair than across the whole case
                    pairs = [o / b for o, b in zip(ours_runs, base_runs)]
                    r.update({"baseline_tok_s": base, "baseline_runs": base_runs,
                              "speedup_vs_baseline": statistics.median(pairs)})
                if prof:
                    r.update({k: prof.get(k) for k in
                              ("gemm_share", "gemm_gflops", "peak_rss_mb", "op_share")})
                results.append(r)
                print("%-6s V=%d B=%d T=%d threads=%d: ds %.0f tok/s, torch %.0f tok/s (%s; all "
                      "settings %s; uncapped OpenBLAS %s) -> %.2fx"
                      % (preset, V, B, T, nt, ours, best, best_k, th, unc, ours / best),
                      file=sys.stderr, flush=True)
                if base_runs:
                    print("  baseline %s: %s tok/s, ours %s -> %.2fx"
                          % (a.baseline_bin, base_runs, ours_runs, r["speedup_vs_baseline"]),
                          file=sys.stderr, flush=True)
    print("\nOPENBLAS_CORETYPE=%s (ds and torch share this OpenBLAS)"
          % os.environ.get("OPENBLAS_CORETYPE", "(auto)"))
    print("\n| preset | vocab | B x T | threads | ds tok/s | torch tok/s | ratio | GEMM share | "
          "GEMM GFLOP/s | peak RSS MB | torch, OpenBLAS uncapped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        g = r.get("gemm_share")
        print("| %s | %d | %dx%d | %d | %.0f | %.0f | %.2fx | %s | %s | %s | %s |" % (
            r["preset"], r["vocab"], r["B"], r["T"], r["threads"], r["ds_tok_s"], r["torch_tok_s"],
            r["ratio"],
            "%.0f%%" % (100 * g) if g is not None else "-",
            "%.1f" % r["gemm_gflops"] if r.get("gemm_gflops") else "-",
            "%.0f" % r["peak_rss_mb"] if r.get("peak_rss_mb") else "-",
            "%.0f" % r["torch_uncapped_blas"] if r.get("torch_uncapped_blas") else "-"))
    if a.baseline_bin:
        print("\n| preset | threads | baseline ds tok/s | ds tok/s | speed-up (median of pairs) "
              "| runs each |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print("| %s | %d | %.0f | %.0f | %.2fx | %d |" % (
                r["preset"], r["threads"], r["baseline_tok_s"], r["ds_tok_s"],
                r["speedup_vs_baseline"], len(r["ds_runs"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
