#!/usr/bin/env python3
# Helper of bench/dist/bench_dist.sh.
#   corpus PATH                      writes the generated corpus (as bench/train/bench_train.py)
#   preset-config RUN PRESET OUT     the run's config.json with the preset's own vocab_size
#   report RUNS.jsonl                prints the tables (markdown) of docs/benchmarks.md
#                                    "Distributed (CPU ranks)"
# The report's models:
#   all-to-all bytes per step (uniform routing): every MoE layer that runs (the main MoE layers,
#     plus each MTP depth's MoE while the MTP weight is > 0) sends, for each remote (token,
#     expert) pair, its FP32 row of C floats 4 times (forward dispatch + combine, backward
#     dispatch + combine); a pair is remote with probability (ep-1)/ep:
#     bytes = (n_moe x B x T + n_mtp x B x (T-1)) x K x (ep-1)/ep x 4 x C x 4.
#   pipeline bubble of rank 0: (pp-1)/(M+pp-1) for 1F1B and GPipe with equal stages; and a
#     simulation of the schedule's operation lists (the same lists as
#     lib/train/pipeline_schedule.cpp) with each stage's forward time proportional to its
#     forward FLOPs per token (GEMMs + attention scores, from config.json; the layer split of
#     lib/model/parallel.cpp stage_layers; the last stage also holds the final norm, the head and
#     the MTP modules) and backward = 2 x forward.
import json
import os
import random
import statistics
import sys

PRESET_VOCAB = {"tiny": 4096, "small": 32000}


def corpus(path):
    rng = random.Random(5)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 400))) + "."
            for _ in range(3000)]
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")


def preset_config(run, preset, out):
    steps = sorted(d for d in os.listdir(run) if d.startswith("step-"))
    cfg = json.load(open(os.path.join(run, steps[-1], "config.json")))
    cfg["vocab_size"] = PRESET_VOCAB[preset]
    with open(out, "w") as f:
        json.dump(cfg, f, indent=1)


# ---- FLOP model of a pipeline stage (forward, per token) -----------------------------------

def layer_flops(c, moe, T):
    C, H = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    q = C * c["q_lora_rank"] + c["q_lora_rank"] * H * qk if c.get("q_lora_rank") else C * H * qk
    kv = C * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) + \
        c["kv_lora_rank"] * H * (c["qk_nope_head_dim"] + c["v_head_dim"])
    wo = H * c["v_head_dim"] * C
    scores = (T + 1) / 2 * H * (qk + c["v_head_dim"])      # causal: (T+1)/2 keys on average
    if moe:
        ffn = (c["num_experts_per_tok"] + c["n_shared_experts"]) * 3 * C * c["moe_intermediate_size"] \
            + C * c["n_routed_experts"]
    else:
        ffn = 3 * C * c["intermediate_size"]
    return 2 * (q + kv + wo + ffn + scores)


def stage_flops(c, pp, T):
    L, dense = c["num_hidden_layers"], c["first_k_dense_replace"]
    base, extra = L // pp, L % pp
    out = []
    for s in range(pp):
        first = s * base + min(s, extra)
        last = first + base + (1 if s < extra else 0)
        f = sum(layer_flops(c, i >= dense, T) for i in range(first, last))
        if s == pp - 1:
            C, V = c["hidden_size"], c["vocab_size"]
            f += 2 * C * V                                         # head
            for _ in range(c.get("num_nextn_predict_layers", 0)):  # MTP: eh_proj, block, head
                f += 2 * 2 * C * C + layer_flops(c, True, T) + 2 * C * V
        out.append(f)
    return out


# ---- pipeline schedules (ports of lib/train/pipeline_schedule.cpp) and a simulation ----------

def stage_of(P, r, d):
    return r if d == 0 else P - 1 - r


def schedule_ops(name, P, r, M):
    if name == "dualpipe":
        R, H, h = P // 2, M // 2, min(r, P - 1 - r)
        a = 0 if r < R else 1
        b = 1 - a
        nxt = [[0, 0], [0, 0]]
        ops = []

        def F(d):
            ops.append((False, d, d * H + nxt[0][d]))
            nxt[0][d] += 1

        def B(d):
            ops.append((True, d, d * H + nxt[1][d]))
            nxt[1][d] += 1
        for _ in range(2 * (R - h - 1)):
            F(a)
        for _ in range(h + 1):
            F(a); F(b)
        for _ in range(R - h - 1):
            B(b); F(b)
        for _ in range(H - P + h + 1):
            F(a); B(b); F(b); B(a)
        for _ in range(R - h - 1):
            B(b); F(b); B(a)
        for _ in range(h + 1):
            B(b); B(a)
        for _ in range(R - h - 1):
            B(a)
        return ops
    if name == "gpipe" or P == 1:
        return [(False, 0, m) for m in range(M)] + [(True, 0, m) for m in range(M)]
    warm = min(M, P - r - 1)
    ops = [(False, 0, m) for m in range(warm)]
    for m in range(warm, M):
        ops += [(False, 0, m), (True, 0, m - warm)]
    return ops + [(True, 0, m) for m in range(M - warm, M)]


def simulate(name, P, M, stage_cost):
    """Rank 0's bubble: 1 - busy / (end of its last operation); F = cost, B = 2 x cost."""
    lists = [schedule_ops(name, P, r, M) for r in range(P)]
    done, pos = {}, [0] * P
    t, busy = [0.0] * P, [0.0] * P
    progress = True
    while progress:
        progress = False
        for r in range(P):
            while pos[r] < len(lists[r]):
                bw, d, m = lists[r][pos[r]]
                s = stage_of(P, r, d)
                deps = [(False, d, m, s)] + ([(True, d, m, s + 1)] if s < P - 1 else []) if bw \
                    else ([(False, d, m, s - 1)] if s > 0 else [])
                if any(k not in done for k in deps):
                    break
                ready = max([t[r]] + [done[k] for k in deps])
                dur = stage_cost[s] * (2 if bw else 1)
                t[r] = ready + dur
                busy[r] += dur
                done[(bw, d, m, s)] = t[r]
                pos[r] += 1
                progress = True
    if any(pos[r] < len(lists[r]) for r in range(P)):
        return None
    return 1 - busy[0] / t[0]


# ---- report ----------------------------------------------------------------------------------

def load(path):
    runs = []
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        mpath = os.path.join(r["results"], "metrics.jsonl")
        rows = [json.loads(l) for l in open(mpath) if l.strip()] if os.path.exists(mpath) else []
        r["rows"] = rows
        r["timed"] = [x["tokens_per_s"] for x in rows[r["warmup"]:]]
        cpath = os.path.join(r["results"], "config.json")
        r["config"] = json.load(open(cpath)) if os.path.exists(cpath) else None
        runs.append(r)
    return runs


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def a2a_formula(c, B, T, ep, mtp_on):
    n_moe = c["num_hidden_layers"] - c["first_k_dense_replace"]
    d = c.get("num_nextn_predict_layers", 0) if mtp_on else 0
    tokens = n_moe * B * T + sum(B * (T - k) for k in range(1, d + 1))
    return tokens * c["num_experts_per_tok"] * (ep - 1) / ep * 4 * c["hidden_size"] * 4


def report(path):
    runs = load(path)
    failed = [r["name"] for r in runs if r["rc"] != 0 or not r["timed"]]
    if failed:
        print("failed or empty runs: %s\n" % ", ".join(failed))
    runs = [r for r in runs if r["rc"] == 0 and r["timed"]]
    main = [r for r in runs if r["name"].startswith("r")]
    groups = {}
    for r in main:
        groups.setdefault(r["name"].split("-", 1)[1], []).append(r)
    loads = [r["load1_before"] for r in runs]
    any_run = main[0] if main else runs[0]
    c = any_run["config"]
    print("small preset: vocab %d, %d rounds, %d steps per run (first %d skipped), batch %d x %d "
          "tokens (global); load average (1 min) before the runs %.1f-%.1f\n"
          % (c["vocab_size"], max(len(g) for g in groups.values()) if groups else 0,
             len(any_run["rows"]), any_run["warmup"], any_run["batch"], any_run["seq_len"],
             min(loads), max(loads)))

    def tps(key):
        g = groups.get(key)
        return med([x for r in g for x in r["timed"]]) if g else None
    base, two = tps("1x1"), tps("1x2")
    print("| layout | ranks x threads | micro-batches per rank | tokens/s (median) | per-round "
          "medians (load average before) | best step | efficiency vs 2 x (1 x 1) | vs 1 rank x 2 threads |")
    print("|---|---|---|---|---|---|---|---|")
    for key, g in groups.items():
        r0 = g[0]
        t = tps(key)
        per = ", ".join("%.0f (%.1f)" % (med(r["timed"]), r["load1_before"]) for r in g)
        ranks = r0["ranks"]
        dp = ranks // r0["pp"]
        mb = r0["micro_batch"] or r0["batch"] // dp
        M = r0["batch"] // dp // mb
        cores = ranks * r0["threads"]
        eff = "%.2f" % (t / (cores * base)) if base and cores > 1 else "-"
        vs2 = "%.2f" % (t / two) if two and key != "1x2" else "-"
        best = max(x for r in g for x in r["timed"])
        print("| %s | %d x %d | %d | %.0f | %s | %.0f | %s | %s |"
              % (r0["layout"], ranks, r0["threads"], M, t, per, best, eff, vs2))
    print()

    # all-to-all bytes (runs of one preset and ep pooled: the bytes depend on the routing only)
    print("| model | ep | ranks | tokens per step | measured a2a bytes/step: median (min-max) | "
          "formula (uniform routing) | measured / formula |")
    print("|---|---|---|---|---|---|---|")
    a2a = {}
    for r in runs:
        if r["ep"] <= 1 or not r["config"]:
            continue
        a = [x["a2a_bytes"] for x in r["rows"] if "a2a_bytes" in x]
        if a:
            mtp_on = all(x.get("mtp_lambda", 0) > 0 for x in r["rows"])
            g = a2a.setdefault((r["preset"], r["ep"], r["ranks"], r["batch"], r["seq_len"]),
                               {"c": r["config"], "mtp": mtp_on, "a": []})
            g["a"] += a
            g["mtp"] = g["mtp"] and mtp_on
    for (preset, ep, ranks, B, T), g in a2a.items():
        c, a = g["c"], g["a"]
        f = a2a_formula(c, B, T, ep, g["mtp"])
        print("| %s (C %d, K %d of %d experts, %d MoE + %d MTP MoE layers) | %d | %d | %d x %d | "
              "%.4g (%.4g-%.4g) | %.4g | %.3f |"
              % (preset, c["hidden_size"], c["num_experts_per_tok"], c["n_routed_experts"],
                 c["num_hidden_layers"] - c["first_k_dense_replace"],
                 c.get("num_nextn_predict_layers", 0) if g["mtp"] else 0, ep, ranks, B, T,
                 med(a), min(a), max(a), f, med(a) / f))
    print()

    # pipeline bubble
    pp_runs = [r for r in runs if r["pp"] > 1]
    if pp_runs:
        c = pp_runs[0]["config"]
        cost = stage_flops(c, pp_runs[0]["pp"], pp_runs[0]["seq_len"])
        print("stage forward GFLOP per token: %s (last / first = %.2f)\n"
              % (", ".join("%.4f" % (x / 1e9) for x in cost), cost[-1] / cost[0]))
        print("| schedule | M | measured bubble (rank 0, median of the timed steps; per run) | (pp-1)/(M+pp-1) | "
              "simulated, equal stages | simulated, FLOP-weighted stages | tokens/s |")
        print("|---|---|---|---|---|---|---|")
        rows = {}
        for r in pp_runs:
            M = r["batch"] // r["micro_batch"]
            # per-step values (ds-pretrain's metrics), median over the timed steps
            bb = [x["pipeline_bubble"] for x in r["rows"][r["warmup"]:] if "pipeline_bubble" in x]
            b = med(bb) if bb else None
            rows.setdefault((r["schedule"], M, r["pp"]), []).append((b, med(r["timed"])))
        order = {"1f1b": 0, "gpipe": 1, "dualpipe": 2}
        for (s, M, P), v in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
            bs = [x[0] for x in v if x[0] is not None]
            uni = (P - 1) / (M + P - 1)
            eq = simulate(s, P, M, [1.0] * P)
            fl = simulate(s, P, M, cost)
            print("| %s | %d | %.3f (%s) | %s | %s | %s | %.0f |"
                  % (s, M, med(bs), ", ".join("%.3f" % x for x in bs),
                     "%.3f" % uni if s != "dualpipe" else "0 (paper: (pp/2-1)(F&B+B-3W))",
                     "%.3f" % eq if eq is not None else "-", "%.3f" % fl if fl is not None else "-",
                     med([x[1] for x in v])))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "corpus" and len(sys.argv) == 3:
        corpus(sys.argv[2])
    elif cmd == "preset-config" and len(sys.argv) == 5:
        preset_config(*sys.argv[2:])
    elif cmd == "report" and len(sys.argv) == 3:
        report(sys.argv[2])
    else:
        sys.exit("usage: dist_report.py corpus PATH | preset-config RUN PRESET OUT | report RUNS.jsonl")


if __name__ == "__main__":
    main()
