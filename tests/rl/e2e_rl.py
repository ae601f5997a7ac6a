#!/usr/bin/env python3
# End-to-end test of ds-rl: ds-tokenize + ds-pretrain a tiny model on arithmetic text, then GRPO
# with the exact reward plus a shell reward command: metrics and checkpoint contents, keep-last,
# bit-exact resume (3 steps == 2 + resume + 1: every logged number and the final weights,
# optimiser state and --ema-decay average byte for byte; the average's recurrence), the RL
# checkpoint as a new --init, SIGTERM = save and stop,
# and failures: a reward command that exits non-zero or prints garbage, a bad prompts line, a
# resume with other prompts, usage errors (one stderr line, exit 1 or 2, no new checkpoint).
# Usage: e2e_rl.py --rl BIN --pretrain BIN --tokenize BIN --work DIR
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_util import FAILS, check, check_ema_recurrence, ok, run  # noqa: E402



def setup(work, tok_bin, pre_bin):
    rng = random.Random(5)
    lines = []
    for _ in range(500):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        lines.append(f"Question: what is {a} plus {b}? Answer: {a} + {b} = {a + b}. #### {a + b}")
    text = os.path.join(work, "corpus.txt")
    with open(text, "w") as f:
        f.write("\n\n".join(lines) + "\n")
    ok(tok_bin, "train", "--vocab-size", 384, "--out", os.path.join(work, "tok"), "--force",
       text)
    tok = os.path.join(work, "tok", "tokenizer.json")
    ok(tok_bin, "encode", "--tokenizer", tok, "--out", os.path.join(work, "data"),
       "--doc-split", "blank-line", "--force", text)
    pre = os.path.join(work, "pre")
    shutil.rmtree(pre, ignore_errors=True)
    ok(pre_bin, "--preset", "tiny", "--tokenizer", tok, "--data", os.path.join(work, "data"),
       "--out", pre, "--steps", 12, "--batch-size", 8, "--seq-len", 64, "--lr", "3e-3",
       "--threads", 1, "--seed", 3)
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for i in range(6):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            rec = {"prompt": f"Question: what is {a} plus {b}? Answer:", "reference": f"#### {a + b}"}
            if i == 3:
                rec = {"messages": [{"role": "user", "content": rec["prompt"]}], "answer": a + b}
            f.write(json.dumps(rec) + "\n")
    verifier = os.path.join(work, "verify.sh")   # 1 for a "####" answer, plus a length-based part
    with open(verifier, "w") as f:
        f.write("#!/bin/sh\nexec awk '{ r = index($0, \"\\\"completion\\\":\") ; "
                "c = substr($0, r); print (index(c, \"####\") ? 1 : 0) + (length(c) % 4) / 8 }'\n")
    os.chmod(verifier, 0o755)
    return pre, prompts, verifier


def rl_args(pre, prompts, verifier, out, steps, *extra, group=4):
    return ["--init", pre, "--prompts", prompts, "--out", out, "--steps", steps,
            "--prompts-per-step", 2, "--group-size", group, "--max-new-tokens", 12,
            "--reward", "exact", "--reward", "command=0.5", "--reward-command", verifier,
            "--lr", "1e-4", "--threads", 1, "--seed", 9,
            "--metrics", os.path.join(out, "metrics.jsonl"), *extra]


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def steps_in(d):
    return sorted(x for x in os.listdir(d) if x.startswith("step-")) if os.path.isdir(d) else []


def files_of(ckpt):
    out = {}
    for root, _, names in os.walk(ckpt):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, ckpt)] = open(p, "rb").read()
    return out


def test_run_and_resume(R, pre, prompts, verifier, work):
    a, b = os.path.join(work, "rl_a"), os.path.join(work, "rl_b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    ema = ["--ema-decay", 0.9]   # the weight average rides along (and resumes bit for bit)
    out = ok(R, *rl_args(pre, prompts, verifier, a, 3, "--save-every", 1, "--keep-last", 2, *ema))
    summary = json.loads(out.strip().splitlines()[-1])
    check(summary.get("steps") == 3 and summary.get("checkpoint", "").endswith("step-00000003") and
          summary.get("ema_checkpoint") == os.path.join(a, "step-00000003", "ema"),
          f"summary: {summary}")
    check_ema_recurrence(a, 2, 3, 0.9, "rl ema")
    m = metrics(a)
    keys = ["step", "tokens", "reward", "reward_std", "rewards", "accuracy", "kl", "clip_fraction",
            "response_length", "max_response_length", "entropy", "loss", "loss_pg", "loss_balance",
            "lr", "grad_norm", "no_signal_groups", "rollout_tokens_per_s", "time"]
    check(len(m) == 3 and all(all(k in x for k in keys) for x in m), "metrics: 3 lines with every key")
    check(all(x["kl"] >= 0 and 0 <= x["accuracy"] <= 1 and x["entropy"] > 0 for x in m),
          "metrics: kl >= 0, accuracy in [0, 1], entropy > 0")
    check(m[0]["kl"] == 0.0 and m[-1]["kl"] > 0, "kl: 0 at the initial policy, > 0 after updates")
    check(set(m[0]["rewards"]) == {"exact", "command"} and m[0]["grad_norm"] > 0,
          f"reward terms and a gradient: {m[0]['rewards']} grad_norm {m[0]['grad_norm']}")
    check(steps_in(a) == ["step-00000002", "step-00000003"], f"keep-last 2: {steps_in(a)}")
    st = json.load(open(os.path.join(a, "step-00000003", "training_state", "trainer_state.json")))
    check(st.get("kind") == "rl" and st.get("step") == 3 and st.get("optimizer_steps") == 3 and
          len(st.get("data_fingerprint", "")) == 16, f"trainer state: {st}")
    check(os.path.exists(os.path.join(a, "step-00000003", "tokenizer.json")), "tokenizer copied")
    # the same run interrupted after 2 steps and resumed
    ok(R, *rl_args(pre, prompts, verifier, b, 3, "--save-every", 1, "--keep-last", 2,
                   "--stop-after", 2, *ema))
    check(steps_in(b)[-1] == "step-00000002" and len(metrics(b)) == 2, "--stop-after 2")
    ok(R, *rl_args(pre, prompts, verifier, b, 3, "--save-every", 1, "--keep-last", 2, *ema))
    mb = metrics(b)
    strip = lambda x: {k: v for k, v in x.items() if k not in ("time", "rollout_tokens_per_s")}  # noqa: E731
    check(len(mb) == 3 and [strip(x) for x in m] == [strip(x) for x in mb],
          "resume: every logged number identical (3 steps vs 2 + resume + 1)")
    fa, fb = files_of(os.path.join(a, "step-00000003")), files_of(os.path.join(b, "step-00000003"))
    check(set(fa) == set(fb) and "ema/model.safetensors" in fa, "resume: same checkpoint files")
    for name in sorted(fa):
        if name.endswith(".safetensors"):
            check(fa[name] == fb.get(name), f"resume: {name} bit-identical")
    # the RL checkpoint is a valid --init (other options: no reference, mu = 2, micro-batches)
    c = os.path.join(work, "rl_c")
    shutil.rmtree(c, ignore_errors=True)
    out = ok(R, *rl_args(os.path.join(a, "step-00000003"), prompts, verifier, c, 1, "--beta", 0,
                         "--updates", 2, "--micro-batch-size", 3, "--reward", "format=0.25"))
    mc = metrics(c)
    check(len(mc) == 1 and mc[0]["kl"] is None and steps_in(c) == ["step-00000001"],
          "RL checkpoint loads as --init (beta 0, 2 updates, micro-batches of 3)")
    return a, b


def test_sigterm(R, pre, prompts, verifier, work):
    d = os.path.join(work, "rl_term")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cmd = [R, "--log-level", "warn"] + [str(x) for x in rl_args(pre, prompts, verifier, d, 100000)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = os.path.join(d, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not os.path.exists(path) or os.path.getsize(path) == 0):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    s = json.loads(out.decode().strip().splitlines()[-1]) if p.returncode == 0 else {}
    n = len(metrics(d))
    check(p.returncode == 0 and s.get("interrupted") and steps_in(d) == [f"step-{n:08d}"],
          f"SIGTERM: exit {p.returncode}, saved {steps_in(d)} after {n} steps")


def test_errors(R, pre, prompts, verifier, work, b):
    before = steps_in(b)
    cases = [
        ("failing reward command", "cat >/dev/null; echo 1; exit 3", 1,
         ["exited with status 3", "reward command"]),
        ("garbage from the reward command", "cat >/dev/null; echo 0.5; echo oops", 1,
         ["stdout line 2", "'oops'"]),
        ("too few reward lines", "head -n 3 >/dev/null; echo 1", 1, ["stdout line 2: missing"]),
    ]
    for name, command, code, words in cases:   # (b's checkpoints hold a weight average)
        rc, _, err = run(R, *rl_args(pre, prompts, command, b, 6, "--ema-decay", 0.9))
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == code and len(lines) == 1 and all(w in lines[0] for w in words),
              f"error '{name}': exit {rc} (want {code}), message {lines}")
    check(steps_in(b) == before, f"failed steps leave no new checkpoint ({steps_in(b)})")
    bad = os.path.join(work, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"prompt": "1 + 1 =", "reference": "2"}\n{"prompt": 3}\n')
    role = os.path.join(work, "role.jsonl")
    with open(role, "w") as f:
        f.write('{"messages": [{"role": "bot", "content": "a"}, {"role": "user", "content": "b"}]}\n')
    other = os.path.join(work, "other.jsonl")
    with open(other, "w") as f:
        f.write('{"prompt": "Question: what is 1 plus 1? Answer:", "reference": "#### 2"}\n')
    nowhere = os.path.join(work, "rl_none")
    cases = [
        ("bad prompts line", rl_args(pre, bad, verifier, nowhere, 1), 1, "bad.jsonl:2"),
        ("unknown role", rl_args(pre, role, verifier, nowhere, 1), 1,
         'role.jsonl:1: messages[0]: unknown role "bot"'),
        ("resume with other prompts", rl_args(pre, other, verifier, b, 6), 2, "fingerprint"),
        ("group of one", rl_args(pre, prompts, verifier, nowhere, 1, group=1), 2,
         "--group-size must be at least 2"),
        ("unknown reward", rl_args(pre, prompts, verifier, nowhere, 1) + ["--reward", "bleu"], 2,
         "bleu"),
        ("missing --init", ["--prompts", prompts, "--out", nowhere, "--steps", 1], 2, "--init"),
        ("bad flag", rl_args(pre, prompts, verifier, nowhere, 1) + ["--no-such-flag"], 2,
         "no-such-flag"),
        ("--ema-decay 1", rl_args(pre, prompts, verifier, nowhere, 1, "--ema-decay", 1), 2,
         "--ema-decay 1: expected 0 (off) or a number in (0, 1)"),
    ]
    for name, args, code, word in cases:
        rc, _, err = run(R, *args)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == code and len(lines) == 1 and word in lines[0],
              f"error '{name}': exit {rc} (want {code}), message {lines}")
    check(not steps_in(nowhere), "errors before the first step leave no checkpoint")
    check(steps_in(b) == before, "errors on an existing run leave its checkpoints as they were")


def term_at_mark(p, mark, first=None):
    """Once the reward command has created `mark` (a step runs), calls `first` (if any) and
    sends ds-rl SIGTERM; returns its stdout and stderr (killed after 60 s)."""
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(mark) and p.poll() is None:
        time.sleep(0.02)
    if first:
        first()
    p.send_signal(signal.SIGTERM)
    try:
        return p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


def test_sigterm_in_reward_command(R, pre, prompts, verifier, work):
    """SIGTERM while the reward command runs: to ds-rl alone (a command that would hang for
    minutes, no --reward-timeout), and to both (Slurm's --signal reaches every process of the
    step). The step is abandoned, the last finished one saved, exit 0, no process left."""
    for both in (False, True):
        d = os.path.join(work, "rl_term_cmd" + ("_both" if both else ""))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        mark = os.path.join(d, "started")
        hang = f"cat >/dev/null; touch {mark}; sleep 371"   # the shell stays: it has `mark`
        args = rl_args(pre, prompts, verifier, d, 3)
        args[args.index("--reward-command") + 1] = hang
        cmd = [R, "--log-level", "warn"] + [str(x) for x in args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = term_at_mark(p, mark, (lambda: subprocess.run(
            ["pkill", "-TERM", "-f", f"touch {mark}"])) if both else None)
        left = subprocess.run(["pgrep", "-f", f"touch {mark}|sleep 371"],
                              capture_output=True).stdout
        s = json.loads(out.decode().strip().splitlines()[-1]) if p.returncode == 0 else {}
        check(p.returncode == 0 and s.get("interrupted") and s.get("steps") == 0 and
              steps_in(d) == ["step-00000000"] and not left,
              f"SIGTERM to ds-rl{' and the command' if both else ''} during the reward command: "
              f"exit {p.returncode} (want 0), saved {steps_in(d)}, processes left {left!r}: "
              f"{err.decode()[-300:]}")


def test_resume_keeps_reference(R, P, pre, prompts, verifier, work):
    """--init naming a run directory resolves to its newest checkpoint on every start: a resume
    after that run gained a newer one is refused (the KL term's reference would change), and
    goes on with the original checkpoint named."""
    run_dir, d = os.path.join(work, "pre_more"), os.path.join(work, "rl_ref")
    for x in (run_dir, d):
        shutil.rmtree(x, ignore_errors=True)
    shutil.copytree(pre, run_dir)
    first = os.path.join(run_dir, steps_in(run_dir)[-1])
    ok(R, *rl_args(run_dir, prompts, verifier, d, 2, "--stop-after", 1))
    st = json.load(open(os.path.join(d, "step-00000001", "training_state", "trainer_state.json")))
    check(st.get("init_checkpoint") == os.path.abspath(first) and
          len(st.get("init_weights", "")) == 16, f"the reference recorded: {st}")
    ok(P, "--preset", "tiny", "--tokenizer", os.path.join(work, "tok", "tokenizer.json"),
       "--data", os.path.join(work, "data"), "--out", run_dir,
       "--steps", 14, "--batch-size", 8, "--seq-len", 64, "--lr", "3e-3", "--threads", 1,
       "--seed", 3, "--resume", "auto")
    rc, _, err = run(R, *rl_args(run_dir, prompts, verifier, d, 2))
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "holds other weights" in lines[0] and
          os.path.abspath(first) in lines[0] and steps_in(d) == ["step-00000001"],
          f"resume against a changed --init: exit {rc} (want 2), {lines}")
    out = ok(R, *rl_args(first, prompts, verifier, d, 2))
    check(json.loads(out.strip().splitlines()[-1]).get("steps") == 2,
          "the resume goes on with the original checkpoint as --init")


def test_sigterm_before_a_step_of_a_resume(R, b, prompts, pre, verifier, work):
    """A resumed run stopped before it finishes a step (SIGTERM during the first reward
    command) saves nothing: the resumed checkpoint, its ema/ among it, stays as it was, and the
    summary names it."""
    d = os.path.join(work, "rl_term_resumed")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(b, d)
    last = os.path.join(d, steps_in(d)[-1])
    before = files_of(last)
    mark = os.path.join(work, "resumed_started")
    if os.path.exists(mark):
        os.remove(mark)
    args = rl_args(pre, prompts, verifier, d, 6)   # no --ema-decay this time
    args[args.index("--reward-command") + 1] = f"cat >/dev/null; touch {mark}; sleep 373"
    p = subprocess.Popen([R, "--log-level", "warn"] + [str(x) for x in args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = term_at_mark(p, mark)
    s = json.loads(out.decode().strip().splitlines()[-1]) if p.returncode == 0 else {}
    check(p.returncode == 0 and s.get("interrupted") and s.get("checkpoint") == last and
          "ema_checkpoint" not in s and files_of(last) == before and
          "ema/model.safetensors" in before,
          f"SIGTERM before a resumed run's first step: exit {p.returncode}, summary {s}, "
          f"checkpoint unchanged {files_of(last) == before}: {err.decode()[-300:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rl", required=True)
    ap.add_argument("--pretrain", required=True)
    ap.add_argument("--tokenize", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    pre, prompts, verifier = setup(a.work, a.tokenize, a.pretrain)
    _, b = test_run_and_resume(a.rl, pre, prompts, verifier, a.work)
    test_errors(a.rl, pre, prompts, verifier, a.work, b)
    test_sigterm(a.rl, pre, prompts, verifier, a.work)
    test_sigterm_in_reward_command(a.rl, pre, prompts, verifier, a.work)
    test_sigterm_before_a_step_of_a_resume(a.rl, b, prompts, pre, verifier, a.work)
    test_resume_keeps_reference(a.rl, a.pretrain, pre, prompts, verifier, a.work)
    print(f"{len(FAILS)} failed" if FAILS else "all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
