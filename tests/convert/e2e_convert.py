#!/usr/bin/env python3
# End-to-end test of ds-convert-fp8 on a real training checkpoint: ds-tokenize makes a corpus'
# tokenizer and shards, ds-pretrain trains the tiny preset for a few steps, then
#   quantize (twice: byte-identical), verify against the original (E4M3 bound), dequantize;
#   ds-generate runs on the FP8 and the dequantised checkpoints; ds-eval perplexity on the FP8
#   checkpoint is within 2% of the original's;
#   errors: an existing OUT (exit 2), an FP8 weight without its scale (exit 1, one stderr line
#   naming the tensor, nothing left behind), --allow-missing-scale (passes it through), verify
#   beyond a threshold (exit 1) and against another model (exit 1).
# Usage: e2e_convert.py --convert BIN --pretrain BIN --tokenize BIN --generate BIN --eval BIN
#        --work DIR
import argparse
import json
import os
import random
import shutil
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_util import FAILS, check, grammar_corpus, ok, run  # noqa: E402



def files_of(d):
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = f.read()
    return out


def st_header(path):
    """The JSON header of a safetensors file and the offset of its data."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def drop_tensor(path, name):
    """Rewrites a safetensors file without tensor `name` (the others' bytes unchanged)."""
    header, start = st_header(path)
    with open(path, "rb") as f:
        blob = f.read()[start:]
    meta = header.pop("__metadata__", None)
    header.pop(name)
    out, pos, new = [], 0, {} if meta is None else {"__metadata__": meta}
    for k, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = v["data_offsets"]
        out.append(blob[b:e])
        new[k] = dict(v, data_offsets=[pos, pos + e - b])
        pos += e - b
    js = json.dumps(new, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js + b"".join(out))


def weight_file(ckpt, name):
    idx = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(idx):
        return os.path.join(ckpt, json.load(open(idx))["weight_map"][name])
    return os.path.join(ckpt, "model.safetensors")


def make_checkpoint(args, work):
    text = grammar_corpus(os.path.join(work, "corpus.txt"), random.Random(5), max_sentences=10)
    ok(args.tokenize, "train", "--vocab-size", 384, "--out", os.path.join(work, "tok"), text)
    tok = os.path.join(work, "tok", "tokenizer.json")
    data = os.path.join(work, "data")
    ok(args.tokenize, "encode", "--tokenizer", tok, "--out", data, "--doc-split", "blank-line",
       "--force", text)
    run_dir = os.path.join(work, "run")
    ok(args.pretrain, "--preset", "tiny", "--tokenizer", tok, "--data", data, "--out", run_dir,
       "--steps", 30, "--batch-size", 4, "--seq-len", 64, "--lr", "3e-3", "--threads", 2,
       "--seed", 3)
    steps = sorted(d for d in os.listdir(run_dir) if d.startswith("step-"))
    return os.path.join(run_dir, steps[-1]), data


def ppl(args, ckpt, data):
    rep = json.loads(ok(args.eval, "perplexity", "--model", ckpt, "--data", data, "--limit", 40,
                        "--threads", 2, "--no-progress"))
    return rep["metrics"]["perplexity"]["value"]


def main():
    ap = argparse.ArgumentParser()
    for k in ("convert", "pretrain", "tokenize", "generate", "eval", "work"):
        ap.add_argument("--" + k, required=True)
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    C = args.convert
    ckpt, data = make_checkpoint(args, work)
    fp8, fp8b, bf16 = (os.path.join(work, n) for n in ("fp8", "fp8b", "bf16"))

    qstats = stats = json.loads(ok(C, "quantize", "--model", ckpt, "--out", fp8, "--threads", 2))
    check(stats["quantized"] > 0 and stats["bytes_out"] < stats["bytes_in"],
          f"quantize: {stats['quantized']} weights, {stats['bytes_in']} -> {stats['bytes_out']} bytes")
    ok(C, "quantize", "--model", ckpt, "--out", fp8b, "--threads", 1)
    check(files_of(fp8) == files_of(fp8b), "quantize: byte-identical output (2 vs 1 threads)")
    cfg = json.load(open(os.path.join(fp8, "config.json")))
    check(cfg.get("quantization_config") == {"activation_scheme": "dynamic", "fmt": "e4m3",
                                             "quant_method": "fp8", "weight_block_size": [128, 128]},
          "quantize: config.json carries the official quantization_config")
    check(not os.path.exists(os.path.join(fp8, "training_state")), "training_state/ not copied")
    check(os.path.exists(os.path.join(fp8, "tokenizer.json")), "tokenizer copied")

    out = ok(C, "verify", "--model", fp8, "--reference", ckpt)
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    summ = lines[-1]["summary"]
    check(summ["ok"] and summ["max_rel_error"] <= 16 / 448 * (1 + 1e-5),
          f"verify: FP8 vs original max rel error {summ['max_rel_error']:.4f} <= 16/448")
    rc, out, err = run(C, "verify", "--model", fp8, "--reference", ckpt, "--max-rel-error", 1e-4)
    check(rc == 1 and len(err.strip().splitlines()) == 1 and '"ok":false' in out,
          "verify: beyond --max-rel-error exits 1 after the report")

    stats = json.loads(ok(C, "dequantize", "--model", fp8, "--out", bf16))
    check(stats["dequantized"] == qstats["quantized"], f"dequantize: {stats['dequantized']} weights")
    hdr, _ = st_header(weight_file(bf16, "model.layers.0.self_attn.o_proj.weight"))
    check(hdr["model.layers.0.self_attn.o_proj.weight"]["dtype"] == "BF16" and
          not any(k.endswith("_scale_inv") for k in hdr), "dequantize: BF16 weights, no scales")
    check("quantization_config" not in json.load(open(os.path.join(bf16, "config.json"))),
          "dequantize: quantization_config removed")

    for name, d in (("original", ckpt), ("fp8", fp8), ("dequantised", bf16)):
        rc, out, err = run(args.generate, "--model", d, "--prompt", "the king", "--max-new-tokens",
                           12, "--temperature", 0, "--threads", 2)
        check(rc == 0 and out.strip() != "", f"ds-generate on the {name} checkpoint: {out.strip()!r}")
    p0, p1 = ppl(args, ckpt, data), ppl(args, fp8, data)
    check(abs(p1 - p0) / p0 < 0.02,
          f"ds-eval perplexity: original {p0:.4f}, fp8 {p1:.4f} ({100 * (p1 - p0) / p0:+.2f}%)")

    # Errors.
    rc, _, err = run(C, "quantize", "--model", ckpt, "--out", fp8)
    check(rc == 2 and "--force" in err and len(err.strip().splitlines()) == 1,
          "existing OUT: exit 2, one line naming --force")
    check(files_of(fp8) == files_of(fp8b), "existing OUT left untouched")
    broken = os.path.join(work, "broken")
    shutil.copytree(fp8, broken)
    w = "model.layers.1.mlp.experts.0.up_proj.weight"
    drop_tensor(weight_file(broken, w + "_scale_inv"), w + "_scale_inv")
    outs = os.path.join(work, "outs")
    os.makedirs(outs)
    rc, _, err = run(C, "dequantize", "--model", broken, "--out", os.path.join(outs, "x"))
    lines = err.strip().splitlines()
    check(rc == 1 and len(lines) == 1 and w in lines[0] and "--allow-missing-scale" in lines[0],
          f"missing scale: exit 1, one line: {lines[-1] if lines else ''}")
    check(os.listdir(outs) == [], "missing scale: nothing left in the output's parent")
    ok(C, "dequantize", "--model", broken, "--out", os.path.join(outs, "x"), "--allow-missing-scale")
    hdr, _ = st_header(weight_file(os.path.join(outs, "x"), w))
    check(hdr[w]["dtype"] == "F8_E4M3", "--allow-missing-scale: the weight passes through as F8_E4M3")
    rc, _, err = run(C, "verify", "--model", broken, "--reference", ckpt)
    check(rc == 1 and w in err, "verify: FP8 weight without its scale is an error")
    rc, _, err = run(C, "verify", "--model", os.path.join(work, "tok", "tokenizer.json"),
                     "--reference", ckpt)
    check(rc == 1 and len(err.strip().splitlines()) == 1, "verify: a non-checkpoint is an error")

    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
