#!/usr/bin/env python3
# End-to-end tests of ds-pretrain on a generated corpus (tokenizer and shards made with
# ds-tokenize): bit-exact resume (N steps + resume + N steps == 2N steps: every logged loss and
# the final weights and optimiser state byte for byte), the loss-free balancing effect (MaxVio
# with the bias update on vs gamma = 0), non-finite handling, --dry-run of the 671b preset,
# --moe-gemm loop vs grouped (bf16 and fp8), --packing best-fit (bit-exact resume, the same
# losses however the step is split into micro-batches, a resume with the other packing refused),
# --ema-decay (the weight average's recurrence bit for bit, its resume, training unchanged by
# it), a --data mixture (rows dealt by weight, bit-exact resume, other mixtures refused), the
# checkpoints' add_bos_token following the data's BOS, a corrupt block met mid-run (the last
# completed step saved, then a repaired resume ends as an intact run), and bad input (one stderr
# line, exit 1 or 2, no checkpoint left behind; a second run on a busy --out refused).
# Usage: e2e_pretrain.py --pretrain BIN --tokenize BIN --work DIR [--only NAME]
import argparse
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_util import (FAILS, check, check_ema_recurrence, f32, grammar_corpus, ok,  # noqa: E402
                      read_f32, run)



def make_corpus(work, tok_bin):
    text = grammar_corpus(os.path.join(work, "corpus.txt"), random.Random(11), docs=400)
    ok(tok_bin, "train", "--vocab-size", 384, "--out", os.path.join(work, "tok"), "--force",
       text)
    tok = os.path.join(work, "tok", "tokenizer.json")
    ok(tok_bin, "encode", "--tokenizer", tok, "--out", os.path.join(work, "data"),
       "--doc-split", "blank-line", "--force", text)
    # a second tokenizer, to test the fingerprint check
    ok(tok_bin, "train", "--vocab-size", 300, "--out", os.path.join(work, "tok2"), "--force",
       text)
    ok(tok_bin, "encode", "--tokenizer", os.path.join(work, "tok2", "tokenizer.json"), "--out",
       os.path.join(work, "data2"), "--doc-split", "blank-line", "--force", text)
    return tok, os.path.join(work, "data")


def base_args(tok, data, out, steps, lr="3e-3"):
    return ["--preset", "tiny", "--tokenizer", tok, "--data", data, "--out", out,
            "--steps", steps, "--batch-size", 4, "--seq-len", 32, "--lr", lr,
            "--threads", 2, "--seed", 7, "--metrics", os.path.join(out, "metrics.jsonl")]


def read_metrics(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def straight_and_resumed(P, args, a, b, steps=6):
    """Trains args(a, steps) in one go and args(b, steps) in two invocations (stopped half-way,
    then resumed) from empty run directories; returns both runs' metrics."""
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    ok(P, *args(a, steps))
    ok(P, *args(b, steps), "--stop-after", steps // 2)
    ok(P, *args(b, steps))
    return read_metrics(os.path.join(a, "metrics.jsonl")), read_metrics(os.path.join(b, "metrics.jsonl"))


def files_of(ckpt):
    out = {}
    for root, _, names in os.walk(ckpt):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, ckpt)] = open(p, "rb").read()
    return out


def test_resume(P, tok, data, work):
    a, b = os.path.join(work, "run_a"), os.path.join(work, "run_b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    extra = ["--eval-every", 3, "--save-every", 2]
    ok(P, *base_args(tok, data, a, 8), *extra)
    ok(P, *base_args(tok, data, b, 8), *extra, "--stop-after", 4)
    mb = read_metrics(os.path.join(b, "metrics.jsonl"))
    check(len(mb) == 4 and os.path.isdir(os.path.join(b, "step-00000004")),
          "resume: --stop-after 4 saved step-00000004")
    ok(P, *base_args(tok, data, b, 8), *extra, "--resume")
    ma, mb = read_metrics(os.path.join(a, "metrics.jsonl")), read_metrics(os.path.join(b, "metrics.jsonl"))
    keys = ["step", "tokens", "loss", "loss_main", "loss_mtp", "loss_balance", "lr", "grad_norm",
            "maxvio", "val_loss"]
    same = len(ma) == len(mb) == 8 and all(
        all(x.get(k) == y.get(k) for k in keys) for x, y in zip(ma, mb))
    check(same, "resume: losses at every step identical (8 steps vs 4 + resume + 4)")
    fa, fb = files_of(os.path.join(a, "step-00000008")), files_of(os.path.join(b, "step-00000008"))
    check(set(fa) == set(fb), "resume: same checkpoint files")
    for name in sorted(fa):
        if name.endswith(".safetensors"):
            check(fa[name] == fb.get(name), f"resume: {name} bit-identical")
    check(ma[-1]["loss"] < ma[0]["loss"], "training: loss falls over 8 steps")
    kept = sorted(d for d in os.listdir(a) if d.startswith("step-"))
    check(kept == ["step-00000004", "step-00000006", "step-00000008"], f"keep-last 3: {kept}")
    cfg = json.load(open(os.path.join(a, "step-00000008", "config.json")))
    check(cfg.get("model_type") == "deepseek_v3", "checkpoint config.json is deepseek_v3")
    check(os.path.exists(os.path.join(a, "step-00000008", "tokenizer.json")), "tokenizer copied")
    # --resume auto is the default: the same command again finds the run complete, prints the
    # summary naming its checkpoint, and neither retrains nor writes metrics
    summary = json.loads(ok(P, *base_args(tok, data, a, 8), *extra).strip().splitlines()[-1])
    check(summary.get("steps") == 8 and summary.get("checkpoint", "").endswith("step-00000008")
          and len(read_metrics(os.path.join(a, "metrics.jsonl"))) == 8,
          f"rerun of a finished run: nothing to do, summary {summary}")
    rc, _, err = run(P, *base_args(tok, data, a, 8), *extra, "--resume", "never")
    check(rc == 2 and "already holds checkpoints" in err,
          f"--resume never over a run's checkpoints refused: {rc} {err.strip()[:160]}")
    # --resume DIR: an older checkpoint of --out (its later ones would be overwritten) or
    # another run's (the two would mix) is refused, --out untouched; its newest one resumes
    before = files_of(os.path.join(a, "step-00000008"))
    for ckpt, word in ((os.path.join(a, "step-00000006"), "holds later checkpoints (up to "
                        "step-00000008)"),
                       (os.path.join(b, "step-00000004"), "already holds checkpoints (up to "
                        "step-00000008) of another run")):
        rc, _, err = run(P, *base_args(tok, data, a, 10), *extra, "--resume", ckpt)
        check(rc == 2 and word in err, f"--resume {ckpt} into {a}: {rc} {err.strip()[:200]}")
    check(files_of(os.path.join(a, "step-00000008")) == before and
          len(read_metrics(os.path.join(a, "metrics.jsonl"))) == 8, "refused resumes left --out")
    out = ok(P, *base_args(tok, data, a, 8), *extra, "--resume", os.path.join(a, "step-00000008/"))
    check(json.loads(out.strip().splitlines()[-1]).get("steps") == 8,
          "--resume --out's newest checkpoint (named with a trailing slash) is accepted")
    # a branch from another run's checkpoint, then the same command again (a requeued job):
    # the second continues the branch's newest checkpoint, not DIR
    br = os.path.join(work, "branch")
    shutil.rmtree(br, ignore_errors=True)
    ok(P, *base_args(tok, data, br, 9), *extra, "--resume", os.path.join(b, "step-00000004"),
       "--stop-after", 6)
    state = json.load(open(os.path.join(br, "step-00000006", "training_state",
                                        "trainer_state.json")))
    check(state.get("branched_from") == os.path.realpath(os.path.join(b, "step-00000004")),
          f"a branch records its origin: {state.get('branched_from')}")
    out = ok(P, *base_args(tok, data, br, 9), *extra, "--resume", os.path.join(b, "step-00000004"))
    mbr = read_metrics(os.path.join(br, "metrics.jsonl"))
    check(json.loads(out.strip().splitlines()[-1]).get("steps") == 9 and
          [m["step"] for m in mbr] == list(range(5, 10)),
          f"the same --resume DIR again continues the branch (steps {[m['step'] for m in mbr]})")
    # a checkpoint past the run's end: nothing the flags ask for is left to do
    rc, _, err = run(P, *base_args(tok, data, a, 6), *extra)
    check(rc == 2 and "at step 8, past this run's last step 6" in err,
          f"--steps 6 on a run at step 8: {rc} {err.strip()[:160]}")
    # another held-out split is other data: the checkpoint's data position would not fit it
    rc, _, err = run(P, *base_args(tok, data, b, 10), *extra, "--val-sequences", 7)
    check(rc == 2 and "other data" in err, f"resume on other data refused: {rc} {err.strip()[:160]}")
    out = ok(P, *base_args(tok, data, b, 10), *extra, "--val-sequences", 7, "--resume-new-data")
    check(json.loads(out.strip().splitlines()[-1]).get("steps") == 10,
          "--resume-new-data continues the run on the other data (steps 9-10)")
    # --metrics /dev/null: appended to as it is (a fresh run used to replace it by a file)
    dn = os.path.join(work, "run_devnull")
    shutil.rmtree(dn, ignore_errors=True)
    args = base_args(tok, data, dn, 1)
    args[args.index("--metrics") + 1] = os.devnull
    rc, _, err = run(P, *args)
    check(rc == 0 and stat.S_ISCHR(os.stat(os.devnull).st_mode),
          f"--metrics /dev/null leaves the device: {rc} {err.strip()[:160]}")
    # ... but not on data of another tokenizer: every token id would change meaning
    tok2 = os.path.join(work, "tok2", "tokenizer.json")
    rc, _, err = run(P, *base_args(tok2, os.path.join(work, "data2"), b, 12), *extra,
                     "--resume-new-data")
    check(rc == 2 and "is not the tokenizer of --data" in err
          and not os.path.exists(os.path.join(b, "step-00000012")),
          f"--resume-new-data with another tokenizer refused: {rc} {err.strip()[:200]}")


def test_packing(P, tok, data, work):
    def stride(out, steps):
        a = base_args(tok, data, out, steps)
        a[a.index("--seq-len") + 1] = 64   # rows of 65 hold several of the short documents
        return a

    def args(out, steps, *more):
        return stride(out, steps) + ["--packing", "best-fit", "--eval-every", 2,
                                     "--batch-ramp-end", 0, *more]
    a, b = os.path.join(work, "bf_a"), os.path.join(work, "bf_b")
    ma, mb = straight_and_resumed(P, args, a, b)
    keys = ["step", "tokens", "loss", "loss_balance", "grad_norm", "maxvio", "val_loss"]
    check(len(ma) == len(mb) == 6 and all(all(x.get(k) == y.get(k) for k in keys)
                                          for x, y in zip(ma, mb)),
          "best-fit: losses at every step identical (6 steps vs 3 + resume + 3)")
    fa, fb = files_of(os.path.join(a, "step-00000006")), files_of(os.path.join(b, "step-00000006"))
    check(fa.get("model.safetensors") is not None and
          fa.get("model.safetensors") == fb.get("model.safetensors"),
          "best-fit: resumed weights bit-identical")
    state = json.load(open(os.path.join(a, "step-00000006", "training_state",
                                        "trainer_state.json")))
    check(state.get("packing") == "best-fit", f"trainer_state records the packing: {state}")
    # padding makes a step's targets fewer than batch x seq-len (the schedules' tokens) ...
    check(all(m["tokens"] == 4 * 64 * m["step"] and 4 * 50 < m["targets"] <= 4 * 64
              for m in ma) and any(m["targets"] < 4 * 64 for m in ma),
          f"best-fit: targets per step {[m['targets'] for m in ma]}")
    # ... and each micro-batch weighs its share of them: one row at a time optimises the same
    # objective as the whole batch (losses equal up to the summation order)
    c = os.path.join(work, "bf_micro")
    shutil.rmtree(c, ignore_errors=True)
    ok(P, *args(c, 3), "--micro-batch-size", 1)
    mc = read_metrics(os.path.join(c, "metrics.jsonl"))
    rel = max(abs(x[k] - y[k]) / abs(y[k]) for x, y in zip(mc, ma[:3])
              for k in ("loss_main", "loss_balance", "grad_norm"))
    check(len(mc) == 3 and rel < 3e-5,
          f"best-fit: --micro-batch-size 1 vs the whole batch, max relative difference {rel:.2e}")
    # the other packing reads other rows: refused, or read from the start with --resume-new-data
    rc, _, err = run(P, *stride(a, 8))
    check(rc == 2 and "--packing best-fit" in err,
          f"resume with --packing stride refused: {rc} {err.strip()[:200]}")
    out = ok(P, *stride(a, 8), "--resume-new-data")
    state = json.load(open(os.path.join(a, "step-00000008", "training_state",
                                        "trainer_state.json")))
    check(json.loads(out.strip().splitlines()[-1]).get("steps") == 8 and
          state.get("packing") == "stride" and state["data"]["position"] == 2 * 4,
          f"--resume-new-data switches the packing, data from its start: {state['data']}")


def test_balance(P, tok, data, work):
    res = {}
    for gamma in (0.01, 0.0):
        out = os.path.join(work, f"bal_{gamma}")
        shutil.rmtree(out, ignore_errors=True)
        ok(P, *base_args(tok, data, out, 60), "--bias-update-speed", gamma,
           "--batch-ramp-end", 0)
        m = read_metrics(os.path.join(out, "metrics.jsonl"))
        tail = m[-20:]
        res[gamma] = sum(sum(x["maxvio"]) / len(x["maxvio"]) for x in tail) / len(tail)
    print(f"MaxVio (mean of the last 20 steps, all MoE layers): bias on {res[0.01]:.3f}, "
          f"gamma=0 {res[0.0]:.3f}")
    check(res[0.01] < 0.7 * res[0.0], "balancing: MaxVio with the bias update well below gamma=0")


def test_errors(P, tok, data, work):
    out = os.path.join(work, "bad")
    shutil.rmtree(out, ignore_errors=True)
    tok2 = os.path.join(work, "tok2", "tokenizer.json")
    cases = [
        ("wrong tokenizer", base_args(tok2, data, out, 2), 1, "tokenizer"),
        ("missing data", base_args(tok, os.path.join(work, "nope"), out, 2), 1, "nope"),
        ("steps and tokens", base_args(tok, data, out, 2) + ["--tokens", 100], 2, "--tokens"),
        ("negative steps", base_args(tok, data, out, -1), 2, "--steps must be positive"),
        ("bad flag", base_args(tok, data, out, 2) + ["--no-such-flag"], 2, "no-such-flag"),
        ("unknown preset", ["--preset", "huge", "--dry-run"], 2, "huge"),
        ("grouped fp8 per tensor", base_args(tok, data, out, 2) +
         ["--precision", "fp8", "--fp8-granularity", "tensor", "--moe-gemm", "grouped"], 2,
         "--moe-gemm"),
        ("fp8 granularity without fp8", base_args(tok, data, out, 2) +
         ["--precision", "bf16", "--fp8-granularity", "tensor"], 2,
         "--fp8-granularity tensor needs --precision fp8 (got bf16)"),
        ("fp8 scale without fp8", base_args(tok, data, out, 2) + ["--fp8-scale", "ue8m0"], 2,
         "--fp8-scale ue8m0 needs --precision fp8"),
        ("fp8 scale without fp8, dry run", ["--preset", "tiny", "--dry-run", "--fp8-scale",
                                            "ue8m0"], 2, "--fp8-scale ue8m0 needs --precision"),
        ("bad moe gemm", base_args(tok, data, out, 2) + ["--moe-gemm", "fused"], 2, "moe-gemm"),
        ("bad packing", base_args(tok, data, out, 2) + ["--packing", "first-fit"], 2,
         "--packing"),
    ]
    for name, args, code, word in cases:
        rc, _, err = run(P, *args)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == code and len(lines) == 1 and word in lines[0],
              f"error '{name}': exit {rc} (want {code}), message {lines}")
    # bad switches in the environment (DS_STACKED_GATE_UP read at the first MLP,
    # DS_EXPERT_OUTPUTS at setup and the first MoE layer): a usage error naming the variable
    for var, bad in (("DS_STACKED_GATE_UP", "yes"), ("DS_EXPERT_OUTPUTS", "bf8")):
        os.environ[var] = bad
        try:
            rc, _, err = run(P, *base_args(tok, data, out, 2))
        finally:
            del os.environ[var]
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == 2 and len(lines) == 1 and var in lines[0],
              f"error 'bad {var}': exit {rc} (want 2), message {lines}")
    check(not any(d.startswith("step-") for d in os.listdir(out)) if os.path.isdir(out) else True,
          "errors leave no checkpoint")
    # --metrics naming a file that is not a metrics file (here the dataset's manifest, which
    # a fresh run used to append to): refused, the file unchanged
    mdata = os.path.join(work, "data_m")
    shutil.rmtree(mdata, ignore_errors=True)
    shutil.copytree(data, mdata)
    manifest = os.path.join(mdata, "manifest.json")
    before = open(manifest, "rb").read()
    args = base_args(tok, mdata, out, 2)
    args[args.index("--metrics") + 1] = manifest
    rc, _, err = run(P, *args)
    check(rc == 1 and "not a metrics line" in err and open(manifest, "rb").read() == before,
          f"--metrics over a non-metrics file refused: {rc} {err.strip()[:160]}")
    # the manifest's provenance.add_bos (what the checkpoints' add_bos_token follows) must be
    # a boolean
    bos = json.load(open(manifest))
    bos["provenance"]["add_bos"] = "yes"
    json.dump(bos, open(manifest, "w"))
    rc, _, err = run(P, *base_args(tok, mdata, out, 2))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 1 and len(lines) == 1 and "manifest.json: field 'provenance.add_bos' is \"yes\""
          in lines[0], f"a non-boolean provenance.add_bos: exit {rc}, {lines}")
    open(manifest, "wb").write(before)
    # --metrics where checkpoints are published and rotated: refused
    for metrics in (os.path.join(out, "step-00000002"),
                    os.path.join(out, "step-00000002", "metrics.jsonl")):
        args[args.index("--metrics") + 1] = metrics
        rc, _, err = run(P, *args)
        check(rc == 2 and "inside --out's checkpoint namespace (step-00000002)" in err,
              f"--metrics {metrics} refused: {rc} {err.strip()[:160]}")

    # two runs writing one --out (a requeued job while the first still runs): the second is
    # refused at once, naming the holder; the first goes on
    busy = os.path.join(work, "busy")
    shutil.rmtree(busy, ignore_errors=True)
    first = subprocess.Popen([P] + [str(x) for x in base_args(tok, data, busy, 100000)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock, steps = os.path.join(busy, ".ds-run-lock"), os.path.join(busy, "metrics.jsonl")
    deadline = time.time() + 300   # until the lock is its and it trains (SIGTERM then saves)
    while time.time() < deadline and first.poll() is None and not (
            os.path.exists(lock) and open(lock).read().endswith(f"pid {first.pid}\n") and
            os.path.exists(steps) and os.path.getsize(steps) > 0):
        time.sleep(0.05)
    rc, _, err = run(P, *base_args(tok, data, busy, 4))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "another run is writing there" in lines[0] and
          f"pid {first.pid}" in lines[0] and first.poll() is None,
          f"a second run on a busy --out: exit {rc} (want 2), {lines}")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    check(first.returncode == 0, f"the first run stops cleanly on SIGTERM: {first.returncode}")

    # a corrupt checkpoint on resume
    good = os.path.join(work, "run_a")
    broken = os.path.join(work, "broken")
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(good, broken)
    st = os.path.join(broken, "step-00000008", "model.safetensors")
    with open(st, "r+b") as f:
        f.truncate(os.path.getsize(st) // 2)
    rc, _, err = run(P, *base_args(tok, data, broken, 10), "--resume")
    check(rc == 1 and "model.safetensors" in err, f"corrupt checkpoint: exit {rc}, {err.strip()[:160]}")
    # --resume names a checkpoint, not the run directory holding them (a usage error, exit 2)
    rc, _, err = run(P, *base_args(tok, data, out, 10), "--resume", good)
    check(rc == 2 and "a run directory, not a checkpoint (its latest is" in err,
          f"--resume RUN_DIR: exit {rc}, {err.strip()[:160]}")
    # trainer_state.json's step must be its directory's
    shutil.rmtree(broken)
    shutil.copytree(good, broken)
    ts = os.path.join(broken, "step-00000008", "training_state", "trainer_state.json")
    state = json.load(open(ts))
    state["step"] = 5
    json.dump(state, open(ts, "w"))
    rc, _, err = run(P, *base_args(tok, data, broken, 10), "--resume")
    check(rc == 1 and "does not match its checkpoint directory step-00000008" in err,
          f"step unlike the directory's: exit {rc}, {err.strip()[:160]}")
    # the checkpoint's config.json must describe the run's model, and be readable
    shutil.rmtree(broken)
    shutil.copytree(good, broken)
    cj = os.path.join(broken, "step-00000008", "config.json")
    cfg = json.load(open(cj))
    cfg["rope_theta"] = 500.0
    json.dump(cfg, open(cj, "w"))
    rc, _, err = run(P, *base_args(tok, data, broken, 10), "--resume")
    check(rc == 2 and "differs from this run's" in err and "rope_theta" in err,
          f"resume of another model: exit {rc}, {err.strip()[:200]}")
    open(cj, "w").write("{")
    rc, _, err = run(P, *base_args(tok, data, broken, 10), "--resume")
    check(rc == 1 and "config.json" in err, f"malformed config.json: exit {rc}, {err.strip()[:160]}")
    # non-finite: a huge learning rate blows the weights up
    nf = os.path.join(work, "nonfinite")
    shutil.rmtree(nf, ignore_errors=True)
    rc, _, err = run(P, *base_args(tok, data, nf, 6, lr="1e30"), "--warmup-steps", 0,
                     "--save-every", 1)
    check(rc == 1 and "non-finite" in err, f"non-finite loss stops the run: exit {rc} {err.strip()[:200]}")
    kept = sorted(d for d in os.listdir(nf) if d.startswith("step-"))
    check(len(kept) >= 1, f"non-finite: last good checkpoint kept ({kept})")
    # --skip-nonfinite skips a step only while the weights are finite (test_nonfinite.cpp): an
    # update that blew them up stops the run, rather than skipping every later step and saving
    # non-finite checkpoints with exit 0
    shutil.rmtree(nf + "_skip", ignore_errors=True)
    rc, out, err = run(P, *base_args(tok, data, nf + "_skip", 6, lr="1e38"),
                       "--warmup-steps", 0, "--skip-nonfinite", "--save-every", 1)
    lines = [l for l in err.splitlines() if l.strip() and "[warning]" not in l]
    saved = sorted(d for d in os.listdir(nf + "_skip") if d.startswith("step-"))
    check(rc == 1 and len(lines) == 1 and "step-00000001: not saved: the weights are not "
          "finite" in lines[0] and not saved,
          f"--skip-nonfinite with diverged weights: exit {rc}, saved {saved}, {lines}")


def test_moe_gemm(P, tok, data, work):
    # --moe-gemm loop and grouped train the same model (the same numbers up to the order of
    # float sums). Which path ran: in bf16 the grouped one gathers the experts' operands with
    # gather_rows_bf16 (in the per-op profile); in fp8 (emulated on the CPU) its padded layout
    # sums in another order, so the losses differ in the last digits.
    for prec in ("bf16", "fp8"):
        losses = {}
        for mode in ("loop", "grouped"):
            out = os.path.join(work, f"moe_{prec}_{mode}")
            shutil.rmtree(out, ignore_errors=True)
            rc, so, err = run(P, *base_args(tok, data, out, 4), "--precision", prec,
                              "--moe-gemm", mode, "--profile")
            summary = json.loads(so.strip().splitlines()[-1]) if rc == 0 else {}
            ops = {o.get("op") for o in summary.get("profile", {}).get("ops", [])}
            fused = "gather_rows_bf16" in ops
            check(rc == 0 and (prec != "bf16" or fused == (mode == "grouped")),
                  f"--moe-gemm {mode} --precision {prec}: exit {rc}, gather_rows_bf16 "
                  f"{'in' if fused else 'not in'} the profile {err.strip()[-200:]}")
            losses[mode] = [m["loss"] for m in read_metrics(os.path.join(out, "metrics.jsonl"))
                            if "loss" in m and "val_loss" not in m]
        a, b = losses["loop"], losses["grouped"]
        worst = max((abs(x - y) / abs(x) for x, y in zip(a, b)), default=1.0)
        check(len(a) == 4 and len(b) == 4 and worst < 1e-3 and (prec != "fp8" or a != b),
              f"--moe-gemm loop vs grouped ({prec}): losses {a} vs {b}")


def test_mix(P, tok, data, work):
    # a second source: other sentences of the same grammar, encoded with the same tokenizer
    text = grammar_corpus(os.path.join(work, "corpus_b.txt"), random.Random(29), docs=120)
    data_b = os.path.join(work, "data_b")
    ok(os.environ["DS_TOKENIZE_BIN"], "encode", "--tokenizer", tok, "--out", data_b,
       "--doc-split", "blank-line", "--force", text)

    def args(out, steps, *more, weights="3,1"):
        a = base_args(tok, data, out, steps)
        return a + ["--data", data_b, "--data-weights", weights, "--eval-every", 3,
                    "--batch-ramp-end", 0, *more]
    a, b = os.path.join(work, "mix_a"), os.path.join(work, "mix_b")
    ma, mb = straight_and_resumed(P, args, a, b)
    keys = ["loss", "grad_norm", "rows_by_data", "val_loss", "val_loss_by_data"]
    check(len(ma) == len(mb) == 6 and all(x.get(k) == y.get(k) for x, y in zip(ma, mb)
                                          for k in keys),
          "mix: losses and rows per source identical (6 steps vs 3 + resume + 3)")
    fa, fb = files_of(os.path.join(a, "step-00000006")), files_of(os.path.join(b, "step-00000006"))
    check(fa["model.safetensors"] == fb.get("model.safetensors"), "mix: resumed weights bit-identical")
    # 4 rows a step dealt 3:1, within one row of the share after every step
    n0 = n1 = 0
    dealt = []
    for m in ma:
        r = m.get("rows_by_data", [0, 0])
        n0, n1 = n0 + r[0], n1 + r[1]
        dealt.append(abs(n0 - 0.75 * (n0 + n1)) <= 1 and sum(r) == 4)
    check(all(dealt) and n1 > 0, f"mix: rows per step {[m.get('rows_by_data') for m in ma]}")
    ev = [m for m in ma if "val_loss" in m]
    check(len(ev) == 2 and all(len(m["val_loss_by_data"]) == 2 and abs(
        m["val_loss"] - (0.75 * m["val_loss_by_data"][0] + 0.25 * m["val_loss_by_data"][1]))
        < 1e-9 for m in ev), f"mix: val_loss is the weighted mean of val_loss_by_data {ev[-1:]}")
    state = json.load(open(os.path.join(a, "step-00000006", "training_state",
                                        "trainer_state.json")))
    src = state["data"].get("sources", [])
    check(state["version"] == 3 and len(src) == 2 and src[0]["epoch"] == state["data"]["epoch"]
          and src[0]["position"] == state["data"]["position"],
          f"mix: trainer_state version 3 with each source's position {state['data']}")
    # another mixture is other data (a resume would deal other rows): refused
    for what, weights in (("other weights", "1,1"), ("one source", None)):
        cmd = args(a, 8, weights=weights or "3,1")
        if weights is None:
            i = cmd.index("--data", cmd.index("--data") + 1)
            cmd = cmd[:i] + cmd[i + 4:]   # without the second --data and the weights
        rc, _, err = run(P, *cmd)
        check(rc == 2 and "other data" in err, f"mix: a resume with {what} refused: {rc} "
              f"{err.strip()[:160]}")
    # a checkpoint of one source from before data fingerprints: a mixture is other data too
    old = os.path.join(work, "mix_old")
    shutil.rmtree(old, ignore_errors=True)
    ok(P, *base_args(tok, data, old, 2), "--batch-ramp-end", 0)
    ts = os.path.join(old, "step-00000002", "training_state", "trainer_state.json")
    state = json.load(open(ts))
    del state["data_fingerprint"], state["packing"]
    json.dump(state, open(ts, "w"))
    rc, _, err = run(P, *args(old, 4))
    check(rc == 2 and "other data (fingerprint (none: one source)" in err,
          f"mix: an unfingerprinted one-source checkpoint is other data: {rc} {err.strip()[:160]}")
    rc, _, err = run(P, *args(old, 4), "--resume-new-data")
    state = json.load(open(os.path.join(old, "step-00000004", "training_state",
                                        "trainer_state.json"))) if rc == 0 else {}
    check(rc == 0 and state.get("data", {}).get("sources") == [
              {"epoch": 0, "position": 6}, {"epoch": 0, "position": 2}],
          f"mix: ... continued as a mixture with --resume-new-data: {rc} {state.get('data')}")
    # bad input: weights for another number of sources; a source of another tokenizer
    rc, _, err = run(P, *args(os.path.join(work, "mix_bad"), 2, weights="1,2,3"))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "3 weight(s) for 2 --data source(s)" in lines[0],
          f"mix: --data-weights count refused: {rc} {lines}")
    cmd = args(os.path.join(work, "mix_bad"), 2, "--data", os.path.join(work, "data2"),
               weights="3,1,1")
    i = cmd.index("--tokenizer")
    cmd = cmd[:i] + cmd[i + 2:]
    rc, _, err = run(P, *cmd)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "share one tokenizer" in lines[0] and
          not os.path.exists(os.path.join(work, "mix_bad", "step-00000002")),
          f"mix: a source of another tokenizer refused: {rc} {lines}")
    # BOS: the checkpoints' tokenizer_config.json says add_bos_token as the data did (the
    # trained tokenizer's says false: kept); sources that differ in it are refused
    def add_bos_token(ckpt):
        return json.load(open(os.path.join(ckpt, "tokenizer_config.json"))).get("add_bos_token")
    check(add_bos_token(os.path.join(a, "step-00000006")) is False,
          "bos: data without BOS, the checkpoint says add_bos_token false")
    data_bos = os.path.join(work, "data_bos")
    ok(os.environ["DS_TOKENIZE_BIN"], "encode", "--tokenizer", tok, "--out", data_bos,
       "--doc-split", "blank-line", "--add-bos", "--force", text)
    bos_run = os.path.join(work, "bos_run")
    shutil.rmtree(bos_run, ignore_errors=True)
    ok(P, *base_args(tok, data_bos, bos_run, 1), "--ema-decay", 0.9)
    cfg = json.load(open(os.path.join(bos_run, "step-00000001", "tokenizer_config.json")))
    own = json.load(open(os.path.join(os.path.dirname(tok), "tokenizer_config.json")))
    del cfg["add_bos_token"], own["add_bos_token"]
    check(add_bos_token(os.path.join(bos_run, "step-00000001")) is True and
          add_bos_token(os.path.join(bos_run, "step-00000001", "ema")) is True and cfg == own,
          "bos: data with BOS, the checkpoint (and its ema/) says add_bos_token true, the rest "
          "of tokenizer_config.json as it was")
    rc, _, err = run(P, *args(os.path.join(work, "mix_bad"), 2, "--data", data_bos,
                              weights="1,1,1"))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "encode the sources of a mixture alike" in lines[0],
          f"bos: a mixture of sources with and without BOS refused: {rc} {lines}")
    # ... also behind a first source whose manifest does not say (the second and third differ)
    data_nokey = os.path.join(work, "data_nokey")
    shutil.rmtree(data_nokey, ignore_errors=True)
    shutil.copytree(data_b, data_nokey)
    mf = os.path.join(data_nokey, "manifest.json")
    m = json.load(open(mf))
    del m["provenance"]["add_bos"]
    json.dump(m, open(mf, "w"))
    cmd = base_args(tok, data_nokey, os.path.join(work, "mix_bad"), 2) + [
        "--data", data, "--data", data_bos, "--data-weights", "1,1,1"]
    rc, _, err = run(P, *cmd)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "encode the sources of a mixture alike" in lines[0],
          f"bos: ... also after a source that does not say: {rc} {lines}")
    test_bad_block(P, tok, data, data_b, work)
    test_data_seed(P, tok, data, work)


def test_data_seed(P, tok, data, work):
    """--data-seed orders the data alone: equal to --seed it is the default, bit for bit; another
    value reads other rows from the same initial weights (and --seed others from the same rows);
    it is recorded (version 4), resumes exactly, and another is refused on resume."""
    def args(out, steps, *more, seed=7, lr="3e-3"):
        a = base_args(tok, data, out, steps, lr=lr) + ["--batch-ramp-end", 0, *more]
        a[a.index("--seed") + 1] = seed
        return a

    def fresh(name):
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        return d
    runs = {}
    for name, more, seed in (("plain", [], 7), ("same", ["--data-seed", 7], 7),
                             ("other", ["--data-seed", 8], 7), ("seed8", ["--data-seed", 7], 8)):
        out = fresh("data_seed_" + name)
        ok(P, *args(out, 3, *more, seed=seed))
        runs[name] = read_metrics(os.path.join(out, "metrics.jsonl"))
    losses = {k: [m["loss"] for m in v] for k, v in runs.items()}
    check(losses["same"] == losses["plain"] and losses["other"][0] != losses["plain"][0] and
          losses["seed8"][0] != losses["plain"][0],
          f"data seed: the default order, another order, other weights in the same order {losses}")
    # the same initial weights whatever the data seed: one step at lr 0 without the bias update
    init = {}
    for ds_ in (7, 8):
        out = fresh(f"data_seed_init{ds_}")
        ok(P, *args(out, 1, "--data-seed", ds_, "--bias-update-speed", 0, lr=0))
        init[ds_] = files_of(os.path.join(out, "step-00000001"))["model.safetensors"]
    check(init[7] == init[8], "data seed: the initial weights do not depend on it")
    state = lambda d, k: json.load(open(os.path.join(d, f"step-{k:08d}", "training_state",
                                                     "trainer_state.json")))
    st_same, st_other = state(os.path.join(work, "data_seed_same"), 3), \
        state(os.path.join(work, "data_seed_other"), 3)
    check("data_seed" not in st_same and st_same["version"] == 1 and
          st_other.get("data_seed") == 8 and st_other["version"] == 4,
          f"data seed: recorded only when it differs, as version 4 ({st_same.get('version')}, "
          f"{st_other.get('version')} {st_other.get('data_seed')})")
    a, b = fresh("data_seed_a"), fresh("data_seed_b")
    ma, mb = straight_and_resumed(P, lambda out, steps: args(out, steps, "--data-seed", 8), a, b)
    check([m["loss"] for m in ma] == [m["loss"] for m in mb] and
          files_of(os.path.join(a, "step-00000006"))["model.safetensors"] ==
          files_of(os.path.join(b, "step-00000006")).get("model.safetensors"),
          "data seed: 6 steps == 3 + resume + 3, bit for bit")
    rc, _, err = run(P, *args(b, 8, "--data-seed", 9))
    check(rc == 2 and "saved with --data-seed 8" in err,
          f"data seed: a resume with another one refused: {rc} {err.strip()[:160]}")
    rc, _, err = run(P, *args(b, 8))
    check(rc == 2 and "saved with --data-seed 8" in err,
          f"data seed: ... and without it: {rc} {err.strip()[:160]}")
    rc, _, err = run(P, *args(b, 8, "--data-seed", 9, "--resume-new-data"))
    check(rc == 0 and state(b, 8).get("data_seed") == 9 and
          state(b, 8)["data"] == {"epoch": 0, "position": 8},
          f"data seed: --resume-new-data switches it and reads from the start: {rc} "
          f"{err.strip()[-160:]}")


def test_bad_block(P, tok, data, data_b, work):
    """A corrupt block met in the middle of a run (here the second source's only block, dealt
    its first row at step 3 with weights 20:1, or read for the held-out loss after step 1, or
    after the last step): the run stops with the block's error, exit 1, after saving the last
    completed step (with the weight average); an evaluation it could not finish is marked in the
    checkpoint (and stays there; later checkpoints have none). A resume on still broken data
    leaves the metrics as they were; once the shard is repaired, it runs that evaluation first
    and ends where a run on intact data ends: the same weights bit for bit and the same metrics
    lines."""
    shard = os.path.join(data_b, "shard-00000.dst")
    good = open(shard, "rb").read()
    bad = bytearray(good)
    bad[200] ^= 0xFF   # in block 0's compressed bytes (the header is 128 bytes)

    def args(out, steps, *more):
        return base_args(tok, data, out, steps) + ["--data", data_b, "--data-weights", "20,1",
                                                   "--batch-ramp-end", 0, "--ema-decay", 0.9,
                                                   *more]

    def lines_of(d):
        return [{k: v for k, v in m.items() if k != "tokens_per_s"}
                for m in read_metrics(os.path.join(d, "metrics.jsonl"))]
    for what, steps, more, saved in (("training rows", 6, [], 2),
                                     ("held-out windows", 6, ["--eval-every", 1], 1),
                                     ("last step's held-out windows", 2, ["--eval-every", 2], 2)):
        straight = os.path.join(work, "bad_block_straight")
        shutil.rmtree(straight, ignore_errors=True)
        ok(P, *args(straight, steps, *more))
        out = os.path.join(work, "bad_block")
        shutil.rmtree(out, ignore_errors=True)
        with open(shard, "wb") as f:
            f.write(bad)
        try:
            rc, _, err = run(P, *args(out, steps, *more))
        finally:
            with open(shard, "wb") as f:
                f.write(good)
        last = [l for l in err.splitlines() if l.strip()][-1:]
        ckpts = sorted(d for d in os.listdir(out)
                       if d.startswith("step-")) if os.path.isdir(out) else []
        lines = lines_of(out) if ckpts else []
        st = json.load(open(os.path.join(out, ckpts[0], "training_state", "trainer_state.json"))) \
            if ckpts else {}
        pending = bool(more)   # the cases with --eval-every fail in an evaluation
        check(rc == 1 and last and "shard-00000.dst: block 0" in last[0] and "checksum mismatch" in
              last[0] and ckpts == [f"step-{saved:08d}"] and len(lines) == saved and
              os.path.isdir(os.path.join(out, ckpts[0], "ema")) and
              ("pending_metrics" in st) == pending and "val_loss" not in lines[-1],
              f"bad block in the {what}: exit {rc}, last line {last}, checkpoints {ckpts}, "
              f"{len(lines)} metrics lines, pending evaluation {'pending_metrics' in st} (want 1, "
              f"the block named, step {saved} saved with ema/, its evaluation pending: {pending})")
        if pending:   # the evaluation failing again on resume: the line written without it stays
            with open(shard, "wb") as f:
                f.write(bad)
            try:
                rc, _, err = run(P, *args(out, steps, *more))
            finally:
                with open(shard, "wb") as f:
                    f.write(good)
            check(rc == 1 and lines_of(out) == lines,
                  f"bad block in the {what}: the pending evaluation failing again leaves the "
                  f"metrics as they were: exit {rc}, {len(lines_of(out))} lines")
        ok(P, *args(out, steps, *more))
        name = f"step-{steps:08d}"
        fa = files_of(os.path.join(straight, name))
        fb = files_of(os.path.join(out, name)) if os.path.isdir(os.path.join(out, name)) else {}
        st = json.load(open(os.path.join(out, name, "training_state", "trainer_state.json"))) \
            if fb else {}
        check(fb.get("model.safetensors") == fa["model.safetensors"] and
              fb.get(os.path.join("ema", "model.safetensors")) ==
              fa[os.path.join("ema", "model.safetensors")] and
              lines_of(out) == lines_of(straight) and
              ("pending_metrics" in st) == (pending and saved == steps),
              f"bad block in the {what}: repaired and resumed, the weights, weight average and "
              "metrics lines of the intact run")


def test_ema(P, tok, data, work):
    a, b = os.path.join(work, "ema_a"), os.path.join(work, "ema_b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    decay = 0.9
    args = ["--ema-decay", decay, "--eval-every", 3, "--save-every", 1, "--keep-last", 10]
    summary = json.loads(ok(P, *base_args(tok, data, a, 6), *args).strip().splitlines()[-1])
    check(summary.get("ema_checkpoint") == os.path.join(a, "step-00000006", "ema"),
          f"ema: the summary names the average's directory: {summary.get('ema_checkpoint')}")
    ck = lambda run_dir, k: os.path.join(run_dir, f"step-{k:08d}")
    for k in range(1, 7):
        e = os.path.join(ck(a, k), "ema")
        check(all(os.path.isfile(os.path.join(e, f)) for f in
                  ("config.json", "model.safetensors", "tokenizer.json")),
              f"ema: step {k} holds ema/ with config.json, model.safetensors, tokenizer.json")
    check(json.load(open(os.path.join(ck(a, 6), "ema", "config.json"))) ==
          json.load(open(os.path.join(ck(a, 6), "config.json"))), "ema: the model's config.json")
    check_ema_recurrence(a, 1, 6, decay, "ema")
    ma = read_metrics(os.path.join(a, "metrics.jsonl"))
    check([m["step"] for m in ma if "val_loss_ema" in m] == [3, 6] and
          all(m["val_loss_ema"] != m["val_loss"] for m in ma if "val_loss_ema" in m),
          f"ema: val_loss_ema beside val_loss at the evaluations "
          f"{[(m.get('val_loss'), m.get('val_loss_ema')) for m in ma if 'val_loss' in m]}")
    # resume continues the average bit for bit
    ok(P, *base_args(tok, data, b, 6), *args, "--stop-after", 4)
    ok(P, *base_args(tok, data, b, 6), *args)
    mb = read_metrics(os.path.join(b, "metrics.jsonl"))
    check([m.get("val_loss_ema") for m in mb] == [m.get("val_loss_ema") for m in ma] and
          [m["loss"] for m in mb] == [m["loss"] for m in ma],
          "ema: resumed run's losses and val_loss_ema identical")
    fa, fb = files_of(ck(a, 6)), files_of(ck(b, 6))
    check(fa["ema/model.safetensors"] == fb.get("ema/model.safetensors"),
          "ema: resumed average bit-identical (4 + resume + 2 steps vs 6)")
    # the average never touches training: the same run without it has the same losses and
    # weights (with BF16 operands, whose cache the evaluation of the average must not corrupt)
    runs = {}
    for name, extra in (("ema_bf16", ["--ema-decay", decay]), ("noema_bf16", [])):
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        ok(P, *base_args(tok, data, out, 5), "--precision", "bf16", "--eval-every", 2, *extra)
        runs[name] = (read_metrics(os.path.join(out, "metrics.jsonl")),
                      files_of(ck(out, 5))["model.safetensors"])
    (me, we), (mn, wn) = runs["ema_bf16"], runs["noema_bf16"]
    keys = ("loss", "grad_norm", "val_loss")
    check(all(x.get(k) == y.get(k) for x, y in zip(me, mn) for k in keys) and we == wn and
          len(me) == 5, "ema: training with --precision bf16 unchanged by the average "
          "(losses, validation, final weights)")
    # (operands cached from the weights would give the average the weights' loss)
    check([m["step"] for m in me if "val_loss_ema" in m] == [2, 4, 5] and
          all(m["val_loss_ema"] != m["val_loss"] for m in me if "val_loss" in m),
          "ema: --precision bf16 evaluates the average with its own operands "
          f"{[(m.get('val_loss'), m.get('val_loss_ema')) for m in me if 'val_loss' in m]}")
    # on/off across a resume: a checkpoint without one starts it; without the flag it is dropped
    c = os.path.join(work, "ema_c")
    shutil.rmtree(c, ignore_errors=True)
    ok(P, *base_args(tok, data, c, 4), "--stop-after", 2)
    rc, _, err = run(P, *base_args(tok, data, c, 4), "--ema-decay", decay, "--stop-after", 1)
    e3 = os.path.join(ck(c, 3), "ema", "model.safetensors")
    good = rc == 0 and os.path.isfile(e3)
    if good:   # 2 updates before step 3's: d = 3 / 12
        w2 = read_f32(os.path.join(ck(c, 2), "model.safetensors"))
        w3 = read_f32(os.path.join(ck(c, 3), "model.safetensors"))
        e = read_f32(e3)
        good = all(x == f32(0.25 * y + 0.75 * z) for n in e for x, y, z in zip(e[n], w2[n], w3[n]))
    check(good, f"ema: enabled on resume, it starts from the checkpoint's weights {err[-200:]}")
    rc, _, err = run(P, *base_args(tok, data, c, 4))
    check(rc == 0 and "is not continued (no --ema-decay)" in err and
          not os.path.exists(os.path.join(ck(c, 4), "ema")),
          f"ema: a resume without --ema-decay says it drops the average: {err.strip()[-200:]}")
    # bad input: one line, exit 2 (flag) or 1 (a corrupt average), nothing written
    for bad in ("1", "-0.5", "nan"):
        rc, _, err = run(P, *base_args(tok, data, os.path.join(work, "ema_bad"), 2),
                         "--ema-decay", bad)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == 2 and len(lines) == 1 and "--ema-decay" in lines[0],
              f"ema: --ema-decay {bad} refused: {rc} {lines}")
    broken = os.path.join(work, "ema_broken")
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(b, broken)
    st = os.path.join(ck(broken, 6), "ema", "model.safetensors")
    with open(st, "r+b") as f:
        f.truncate(os.path.getsize(st) // 2)
    rc, _, err = run(P, *base_args(tok, data, broken, 8), *args)
    lines = [l for l in err.splitlines() if l.strip() and "[info]" not in l]
    check(rc == 1 and len(lines) == 1 and "ema/model.safetensors" in lines[0] and
          not os.path.exists(ck(broken, 7)),
          f"ema: a truncated average refused on resume: {rc} {lines}")
    os.remove(os.path.join(ck(broken, 6), "ema", "config.json"))   # never restarted silently
    rc, _, err = run(P, *base_args(tok, data, broken, 8), *args)
    lines = [l for l in err.splitlines() if l.strip() and "[info]" not in l]
    check(rc == 1 and len(lines) == 1 and "ema/config.json" in lines[0] and
          not os.path.exists(ck(broken, 7)),
          f"ema: an average without its config.json refused on resume: {rc} {lines}")


def test_dry_run(P):
    rc, out, err = run(P, "--preset", "671b", "--dry-run", "--batch-size", 1, "--seq-len", 4096)
    j = json.loads(out) if rc == 0 else {}
    p = j.get("params", {})
    check(rc == 0 and abs(p.get("total_b", 0) - 671.03) < 0.005 and
          abs(p.get("activated_b", 0) - 37.55) < 0.01, f"dry-run 671b: {p}")
    check(j.get("memory_gib", {}).get("weights", 0) > 2000, "dry-run: 671b weights > 2000 GiB")
    check("per_rank" not in j, "dry-run: no layout, no per-rank plan")
    # a layout: one rank of each of the 16 stages, each holding a 16th of the layers and an
    # 8th of the experts
    rc, out, err = run(P, "--preset", "671b", "--dry-run", "--batch-size", 64, "--seq-len", 4096,
                       "--micro-batch-size", 1, "--world-size", 128, "--pp", 16, "--ep", 8)
    j = json.loads(out) if rc == 0 else {}
    ranks = j.get("per_rank", [])
    whole = j.get("memory_gib", {}).get("weights", 0)
    check(rc == 0 and j.get("layout", {}).get("dp") == 8 and len(ranks) == 16 and
          ranks[0]["layers"] == [[0, 4]] and ranks[-1]["layers"] == [[58, 61]] and
          all(r["memory_gib"]["weights"] < whole / 16 for r in ranks) and
          j["per_rank_max_gib"] == max(r["memory_gib"]["total"] for r in ranks),
          f"dry-run 671b over 128 ranks (pp 16, ep 8): {j.get('layout')} "
          f"{[r.get('memory_gib', {}).get('total') for r in ranks]}")
    for bad, says in ((["--world-size", 8, "--pp", 3], "--pp 3 does not divide the world size 8"),
                      (["--pp-schedule", "dualpipe"], "dualpipe needs an even --pp (got 1)")):
        rc, out, err = run(P, "--preset", "671b", "--dry-run", *bad)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == 2 and len(lines) == 1 and says in lines[0],
              f"dry-run: an impossible layout refused as a launch refuses it: {rc} {lines}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain", required=True)
    ap.add_argument("--tokenize", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.environ["DS_TOKENIZE_BIN"] = a.tokenize
    os.makedirs(a.work, exist_ok=True)
    test_dry_run(a.pretrain)
    tok, data = make_corpus(a.work, a.tokenize)
    tests = {"resume": test_resume, "errors": test_errors, "balance": test_balance,
             "moe_gemm": test_moe_gemm, "packing": test_packing, "ema": test_ema,
             "mix": test_mix}
    for name, fn in tests.items():
        if a.only and name != a.only:
            continue
        if name == "errors" and not os.path.isdir(os.path.join(a.work, "run_a")):
            test_resume(a.pretrain, tok, data, a.work)
        fn(a.pretrain, tok, data, a.work)
    print(f"{len(FAILS)} failed" if FAILS else "all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
