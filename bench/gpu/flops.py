#!/usr/bin/env python3
# Training FLOP model shared by the GPU benchmarks (ds's own and tests/model/torch_ref/
# bench_torch_train.py) for TFLOP/s and MFU, from a Hugging Face DeepSeek-V3 config dict.
# The C++ port must use the same formula. No torch needed.
#
# Convention (matmul FLOPs only; one multiply-add = 2 FLOPs; training = forward + backward =
# 3 x forward, i.e. 6 FLOPs per multiply-add weight per token):
#
#   flops_per_token(T) = 6 * N_mm  +  (L + D) * 6 * (T / 2) * H * (Dqk + Dv)
#
#   N_mm = matmul weights a token touches (its "activated matmul parameters"):
#     every layer (L main + D MTP depths), MLA projections:
#        q_a_proj C*Rq + q_b_proj Rq*H*Dqk   (or q_proj C*H*Dqk when q_lora_rank = 0)
#        + kv_a_proj_with_mqa C*(Rkv + Dr) + kv_b_proj Rkv*H*(Dn + Dv) + o_proj H*Dv*C
#     dense layers: 3*C*I (gate, up, down)
#     MoE layers (the MTP block is always MoE): router gate C*E + (K + S)*3*C*Im
#     output head V*C, once for the main model and once per MTP depth (shared weight, own matmul)
#     each MTP depth: eh_proj 2C*C
#   Not counted: the embedding lookup, norms, RoPE, softmax, activations, losses, the optimizer,
#   routing top-k and dispatch (no matmul FLOPs).
#   Attention core per layer (incl. MTP): QK^T (Dqk = Dn + Dr per head) and PV (Dv per head),
#   fwd 2 * keys * H * (Dqk + Dv) FLOPs per query token, x3 for training, with causal masking
#   counted at half of full attention: keys = T/2 for every query (= PaLM's 12*L*H*Dh*T
#   "full attention" term halved).
#   Every MTP depth is counted on all T positions (it really sees T - k: over-counts by k/T).
#   Tokens = batch * seq (the main model's predicted positions).
#
# MFU = flops_per_token * tokens_per_s / peak, peak = 989.4e12 (H100/H200 SXM dense BF16
# datasheet) unless a measured cuBLAS BF16 GEMM peak is given (--peak).
#
# Parameter counts mirror lib/model/config.cpp count_params (spec §1.2): total = main model
# (embedding, layers incl. norms, final norm, head; MTP excluded), activated = the same with K of
# E routed experts, mtp = the unique MTP parameters (shared embedding/head excluded); the router
# bias is a buffer, not counted.
#
# Usage: flops.py [--preset 1b | --config config.json] [--set key=<JSON>] [--seq 4096]
#                 [--peak 8.1e14] [--tokens-per-s X]
import argparse
import ast
import json
import os
import sys

H100_BF16_DENSE_PEAK = 989.4e12   # FLOP/s, H100/H200 SXM datasheet, dense BF16

_HERE = os.path.dirname(os.path.abspath(__file__))
_MAKE_CASE = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "tests", "model", "torch_ref",
                          "make_case.py")


class _Dims:
    """The HF config's dimensions with the reference model's defaults for absent keys."""

    def __init__(self, hf):
        g = hf.get
        self.V = int(hf["vocab_size"])
        self.C = int(hf["hidden_size"])
        self.I = int(hf["intermediate_size"])
        self.Im = int(hf["moe_intermediate_size"])
        self.L = int(hf["num_hidden_layers"])
        self.Ld = int(g("first_k_dense_replace", 0) or 0)
        self.H = int(hf["num_attention_heads"])
        self.E = int(hf["n_routed_experts"])
        self.S = int(g("n_shared_experts", 0) or 0)
        self.K = int(hf["num_experts_per_tok"])
        self.Rq = int(g("q_lora_rank", 0) or 0)
        self.Rkv = int(hf["kv_lora_rank"])
        self.Dn = int(hf["qk_nope_head_dim"])
        self.Dr = int(hf["qk_rope_head_dim"])
        self.Dv = int(hf["v_head_dim"])
        self.D = int(g("num_nextn_predict_layers", 0) or 0)
        self.Dqk = self.Dn + self.Dr


def _attn_matmul(d):
    q = d.C * d.Rq + d.Rq * d.H * d.Dqk if d.Rq > 0 else d.C * d.H * d.Dqk
    return q + d.C * (d.Rkv + d.Dr) + d.Rkv * d.H * (d.Dn + d.Dv) + d.H * d.Dv * d.C


def param_counts(cfg):
    """count_params of lib/model/config.cpp: {total, activated, mtp, embedding}."""
    d = _Dims(cfg)
    emb = d.V * d.C
    norms = 2 * d.C
    attn = _attn_matmul(d) + (d.Rq if d.Rq > 0 else 0) + d.Rkv + norms
    dense = 3 * d.C * d.I
    expert = 3 * d.C * d.Im
    router = d.E * d.C
    moe_all = router + (d.E + d.S) * expert
    moe_act = router + (d.K + d.S) * expert
    n_moe = d.L - d.Ld
    outer = 2 * emb + d.C
    return {
        "total": outer + d.L * attn + d.Ld * dense + n_moe * moe_all,
        "activated": outer + d.L * attn + d.Ld * dense + n_moe * moe_act,
        "mtp": d.D * (3 * d.C + 2 * d.C * d.C + attn + moe_all),
        "embedding": emb,
    }


def matmul_params_per_token(cfg):
    """N_mm of the convention above (main model + MTP depths)."""
    d = _Dims(cfg)
    moe = d.E * d.C + (d.K + d.S) * 3 * d.C * d.Im
    main = d.L * _attn_matmul(d) + d.Ld * 3 * d.C * d.I + (d.L - d.Ld) * moe + d.V * d.C
    mtp = d.D * (2 * d.C * d.C + _attn_matmul(d) + moe + d.V * d.C)
    return main + mtp


def attention_flops_per_token(cfg, seq_len):
    """Causal attention core (QK^T + PV), forward + backward, at T/2 keys per query."""
    d = _Dims(cfg)
    return (d.L + d.D) * 6.0 * (seq_len / 2.0) * d.H * (d.Dqk + d.Dv)


def train_flops_per_token(cfg, seq_len):
    """Forward + backward matmul FLOPs per trained token (convention in the file header)."""
    return 6.0 * matmul_params_per_token(cfg) + attention_flops_per_token(cfg, seq_len)


def load_presets():
    """make_case.py's PRESETS dict, read without importing it (it needs torch)."""
    with open(_MAKE_CASE) as f:
        tree = ast.parse(f.read(), _MAKE_CASE)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PRESETS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("no PRESETS in " + _MAKE_CASE)


def report(cfg, seq_len, peak=None, tokens_per_s=None):
    pc = param_counts(cfg)
    fpt = train_flops_per_token(cfg, seq_len)
    r = {
        "seq": seq_len,
        "params_total": pc["total"], "params_active": pc["activated"], "params_mtp": pc["mtp"],
        "params_all": pc["total"] + pc["mtp"],
        "matmul_params_per_token": matmul_params_per_token(cfg),
        "attn_flops_per_token": attention_flops_per_token(cfg, seq_len),
        "flops_per_token": fpt,
        "peak_tflops": H100_BF16_DENSE_PEAK / 1e12,
    }
    if peak:
        r["measured_peak_tflops"] = peak / 1e12
    if tokens_per_s:
        r["tokens_per_s"] = tokens_per_s
        r["tflops"] = fpt * tokens_per_s / 1e12
        r["mfu"] = fpt * tokens_per_s / H100_BF16_DENSE_PEAK
        if peak:
            r["mfu_measured_peak"] = fpt * tokens_per_s / peak
    return r


def main():
    ap = argparse.ArgumentParser(description="training FLOPs per token / parameter counts")
    ap.add_argument("--preset", default="1b", help="a make_case.py PRESETS name")
    ap.add_argument("--config", help="HF config.json (overrides --preset)")
    ap.add_argument("--set", action="append", help="override an HF key: key=<JSON value>")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--peak", type=float, help="measured peak FLOP/s (e.g. cuBLAS BF16 GEMM)")
    ap.add_argument("--tokens-per-s", type=float, help="also print TFLOP/s and MFU for this rate")
    args = ap.parse_args()
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
    else:
        presets = load_presets()
        if args.preset not in presets:
            sys.exit("flops.py: unknown preset '%s' (known: %s)" % (args.preset, ", ".join(sorted(presets))))
        cfg = dict(presets[args.preset])
    for kv in args.set or []:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    r = report(cfg, args.seq, args.peak, args.tokens_per_s)
    r = {"preset": None if args.config else args.preset, **r}
    print("params_total %d  params_active %d  params_mtp %d  flops_per_token %.6g (%.3f GFLOP; "
          "attention %.1f%%)" % (r["params_total"], r["params_active"], r["params_mtp"],
                                 r["flops_per_token"], r["flops_per_token"] / 1e9,
                                 100.0 * r["attn_flops_per_token"] / r["flops_per_token"]))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
