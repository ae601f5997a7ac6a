#!/usr/bin/env python3
"""Summaries for the arithmetic example (examples/arith/run.sh, seeds.sh).

  report.py stage RUN_DIR STAGE TRAIN_S EVAL_S
      records one stage in RUN_DIR/stages.tsv (from RUN_DIR/eval-STAGE.json, a ds-eval report)
      and prints "arith seed S: sft   exact match 41.0% ± 3.5 (82/200), train 60s, eval 9s"
  report.py table RUN_DIR...
      a Markdown table, one row per run directory (seed-S), and the mean over them; "GRPO
      fixed / broke" counts the held-out problems that GRPO turned from wrong to right and
      from right to wrong (paired, from samples-sft.jsonl and samples-grpo.jsonl)
  report.py sampled RUN_DIR...
      a Markdown table of the sampled evaluations (run.sh with EVAL_SAMPLES: eval-STAGE-
      sampled.json): pass@k and maj@N per seed and stage, beside the greedy exact match, and
      the mean over the seeds per stage

Stages are base (the pre-trained checkpoint), sft and grpo; a stage's time is its training
time (for base: 0) plus its evaluation time, both in seconds. Python 3 standard library only.
"""
import json
import os
import sys

STAGES = ("base", "sft", "grpo")


def read_stages(run_dir):
    """{stage: (correct, items, acc, stderr, train_s, eval_s)} from RUN_DIR/stages.tsv."""
    out = {}
    path = os.path.join(run_dir, "stages.tsv")
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 7:
                out[p[0]] = (int(p[1]), int(p[2]), float(p[3]), float(p[4]), float(p[5]), float(p[6]))
    return out


def seed_of(run_dir):
    name = os.path.basename(os.path.normpath(run_dir))
    return name[5:] if name.startswith("seed-") else name


def stage(run_dir, name, train_s, eval_s):
    with open(os.path.join(run_dir, f"eval-{name}.json"), encoding="utf-8") as f:
        rep = json.load(f)
    m = rep["metrics"]["exact_match"]
    correct, items = rep["counts"]["correct"], rep["counts"]["items"]
    acc, se = m["value"], m["stderr"] or 0.0
    rows = read_stages(run_dir)
    rows[name] = (correct, items, acc, se, float(train_s), float(eval_s))
    tmp = os.path.join(run_dir, "stages.tsv.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in [s for s in STAGES if s in rows] + [s for s in rows if s not in STAGES]:
            f.write("\t".join([s] + [str(x) for x in rows[s]]) + "\n")
    os.replace(tmp, os.path.join(run_dir, "stages.tsv"))
    print(f"arith seed {seed_of(run_dir)}: {name:<5} exact match {100 * acc:5.1f}% ± {100 * se:.1f} "
          f"({correct}/{items}), train {float(train_s):.0f}s, eval {float(eval_s):.0f}s", flush=True)


def flips(run_dir, a, b):
    """(wrong under a, right under b), (right under a, wrong under b): paired, per problem."""
    def verdicts(stage):
        with open(os.path.join(run_dir, f"samples-{stage}.jsonl"), encoding="utf-8") as f:
            return {r["index"]: bool(r["exact_match"]) for r in map(json.loads, f)}
    va, vb = verdicts(a), verdicts(b)
    return (sum(1 for i in va if not va[i] and vb.get(i)),
            sum(1 for i in va if va[i] and not vb.get(i)))


def table(run_dirs):
    head = ("| seed | base | after SFT | after GRPO | GRPO fixed / broke | held-out n | "
            "SFT time | GRPO time | eval time (3 stages) |")
    print(head)
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sums, n = [0.0, 0.0, 0.0], 0
    for d in run_dirs:
        r = read_stages(d)
        if not all(s in r for s in STAGES):
            print(f"| {seed_of(d)} | incomplete: {', '.join(s for s in STAGES if s in r)} |")
            continue
        accs = [r[s][2] for s in STAGES]
        cells = [f"{100 * r[s][2]:.1f}% ({r[s][0]})" for s in STAGES]
        ev = sum(r[s][5] for s in STAGES)
        fixed, broke = flips(d, "sft", "grpo")
        print(f"| {seed_of(d)} | {' | '.join(cells)} | +{fixed} / −{broke} | {r['base'][1]} | "
              f"{r['sft'][4]:.0f} s | "
              f"{r['grpo'][4]:.0f} s | {ev:.0f} s |")
        sums = [a + b for a, b in zip(sums, accs)]
        n += 1
    if n:
        print(f"| mean | {' | '.join(f'{100 * s / n:.1f}%' for s in sums)} | | | | | |")


def sampled(run_dirs):
    reports = {}   # (seed, stage) -> (greedy exact match or None, {metric: value})
    for d in run_dirs:
        greedy = read_stages(d)
        for s in STAGES:
            path = os.path.join(d, f"eval-{s}-sampled.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    m = json.load(f)["metrics"]
                g = greedy[s][2] if s in greedy else None
                reports[(seed_of(d), s)] = (g, {k: v["value"] for k, v in m.items()})
    if not reports:
        print("no sampled evaluations (run.sh with EVAL_SAMPLES > 0)")
        return
    def order(name):   # pass@1 < pass@4 < ... < maj@N
        kind, _, k = name.partition("@")
        return (kind != "pass", int(k))
    names = sorted({k for _, m in reports.values() for k in m if "@" in k}, key=order)
    print("| seed | stage | greedy | " + " | ".join(names) + " |")
    print("|---:|---|---:|" + "---:|" * len(names))
    pct = lambda x: "" if x is None else f"{100 * x:.1f}%"
    for (seed, s), (g, m) in reports.items():
        print(f"| {seed} | {s} | {pct(g)} | " + " | ".join(pct(m.get(k)) for k in names) + " |")
    for s in STAGES:
        rows = [r for (_, st), r in reports.items() if st == s]
        if len(rows) < 2:
            continue
        mean = lambda xs: sum(xs) / len(xs) if xs and None not in xs else None
        cells = [pct(mean([m.get(k) for _, m in rows])) for k in names]
        print(f"| mean | {s} | {pct(mean([g for g, _ in rows]))} | " + " | ".join(cells) + " |")


def main(argv):
    if len(argv) == 6 and argv[1] == "stage":
        stage(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) >= 3 and argv[1] == "table":
        table(argv[2:])
    elif len(argv) >= 3 and argv[1] == "sampled":
        sampled(argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
