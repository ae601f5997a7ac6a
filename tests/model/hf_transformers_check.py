"""ds against Hugging Face transformers' own DeepSeek-V3 (DeepseekV3ForCausalLM), both ways:

  HF -> ds  random models that transformers builds and saves (its config.json keys, F32, and a
            BF16 copy in 100 KB shards with an index) are scored by ds-eval and continued by
            ds-generate;
  ds -> HF  checkpoints that ds-pretrain writes are loaded by transformers (no missing tensor;
            only the MTP layers unexpected) and scored the same way, and one of them after
            ds-convert-fp8 quantize, dequantised by transformers (FineGrainedFP8Config; needs
            accelerate, else that part is skipped).

Per document the summed negative log-likelihood must agree to 2e-5 relative, and the greedy
continuations must be the same text; both after BOS where the checkpoint's tokenizer_config.json
says add_bos_token (the BF16 copies), else documents after EOS and the prompt alone. Two configurations: YaRN with grouped routing, a query
LoRA, norm_topk_prob and routed_scaling_factor 2.5; and plain RoPE with q_proj (no query
LoRA), one group, norm_topk_prob false and two shared experts. A YaRN config whose mscale keys
make transformers scale cos/sin must be refused by ds (ConfigError, exit 1).

Needs a Python with torch >= 2 and transformers >= 5 (DeepseekV3ForCausalLM): the interpreter
in DS_HF_PYTHON, else this one; without them the test is skipped (exit 77). CI's Debian
python has neither; `python3 -m venv V && V/bin/pip install torch transformers` makes one.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_util import FAILS, check, grammar_corpus, ok, run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 384
DOCS = ["the king went up to the mountain. a stranger sang of the sea.",
        "my brother rested by the gate. the people came down from the city. " * 6,
        "Q: 12+7=? the river looked upon the wilderness\n\n\u00e9t\u00e9 \u2014 fin."]
PROMPT = "the people"
NEW_TOKENS = 24


# ----------------------------------------------------------------------------------------------
# the transformers side (run in DS_HF_PYTHON as `--worker JOB.json`)
# ----------------------------------------------------------------------------------------------
def worker(job):
    import torch
    from tokenizers import Tokenizer
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    torch.set_num_threads(2)
    out = {}
    for m in job.get("make", []):   # random models saved by transformers
        hf = dict(m["config"])
        hf.pop("num_nextn_predict_layers", None)        # transformers has no MTP module
        if not hf.get("q_lora_rank"):
            hf["q_lora_rank"] = None                    # transformers' "no query LoRA"
        hf["num_key_value_heads"] = hf["num_attention_heads"]
        torch.manual_seed(m["seed"])
        model = DeepseekV3ForCausalLM(DeepseekV3Config(**hf)).float()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.normal_(0, 0.2)
                if "norm" in name:
                    p.mul_(0.5).add_(1.0)
            for name, b in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    b.normal_(0, 0.3)
        model.save_pretrained(m["out"])
        model.to(torch.bfloat16).save_pretrained(m["out_bf16"], max_shard_size="100KB")
    for c in job.get("score", []):
        tok = Tokenizer.from_file(os.path.join(c["dir"], "tokenizer.json"))
        extra = {}
        if c.get("fp8"):   # transformers' own dequantisation of the 128x128 blocks
            from transformers import FineGrainedFP8Config
            extra["quantization_config"] = FineGrainedFP8Config(dequantize=True)
        model, info = DeepseekV3ForCausalLM.from_pretrained(
            c["dir"], dtype=torch.float32, experts_implementation="eager",
            output_loading_info=True, **extra)
        model.eval()
        # ds's convention (docs/formats.md): BOS before a text when tokenizer_config.json says
        # add_bos_token (or nothing); without it a scored document starts from EOS
        cfg_path = os.path.join(c["dir"], "tokenizer_config.json")
        add_bos = True
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                add_bos = json.load(f).get("add_bos_token")
            add_bos = True if add_bos is None else add_bos
        bos = model.config.bos_token_id
        start = bos if add_bos else model.config.eos_token_id
        nll = []
        for text in DOCS:
            ids = torch.tensor([[start] + tok.encode(text, add_special_tokens=False).ids])
            with torch.no_grad():
                logits = model(ids).logits[0].double()
            lp = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None]).sum()
            nll.append(-lp.item())
        ids = [bos] * add_bos + tok.encode(PROMPT, add_special_tokens=False).ids
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=model.config.eos_token_id)
        out[c["dir"]] = {"nll": nll, "greedy": tok.decode(gen[0, len(ids):].tolist(),
                                                          skip_special_tokens=False),
                         "missing": sorted(info["missing_keys"]),
                         "unexpected": sorted(info["unexpected_keys"])}
    return out


def call_worker(py, work, job):
    path = os.path.join(work, "job.json")
    with open(path, "w") as f:
        json.dump(job, f)
    p = subprocess.run([py, os.path.abspath(__file__), "--worker", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    if p.returncode != 0:
        raise SystemExit("FAIL: transformers worker: " + p.stderr.decode()[-3000:])
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# the ds side and the comparison
# ----------------------------------------------------------------------------------------------
def ds_scores(a, ckpt, docs):
    log = os.path.join(a.work, "samples.jsonl")
    ok(a.eval, "perplexity", "--model", ckpt, "--log-samples", log, "--no-progress",
       "--threads", 2, *docs)
    with open(log) as f:
        nll = [json.loads(line)["sum_nll"] for line in f]
    text = ok(a.generate, "--model", ckpt, "--prompt", PROMPT, "--max-new-tokens", NEW_TOKENS,
              "--threads", 2)
    return nll, text[:-1] if text.endswith("\n") else text


def configs(vocab):
    out = {}
    for name in ("case_a", "case_b"):
        with open(os.path.join(HERE, "torch_ref", "configs", name + ".json")) as f:
            c = json.load(f)
        c["vocab_size"] = vocab
        out[name] = c
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--eval")
    ap.add_argument("--generate")
    ap.add_argument("--pretrain")
    ap.add_argument("--tokenize")
    ap.add_argument("--convert")
    ap.add_argument("--work")
    a = ap.parse_args()
    if a.worker:
        with open(a.worker) as f:
            print(json.dumps(worker(json.load(f))))
        return 0
    py = os.environ.get("DS_HF_PYTHON") or sys.executable
    probe = subprocess.run([py, "-c", "import torch, transformers, tokenizers; "
                            "from transformers import DeepseekV3ForCausalLM; "
                            "print(torch.__version__, transformers.__version__)"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        print(f"skip: {py} has no torch + transformers with DeepseekV3ForCausalLM "
              "(set DS_HF_PYTHON to a Python that has them)")
        return 77
    print("transformers side: torch, transformers " + probe.stdout.decode().strip())
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    w = lambda *p: os.path.join(a.work, *p)   # noqa: E731
    text = grammar_corpus(w("corpus.txt"), random.Random(3), docs=200)
    ok(a.tokenize, "train", "--vocab-size", VOCAB, "--out", w("tok"), "--force", text)
    ok(a.tokenize, "encode", "--tokenizer", w("tok", "tokenizer.json"), "--out", w("data"),
       "--doc-split", "blank-line", "--force", text)
    docs = []
    for i, d in enumerate(DOCS):
        docs.append(w(f"doc{i}.txt"))
        with open(docs[-1], "w", encoding="utf-8") as f:
            f.write(d)

    # The models' vocabulary is exactly the tokenizer's ids: ds-generate never samples a head row
    # that tokenizer.json lacks, where transformers would.
    with open(w("tok", "tokenizer.json")) as f:
        t = json.load(f)
    vocab = 1 + max(list(t["model"]["vocab"].values()) + [x["id"] for x in t["added_tokens"]])
    cfgs = configs(vocab)
    make, ckpts = [], []
    for i, (name, c) in enumerate(sorted(cfgs.items())):
        make.append({"config": c, "seed": 11 + i, "out": w("hf_" + name),
                     "out_bf16": w("hf_" + name + "_bf16")})
        ckpts += [w("hf_" + name), w("hf_" + name + "_bf16")]
        # ds -> HF: a few ds-pretrain steps from this config (router biases move too)
        cfg_path = w(name + ".json")
        with open(cfg_path, "w") as f:
            json.dump(c, f)
        ok(a.pretrain, "--model-config", cfg_path, "--tokenizer", w("tok", "tokenizer.json"),
           "--data", w("data"), "--out", w("ds_" + name), "--steps", 6, "--batch-size", 4,
           "--seq-len", 64, "--lr", "1e-2", "--threads", 2, "--seed", 5)
        ckpts.append(w("ds_" + name, "step-00000006"))
    call_worker(py, a.work, {"make": make})
    for m in make:
        for d in (m["out"], m["out_bf16"]):
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(w("tok", f), d)
        # ds-tokenize's tokenizer_config.json says add_bos_token false (as ds-pretrain's
        # checkpoints of data without BOS): the BF16 copies take the other way, BOS first
        with open(os.path.join(m["out_bf16"], "tokenizer_config.json")) as f:
            tc = json.load(f)
        tc["add_bos_token"] = True
        with open(os.path.join(m["out_bf16"], "tokenizer_config.json"), "w") as f:
            json.dump(tc, f, indent=2)
    with open(w("hf_case_a", "config.json")) as f:
        saved = json.load(f)
    check("rope_parameters" in saved or "rope_scaling" in saved,
          "transformers wrote its RoPE keys: " + ", ".join(k for k in saved if "rope" in k))

    # ds-convert-fp8's FP8 checkpoint, dequantised by transformers (which needs accelerate)
    fp8 = subprocess.run([py, "-c", "import accelerate"], stderr=subprocess.DEVNULL).returncode == 0
    if fp8:
        ok(a.convert, "quantize", "--model", w("ds_case_a", "step-00000006"), "--out",
           w("ds_case_a_fp8"))
        ckpts.append(w("ds_case_a_fp8"))
    else:
        print(f"skip the FP8 checkpoint: {py} has no accelerate (transformers needs it for FP8)")
    hf = call_worker(py, a.work, {"score": [{"dir": c, "fp8": c.endswith("_fp8")}
                                            for c in ckpts]})
    for c in ckpts:
        name = os.path.relpath(c, a.work)
        r = hf[c]
        nll, greedy = ds_scores(a, c, docs)
        worst = max(abs(x - y) / abs(y) for x, y in zip(nll, r["nll"]))
        check(worst < 2e-5, f"{name}: summed NLL per document, ds {['%.6f' % x for x in nll]} "
              f"vs transformers {['%.6f' % y for y in r['nll']]} (worst rel {worst:.1e})")
        check(greedy == r["greedy"], f"{name}: greedy continuation of {PROMPT!r} "
              f"(ds {greedy!r}, transformers {r['greedy']!r})")
        if name.startswith("ds_"):
            n_layers = cfgs[name.split("/")[0][3:9]]["num_hidden_layers"]
            mtp = [k for k in r["unexpected"] if k.startswith("model.layers.")
                   and int(k.split(".")[2]) >= n_layers]
            check(not r["missing"] and mtp == r["unexpected"],
                  f"{name}: transformers loads every tensor (missing {r['missing']}, unexpected "
                  f"besides the MTP layers {sorted(set(r['unexpected']) - set(mtp))})")

    # mscale keys that make transformers scale cos/sin: refused, not computed differently
    bad = w("hf_case_a_no_mscale")
    shutil.copytree(w("hf_case_a"), bad)
    with open(os.path.join(bad, "config.json")) as f:
        cj = json.load(f)
    for key in ("rope_scaling", "rope_parameters"):
        if isinstance(cj.get(key), dict):
            cj[key].pop("mscale", None)
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(cj, f)
    rc, out, err = run(a.eval, "perplexity", "--model", bad, "--no-progress", docs[0])
    check(rc == 1 and "cos/sin" in err and out == "",
          f"a YaRN config without mscale is refused (exit {rc}: {err.strip()[:160]})")
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
