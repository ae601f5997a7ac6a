#!/usr/bin/env python3
# End-to-end tests of ds-tokenize on generated data: train, encode with 1 and 2 threads
# (byte-identical), decode round trip, inspect counts, FIM rate and determinism, chunked
# streaming, the JSONL co-process, and bad inputs (one stderr line, exit 1/2, no output left).
# With --golden DIR: `encode --jsonl` on DIR/golden-encodings.jsonl must give the golden ids
# (exit 77 = skipped when DIR is absent). Usage: e2e.py --tool BIN --work DIR [--golden DIR]
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

FAILS = []
FIM_BEGIN = "<\uff5cfim\u2581begin\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def run(tool, *args, stdin=None, quiet=True):
    cmd = [tool] + (["--log-level", "off"] if quiet else []) + [str(a) for a in args]
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=240)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def ok_json(tool, *args, stdin=None):
    rc, out, err = run(tool, *args, stdin=stdin)
    if rc != 0:
        raise SystemExit(f"FAIL: {' '.join(map(str, args))} exited {rc}: {err}")
    return json.loads(out.decode().strip().splitlines()[-1])


def dir_bytes(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def leftovers(parent, name):
    return [f for f in os.listdir(parent) if f == name or f.startswith(name + ".tmp")]


def make_corpus(work):
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta", "déjà", "naïve", "日本語", "你好", "🌍", "x",
             "def", "return", "(a, b):", "1234567", "!!", "--flag", "\t", "  ", "Über"]
    docs = []
    for i in range(12):
        lines = []
        for _ in range(rng.randint(5, 60)):
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        docs.append("\n".join(lines) + ("\n" if i % 3 else ""))
    paths = []
    for i, d in enumerate(docs):
        p = os.path.join(work, f"doc{i:02d}.txt")
        open(p, "w", encoding="utf-8").write(d)
        paths.append(p)
    return docs, paths


def test_train_encode_decode(tool, work, docs, paths):
    tokdir = os.path.join(work, "tok")
    s = ok_json(tool, "train", "--out", tokdir, "--vocab-size", 700, "--threads", 2, *paths)
    check(s["vocab_size"] <= 700 and s["merges"] > 100, f"train summary {s}")
    check(len(s["fingerprint"]) == 16 and s["documents"] == len(docs), "train fingerprint/docs")
    tok = os.path.join(tokdir, "tokenizer.json")
    check(os.path.exists(os.path.join(tokdir, "tokenizer_config.json")), "tokenizer_config.json")

    outs = {}
    for th in (1, 2):
        o = os.path.join(work, f"ds_t{th}")
        outs[th] = ok_json(tool, "encode", "--tokenizer", tok, "--out", o, "--threads", th,
                           *paths)
    check(dir_bytes(os.path.join(work, "ds_t1")) == dir_bytes(os.path.join(work, "ds_t2")),
          "1 and 2 threads give byte-identical shards and manifest")
    check(outs[1]["documents"] == len(docs), "encode document count")
    ds = os.path.join(work, "ds_t2")

    rc, text, _ = run(tool, "decode", "--tokenizer", tok, "--data", ds, "--skip-special-tokens")
    check(rc == 0 and text == "".join(docs).encode(), "decode --skip-special-tokens round trip")
    rc, text, _ = run(tool, "decode", "--tokenizer", tok, "--data", ds, "--start", 5, "--count", 2)
    check(text.decode() == docs[5] + EOS + docs[6] + EOS, "decode --start/--count with EOS")

    r = ok_json(tool, "inspect", "--data", ds, "--tokenizer", tok, "--verify")
    check(r["documents"] == len(docs) and r["tokens"] == outs[2]["tokens"]
          and r["shards"] == outs[2]["shards"], "inspect counts match the encode summary")
    check(r["checksums"] == "ok" and r["tokenizer_matches"] is True
          and r["tokenizer_fingerprint"] == s["fingerprint"], "inspect verify + fingerprint")
    check(r["provenance"]["sources"] == paths and r["provenance"]["tokenizer"] == tok,
          "manifest provenance records sources and tokenizer")

    # stdin input and the JSONL co-process.
    s2 = ok_json(tool, "encode", "--tokenizer", tok, "--out", os.path.join(work, "ds_stdin"),
                 "-", stdin="".join(docs).encode())
    check(s2["documents"] == 1 and s2["tokens"] == outs[1]["tokens"] - len(docs) + 1,
          "stdin as one document")
    p = subprocess.Popen([tool, "encode", "--jsonl", "--tokenizer", tok], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    answers = []
    for d in docs[:3]:
        p.stdin.write((json.dumps({"text": d}) + "\n").encode())
        p.stdin.flush()
        answers.append(json.loads(p.stdout.readline()))   # would hang without per-line flush
    p.stdin.close()
    p.wait(timeout=30)
    back = run(tool, "decode", "--jsonl", "--tokenizer", tok,
               stdin="".join(json.dumps(a) + "\n" for a in answers).encode())[1]
    check([json.loads(l)["text"] for l in back.decode().splitlines()] == docs[:3],
          "encode --jsonl co-process + decode --jsonl round trip")
    return tok, ds


def test_fim_and_chunks(tool, work, tok):
    lines = [json.dumps({"text": f"document {i}: some words here\nand more {i * 7}\n"})
             for i in range(400)]
    jl = os.path.join(work, "many.jsonl")
    open(jl, "w").write("\n".join(lines) + "\n")
    runs = {}
    for name, seed, th in (("a", 7, 1), ("b", 7, 2), ("c", 8, 2)):
        o = os.path.join(work, f"fim_{name}")
        runs[name] = ok_json(tool, "encode", "--tokenizer", tok, "--out", o, "--format", "jsonl",
                             "--fim-rate", 0.5, "--seed", seed, "--threads", th, jl)
    n = runs["a"]["fim_documents"]
    check(150 <= n <= 250, f"fim rate 0.5 rewrote {n}/400 documents")
    check(dir_bytes(os.path.join(work, "fim_a")) == dir_bytes(os.path.join(work, "fim_b")),
          "FIM output deterministic for a seed, any thread count")
    check(dir_bytes(os.path.join(work, "fim_a"))["shard-00000.dst"]
          != dir_bytes(os.path.join(work, "fim_c"))["shard-00000.dst"], "another seed differs")
    text = run(tool, "decode", "--tokenizer", tok, "--data", os.path.join(work, "fim_a"))[1]
    check(text.decode().count(FIM_BEGIN) == n, "decoded FIM tokens match fim_documents")

    big = os.path.join(work, "big.txt")
    body = "".join(f"Line {i} of the big document, déjà vu 你好 {i * i}\n  indented\n"
                   for i in range(6000))
    open(big, "w", encoding="utf-8").write(body)
    whole = ok_json(tool, "encode", "--tokenizer", tok, "--out", os.path.join(work, "big_whole"), big)
    cut = ok_json(tool, "encode", "--tokenizer", tok, "--out", os.path.join(work, "big_cut"),
                  "--chunk-bytes", 4096, "--threads", 2, big)
    check(cut["chunked_documents"] == 1 and whole["chunked_documents"] == 0, "document was chunked")
    check(dir_bytes(os.path.join(work, "big_whole"))["shard-00000.dst"]
          == dir_bytes(os.path.join(work, "big_cut"))["shard-00000.dst"],
          "chunked streaming gives the same shard as whole-document encoding")
    text = run(tool, "decode", "--tokenizer", tok, "--data", os.path.join(work, "big_cut"),
               "--skip-special-tokens")[1]
    check(cut["tokens"] > 2 * 65536 and text == body.encode(),
          "a document spanning several decode windows round-trips (multi-byte chars)")
    # Many small documents over several shards: identical for 1 and 2 threads, exact lines.
    for th in (1, 2):
        m = ok_json(tool, "encode", "--tokenizer", tok, "--out", os.path.join(work, f"lines_{th}"),
                    "--doc-split", "line", "--max-shard-bytes", 1000, "--threads", th, big)
    check(m["shards"] >= 2 and m["documents"] == 12000, f"line docs over {m['shards']} shards")
    check(dir_bytes(os.path.join(work, "lines_1")) == dir_bytes(os.path.join(work, "lines_2")),
          "multi-shard output identical for 1 and 2 threads")
    text = run(tool, "decode", "--tokenizer", tok, "--data", os.path.join(work, "lines_2"))[1]
    check(text.decode() == "".join(l + EOS for l in body.splitlines()), "line docs round trip")
    f = ok_json(tool, "encode", "--tokenizer", tok, "--out", os.path.join(work, "big_fim"),
                "--chunk-bytes", 4096, "--fim-rate", 1.0, big)
    check(f["fim_skipped_large"] == 1 and f["fim_documents"] == 0, "FIM skipped for chunked doc")


def test_punct_newline_split(tool, work):
    """--punct-newline-split-rate: the text is unchanged, about the rate of the joined tokens
    are split, and the result is the same whole or chunked, with 1 or 2 threads."""
    code = os.path.join(work, "code.txt")
    body = "".join(f"def f{i}(x):\n    return x * {i};\n\n# note {i}.\n" for i in range(3000))
    open(code, "w").write(body)
    ok_json(tool, "train", "--vocab-size", 400, "--out", os.path.join(work, "code_tok"), code)
    ctok = os.path.join(work, "code_tok", "tokenizer.json")
    plain = ok_json(tool, "encode", "--tokenizer", ctok, "--out", os.path.join(work, "pn_0"), code)
    runs = {}
    for name, th, chunk, seed in (("a", 1, 1 << 23, 5), ("b", 2, 4096, 5), ("c", 2, 4096, 6)):
        runs[name] = ok_json(tool, "encode", "--tokenizer", ctok, "--out",
                             os.path.join(work, f"pn_{name}"), "--punct-newline-split-rate", 0.25,
                             "--seed", seed, "--threads", th, "--chunk-bytes", chunk, code)
    a = runs["a"]
    frac = a["punct_newline_split"] / max(1, a["punct_newline_tokens"])
    check(plain["punct_newline_tokens"] == 0 and a["punct_newline_tokens"] > 6000 and
          0.22 < frac < 0.28, f"split {a['punct_newline_split']} of {a['punct_newline_tokens']} "
          f"joined tokens at rate 0.25")
    check(a["tokens"] >= plain["tokens"] + a["punct_newline_split"],
          f"each split adds a token or more: {plain['tokens']} -> {a['tokens']}")
    check(runs["b"]["chunked_documents"] == 1 and
          dir_bytes(os.path.join(work, "pn_a"))["shard-00000.dst"] ==
          dir_bytes(os.path.join(work, "pn_b"))["shard-00000.dst"],
          "split decisions: the same shard whole (1 thread) and chunked (2 threads)")
    check(dir_bytes(os.path.join(work, "pn_a"))["shard-00000.dst"] !=
          dir_bytes(os.path.join(work, "pn_c"))["shard-00000.dst"], "split: another seed differs")
    for name in ("0", "a", "c"):
        text = run(tool, "decode", "--tokenizer", ctok, "--data", os.path.join(work, f"pn_{name}"),
                   "--skip-special-tokens")[1]
        check(text == body.encode(), f"split: pn_{name} decodes to the text")
    m = json.load(open(os.path.join(work, "pn_a", "manifest.json")))
    check(m.get("provenance", {}).get("punct_newline_split_rate") == 0.25,
          "manifest provenance records the rate")
    o = os.path.join(work, "pn_bad")
    expect_error(tool, work, "--punct-newline-split-rate out of range",
                 ["encode", "--tokenizer", ctok, "--out", o, "--punct-newline-split-rate", -0.1,
                  code], 2, None, o)


def expect_error(tool, work, what, args, code=1, needle=None, out=None, stdin=None):
    rc, stdout, err = run(tool, *args, stdin=stdin)
    # One error line; usage errors (2) may add run_tool's "Run '... --help' for usage." hint.
    lines = [l for l in err.strip().splitlines() if not (code == 2 and "--help' for usage" in l)]
    good = (rc == code and len(lines) == 1 and lines[0].startswith("ds-tokenize: error: ")
            and (needle is None or needle in err))
    if out is not None:
        good = good and not leftovers(os.path.dirname(out), os.path.basename(out))
    check(good, f"{what}: exit {rc}, stderr {err.strip()!r}")
    return stdout


def test_bad_inputs(tool, work, tok, ds):
    o = os.path.join(work, "bad_out")
    good = os.path.join(work, "doc00.txt")
    expect_error(tool, work, "missing input", ["encode", "--tokenizer", tok, "--out", o, good,
                 os.path.join(work, "nope.txt")], 1, "nope.txt: cannot open", o)
    bad = os.path.join(work, "bad_utf8.txt")
    data = "line one\nline two é\nthree ".encode() + b"\xc3\x28" + b" tail\n"
    open(bad, "wb").write(data)
    offset = data.index(b"\xc3\x28")
    expect_error(tool, work, "invalid UTF-8", ["encode", "--tokenizer", tok, "--out", o, good, bad],
                 1, f"bad_utf8.txt: invalid UTF-8 at byte {offset} (line 3)", o)
    jl = os.path.join(work, "bad.jsonl")
    open(jl, "w").write('{"text": "ok"}\n{"text": "fine"}\n{"text": 3}\n{oops\n{"text": "x"}\n')
    expect_error(tool, work, "malformed JSONL line", ["encode", "--tokenizer", tok, "--out", o,
                 "--format", "jsonl", jl], 1, "bad.jsonl:3:", o)
    s = ok_json(tool, "encode", "--tokenizer", tok, "--out", o, "--format", "jsonl",
                "--skip-bad-lines", jl)
    check(s["bad_lines_skipped"] == 2 and s["documents"] == 3, "--skip-bad-lines counts")
    expect_error(tool, work, "existing non-empty --out", ["encode", "--tokenizer", tok, "--out", o,
                 good], 1, "not empty")
    check(os.path.exists(os.path.join(o, "manifest.json")), "refused --out left untouched")
    s = ok_json(tool, "encode", "--tokenizer", tok, "--out", o, "--force", good)
    check(s["documents"] == 1, "--force replaces --out")
    # ... but not an --out holding an input or the tokenizer: replacing it would delete them
    inside = os.path.join(o, "doc.txt")
    shutil.copy(good, inside)
    shutil.copy(tok, os.path.join(o, "tokenizer.json"))
    for what, args in (("an input", [tok, inside]),
                       ("the tokenizer", [os.path.join(o, "tokenizer.json"), good])):
        expect_error(tool, work, f"--force over an --out holding {what}", ["encode", "--tokenizer",
                     args[0], "--out", o, "--force", args[1]], 2, "which this run reads")
    check(os.path.exists(inside) and os.path.exists(os.path.join(o, "tokenizer.json")),
          "the refused --force kept the files it would read")
    # an --out that is a symbolic link to that directory: the link is replaced, the directory
    # and the input in it left alone
    link = o + "_link"
    os.symlink(o, link)
    s = ok_json(tool, "encode", "--tokenizer", tok, "--out", link, "--force", inside)
    check(s["documents"] == 1 and not os.path.islink(link) and os.path.exists(inside),
          "--force over a link to the inputs' directory replaces the link only")
    shutil.rmtree(link)
    shutil.rmtree(o)

    badtok = os.path.join(work, "bad_tokenizer.json")
    open(badtok, "w").write('{"model": {"type": "BPE", "vocab": 5}}')
    expect_error(tool, work, "invalid tokenizer.json", ["encode", "--tokenizer", badtok,
                 "--out", o, good], 1, "bad_tokenizer.json", o)
    expect_error(tool, work, "--fim-rate out of range", ["encode", "--tokenizer", tok, "--out", o,
                 "--fim-rate", 2, good], 2, None, o)
    expect_error(tool, work, "--format xml", ["encode", "--tokenizer", tok, "--out", o,
                 "--format", "xml", good], 2, None, o)
    for flag in ("--fim-rate", "--punct-newline-split-rate"):
        expect_error(tool, work, f"encode --jsonl {flag} (not applied there)",
                     ["encode", "--jsonl", "--tokenizer", tok, flag, 0.5], 2, flag,
                     stdin=b'{"text":"a"}\n')
    expect_error(tool, work, "encode --jsonl bad line", ["encode", "--jsonl", "--tokenizer", tok],
                 1, "<stdin>:2:", stdin=b'{"text":"a"}\n{"txt":"b"}\n')
    expect_error(tool, work, "encode --jsonl blank line", ["encode", "--jsonl", "--tokenizer", tok],
                 1, "<stdin>:2: blank line", stdin=b'{"text":"a"}\n\n{"text":"b"}\n')
    # a read error is not the end of the input (it was: exit 0, nothing written)
    d = os.open(work, os.O_RDONLY)
    try:
        p = subprocess.run([tool, "decode", "--jsonl", "--tokenizer", tok], stdin=d,
                           capture_output=True, timeout=60)
    finally:
        os.close(d)
    check(p.returncode == 1 and b"<stdin>: read error" in p.stderr,
          f"decode --jsonl with stdin a directory: exit {p.returncode}, {p.stderr!r}")
    # 150000 levels overflowed the stack (exit 139); a 1 MB bad id was echoed whole
    expect_error(tool, work, "decode --jsonl deeply nested", ["decode", "--jsonl", "--tokenizer",
                 tok], 1, "<stdin>:1: JSON nested deeper than 256 levels",
                 stdin=b'{"ids": [1, ' + b"[" * 150000 + b"]" * 150000 + b"]}\n")
    err = run(tool, "decode", "--jsonl", "--tokenizer", tok,
              stdin=b'{"ids": ["' + b"x" * 1000000 + b'"]}\n')[2]
    check(len(err) < 2200 and "more bytes)" in err and err.count("\n") == 1,
          f"a huge value in an error is cut ({len(err)} bytes of stderr)")
    # a byte that is not UTF-8, quoted by the JSON parser, is escaped (stderr stays UTF-8)
    p = subprocess.run([tool, "encode", "--jsonl", "--tokenizer", tok],
                       input=b'{"text":"a\xff b"}\n', capture_output=True, timeout=60)
    check(p.returncode == 1 and b"\\xff" in p.stderr and b"\xff" not in p.stderr,
          f"invalid UTF-8 in an error message: exit {p.returncode}, {p.stderr!r}")

    # Corrupt one byte in the middle of the first shard's first block.
    cd = os.path.join(work, "corrupt")
    shutil.copytree(ds, cd)
    shard = os.path.join(cd, "shard-00000.dst")
    raw = bytearray(open(shard, "rb").read())
    raw[160] ^= 0xFF
    open(shard, "wb").write(bytes(raw))
    out = expect_error(tool, work, "inspect --verify on a corrupt block",
                       ["inspect", "--data", cd, "--verify"], 1, "bad block(s), the first: ")
    _, _, err = run(tool, "inspect", "--data", cd, "--verify")
    check("shard-00000.dst" in err and "block 0" in err,
          f"the error names the file and block: {err.strip()!r}")
    check(b'"checksums":"bad"' in out, "inspect prints the report before failing")
    expect_error(tool, work, "decode of a corrupt block", ["decode", "--tokenizer", tok,
                 "--data", cd], 1, "shard-00000.dst")
    expect_error(tool, work, "decode --count past the end", ["decode", "--tokenizer", tok,
                 "--data", ds, "--start", 1, "--count", 10 ** 6], 2, "--count 1000000")
    expect_error(tool, work, "decode --count -2", ["decode", "--tokenizer", tok, "--data", ds,
                 "--count", -2], 2, "--count -2")
    other = os.path.join(work, "tok_other")
    ok_json(tool, "train", "--out", other, "--vocab-size", 600, good)
    expect_error(tool, work, "decode with another tokenizer", ["decode", "--tokenizer",
                 os.path.join(other, "tokenizer.json"), "--data", ds], 1, "another tokenizer")


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def staging_name_of_dead_process():
    """".tmp.HOST.PID" of a process that no longer runs on this host."""
    import socket
    return f".tmp.{socket.gethostname()}.{dead_pid()}"


def stopped(tool, args, feed, ready, sig):
    """Starts tool with stdin on a pipe, writes `feed`, waits until ready() holds, sends sig,
    closes stdin; returns (exit status, stderr)."""
    import signal
    import time

    def default_signals():   # a test run in the background inherits an ignored SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    p = subprocess.Popen([tool] + [str(a) for a in args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=default_signals)
    try:
        p.stdin.write(feed)   # more than a pipe holds: returns once the tool is reading
        p.stdin.flush()
    except BrokenPipeError:   # it ended early: report its status
        p.wait(timeout=120)
        return p.returncode, p.stderr.read().decode("utf-8", "replace")
    deadline = time.time() + 60
    while not ready() and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(sig)
    p.stdin.close()
    err = p.stderr.read().decode("utf-8", "replace")
    p.wait(timeout=120)
    return p.returncode, err


def test_interrupts(tool, work, tok, paths):
    """SIGINT/SIGTERM leave nothing behind (exit 128 + signal); a staging directory of a
    process killed outright is removed by the next encode; train refuses to overwrite."""
    import signal
    import socket
    base = os.path.join(work, "intr")
    os.makedirs(base)
    out = os.path.join(base, "ds")
    feed = ("a line of text for the reader\n" * 40000).encode()   # 1.2 MB
    staged = lambda: any(f.startswith("ds.tmp.") for f in os.listdir(base))
    rc, err = stopped(tool, ["encode", "--tokenizer", tok, "--out", out], feed, staged,
                      signal.SIGINT)
    check(rc == 130 and "interrupted by SIGINT" in err, f"encode stopped by SIGINT: 130 ({rc})")
    check(os.listdir(base) == [], f"encode stopped: nothing left ({os.listdir(base)})")

    tdir = os.path.join(base, "tok")
    rc, err = stopped(tool, ["train", "--out", tdir, "--vocab-size", 600], feed,
                      lambda: True, signal.SIGTERM)
    check(rc == 143 and "interrupted by SIGTERM" in err, f"train stopped by SIGTERM: 143 ({rc})")
    check(not os.path.exists(os.path.join(tdir, "tokenizer.json")), "train stopped: no tokenizer")

    # Leftovers of processes killed outright: this host's with a dead pid and a free lock go,
    # the rest stay.
    host = socket.gethostname()
    gone, live, other = (out + f".tmp.{host}.{dead_pid()}", out + f".tmp.{host}.{os.getpid()}",
                         out + f".tmp.elsewhere.{dead_pid()}")
    for d in (gone, live, other):
        os.makedirs(d)
        open(os.path.join(d, "shard-00000.dst"), "wb").write(b"partial")
        open(os.path.join(d, ".ds-staging-lock"), "wb").close()
    ok_json(tool, "encode", "--tokenizer", tok, "--out", out, paths[0])
    check(sorted(os.listdir(base)) == sorted(os.path.basename(d) for d in (out, live, other)),
          f"stale staging of a dead process removed, others kept ({sorted(os.listdir(base))})")

    # train: an existing tokenizer needs --force; a special-token set needs EOS.
    tdir = os.path.join(base, "tok2")
    ok_json(tool, "train", "--out", tdir, "--vocab-size", 600, paths[0])
    before = open(os.path.join(tdir, "tokenizer.json"), "rb").read()
    expect_error(tool, work, "train over an existing tokenizer", ["train", "--out", tdir,
                 "--vocab-size", 650, paths[0]], 2, "--force")
    check(open(os.path.join(tdir, "tokenizer.json"), "rb").read() == before,
          "refused train leaves the tokenizer as it was")
    ok_json(tool, "train", "--out", tdir, "--vocab-size", 650, "--force", paths[0])
    # killed between its two renames: tokenizer_config.json alone (the one this run writes) and
    # a dead writer's temporary tokenizer.json; a plain rerun completes the pair and removes it
    os.remove(os.path.join(tdir, "tokenizer.json"))
    stale = os.path.join(tdir, "tokenizer.json" + staging_name_of_dead_process() + ".0")
    open(stale, "w").write("{")
    old = time.time() - 120
    os.utime(stale, (old, old))
    ok_json(tool, "train", "--out", tdir, "--vocab-size", 650, paths[0])
    check(sorted(os.listdir(tdir)) == ["tokenizer.json", "tokenizer_config.json"],
          f"a half-published pair completed by a plain rerun ({sorted(os.listdir(tdir))})")
    with open(os.path.join(tdir, "tokenizer_config.json"), "a") as f:
        f.write(" ")   # a config that is not this run's is the user's: kept
    os.remove(os.path.join(tdir, "tokenizer.json"))
    expect_error(tool, work, "train beside another tokenizer_config.json", ["train", "--out",
                 tdir, "--vocab-size", 650, paths[0]], 2, "tokenizer_config.json: already exists")
    # --special-tokens takes one argument: the input after it is an input (it was taken as a
    # third special token, and stdin was read instead)
    t4 = os.path.join(base, "tok4")
    ok_json(tool, "train", "--out", t4, "--vocab-size", 600, "--special-tokens", EOS + ",<x>",
            paths[0], stdin=b"")
    added = json.load(open(os.path.join(t4, "tokenizer.json")))["added_tokens"]
    check([t["content"] for t in added] == [EOS, "<x>"],
          f"--special-tokens A,B INPUT: two special tokens ({[t['content'] for t in added]})")
    expect_error(tool, work, "--special-tokens without EOS", ["train", "--out",
                 os.path.join(base, "tok3"), "--special-tokens", "<a>,<b>", paths[0]], 2,
                 "end-of-sentence", os.path.join(base, "tok3"))
    shutil.rmtree(base)


def golden(tool, work, d):
    tok = os.path.join(d, "tokenizer.json")
    gold = os.path.join(d, "golden-encodings.jsonl")
    if not (os.path.exists(tok) and os.path.exists(gold)):
        print(f"skipped: no {tok} / {gold}")
        return 77
    rc, out, err = run(tool, "encode", "--jsonl", "--tokenizer", tok, stdin=open(gold, "rb").read())
    want = [json.loads(l)["ids"] for l in open(gold, encoding="utf-8")]
    got = [json.loads(l)["ids"] for l in out.decode().splitlines()]
    same = sum(a == b for a, b in zip(want, got))
    check(rc == 0 and len(got) == len(want) and same == len(want),
          f"golden ids: {same}/{len(want)} lines identical")
    # The same texts as a dataset: every document is its golden ids followed by EOS (id 1).
    ds = os.path.join(work, "golden_ds")
    ok_json(tool, "encode", "--tokenizer", tok, "--out", ds, "--format", "jsonl", "--threads", 2,
            gold)
    text = run(tool, "decode", "--tokenizer", tok, "--data", ds, "--skip-special-tokens")[1]
    texts = [json.loads(l)["text"] for l in open(gold, encoding="utf-8")]
    check(text.decode() == "".join(t for t in texts if t), "golden texts round trip via shards")
    return 1 if FAILS else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--golden")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    if a.golden:
        return golden(a.tool, a.work, a.golden)
    docs, paths = make_corpus(a.work)
    tok, ds = test_train_encode_decode(a.tool, a.work, docs, paths)
    test_fim_and_chunks(a.tool, a.work, tok)
    test_punct_newline_split(a.tool, a.work)
    test_bad_inputs(a.tool, a.work, tok, ds)
    test_interrupts(a.tool, a.work, tok, paths)
    print(f"{len(FAILS)} failure(s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
