# Greedy generation with the independent PyTorch reference model (tests/model/torch_ref/
# deepseek_v3_ref.py, float64) from a ds checkpoint directory (config.json + model*.safetensors
# written by ds::model::save_model): every step recomputes the full forward of the sequence
# (no cache), takes the argmax of the last position's logits, and also reports the gap between
# the best and second-best logit so the C++ test can tell real disagreements from near-ties.
# Output: one JSON line per prompt {"tokens": [...], "margins": [...]}.
# reference: spec §2.4 (greedy: temperature 0 -> argmax); docs/model.md.
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "model", "torch_ref"))
import deepseek_v3_ref as ref  # noqa: E402


def load(model_dir, dtype):
    return ref.load_checkpoint(model_dir, dtype)


def last_logits(cfg, P, B, ids):
    """Main-model logits (V,) of the last position of ids (list of int)."""
    x = torch.tensor([ids], dtype=torch.int64)
    pos = torch.arange(len(ids))[None]
    stats = {"balance": {}, "counts": {}, "margin": {}, "alpha": 0.0}
    h = P["model.embed_tokens.weight"][x]
    for l in range(cfg.n_layers):
        h = ref.block(cfg, P, B, l, h, pos, None, stats)
    g = ref.rms_norm(h[:, -1], P["model.norm.weight"], cfg.norm_eps)
    return ref.linear(g, P["lm_head.weight"])[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    ap.add_argument("--max-new", type=int, default=8)
    a = ap.parse_args()
    cfg, P, B = load(a.model, torch.float64)
    with torch.no_grad():
        for prompt in json.loads(a.prompts):
            ids, out, margins = list(prompt), [], []
            for _ in range(a.max_new):
                lg = last_logits(cfg, P, B, ids)
                top = torch.topk(lg, 2)
                t = int(torch.argmax(lg))   # first maximum: ties to the lower id
                out.append(t)
                margins.append(float(top.values[0] - top.values[1]))
                ids.append(t)
            print(json.dumps({"tokens": out, "margins": margins}))


if __name__ == "__main__":
    main()
