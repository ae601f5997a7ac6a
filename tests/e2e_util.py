"""Shared helpers of the end-to-end Python tests (tests/<area>/e2e_*.py): run a ds tool with
quiet logs, record named checks, fail fast when a setup command fails."""
import os
import shutil
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
