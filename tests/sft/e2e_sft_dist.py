#!/usr/bin/env python3
# ds-sft over 2 ranks (mpirun) against one process on the same packed global batch: data
# parallel (ZeRO-1), expert parallel and 1F1B pipeline layouts give the same losses and
# held-out loss within the tolerances of tests/train/e2e_dist.py, and close final weights and
# weight averages (--ema-decay, each rank averaging the tensors it holds); the run's checkpoint
# is one directory that a single process resumes, its average included.
# Usage: e2e_sft_dist.py --sft BIN --pretrain BIN --tokenize BIN --mpirun BIN --work DIR
import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
from e2e_util import FAILS, check, ok, run  # noqa: E402
import e2e_dist as dist  # noqa: E402
from e2e_sft import setup  # noqa: E402

STEPS = 8


def args_for(a, init, out, lr="1e-3"):
    return ["--init", init, "--data", os.path.join(a.work, "train.jsonl"),
            "--val-data", os.path.join(a.work, "val.jsonl"), "--out", out, "--seq-len", 127,
            "--batch-size", 4, "--steps", STEPS, "--lr", lr, "--lr-final", "1e-4",
            "--eval-every", 4, "--fp32-moments", "--threads", 1, "--seed", 3, "--ema-decay", 0.9,
            "--metrics", os.path.join(out, "metrics.jsonl")]


def main():
    ap = argparse.ArgumentParser()
    for x in ("--sft", "--pretrain", "--tokenize", "--mpirun", "--work"):
        ap.add_argument(x, required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    init = setup(a)
    init_w = dist.read_weights(init)
    ref_out = os.path.join(a.work, "single")
    ok(a.sft, *args_for(a, init, ref_out), "--micro-batch-size", 2)
    ref = dist.metrics(ref_out)
    ref_w = dist.read_weights(os.path.join(ref_out, f"step-{STEPS:08d}"))
    ref_ema = dist.read_weights(os.path.join(ref_out, f"step-{STEPS:08d}", "ema"))
    check(len(ref) == STEPS and "val_loss" in ref[-1], "one process: 8 SFT steps with held-out loss")
    for name, extra in [("dp2", ["--micro-batch-size", 2]), ("ep2", ["--ep", 2]),
                        ("pp2", ["--pp", 2, "--micro-batch-size", 1]),
                        ("pp2-dualpipe", ["--pp", 2, "--micro-batch-size", 1, "--pp-schedule", "dualpipe"])]:
        out = os.path.join(a.work, name)
        rc, _, err = dist.mpirun(a, 2, a.sft, *args_for(a, init, out), *extra)
        if rc != 0:
            check(False, f"sft {name}: mpirun -n 2 exit {rc}: {err.strip()[-400:]}")
            continue
        got = dist.metrics(out)
        dist.compare_losses(ref, got, f"sft {name}")
        vr = [m["val_loss"] for m in ref if "val_loss" in m]
        vg = [m["val_loss"] for m in got if "val_loss" in m]
        check(len(vr) == len(vg) and all(abs(x - y) <= dist.LOSS_RTOL * max(1, abs(x)) for x, y in zip(vr, vg)),
              f"sft {name}: held-out losses {vg} match one process's {vr}")
        dist.compare_weights(ref_w, dist.read_weights(os.path.join(out, f"step-{STEPS:08d}")), init_w,
                             f"sft {name}")
        dist.compare_weights(ref_ema, dist.read_weights(os.path.join(out, f"step-{STEPS:08d}", "ema")),
                             init_w, f"sft {name} weight average")
    # stop on 2 ranks (pipeline), resume on one process
    out = os.path.join(a.work, "resume")
    rc, _, err = dist.mpirun(a, 2, a.sft, *args_for(a, init, out), "--pp", 2, "--micro-batch-size", 1,
                             "--stop-after", 4)
    check(rc == 0 and os.path.isdir(os.path.join(out, "step-00000004")), f"sft: 2 ranks stopped at step 4 {err[-200:]}")
    rc, _, err = run(a.sft, *args_for(a, init, out), "--micro-batch-size", 2)
    check(rc == 0, f"sft: one process resumed the 2-rank checkpoint (exit {rc}) {err.strip()[-300:]}")
    if rc == 0:
        got = [m for m in dist.metrics(out) if m["step"] > 4]
        dist.compare_losses(ref, got, "sft resume on 1 process", first_step=5)
        dist.compare_weights(ref_ema, dist.read_weights(os.path.join(out, f"step-{STEPS:08d}", "ema")),
                             init_w, "sft resume on 1 process: weight average")
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
