# Independent PyTorch reference of the DeepSeek-V3 model as ds defines it (docs/model.md):
# MLA with interleaved RoPE / YaRN, dense SwiGLU and DeepSeekMoE layers with sigmoid routing,
# group limits and the bias-adjusted selection, the MTP chain, L_main / L_mtp / balance losses.
# Written from the spec (shared/spec/deepseek-v3.md §1.3-1.11); gradients come from autograd so
# that the C++ backward is checked against an independent derivation. Parameters are a plain
# dict keyed by Hugging Face tensor names; float64 by default.
import json
import math

import torch


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
class Config:
    """The model's hyper-parameters, read from Hugging Face config.json keys."""

    def __init__(self, hf):
        self.hf = dict(hf)
        g = hf.get
        self.vocab_size = int(hf["vocab_size"])
        self.dim = int(hf["hidden_size"])
        self.inter_dim = int(hf["intermediate_size"])
        self.moe_inter_dim = int(hf["moe_intermediate_size"])
        self.n_layers = int(hf["num_hidden_layers"])
        self.n_dense_layers = int(g("first_k_dense_replace", 0))
        self.n_heads = int(hf["num_attention_heads"])
        self.n_routed_experts = int(hf["n_routed_experts"])
        self.n_shared_experts = int(g("n_shared_experts", 0) or 0)
        self.n_activated_experts = int(hf["num_experts_per_tok"])
        self.n_expert_groups = int(g("n_group", 1) or 1)
        self.n_limited_groups = int(g("topk_group", 1) or 1)
        self.route_scale = float(g("routed_scaling_factor", 1.0))
        self.norm_topk_prob = bool(g("norm_topk_prob", True))
        self.score_func = g("scoring_func", "sigmoid")
        if self.score_func != "sigmoid":
            raise ValueError("reference supports scoring_func sigmoid only")
        self.gate_bias = g("topk_method", "noaux_tc") == "noaux_tc"
        if g("topk_method", "noaux_tc") == "greedy":  # HF's V2 gate: all experts, whatever n_group
            self.n_expert_groups = self.n_limited_groups = 1
        self.q_lora_rank = int(g("q_lora_rank", 0) or 0)
        self.kv_lora_rank = int(hf["kv_lora_rank"])
        self.qk_nope_head_dim = int(hf["qk_nope_head_dim"])
        self.qk_rope_head_dim = int(hf["qk_rope_head_dim"])
        self.v_head_dim = int(hf["v_head_dim"])
        self.rope_theta = float(g("rope_theta", 10000.0))
        rs = g("rope_scaling")
        self.yarn = rs is not None
        if self.yarn:
            self.rope_factor = float(rs.get("factor", 1.0))
            self.original_seq_len = int(rs["original_max_position_embeddings"])
            self.beta_fast = float(rs.get("beta_fast", 32.0))
            self.beta_slow = float(rs.get("beta_slow", 1.0))
            self.mscale = float(rs.get("mscale_all_dim", 0.0))
        self.norm_eps = float(g("rms_norm_eps", 1e-6))
        self.n_mtp_layers = int(g("num_nextn_predict_layers", 0) or 0)
        if g("tie_word_embeddings", False):
            raise ValueError("tie_word_embeddings must be false")

    @staticmethod
    def load(path):
        with open(path) as f:
            return Config(json.load(f))

    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer):
        return layer >= self.n_dense_layers  # MTP layers (index >= n_layers) are always MoE

    def moe_layers(self):
        return [l for l in range(self.n_layers + self.n_mtp_layers) if self.is_moe_layer(l)]

    def softmax_scale(self):
        s = 1.0 / math.sqrt(self.qk_head_dim)
        if self.yarn and self.rope_factor > 1.0:
            m = 0.1 * self.mscale * math.log(self.rope_factor) + 1.0
            s *= m * m
        return s


def rope_frequencies(cfg):
    """f'_i for the rope_dim/2 interleaved pairs (spec §1.7), float64."""
    d = cfg.qk_rope_head_dim
    i = torch.arange(d // 2, dtype=torch.float64)
    f = cfg.rope_theta ** (-2.0 * i / d)
    if not cfg.yarn:
        return f

    def corr(r):
        return d * math.log(cfg.original_seq_len / (2.0 * math.pi * r)) / (2.0 * math.log(cfg.rope_theta))

    low = max(math.floor(corr(cfg.beta_fast)), 0)
    high = min(math.ceil(corr(cfg.beta_slow)), d - 1)
    if low == high:
        high += 0.001
    ramp = ((i - low) / (high - low)).clamp(0.0, 1.0)
    return f * (1.0 - ramp) + (f / cfg.rope_factor) * ramp


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------
def _attn_specs(cfg, p):
    c, h = cfg, cfg.n_heads
    out = [(p + "input_layernorm.weight", (c.dim,)), (p + "post_attention_layernorm.weight", (c.dim,))]
    a = p + "self_attn."
    if c.q_lora_rank > 0:
        out += [(a + "q_a_proj.weight", (c.q_lora_rank, c.dim)),
                (a + "q_a_layernorm.weight", (c.q_lora_rank,)),
                (a + "q_b_proj.weight", (h * c.qk_head_dim, c.q_lora_rank))]
    else:
        out += [(a + "q_proj.weight", (h * c.qk_head_dim, c.dim))]
    out += [(a + "kv_a_proj_with_mqa.weight", (c.kv_lora_rank + c.qk_rope_head_dim, c.dim)),
            (a + "kv_a_layernorm.weight", (c.kv_lora_rank,)),
            (a + "kv_b_proj.weight", (h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank)),
            (a + "o_proj.weight", (c.dim, h * c.v_head_dim))]
    return out


def _ffn_specs(prefix, dim, inter):
    return [(prefix + "gate_proj.weight", (inter, dim)), (prefix + "up_proj.weight", (inter, dim)),
            (prefix + "down_proj.weight", (dim, inter))]


def param_specs(cfg):
    """[(HF name, shape)] of every trainable parameter, in a fixed order."""
    c = cfg
    specs = [("model.embed_tokens.weight", (c.vocab_size, c.dim))]
    for l in range(c.n_layers + c.n_mtp_layers):
        p = "model.layers.%d." % l
        if l >= c.n_layers:
            specs += [(p + "enorm.weight", (c.dim,)), (p + "hnorm.weight", (c.dim,)),
                      (p + "eh_proj.weight", (c.dim, 2 * c.dim))]
        specs += _attn_specs(c, p)
        m = p + "mlp."
        if c.is_moe_layer(l):
            specs.append((m + "gate.weight", (c.n_routed_experts, c.dim)))
            for e in range(c.n_routed_experts):
                specs += _ffn_specs(m + "experts.%d." % e, c.dim, c.moe_inter_dim)
            if c.n_shared_experts > 0:
                specs += _ffn_specs(m + "shared_experts.", c.dim, c.n_shared_experts * c.moe_inter_dim)
        else:
            specs += _ffn_specs(m, c.dim, c.inter_dim)
        if l >= c.n_layers:
            specs.append((p + "shared_head.norm.weight", (c.dim,)))
    specs += [("model.norm.weight", (c.dim,)), ("lm_head.weight", (c.vocab_size, c.dim))]
    return specs


def bias_name(layer):
    return "model.layers.%d.mlp.gate.e_score_correction_bias" % layer


def buffer_specs(cfg):
    if not cfg.gate_bias:
        return []
    return [(bias_name(l), (cfg.n_routed_experts,)) for l in cfg.moe_layers()]


def is_norm_gain(name, shape):
    return len(shape) == 1


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def rms_norm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def linear(x, w):
    return x @ w.t()


def apply_rope(x, pos, freqs):
    """x (..., T, [H,] R): rotate interleaved pairs (2i, 2i+1) by angle pos*f_i.
    pos (B, T) integer; x is (B, T, H, R) or (B, T, R)."""
    ang = pos.to(freqs.dtype)[..., None] * freqs  # (B, T, R/2)
    if x.dim() == 4:
        ang = ang[:, :, None, :]
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    xe, xo = x[..., 0::2], x[..., 1::2]
    ye = xe * cos - xo * sin
    yo = xe * sin + xo * cos
    return torch.stack((ye, yo), dim=-1).flatten(-2)


def swiglu(P, prefix, x):
    a = linear(x, P[prefix + "gate_proj.weight"])
    b = linear(x, P[prefix + "up_proj.weight"])
    return linear(torch.nn.functional.silu(a) * b, P[prefix + "down_proj.weight"])


def mla(cfg, P, prefix, x, pos, segments):
    """Multi-head latent attention, naive (non-absorbed) form. x (B, T, dim)."""
    c = cfg
    B, T, _ = x.shape
    H, dn, dr, dv = c.n_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
    a = prefix + "self_attn."
    if c.q_lora_rank > 0:
        cq = rms_norm(linear(x, P[a + "q_a_proj.weight"]), P[a + "q_a_layernorm.weight"], c.norm_eps)
        q = linear(cq, P[a + "q_b_proj.weight"])
    else:
        q = linear(x, P[a + "q_proj.weight"])
    q = q.view(B, T, H, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    kv = linear(x, P[a + "kv_a_proj_with_mqa.weight"])
    ckv, k_pe = kv[..., :c.kv_lora_rank], kv[..., c.kv_lora_rank:]
    ckv = rms_norm(ckv, P[a + "kv_a_layernorm.weight"], c.norm_eps)
    freqs = rope_frequencies(c)
    q_pe = apply_rope(q_pe, pos, freqs)
    k_pe = apply_rope(k_pe, pos, freqs)  # (B, T, dr), shared by all heads
    kvb = linear(ckv, P[a + "kv_b_proj.weight"]).view(B, T, H, dn + dv)
    k_nope, v = kvb[..., :dn], kvb[..., dn:]
    qf = torch.cat((q_nope, q_pe), dim=-1)
    kf = torch.cat((k_nope, k_pe[:, :, None, :].expand(B, T, H, dr)), dim=-1)
    scores = torch.einsum("bthd,bshd->bhts", qf, kf) * c.softmax_scale()
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    if segments is not None:
        allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, H * dv)
    return linear(o, P[a + "o_proj.weight"])


def _stable_topk(x, k):
    """Indices of the k largest entries along the last dim, ties to the lower index."""
    return torch.sort(x, dim=-1, descending=True, stable=True)[1][..., :k]


def route(cfg, z, bias):
    """Router decision for logits z (N, E) in the model's dtype.
    Returns (scores s (N,E), selected idx (N,K), gate weights (N,K), margin (N,)).
    The margin is the smallest gap at a discrete decision (group cut, top-K cut) of each token:
    how far the selection is from flipping."""
    c = cfg
    N, E = z.shape
    K, G = c.n_activated_experts, c.n_expert_groups
    s = torch.sigmoid(z)
    sel = s.detach() + (bias if bias is not None else 0.0)
    margin = torch.full((N,), float("inf"), dtype=torch.float64)
    if G > 1:
        grp = sel.view(N, G, E // G)
        top = min(2, E // G) if bias is not None else 1  # V2 (no bias): the max
        gscore = grp.sort(dim=-1, descending=True)[0][..., :top].sum(-1)  # (N, G)
        gorder = torch.sort(gscore, dim=-1, descending=True, stable=True)[1]
        keep = gorder[:, :c.n_limited_groups]
        if c.n_limited_groups < G:
            gs = gscore.gather(1, gorder)
            margin = torch.minimum(margin, (gs[:, c.n_limited_groups - 1] - gs[:, c.n_limited_groups]).double())
        gmask = torch.zeros(N, G, dtype=torch.bool)
        gmask.scatter_(1, keep, True)
        sel = sel.masked_fill(~gmask[:, :, None].expand(N, G, E // G).reshape(N, E), float("-inf"))
    order = torch.sort(sel, dim=-1, descending=True, stable=True)[1]
    idx = order[:, :K]
    if K < E:
        ss = sel.gather(1, order[:, K - 1:K + 1])
        gap = (ss[:, 0] - ss[:, 1]).double()
        margin = torch.minimum(margin, gap)
    w = s.gather(1, idx)
    if c.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    w = w * c.route_scale
    return s, idx, w, margin


def moe(cfg, P, buffers, layer, x, alpha, lengths=None):
    """DeepSeekMoE FFN on x (B, T, dim). Returns (y, balance loss, counts (E,) int64, margins).
    lengths (B,) or None: row b's balance statistics and the counts cover its first lengths[b]
    tokens only (the rest is padding); a row without any adds 0 to the mean over the B rows."""
    c = cfg
    B, T, D = x.shape
    E, K = c.n_routed_experts, c.n_activated_experts
    m = "model.layers.%d.mlp." % layer
    u = x.reshape(B * T, D)
    z = linear(u, P[m + "gate.weight"])
    bias = buffers.get(bias_name(layer)) if c.gate_bias else None
    s, idx, w, margin = route(c, z, None if bias is None else bias.to(z.dtype))
    y = torch.zeros_like(u)
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        out = swiglu(P, m + "experts.%d." % e, u[tok]) * w[tok, slot][:, None]
        y = y.index_add(0, tok, out)
    if c.n_shared_experts > 0:
        y = y + swiglu(P, m + "shared_experts.", u)
    if lengths is None:
        counts = torch.bincount(idx.reshape(-1), minlength=E)
    else:   # the routes of the real positions only
        keep = (torch.arange(T)[None, :] < lengths[:, None]).reshape(-1)
        counts = torch.bincount(idx[keep].reshape(-1), minlength=E)
    # sequence-wise balance loss: f from the routed experts (no gradient), P differentiable
    onehot = torch.zeros(B * T, E, dtype=s.dtype).scatter_(1, idx, 1.0).view(B, T, E)
    sn = (s / s.sum(-1, keepdim=True)).view(B, T, E)
    if lengths is None:
        f = onehot.sum(1) * (E / (K * T))                 # (B, E)
        Pm = sn.mean(1)                                    # (B, E)
        bal = (f * Pm).sum(-1).mean() * alpha
    else:
        L = lengths.to(s.dtype)                            # (B,)
        real = (torch.arange(T)[None, :] < lengths[:, None]).to(s.dtype)[:, :, None]
        Ls = L.clamp(min=1)[:, None]
        f = (onehot * real).sum(1) * E / (K * Ls)
        Pm = (sn * real).sum(1) / Ls
        bal = ((f * Pm).sum(-1) * (L > 0).to(s.dtype)).mean() * alpha
    return y.view(B, T, D), bal, counts, margin


def block(cfg, P, buffers, layer, x, pos, segments, stats):
    p = "model.layers.%d." % layer
    h = x + mla(cfg, P, p, rms_norm(x, P[p + "input_layernorm.weight"], cfg.norm_eps), pos, segments)
    u = rms_norm(h, P[p + "post_attention_layernorm.weight"], cfg.norm_eps)
    if cfg.is_moe_layer(layer):
        y, bal, counts, margin = moe(cfg, P, buffers, layer, u, stats["alpha"],
                                     stats.get("lengths"))
        stats["balance"][layer] = bal
        stats["counts"][layer] = counts
        stats["margin"][layer] = margin.min().item() if margin.numel() else float("inf")
    else:
        y = swiglu(P, p + "mlp.", u)
    return h + y


def cross_entropy_sum(logits, targets, weights=None):
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           reduction="none")
    return ce.sum() if weights is None else (ce * weights.reshape(-1)).sum()


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def forward(cfg, P, buffers, tokens, alpha=1e-4, mtp_lambda=0.3, positions=None, segments=None,
            loss_mask=None, lengths=None):
    """tokens (B, T+1) int64: inputs x = tokens[:, :T], targets y = tokens[:, 1:].
    SFT packing (optional, all (B, T)): positions (RoPE positions, restarting per sample),
    segments (sample ids: block-diagonal causal attention), loss_mask (weight of each main
    target). With W = sum(loss_mask) (B*T without a mask): L_main = sum mask_t CE_t / W; MTP
    depth k row i (target y[i+k]) has weight mask[i+k] * [seg[i] == seg[i+k]] and
    L_mtp^k = sum w_i CE_i / W. Balance losses use every token of every row (mask ignored),
    or with lengths (B,) (real tokens of each row of `tokens`, the rest padding) the first
    lengths[b] - 1 - k positions of row b at MTP depth k (0: the main model): those whose
    prediction is a real token.
    Returns a dict: logits (B,T,V), mtp_logits [k-1] (B,T-k,V), loss, loss_main, loss_mtp,
    loss_mtp_k [k-1], loss_balance, balance {layer: L_bal}, counts {layer: (E,)}, margin
    {layer: min routing margin}."""
    c = cfg
    x, y = tokens[:, :-1], tokens[:, 1:]
    B, T = x.shape
    if positions is None:
        positions = torch.arange(T)[None].expand(B, T)
    stats = {"balance": {}, "counts": {}, "margin": {}, "alpha": alpha}

    def real_prefix(k):
        return None if lengths is None else (lengths - 1 - k).clamp(min=0)
    stats["lengths"] = real_prefix(0)
    E = P["model.embed_tokens.weight"]
    h = E[x]
    for l in range(c.n_layers):
        h = block(c, P, buffers, l, h, positions, segments, stats)
    g = rms_norm(h, P["model.norm.weight"], c.norm_eps)
    logits = linear(g, P["lm_head.weight"])
    W = float(B * T) if loss_mask is None else loss_mask.to(logits.dtype).sum()
    lm = None if loss_mask is None else loss_mask.to(logits.dtype)
    loss_main = cross_entropy_sum(logits, y, lm) / W
    mtp_logits, mtp_losses = [], []
    for k in range(1, c.n_mtp_layers + 1):
        l = c.n_layers + k - 1
        p = "model.layers.%d." % l
        Tk = T - k
        emb = rms_norm(E[x[:, k:k + Tk]], P[p + "enorm.weight"], c.norm_eps)
        hid = rms_norm(g[:, :Tk], P[p + "hnorm.weight"], c.norm_eps)
        hk = linear(torch.cat((emb, hid), dim=-1), P[p + "eh_proj.weight"])
        seg_k = None if segments is None else segments[:, :Tk]
        stats["lengths"] = real_prefix(k)
        hk = block(c, P, buffers, l, hk, positions[:, :Tk], seg_k, stats)
        g = rms_norm(hk, P[p + "shared_head.norm.weight"], c.norm_eps)
        lk = linear(g, P["lm_head.weight"])
        mtp_logits.append(lk)
        wk = None
        if lm is not None:
            wk = lm[:, k:k + Tk]
        if segments is not None:
            same = (segments[:, :Tk] == segments[:, k:k + Tk]).to(logits.dtype)
            wk = same if wk is None else wk * same
        mtp_losses.append(cross_entropy_sum(lk, y[:, k:k + Tk], wk) / W)
    zero = logits.new_zeros(())
    loss_mtp = (mtp_lambda / c.n_mtp_layers) * sum(mtp_losses) if mtp_losses else zero
    loss_bal = sum(stats["balance"].values()) if stats["balance"] else zero
    return {
        "logits": logits, "mtp_logits": mtp_logits, "loss_main": loss_main, "loss_mtp": loss_mtp,
        "loss_mtp_k": mtp_losses, "loss_balance": loss_bal, "loss": loss_main + loss_mtp + loss_bal,
        "balance": stats["balance"], "counts": stats["counts"], "margin": stats["margin"],
    }


def update_router_bias(cfg, buffers, counts, gamma):
    """b_i += gamma * sign(mean(c) - c_i) for every MoE layer (counts of the whole step)."""
    for layer, cnt in counts.items():
        name = bias_name(layer)
        if name in buffers:
            c = cnt.to(torch.float64)
            buffers[name] += (gamma * torch.sign(c.mean() - c)).to(buffers[name].dtype)


def make_optimizer(P, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """AdamW with decay on >= 2-D tensors only (norm gains excluded)."""
    decay = [t for n, t in P.items() if t.dim() >= 2]
    no_decay = [t for n, t in P.items() if t.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def load_checkpoint(model_dir, dtype):
    """config.json + model*.safetensors of a checkpoint directory -> (Config, params, buffers)."""
    import glob
    import json
    import os
    import st_io
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config(json.load(f))
    tensors = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "model*.safetensors"))):
        tensors.update(st_io.load(path)[0])
    bias = {n for n, _ in buffer_specs(cfg)}
    P = {n: t.to(dtype) for n, t in tensors.items() if n not in bias}
    B = {n: t.to(dtype) for n, t in tensors.items() if n in bias}
    return cfg, P, B
