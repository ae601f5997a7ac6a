#!/usr/bin/env python3
# Table and curves of bench/train/fp8_vs_bf16.sh: for each run directory (RUNDIR/<name>/
# metrics.jsonl) the final training loss smoothed by an EMA of weight 0.9 (as the DeepSeek-V3
# paper's Fig. 10), the last validation loss, their relative differences to the baseline run
# (bf16), the largest relative difference of the smoothed training curves and of the
# validation curves over the second half of training, and the median tokens/s over the steps
# at the full batch size (step time relative to the fp32 run when there is one; compare only
# runs that ran side by side). Writes a gnuplot PNG with --png: the smoothed training and
# validation curves, and the training curves' relative difference to the baseline. Markdown
# on stdout.
# usage: fp8_vs_bf16.py [--png OUT.png] [--baseline bf16] RUNDIR RUN...
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        sys.exit(f"fp8_vs_bf16.py: {path} has no metrics")
    return rows


def ema(values, w=0.9):
    out, m = [], None
    for v in values:
        m = v if m is None else w * m + (1 - w) * v
        out.append(m)
    return out


def summarize(rows):
    rows = [r for r in rows if not r.get("skipped")]
    steps = [r["step"] for r in rows]
    smooth = ema([r["loss_main"] for r in rows])
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    full = max(r["batch"] for r in rows)   # after the batch-size ramp
    tps = statistics.median(r["tokens_per_s"] for r in rows if r["batch"] == full)
    return {"steps": steps, "smooth": dict(zip(steps, smooth)), "val": dict(val),
            "tokens": rows[-1]["tokens"], "final_smooth": smooth[-1],
            "final_val": val[-1][1] if val else float("nan"), "tps": tps}


def max_rel(a, b, keys):
    keys = [k for k in keys if k in a and k in b]
    return max((abs(a[k] - b[k]) / b[k] for k in keys), default=float("nan"))


COLORS = ["#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def plot(runs, stats, out, baseline):
    tmp = tempfile.mkdtemp()
    curves, rel = [], []
    base = stats.get(baseline)
    for i, name in enumerate(runs):
        s, color = stats[name], COLORS[i % len(COLORS)]
        tf, vf, rf = (os.path.join(tmp, name + ext) for ext in (".train", ".val", ".rel"))
        with open(tf, "w") as f:
            for st in s["steps"]:
                f.write(f"{st} {s['smooth'][st]}\n")
        with open(vf, "w") as f:
            for st, v in sorted(s["val"].items()):
                f.write(f"{st} {v}\n")
        curves.append(f'"{tf}" using 1:2 with lines lw 2 lc rgb "{color}" '
                      f'title "{name} train (EMA 0.9)"')
        if s["val"]:
            curves.append(f'"{vf}" using 1:2 with linespoints dt 2 pt 7 ps 0.6 lc rgb "{color}" '
                          f'title "{name} validation"')
        if base and name != baseline:
            with open(rf, "w") as f:
                for st in s["steps"]:
                    if st in base["smooth"]:
                        f.write(f"{st} {100 * (s['smooth'][st] / base['smooth'][st] - 1)}\n")
            rel.append(f'"{rf}" using 1:2 with lines lw 2 lc rgb "{color}" title "{name}"')
    rel += ['0.25 with lines lw 1.5 lc rgb "#888888" title "+-0.25% (paper)"',
            '-0.25 with lines lw 1.5 lc rgb "#888888" notitle']
    script = f"""set terminal pngcairo size 1200,620
set output "{out}"
set multiplot layout 1,2 title "tiny DeepSeek-V3, Linear GEMMs in fp32 / bf16 / fp8 (CPU emulation)"
set xlabel "step"; set ylabel "loss (nats)"; set grid; set key top right
set yrange [3:6]
plot {", ".join(curves)}
set title "training loss (EMA 0.9) relative to {baseline}"; set ylabel "%"
set yrange [*:*]; set xrange [100:*]
plot {", ".join(rel)}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rundir")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--baseline", default="bf16")
    ap.add_argument("--png")
    a = ap.parse_args()
    stats = {n: summarize(load(os.path.join(a.rundir, n, "metrics.jsonl"))) for n in a.runs}
    base = stats.get(a.baseline)
    fp32 = stats.get("fp32")
    print("| run | tokens | train loss (EMA 0.9) | vs " + a.baseline +
          " | val loss | vs " + a.baseline + " | max rel. diff, 2nd half: train / val "
          "| tokens/s | step time vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.runs:
        s = stats[n]
        if base and n != a.baseline:
            dt = f"{100 * (s['final_smooth'] - base['final_smooth']) / base['final_smooth']:+.3f}%"
            dv = f"{100 * (s['final_val'] - base['final_val']) / base['final_val']:+.3f}%"
            half = [k for k in s["steps"] if k >= s["steps"][-1] // 2]
            mt = max_rel(s["smooth"], base["smooth"], half)
            mv = max_rel(s["val"], base["val"], [k for k in s["val"] if k >= s["steps"][-1] // 2])
            mx = f"{100 * mt:.3f}% / {100 * mv:.3f}%"
        else:
            dt = dv = mx = "-"
        rel_t = f"{fp32['tps'] / s['tps']:.2f}x" if fp32 else "-"
        print(f"| {n} | {s['tokens']} | {s['final_smooth']:.4f} | {dt} | {s['final_val']:.4f} "
              f"| {dv} | {mx} | {s['tps']:.0f} | {rel_t} |")
    if a.png:
        plot(a.runs, stats, a.png, a.baseline)
        print(f"\ncurves: {a.png}")


if __name__ == "__main__":
    main()
