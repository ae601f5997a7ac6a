"""Shared helpers of the end-to-end Python tests (tests/<area>/e2e_*.py): run a ds tool with
quiet logs, record named checks, fail fast when a setup command fails, read F32 safetensors
and check a run's weight average (--ema-decay) against its recurrence."""
import json
import os
import shutil
import struct
import subprocess

FAILS = []


def check(cond, what):
    """Records one named check; the test's main() exits non-zero when FAILS is not empty."""
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def run(tool, *args, timeout=900):
    """(exit code, stdout, stderr) of `tool --log-level warn ARGS...`."""
    cmd = [tool, "--log-level", "warn"] + [str(a) for a in args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode("utf-8", "replace")


def ok(tool, *args):
    """stdout of a command that must succeed (a setup step: stops the test otherwise)."""
    rc, out, err = run(tool, *args)
    if rc != 0:
        raise SystemExit(f"FAIL: {os.path.basename(tool)} {' '.join(map(str, args))} -> {rc}: {err}")
    return out


# A corpus with learnable structure for the tiny models: sentences from a small grammar.
SUBJ = ["the king", "a shepherd", "the people", "my brother", "the river", "a stranger"]
VERB = ["went up to", "spoke unto", "looked upon", "rested by", "came down from", "sang of"]
OBJ = ["the mountain", "the city", "the temple", "the sea", "the wilderness", "the gate"]


def grammar_corpus(path, rng, docs=300, max_sentences=12):
    """Writes `docs` documents of 3..max_sentences grammar sentences, blank-line separated,
    drawing from `rng` (the same draws for the same seed, whoever calls)."""
    text = [" ".join(f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)}."
                     for _ in range(rng.randint(3, max_sentences))) for _ in range(docs)]
    with open(path, "w") as f:
        f.write("\n\n".join(text) + "\n")
    return path


def tiny_checkpoint(work, tokenize, pretrain, rng):
    """A 384-id tokenizer and shards of a grammar corpus drawn from `rng`, then a 30-step tiny
    ds-pretrain checkpoint (kept across runs in `work`); returns the checkpoint directory."""
    text = grammar_corpus(os.path.join(work, "corpus.txt"), rng)
    ok(tokenize, "train", "--vocab-size", 384, "--out", os.path.join(work, "tok"), "--force",
       text)
    tok = os.path.join(work, "tok", "tokenizer.json")
    ok(tokenize, "encode", "--tokenizer", tok, "--out", os.path.join(work, "data"),
       "--doc-split", "blank-line", "--force", text)
    pre = os.path.join(work, "pre")
    if not os.path.isdir(os.path.join(pre, "step-00000030")):
        shutil.rmtree(pre, ignore_errors=True)
        ok(pretrain, "--preset", "tiny", "--tokenizer", tok, "--data", os.path.join(work, "data"),
           "--out", pre, "--steps", 30, "--batch-size", 4, "--seq-len", 64, "--lr", "3e-3",
           "--threads", 2, "--seed", 7)
    return os.path.join(pre, "step-00000030")


def read_f32(path):
    """name -> tuple of floats of an F32 safetensors file (checks every tensor is F32)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            check(False, f"{path}: {name} is {t['dtype']}, not F32")
        a, b = t["data_offsets"]
        out[name] = struct.unpack(f"<{(b - a) // 4}f", raw[8 + n + a:8 + n + b])
    return out


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check_ema_recurrence(run_dir, first, last, decay, label):
    """The ema/ of run_dir's step-k checkpoints, k in (first, last], saved at every step with no
    update skipped: avg_k = d avg_{k-1} + (1 - d) w_k with d = min(decay, k / (9 + k)), in
    double rounded to F32 (the same operations give the same bits); and the average is not
    the weights."""
    ck = lambda k: os.path.join(run_dir, f"step-{k:08d}")
    worst, moved = 0, 0
    for k in range(first + 1, last + 1):
        prev = read_f32(os.path.join(ck(k - 1), "ema", "model.safetensors"))
        w = read_f32(os.path.join(ck(k), "model.safetensors"))
        got = read_f32(os.path.join(ck(k), "ema", "model.safetensors"))
        d = min(decay, k / (9 + k))
        c = 1.0 - d
        check(set(got) == set(w) == set(prev), f"{label}: step {k} holds every weight's average")
        bad = sum(1 for n in got for x, y, z in zip(got[n], prev[n], w[n])
                  if x != f32(d * y + c * z))
        worst = max(worst, bad)
        moved = sum(1 for n, v in w.items() for x, y in zip(v, got[n]) if x != y)
    check(worst == 0 and moved > 0,
          f"{label}: the average follows its recurrence bit for bit over steps {first + 1}-{last} "
          f"({worst} values differ; {moved} differ from the weights)")
