#!/usr/bin/env python3
# End-to-end tests of ds-sft: ds-tokenize + a brief ds-pretrain give the starting checkpoint,
# then SFT on generated chats. `resume`: N steps == k steps + resume (every logged number and
# the final weights / optimiser state byte for byte), SIGTERM saves and a resume finishes
# identically, the held-out loss falls, keep-last, trainer kind "sft", ds-generate loads the
# result, packing beats --no-packing, resume refuses other data or seed and does not walk a
# huge saved data.epoch, checkpoints keep --init's add_bos_token. `ema`: --ema-decay's average
# from the --init weights bit for bit, val_loss_ema, its resume, training unchanged. `errors`:
# malformed data and bad flags exit 1 or 2 with one stderr line naming FILE:LINE and the field,
# and leave no checkpoint.
# Usage: e2e_sft.py --sft BIN --pretrain BIN --tokenize BIN --generate BIN --work DIR [--only NAME]
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
from e2e_util import (FAILS, OBJ, SUBJ, VERB, check, check_ema_recurrence, f32, ok,  # noqa: E402
                      read_f32, run, tiny_checkpoint)


def chats(rng, n):
    lines = []
    for i in range(n):
        s, v, o = rng.choice(SUBJ), rng.choice(VERB), rng.choice(OBJ)
        if i % 3 == 0:
            lines.append({"prompt": f"Who {v} {o}?", "completion": f"{s.capitalize()} {v} {o}."})
            continue
        msgs = [{"role": "system", "content": "Answer briefly."}] if i % 2 else []
        msgs += [{"role": "user", "content": f"Who {v} {o}?"},
                 {"role": "assistant", "content": f"{s.capitalize()}."},
                 {"role": "user", "content": "Say it in full."},
                 {"role": "assistant", "content": f"{s.capitalize()} {v} {o}."}]
        lines.append({"messages": msgs})
    return "".join(json.dumps(l) + "\n" for l in lines)


def setup(a):
    """Tokenizer, a 30-step ds-pretrain checkpoint, training and held-out chats."""
    w = a.work
    rng = random.Random(11)
    ckpt = tiny_checkpoint(w, a.tokenize, a.pretrain, rng)
    with open(os.path.join(w, "train.jsonl"), "w") as f:
        f.write(chats(rng, 120))
    with open(os.path.join(w, "val.jsonl"), "w") as f:
        f.write(chats(rng, 24))
    return ckpt


def sft_args(a, init, out, *extra):
    return ["--init", init, "--data", os.path.join(a.work, "train.jsonl"),
            "--val-data", os.path.join(a.work, "val.jsonl"), "--out", out, "--seq-len", 127,
            "--batch-size", 4, "--micro-batch-size", 3, "--steps", 12, "--lr", "1e-3",
            "--lr-final", "1e-4", "--eval-every", 4, "--save-every", 4, "--threads", 2,
            "--seed", 3, "--metrics", os.path.join(out, "metrics.jsonl"), *extra]


def with_flag(args, flag, value):
    """args with `flag` set to `value` (replaced in place, or appended)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def read_metrics(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def same_metrics(ma, mb):
    keys = ["step", "epoch", "tokens", "targets", "loss", "loss_main", "loss_mtp", "loss_balance",
            "lr", "grad_norm", "batch", "samples", "maxvio", "val_loss"]
    return len(ma) == len(mb) and all(all(x.get(k) == y.get(k) for k in keys) for x, y in zip(ma, mb))


def same_weights(da, db):
    names = ["model.safetensors", os.path.join("training_state", "optimizer.safetensors")]
    return all(open(os.path.join(da, n), "rb").read() == open(os.path.join(db, n), "rb").read()
               for n in names)


def test_resume(a, init):
    w = a.work
    A, B, S = (os.path.join(w, d) for d in ("sft_a", "sft_b", "sft_sig"))
    for d in (A, B, S):
        shutil.rmtree(d, ignore_errors=True)
    summary = json.loads(ok(a.sft, *sft_args(a, init, A)).strip().splitlines()[-1])
    ok(a.sft, *sft_args(a, init, B), "--stop-after", 5)
    check(os.path.isdir(os.path.join(B, "step-00000005")), "--stop-after 5 saved step-00000005")
    ok(a.sft, *sft_args(a, init, B))   # --resume auto is the default
    ma, mb = read_metrics(os.path.join(A, "metrics.jsonl")), read_metrics(os.path.join(B, "metrics.jsonl"))
    check(len(ma) == 12 and same_metrics(ma, mb), "resume: every logged number identical (12 vs 5 + 7)")
    check(same_weights(os.path.join(A, "step-00000012"), os.path.join(B, "step-00000012")),
          "resume: weights and optimiser state bit-identical")
    kept = sorted(d for d in os.listdir(A) if d.startswith("step-"))
    check(kept == ["step-00000004", "step-00000008", "step-00000012"], f"keep-last 3: {kept}")
    st = json.load(open(os.path.join(A, "step-00000012", "training_state", "trainer_state.json")))
    check(st["kind"] == "sft" and len(st.get("data_fingerprint", "")) == 16, "trainer kind sft + data fingerprint")
    vals = [m["val_loss"] for m in ma if "val_loss" in m]
    check(len(vals) == 3 and vals[-1] < vals[0], f"held-out loss falls: {vals}")
    check(summary.get("val_loss") == vals[-1] and summary.get("steps") == 12, "summary JSON on stdout")
    check(all(0 < m["packing"] <= 1 for m in ma) and all(m["targets"] > 0 for m in ma), "packing/targets logged")
    # SIGTERM: saves the step reached and exits 0; the resumed run ends like run A
    os.makedirs(S, exist_ok=True)
    cmd = [a.sft, "--log-level", "warn"] + [str(x) for x in sft_args(a, init, S)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mpath = os.path.join(S, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(mpath) and len(read_metrics(mpath)) >= 2:
            p.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, _ = p.communicate(timeout=300)
    sig_summary = json.loads(out.decode().strip().splitlines()[-1]) if p.returncode == 0 else {}
    step = sig_summary.get("steps", -1)
    check(p.returncode == 0 and os.path.isdir(os.path.join(S, f"step-{step:08d}")),
          f"SIGTERM: exit {p.returncode}, checkpoint at step {step} (interrupted={sig_summary.get('interrupted')})")
    ok(a.sft, *sft_args(a, init, S))
    check(same_metrics(ma, read_metrics(mpath)) and
          same_weights(os.path.join(A, "step-00000012"), os.path.join(S, "step-00000012")),
          "SIGTERM + resume == uninterrupted")
    # ds-generate reads the fine-tuned checkpoint
    rc, out, err = run(a.generate, "--model", os.path.join(A, "step-00000012"), "--chat", "--prompt",
                       "Who went up to the city?", "--max-new-tokens", 12, "--threads", 2)
    check(rc == 0 and len(out.strip()) > 0, f"ds-generate loads the SFT checkpoint: {rc} {out.strip()!r} {err.strip()[:200]}")
    # packing statistics
    base = ["--init", init, "--data", os.path.join(w, "train.jsonl"), "--seq-len", 127, "--check-data"]
    packed = json.loads(ok(a.sft, *base))
    single = json.loads(ok(a.sft, *base, "--no-packing"))
    print(f"packing efficiency: packed {packed['packing_efficiency']:.3f} ({packed['rows_per_epoch']} rows), "
          f"--no-packing {single['packing_efficiency']:.3f} ({single['rows_per_epoch']} rows)")
    check(packed["packing_efficiency"] > 0.85 > single["packing_efficiency"], "packing fills rows")
    # resume refuses other data or another seed
    with open(os.path.join(w, "train2.jsonl"), "w") as f:
        f.write(open(os.path.join(w, "train.jsonl")).read() + chats(random.Random(5), 3))
    longer = with_flag(sft_args(a, init, B), "--steps", 14)
    rc, _, err = run(a.sft, *with_flag(longer, "--data", os.path.join(w, "train2.jsonl")))
    check(rc == 2 and "other data" in err, f"resume with other data refused: {rc} {err.strip()[:160]}")
    rc, _, err = run(a.sft, *with_flag(longer, "--seed", 4))
    check(rc == 2 and "--seed" in err, f"resume with another seed refused: {rc} {err.strip()[:160]}")
    # the moments' precision: BF16 by default, F32 with --fp32-moments (it was exit 1 naming a
    # tensor's dtype)
    rc, _, err = run(a.sft, *longer, "--fp32-moments")
    check(rc == 2 and "resume without --fp32-moments" in err,
          f"resume with --fp32-moments over BF16 moments refused: {rc} {err.strip()[:200]}")
    # a saved data.epoch far past the run's epochs (a hand-edited state whose data fingerprint
    # matches) is not walked epoch by epoch: the resumed run finishes its 2 further steps
    E = os.path.join(w, "sft_epoch")
    shutil.rmtree(E, ignore_errors=True)
    shutil.copytree(os.path.join(A, "step-00000012"), os.path.join(E, "step-00000012"))
    sp = os.path.join(E, "step-00000012", "training_state", "trainer_state.json")
    st = json.load(open(sp))
    st["data"]["epoch"], st["data"]["position"] = 10**15, 0
    with open(sp, "w") as f:
        json.dump(st, f)
    try:
        rc, _, err = run(a.sft, *with_flag(sft_args(a, init, E), "--steps", 14), timeout=120)
    except subprocess.TimeoutExpired:
        rc, err = -1, "timed out after 120 s"
    check(rc == 0 and os.path.isdir(os.path.join(E, "step-00000014")),
          f"resume at data.epoch 1e15 finishes: {rc} {err.strip()[:160]}")
    # plain text goes on as --init was pre-trained: --init's add_bos_token is kept, also over a
    # --tokenizer from ds-tokenize's directory (whose tokenizer_config.json says false)
    def add_bos_token(d):
        return json.load(open(os.path.join(d, "tokenizer_config.json"))).get("add_bos_token")
    init_bos, out = os.path.join(w, "init_bos"), os.path.join(w, "sft_bos")
    for d in (init_bos, out):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(init, init_bos)
    cfg = json.load(open(os.path.join(init_bos, "tokenizer_config.json")))
    cfg["add_bos_token"] = True
    json.dump(cfg, open(os.path.join(init_bos, "tokenizer_config.json"), "w"))
    ok(a.sft, *with_flag(sft_args(a, init_bos, out), "--steps", 1), "--tokenizer",
       os.path.join(w, "tok", "tokenizer.json"))
    check(add_bos_token(os.path.join(w, "tok")) is False and add_bos_token(init) is False and
          add_bos_token(os.path.join(A, "step-00000012")) is False and
          add_bos_token(os.path.join(out, "step-00000001")) is True,
          "ds-sft keeps --init's add_bos_token (false, and true over a --tokenizer saying false)")


def test_ema(a, init):
    """--ema-decay: ema/ in every checkpoint, its recurrence bit for bit from the --init
    weights, val_loss_ema at the evaluations, a bit-identical resume, training unchanged."""
    w = a.work
    A, B, N = (os.path.join(w, d) for d in ("sft_ema_a", "sft_ema_b", "sft_noema"))
    for d in (A, B, N):
        shutil.rmtree(d, ignore_errors=True)
    decay = 0.9
    args = lambda out, *more: with_flag(with_flag(sft_args(a, init, out), "--save-every", 1),
                                        "--keep-last", 20) + ["--ema-decay", decay, *more]
    summary = json.loads(ok(a.sft, *args(A)).strip().splitlines()[-1])
    ck = lambda run_dir, k: os.path.join(run_dir, f"step-{k:08d}")
    check(summary.get("ema_checkpoint") == os.path.join(ck(A, 12), "ema"),
          f"sft ema: the summary names the average's directory: {summary.get('ema_checkpoint')}")
    check(all(os.path.isfile(os.path.join(ck(A, k), "ema", f))
              for k in range(1, 13) for f in ("config.json", "model.safetensors", "tokenizer.json")),
          "sft ema: every checkpoint holds ema/ with config.json, model.safetensors, tokenizer.json")
    # step 1: avg = 0.1 init + 0.9 w_1 (d = min(0.9, 1 / 10)), from the --init weights
    first = read_f32(os.path.join(ck(A, 1), "ema", "model.safetensors"))
    w0 = read_f32(os.path.join(init, "model.safetensors"))
    w1 = read_f32(os.path.join(ck(A, 1), "model.safetensors"))
    d = 1 / 10
    check(set(first) == set(w0) and
          all(x == f32(d * y + (1.0 - d) * z)
              for n in first for x, y, z in zip(first[n], w0[n], w1[n])),
          "sft ema: the average starts at the --init weights (step 1 bit for bit)")
    check_ema_recurrence(A, 1, 12, decay, "sft ema")
    ma = read_metrics(os.path.join(A, "metrics.jsonl"))
    evals = [m for m in ma if "val_loss" in m]
    check([m["step"] for m in evals] == [4, 8, 12] and
          all("val_loss_ema" in m and m["val_loss_ema"] != m["val_loss"] for m in evals),
          f"sft ema: val_loss_ema beside val_loss at the evaluations "
          f"{[(m.get('val_loss'), m.get('val_loss_ema')) for m in evals]}")
    ok(a.sft, *args(B, "--stop-after", 5))
    ok(a.sft, *args(B))
    mb = read_metrics(os.path.join(B, "metrics.jsonl"))
    same_ema = open(os.path.join(ck(A, 12), "ema", "model.safetensors"), "rb").read() == \
        open(os.path.join(ck(B, 12), "ema", "model.safetensors"), "rb").read()
    check(same_metrics(ma, mb) and [m.get("val_loss_ema") for m in ma] ==
          [m.get("val_loss_ema") for m in mb] and same_ema,
          "sft ema: resumed run (5 + 7 steps) has the same metrics and a bit-identical average")
    ok(a.sft, *sft_args(a, init, N))
    check(same_metrics(ma, read_metrics(os.path.join(N, "metrics.jsonl"))) and
          same_weights(ck(A, 12), ck(N, 12)),
          "sft ema: training with the average equals training without it")


def test_errors(a, init):
    w = a.work
    out = os.path.join(w, "bad")
    shutil.rmtree(out, ignore_errors=True)
    good = json.dumps({"prompt": "Who went up?", "completion": "The king."})
    bad_lines = {
        "unknown role": ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0].role: unknown role"),
        "empty content": ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}',
                          "messages[0].content: empty"),
        "no assistant at the end": ('{"messages": [{"role": "user", "content": "hi"}]}',
                                    "ends with a user turn"),
        "invalid json": ('{"prompt": "x", ', "invalid JSON"),
        "missing completion": ('{"prompt": "x"}', "completion: missing"),
        "long sample": (json.dumps({"prompt": "Who?", "completion": "the king " * 200}), "--seq-len + 1"),
        # 150000 levels overflowed the stack (exit 139) when the messages were re-serialised
        "deep nesting": ('{"messages": [{"role": "user", "content": "hi", "x": ' + "[" * 150000 + "]" * 150000
                         + '}, {"role": "assistant", "content": "x"}]}', "JSON nested deeper than 256 levels"),
        # a value with line breaks is shown escaped: the error stays one line
        "line breaks in a role": ('{"messages": [{"role": "us\\ner\\nFAKE: ok", "content": "hi"}, '
                                  '{"role": "assistant", "content": "x"}]}', "unknown role"),
    }
    base = ["--init", init, "--out", out, "--seq-len", 127, "--steps", 2, "--threads", 2]
    for name, (line, word) in bad_lines.items():
        path = os.path.join(w, "bad.jsonl")
        with open(path, "w") as f:
            f.write(good + "\n\n" + line + "\n" + good + "\n")
        rc, _, err = run(a.sft, *base, "--data", path)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == 1 and len(lines) == 1 and f"{path}:3: " in lines[0] and word in lines[0],
              f"bad data '{name}': exit {rc}, {lines}")
    empty = os.path.join(w, "empty.jsonl")
    open(empty, "w").close()
    # a tokenizer whose ids mean other tokens than the one --init was trained with
    with open(os.path.join(init, "tokenizer.json"), encoding="utf-8") as f:
        other = json.load(f)
    vocab = other["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    os.makedirs(os.path.join(w, "other_tok"), exist_ok=True)
    other_tok = os.path.join(w, "other_tok", "tokenizer.json")
    with open(other_tok, "w", encoding="utf-8") as f:
        json.dump(other, f, ensure_ascii=False)
    held = os.path.join(w, "held")   # a run directory holding a checkpoint
    shutil.rmtree(held, ignore_errors=True)
    shutil.copytree(init, os.path.join(held, "step-00000001"))
    flag_cases = [
        ("empty file", base + ["--data", empty], 1, "no samples"),
        ("missing data file", base + ["--data", os.path.join(w, "nope.jsonl")], 1, "nope.jsonl"),
        ("no --init", ["--data", os.path.join(w, "train.jsonl"), "--out", out], 2, "--init"),
        ("--init not a checkpoint", ["--init", w + "/nowhere", "--data", empty, "--out", out], 2, "nowhere"),
        ("eval without held-out data", base + ["--data", os.path.join(w, "train.jsonl"), "--eval-every", 2], 2,
         "--eval-every"),
        ("resume a pretrain checkpoint", base + ["--data", os.path.join(w, "train.jsonl"), "--resume", init], 2,
         "not an SFT one"),
        ("another tokenizer's ids", base + ["--data", os.path.join(w, "train.jsonl"), "--tokenizer",
                                              other_tok], 2, "its token ids would change meaning"),
        ("bad --loss-on", base + ["--data", os.path.join(w, "train.jsonl"), "--loss-on", "user"], 2, "loss-on"),
        ("--epochs and --steps", base + ["--data", os.path.join(w, "train.jsonl"), "--epochs", 3],
         2, "--epochs excludes --steps"),
        ("--ema-decay 1", base + ["--data", os.path.join(w, "train.jsonl"), "--ema-decay", 1], 2,
         "--ema-decay 1: expected 0 (off) or a number in (0, 1)"),
        ("--resume never over checkpoints", ["--init", init, "--out", held, "--data",
                                              os.path.join(w, "train.jsonl"), "--resume", "never"], 2,
         "already holds checkpoints"),
        ("--out holding --init", ["--init", init, "--out", os.path.dirname(init), "--data",
                                  os.path.join(w, "train.jsonl")], 2, "holds the --init checkpoint"),
        ("--metrics inside --init", base + ["--data", os.path.join(w, "train.jsonl"), "--metrics",
                                            os.path.join(init, "metrics.jsonl")], 2,
         "inside the --init input"),
        ("--metrics in a checkpoint of --out",
         base + ["--data", os.path.join(w, "train.jsonl"), "--metrics",
                 os.path.join(out, "step-00000002", "metrics.jsonl")], 2,
         "inside --out's checkpoint namespace (step-00000002)"),
    ]
    for name, args, code, word in flag_cases:
        rc, _, err = run(a.sft, *args)
        lines = [l for l in err.splitlines() if l.strip()]
        check(rc == code and len(lines) == 1 and word in lines[0], f"error '{name}': exit {rc} (want {code}), {lines}")
    check(not os.path.exists(os.path.join(init, "metrics.jsonl")), "--init left unwritten")
    left = [d for d in os.listdir(out) if d.startswith("step-") or d.startswith(".")] if os.path.isdir(out) else []
    check(not left, f"errors leave no checkpoint ({left})")
    # --truncate turns the long-sample error into a cut sample
    with open(os.path.join(w, "long.jsonl"), "w") as f:
        f.write(good + "\n" + bad_lines["long sample"][0] + "\n")
    stats = json.loads(ok(a.sft, "--init", init, "--data", os.path.join(w, "long.jsonl"), "--seq-len", 127,
                          "--truncate", "--check-data"))
    check(stats["truncated"] == 1 and stats["samples"] == 2 and stats["max_sample_tokens"] == 128,
          f"--truncate: {stats}")
    # ... and a sample cut before its first assistant token is dropped; none left is an error
    with open(os.path.join(w, "long-prompt.jsonl"), "w") as f:
        f.write(json.dumps({"prompt": "the king " * 200, "completion": "Yes."}) + "\n")
    rc, _, err = run(a.sft, "--init", init, "--data", os.path.join(w, "long-prompt.jsonl"), "--seq-len",
                     127, "--truncate", "--check-data")
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "all 1 training samples lost every assistant token" in lines[0],
          f"--truncate dropping every sample: exit {rc}, {lines}")
    # --check-data refuses what training refuses: a tokenizer larger than the model's vocabulary
    small = os.path.join(w, "small-vocab")
    shutil.rmtree(small, ignore_errors=True)
    shutil.copytree(init, small)
    with open(os.path.join(small, "config.json")) as f:
        cfg = json.load(f)
    cfg["vocab_size"] = 64
    with open(os.path.join(small, "config.json"), "w") as f:
        json.dump(cfg, f)
    rc, _, err = run(a.sft, "--init", small, "--data", os.path.join(w, "train.jsonl"), "--seq-len", 127,
                     "--check-data")
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and "is larger than the model's vocab_size (64)" in lines[0],
          f"--check-data with a tokenizer larger than the model: exit {rc}, {lines}")


def main():
    ap = argparse.ArgumentParser()
    for k in ("sft", "pretrain", "tokenize", "generate", "work"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    init = setup(a)
    for name, fn in {"resume": test_resume, "ema": test_ema, "errors": test_errors}.items():
        if not a.only or a.only == name:
            fn(a, init)
    print(f"{len(FAILS)} failed" if FAILS else "all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
