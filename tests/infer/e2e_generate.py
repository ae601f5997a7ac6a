#!/usr/bin/env python3
# End-to-end tests of ds-generate on a tiny ds-pretrain checkpoint (ds-tokenize + 30 steps).
# --jsonl sampling is a function of the seed and the request, not of --batch-size (outputs with
# batch sizes 1, 2 and 4 byte-identical; 4 identical prompts get their own random streams; a
# rerun repeats them), and so is greedy output. A bad JSONL request or one longer than the
# context stops the run with one error naming <stdin>:LINE; a failed write to stdout (/dev/full)
# fails the run; out-of-range --seed values are usage errors. The interactive chat (on a pty,
# with a 48-position model) reports a turn that outgrows the context, drops it and goes on
# (/clear, another turn, /exit -> 0). A config.json with one layer fewer than the weights fails
# with "has no eh_proj.weight". A checkpoint's generation_config.json sets the defaults of the
# flags not given (its sampling equals the same flags given; --generation-config none ignores
# it; eos_token_id lists and stop_strings apply); a bad one fails before any output, naming
# the file and field. A plain prompt starts with BOS only when the checkpoint's add_bos_token
# says so.
# Usage: e2e_generate.py --generate BIN --pretrain BIN --tokenize BIN --work DIR
import argparse
import json
import os
import pty
import random
import select
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_util import FAILS, OBJ, SUBJ, VERB, check, ok, run, tiny_checkpoint  # noqa: E402


def setup(a):
    """Tokenizer and a 30-step ds-pretrain checkpoint (kept across runs in --work)."""
    return tiny_checkpoint(a.work, a.tokenize, a.pretrain, random.Random(11))


def model_copy(a, model, name, **config):
    """A copy of checkpoint `model` under --work/NAME with config.json fields replaced."""
    d = os.path.join(a.work, name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(model, d)
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    cfg.update(config)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return d


def generate(a, model, stdin, *args, stdout=subprocess.PIPE, timeout=300):
    """(exit code, stdout, stderr lines) of ds-generate --model MODEL ARGS < stdin."""
    cmd = [a.generate, "--log-level", "warn", "--model", model, "--threads", "2"]
    p = subprocess.run(cmd + [str(x) for x in args], input=stdin.encode(), stdout=stdout,
                       stderr=subprocess.PIPE, timeout=timeout)
    err = [l for l in p.stderr.decode("utf-8", "replace").splitlines() if l.strip()]
    return p.returncode, (p.stdout or b"").decode("utf-8", "replace"), err


def test_jsonl(a, model):
    reqs = [{"prompt": "the king"}] * 4 + [{"prompt": "a shepherd went up to"}]
    stdin = "".join(json.dumps(r) + "\n" for r in reqs)
    sample = ["--jsonl", "--temperature", 1, "--seed", 11, "--max-new-tokens", 12]
    outs = {}
    for bs in (1, 2, 4):
        rc, out, err = generate(a, model, stdin, *sample, "--batch-size", bs)
        check(rc == 0 and len(out.splitlines()) == len(reqs),
              f"--jsonl --temperature 1 --batch-size {bs}: exit {rc}, "
              f"{len(out.splitlines())} lines {err[:2]}")
        outs[bs] = out
    same = outs[1] == outs[2] == outs[4]
    check(same, "sampled --jsonl output identical for --batch-size 1, 2, 4"
          + ("" if same else f":\n{outs[1]}{outs[2]}{outs[4]}"))
    done = [json.loads(l)["completion"] for l in outs[1].splitlines()] if outs[1] else []
    check(len(set(done[:4])) > 1,
          f"4 identical prompts sampled with their own streams (not all equal): {done[:4]}")
    _, again, _ = generate(a, model, stdin, *sample, "--batch-size", 2)
    check(again == outs[2], "same --seed twice: same sampled output")
    greedy = {}
    for bs in (1, 2, 4):
        rc, out, err = generate(a, model, stdin, "--jsonl", "--max-new-tokens", 12,
                                "--batch-size", bs)
        check(rc == 0 and len(out.splitlines()) == len(reqs),
              f"greedy --jsonl --batch-size {bs}: exit {rc} {err[:2]}")
        greedy[bs] = out
    same = greedy[1] == greedy[2] == greedy[4]
    check(same, "greedy --jsonl output identical for --batch-size 1, 2, 4"
          + ("" if same else f":\n{greedy[1]}{greedy[2]}{greedy[4]}"))


def test_errors(a, model):
    good = json.dumps({"prompt": "the king"}) + "\n"
    cases = [
        ("unknown role", json.dumps({"messages": [{"role": "bogus", "content": "hi"}]}),
         "unknown role"),
        ("ends with the assistant's turn",
         json.dumps({"messages": [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}]}),
         "messages[1]: a request ends with a user or tool message, not assistant"),
        ("prompt longer than the context", json.dumps({"prompt": "the king " * 2000}),
         "exceeds the model's max_seq_len"),
    ]
    for name, line, word in cases:
        rc, _, err = generate(a, model, good + line + "\n" + good, "--jsonl",
                              "--max-new-tokens", 4)
        check(rc == 1 and len(err) == 1 and "<stdin>:2:" in err[0] and word in err[0],
              f"--jsonl request '{name}' on line 2: exit {rc} (want 1), {err}")
    # a failed write to stdout is an error, not a silent success
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            rc, _, err = generate(a, model, "", "--prompt", "the king", "--max-new-tokens", 3,
                                  stdout=full)
        check(rc != 0 and any("stdout: write failed" in l for l in err),
              f"--prompt with stdout on /dev/full: exit {rc} (want non-zero), {err}")
    else:
        print("skip stdout on /dev/full: no /dev/full here")
    for seed in ("-1", "18446744073709551616"):
        rc, _, err = generate(a, model, "", "--prompt", "the king", "--seed", seed)
        check(rc == 2 and len(err) == 1 and "--seed" in err[0],
              f"--seed {seed}: exit {rc} (want 2), {err}")
    # config.json with one decoder layer fewer than the weights hold
    cfg = json.load(open(os.path.join(model, "config.json")))
    fewer = model_copy(a, model, "fewer_layers",
                       num_hidden_layers=cfg["num_hidden_layers"] - 1)
    rc, _, err = generate(a, fewer, "", "--prompt", "the king", "--max-new-tokens", 3)
    check(rc == 1 and len(err) == 1 and "has no eh_proj.weight" in err[0],
          f"num_hidden_layers one fewer than the weights: exit {rc} (want 1), {err}")


def test_input_edges(a, model):
    """Malformed input stops the run before any output; read and write failures are errors;
    ids the tokenizer lacks are never sampled."""
    lines = json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "b"}) + "\n" + \
        json.dumps({"prompt": 5}) + "\n"
    rc, out, err = generate(a, model, lines, "--jsonl", "--batch-size", 1, "--max-new-tokens", 2)
    check(rc == 1 and out == "" and len(err) == 1 and "<stdin>:3:" in err[0],
          f"--jsonl --batch-size 1, bad line 3: exit {rc} (want 1), stdout {out!r} (want "
          f"nothing: every line is checked first), {err}")
    cmd = [a.generate, "--log-level", "warn", "--model", model, "--threads", "2", "--jsonl"]
    d = os.open(a.work, os.O_RDONLY)   # a directory: read() fails, not the end of the input
    try:
        p = subprocess.run(cmd, stdin=d, capture_output=True, timeout=300)
    finally:
        os.close(d)
    err = p.stderr.decode("utf-8", "replace").strip()
    check(p.returncode == 1 and "<stdin>: read failed" in err,
          f"--jsonl with stdin a directory: exit {p.returncode} (want 1), {err}")
    rc, _, err = generate(a, model, "", "--prompt", "\udcff", "--max-new-tokens", 2)
    check(rc == 2 and len(err) == 1 and "--prompt: not valid UTF-8" in err[0],
          f"--prompt with a byte 0xFF: exit {rc} (want 2), {err}")
    # stdout a pipe closed by its reader, SIGPIPE ignored (as under many supervisors)
    p = subprocess.Popen(cmd[:-1] + ["--prompt", "the king", "--max-new-tokens", "200"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN))
    p.stdout.close()
    err = p.stderr.read().decode("utf-8", "replace").strip()
    rc = p.wait(timeout=300)
    check(rc == 1 and "stdout: write failed: Broken pipe" in err,
          f"--prompt into a closed pipe: exit {rc} (want 1, naming the cause), {err}")
    # a tokenizer whose ids have a gap below the model's vocab_size: sampling at a high
    # temperature once drew a missing id and failed mid-output
    gap = model_copy(a, model, "id_gap")
    tj = os.path.join(gap, "tokenizer.json")
    t = json.load(open(tj, encoding="utf-8"))
    vocab = json.load(open(os.path.join(gap, "config.json")))["vocab_size"]
    last = max(t["added_tokens"], key=lambda x: x["id"])
    last["id"] = vocab - 1
    json.dump(t, open(tj, "w", encoding="utf-8"), ensure_ascii=False)
    rc, out, err = generate(a, gap, "", "--prompt", "the king", "--temperature", 50,
                            "--seed", 1, "--max-new-tokens", 300)
    check(rc == 0 and err == [], f"ids missing from the tokenizer never sampled: exit {rc} {err}")


def test_bos(a, model):
    """A plain prompt starts with BOS only when the checkpoint's tokenizer_config.json says
    add_bos_token (ds-pretrain wrote false: its data has no BOS)."""
    cfg_path = os.path.join(model, "tokenizer_config.json")
    check(json.load(open(cfg_path)).get("add_bos_token") is False,
          "the checkpoint of data without BOS says add_bos_token false")
    with_bos = model_copy(a, model, "with_bos")
    cfg = json.load(open(cfg_path))
    cfg["add_bos_token"] = True
    with open(os.path.join(with_bos, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    seen = {}
    for name, m in (("false", model), ("true", with_bos)):
        rc, out, err = generate(a, m, "", "--prompt", "the king", "--max-new-tokens", 3, "--stats")
        stats = [json.loads(l) for l in err if l.startswith("{")]
        seen[name] = stats[0]["prompt_tokens"] if rc == 0 and stats else None
    check(seen["true"] is not None and seen["false"] == seen["true"] - 1,
          f"prompt tokens with add_bos_token false and true {seen}")


def with_generation_config(a, model, name, content):
    """A copy of `model` under --work/NAME with generation_config.json = content."""
    d = model_copy(a, model, name)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return d


def test_generation_config(a, model):
    reqs = "".join(json.dumps({"prompt": p}) + "\n" for p in ["the king", "the king", "a lamb"])
    n = len(reqs.splitlines())
    sample = {"do_sample": True, "temperature": 1.3, "top_p": 0.9, "top_k": 40,
              "max_new_tokens": 7, "bos_token_id": 0, "transformers_version": "4.46.3"}
    gc = with_generation_config(a, model, "gc_sample", sample)
    rc, by_file, err = generate(a, gc, reqs, "--jsonl", "--seed", 5)
    check(rc == 0 and err == [] and len(by_file.splitlines()) == n,
          f"generation_config.json with do_sample: exit {rc} {err}")
    rc, by_flags, err = generate(a, model, reqs, "--jsonl", "--seed", 5, "--temperature", 1.3,
                                 "--top-p", 0.9, "--top-k", 40, "--max-new-tokens", 7)
    check(rc == 0 and by_file == by_flags,
          "the file's sampling defaults = the same flags given:\n" + by_file + by_flags)
    rc, greedy, _ = generate(a, model, reqs, "--jsonl", "--max-new-tokens", 7)
    rc2, ignored, _ = generate(a, gc, reqs, "--jsonl", "--max-new-tokens", 7,
                               "--generation-config", "none")
    check(rc == rc2 == 0 and ignored == greedy and by_file != greedy,
          "--generation-config none: greedy as without the file (and the file's sampling "
          "differs from it)")
    rc, override, _ = generate(a, gc, reqs, "--jsonl", "--temperature", 0)
    check(rc == 0 and override == greedy,
          "--temperature 0 overrides the file's do_sample (max_new_tokens 7 still from the file)")
    # each other flag given overrides its field alone; so does a --config file's value
    file_flags = {"--temperature": 1.3, "--top-k": 40, "--top-p": 0.9, "--max-new-tokens": 7}
    for flag, value in (("--top-k", 2), ("--top-p", 0.3), ("--max-new-tokens", 3)):
        rc, out, err = generate(a, gc, reqs, "--jsonl", "--seed", 5, flag, value)
        flags = [x for k, v in {**file_flags, flag: value}.items() for x in (k, v)]
        rc2, want, _ = generate(a, model, reqs, "--jsonl", "--seed", 5, *flags)
        check(rc == rc2 == 0 and out == want and out != by_file,
              f"{flag} {value} overrides the file's field (the rest from the file): {err}")
    toml = os.path.join(a.work, "gc_flags.toml")
    with open(toml, "w") as f:
        f.write("temperature = 0\nmax-new-tokens = 7\n")
    rc, out, err = generate(a, gc, reqs, "--jsonl", "--config", toml)
    check(rc == 0 and out == greedy, f"--config's temperature 0 overrides the file: {err}")
    # the file given by path; eos_token_id as a list of every id: each completion stops at once
    vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
    path = os.path.join(a.work, "gc_every_eos.json")
    with open(path, "w") as f:
        json.dump({"eos_token_id": list(range(vocab))}, f)
    rc, out, err = generate(a, model, reqs, "--jsonl", "--generation-config", path)
    done = [json.loads(l) for l in out.splitlines()]
    check(rc == 0 and len(done) == n and
          all(d["tokens"] == 1 and d["finish_reason"] == "stop" and d["completion"] == ""
              for d in done), f"eos_token_id listing every id stops at once: {out} {err}")
    # stop_strings = the same --stop; --stop given replaces them
    first = json.loads(greedy.splitlines()[0])["completion"]
    stop = first[2:4] if len(first) >= 4 else first[:1]
    gs = with_generation_config(a, model, "gc_stop", {"stop_strings": [stop]})
    rc, by_file, _ = generate(a, gs, reqs, "--jsonl", "--max-new-tokens", 7)
    rc2, by_flag, _ = generate(a, model, reqs, "--jsonl", "--max-new-tokens", 7, "--stop", stop)
    check(rc == rc2 == 0 and by_file == by_flag and by_file != greedy,
          f"stop_strings [{stop!r}] = --stop {stop!r}:\n{by_file}{by_flag}")
    # fields ds does not apply: one warning naming them; the output is greedy
    gw = with_generation_config(a, model, "gc_warn", {"repetition_penalty": 1.2, "num_beams": 1,
                                                      "temperature": 0.7})
    rc, out, err = generate(a, gw, reqs, "--jsonl", "--max-new-tokens", 7)
    check(rc == 0 and out == greedy and len(err) == 1 and "repetition_penalty = 1.2" in err[0]
          and "temperature (do_sample is false)" in err[0] and "num_beams" not in err[0],
          f"fields not applied are named in one warning: exit {rc} {err}")
    bad = [
        ("temperature 0 with do_sample", {"do_sample": True, "temperature": 0}, 1,
         "generation_config.json: field 'temperature' = 0 must be > 0"),
        ("not JSON", '{"do_sample": true', 1, "generation_config.json: not valid JSON"),
        ("eos id past the vocabulary", {"eos_token_id": [1, vocab]}, 1,
         f"field 'eos_token_id[1]' = {vocab} is not a token id"),
        ("--speculative mtp with do_sample", {"do_sample": True}, 2,
         "--speculative mtp decodes greedily but"),
    ]
    for name, content, want, word in bad:
        d = with_generation_config(a, model, "gc_bad", content)
        extra = ["--speculative", "mtp"] if "speculative" in name else []
        rc, out, err = generate(a, d, reqs, "--jsonl", *extra)
        check(rc == want and out == "" and len(err) == 1 and word in err[0],
              f"generation_config.json {name}: exit {rc} (want {want}), stdout {out!r}, {err}")
    d = with_generation_config(a, model, "gc_bad", '{"do_sample": true, "top_p": 7')
    rc, out, err = generate(a, d, reqs, "--jsonl", "--max-new-tokens", 7,
                            "--generation-config", "none")
    check(rc == 0 and out == greedy, f"--generation-config none ignores a bad file: {rc} {err}")
    rc, _, err = generate(a, model, reqs, "--jsonl", "--generation-config",
                          os.path.join(a.work, "no_such.json"))
    check(rc == 2 and len(err) == 1 and "no_such.json: no such file" in err[0],
          f"--generation-config of a missing file: exit {rc} (want 2), {err}")


class Pty:
    """ds-generate's interactive chat on a pseudo-terminal, read with timeouts."""

    def __init__(self, cmd):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execv(cmd[0], cmd)
            finally:
                os._exit(127)
        self.buf = b""

    def read_until(self, pattern, start, timeout):
        """Reads until `pattern` occurs in the output from byte `start` on; False on timeout
        or end of output."""
        deadline = time.time() + timeout
        while pattern not in self.buf[start:]:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:   # EIO: the child closed the terminal
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def turn(self, line, timeout=120):
        """Sends `line` and waits for the next ">>> " prompt; (output of the turn, prompted)."""
        start = len(self.buf)
        os.write(self.fd, (line + "\n").encode())
        got = self.read_until(b">>> ", start, timeout)
        return self.buf[start:].decode("utf-8", "replace"), got

    def finish(self, timeout=60):
        """Exit status of the child (reading the rest of its output); killed on timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.read_until(b"\0never\0", len(self.buf), 0.2)
            time.sleep(0.05)   # after EIO read_until returns at once
        self.kill()
        return None

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def test_chat(a, model):
    small = model_copy(a, model, "ctx48", max_position_embeddings=48)
    cmd = [a.generate, "--log-level", "warn", "--model", small, "--threads", "2",
           "--max-new-tokens", "8"]
    p = Pty(cmd)
    try:
        started = p.read_until(b">>> ", 0, 120)
        check(started, f"interactive chat shows its prompt: {p.buf.decode('utf-8', 'replace')!r}")
        if not started:
            return
        dropped = False
        for i in range(8):   # the conversation grows by a user and an assistant turn each time
            s, v, o = SUBJ[i % 6], VERB[i % 6], OBJ[i % 6]
            out, got = p.turn(f"{s} {v} {o}")
            if not got:
                check(False, f"chat turn {i + 1} ends with a new prompt: {out!r}")
                return
            if "this turn is dropped" in out:
                dropped = True
                print(f"turn {i + 1} outgrows the context: {out.strip()!r}")
                break
        check(dropped, "a turn that outgrows the 48-position context is reported as dropped")
        out, got = p.turn("/clear")
        check(got, f"/clear gives a new prompt: {out!r}")
        out, got = p.turn("the king")
        reply = out.split("\n", 1)[1].rsplit(">>> ", 1)[0] if "\n" in out else ""
        check(got and bool(reply.strip()) and "dropped" not in out and "error" not in out,
              f"after /clear a short turn gets a reply: {out!r}")
        os.write(p.fd, b"/exit\n")
        rc = p.finish()
        check(rc == 0, f"/exit ends the chat with exit status 0 (got {rc})")
    finally:
        p.kill()


def test_chat_reuse(a, model):
    """A second chat turn keeps the first in the cache (--stats: cached_prompt_tokens) and
    replies exactly as a fresh --jsonl request of the same conversation."""
    lines = ["the king went up", "and the people said"]
    cmd = [a.generate, "--log-level", "warn", "--model", model, "--threads", "2",
           "--max-new-tokens", "8", "--temperature", "0", "--stats"]
    p = Pty(cmd)
    try:
        if not p.read_until(b">>> ", 0, 120):
            check(False, f"chat shows its prompt: {p.buf.decode('utf-8', 'replace')!r}")
            return
        replies = []
        for line in lines:
            out, got = p.turn(line)
            body = out.replace("\r\n", "\n")   # the terminal's newlines
            if not got or "\n" not in body:
                check(False, f"chat turn {line!r} ends with a new prompt: {out!r}")
                return
            replies.append(body.split("\n", 1)[1].rsplit("\n>>> ", 1)[0])   # after the echo
        os.write(p.fd, b"/exit\n")
        rc = p.finish()
        text = p.buf.decode("utf-8", "replace").replace("\r\n", "\n")
        stats = [json.loads(l) for l in text.splitlines() if l.startswith('{"prompt_tokens"')]
        cached = stats[-1].get("cached_prompt_tokens", 0) if stats else 0
        check(rc == 0 and cached > 0,
              f"the second turn keeps the first in the cache: exit {rc}, stats {stats}")
    finally:
        p.kill()
    msgs = [{"role": "user", "content": lines[0]}, {"role": "assistant", "content": replies[0]},
            {"role": "user", "content": lines[1]}]
    rc, out, err = generate(a, model, json.dumps({"messages": msgs}) + "\n", "--jsonl",
                            "--max-new-tokens", 8, "--temperature", 0)
    fresh = json.loads(out)["completion"] if rc == 0 and out else None
    check(fresh == replies[1],
          f"chat reply with the cache kept == fresh --jsonl reply: {replies[1]!r} vs {fresh!r}")


def main():
    ap = argparse.ArgumentParser()
    for k in ("generate", "pretrain", "tokenize", "work"):
        ap.add_argument("--" + k, required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model = setup(a)
    for fn in (test_jsonl, test_errors, test_input_edges, test_bos, test_generation_config,
               test_chat, test_chat_reuse):
        fn(a, model)
    print(f"{len(FAILS)} failed" if FAILS else "all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
