# PyTorch baseline for bench/infer: greedy generation with the reference model's building
# blocks (tests/model/torch_ref/deepseek_v3_ref.py) in float32 with a naive KV cache that
# stores the full per-head keys (Dn + Dr) and values (Dv) of every layer -- the usual
# non-absorbed "naive" attn_impl of DeepSeek's model.py. Times one prefill of --prompt-len
# random tokens and --new-tokens single-token decode steps (medians over --reps); prints one
# JSON line with tokens/s and the cache bytes per token.
# reference: spec §2.2 (attn_impl "naive": cache k [B, S, H, 192], v [B, S, H, 128]).
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "model", "torch_ref"))
import deepseek_v3_ref as ref  # noqa: E402


def load(model_dir, dtype):
    return ref.load_checkpoint(model_dir, dtype)


class NaiveCache:
    """Per layer k (B, L, H, Dn+Dr) and v (B, L, H, Dv)."""

    def __init__(self, cfg, batch, cap, dtype):
        H, dk, dv = cfg.n_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
        self.k = [torch.zeros(batch, cap, H, dk, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(batch, cap, H, dv, dtype=dtype) for _ in range(cfg.n_layers)]
        self.bytes_per_token = cfg.n_layers * H * (dk + dv) * torch.finfo(dtype).bits // 8


def mla_cached(cfg, P, layer, x, pos0, cache, freqs):
    c, a = cfg, "model.layers.%d.self_attn." % layer
    B, T, _ = x.shape
    H, dn, dr, dv = c.n_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
    if c.q_lora_rank > 0:
        cq = ref.rms_norm(ref.linear(x, P[a + "q_a_proj.weight"]), P[a + "q_a_layernorm.weight"], c.norm_eps)
        q = ref.linear(cq, P[a + "q_b_proj.weight"])
    else:
        q = ref.linear(x, P[a + "q_proj.weight"])
    q = q.view(B, T, H, dn + dr)
    pos = torch.arange(pos0, pos0 + T)[None].expand(B, T)
    q = torch.cat((q[..., :dn], ref.apply_rope(q[..., dn:], pos, freqs)), dim=-1)
    kv = ref.linear(x, P[a + "kv_a_proj_with_mqa.weight"])
    ckv = ref.rms_norm(kv[..., :c.kv_lora_rank], P[a + "kv_a_layernorm.weight"], c.norm_eps)
    k_pe = ref.apply_rope(kv[..., c.kv_lora_rank:], pos, freqs)
    kvb = ref.linear(ckv, P[a + "kv_b_proj.weight"]).view(B, T, H, dn + dv)
    cache.k[layer][:, pos0:pos0 + T] = torch.cat((kvb[..., :dn], k_pe[:, :, None, :].expand(B, T, H, dr)), dim=-1)
    cache.v[layer][:, pos0:pos0 + T] = kvb[..., dn:]
    K, V = cache.k[layer][:, :pos0 + T], cache.v[layer][:, :pos0 + T]
    s = torch.einsum("bthd,bshd->bhts", q, K) * c.softmax_scale()
    if T > 1:
        allowed = torch.arange(pos0 + T)[None, :] <= torch.arange(pos0, pos0 + T)[:, None]
        s = s.masked_fill(~allowed[None, None], float("-inf"))
    o = torch.einsum("bhts,bshd->bthd", torch.softmax(s, dim=-1), V).reshape(B, T, H * dv)
    return ref.linear(o, P[a + "o_proj.weight"])


def forward_last(cfg, P, Bf, ids, pos0, cache, freqs):
    """ids (B, T) -> logits (B, V) of the last position; appends to the cache."""
    p = "model.layers.%d."
    h = P["model.embed_tokens.weight"][ids]
    for l in range(cfg.n_layers):
        h = h + mla_cached(cfg, P, l, ref.rms_norm(h, P[p % l + "input_layernorm.weight"], cfg.norm_eps),
                           pos0, cache, freqs)
        u = ref.rms_norm(h, P[p % l + "post_attention_layernorm.weight"], cfg.norm_eps)
        if cfg.is_moe_layer(l):
            y = ref.moe(cfg, P, Bf, l, u, 0.0)[0]
        else:
            y = ref.swiglu(P, p % l + "mlp.", u)
        h = h + y
    g = ref.rms_norm(h[:, -1], P["model.norm.weight"], cfg.norm_eps)
    return ref.linear(g, P["lm_head.weight"])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cfg, P, Bf = load(a.model, torch.float32)
    freqs = ref.rope_frequencies(cfg)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt_len), generator=g)
    pf, dec = [], []
    with torch.no_grad():
        for _ in range(a.reps):
            cache = NaiveCache(cfg, a.batch, a.prompt_len + a.new_tokens + 1, torch.float32)
            t0 = time.perf_counter()
            logits = forward_last(cfg, P, Bf, ids, 0, cache, freqs)
            pf.append(a.batch * a.prompt_len / (time.perf_counter() - t0))
            nxt = torch.argmax(logits, dim=-1)[:, None]
            t0 = time.perf_counter()
            for s in range(a.new_tokens):
                logits = forward_last(cfg, P, Bf, nxt, a.prompt_len + s, cache, freqs)
                nxt = torch.argmax(logits, dim=-1)[:, None]
            dec.append(a.batch * a.new_tokens / (time.perf_counter() - t0))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
                      "prefill_tokens_per_s": round(med(pf), 1), "decode_tokens_per_s": round(med(dec), 1),
                      "naive_kv_bytes_per_token": cache.bytes_per_token}))


if __name__ == "__main__":
    main()
