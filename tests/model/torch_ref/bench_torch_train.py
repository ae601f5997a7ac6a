# Training-throughput baseline: the PyTorch reference model (deepseek_v3_ref.py) trained on
# random tokens with AdamW + clipping + router bias update, exactly the step ds's pretrain
# performs (forward with MTP, loss, backward, global-norm clip, AdamW, router bias update), to
# compare ds's tokens/s against. Prints the median step time / tokens/s of the steps after the
# warm-up: one human line (format unchanged since the CPU-only version) and one JSON line with
# TFLOP/s and MFU from bench/gpu/flops.py (the FLOP convention ds's GPU benchmark uses too).
#
# Usage: bench_torch_train.py [--preset tiny | --config config.json] [--set key=<JSON>]
#   [--batch 8] [--seq 128] [--steps 8] [--warmup 2] [--threads 1]
#   [--device cpu|cuda] [--dtype fp32|bf16] [--impl auto|ref|fast] [--attn auto|ref|sdpa|sdpa-padv]
#   [--compile] [--peak FLOP/s]
#
# --device cpu --dtype fp32 (the defaults) runs the reference model's own functions, as before.
# --dtype bf16: torch.autocast(device, bfloat16) around forward + loss; FP32 master weights,
#   gradients and AdamW moments (backward outside autocast, as torch recommends).
# --impl fast (the default unless cpu + fp32): the reference's forward() with three functions
#   swapped in this process only (deepseek_v3_ref.py itself is unchanged, it is a test oracle):
#   - mla: the same math with device-resident masks/RoPE tables; --attn sdpa replaces the
#     einsum-softmax-einsum core by F.scaled_dot_product_attention(is_causal=True,
#     scale=softmax_scale) when there is no segment mask (same causal softmax(QK^T*s)V);
#     sdpa-padv zero-pads V to the QK head dim so the flash kernel is eligible (output sliced);
#   - moe: tokens sorted by expert (one argsort), a loop over experts on contiguous slices, one
#     index_add combine, instead of a nonzero() per expert; same routing (stable sorts, group
#     limit, bias-adjusted selection), gate weights, shared expert, balance loss and counts;
#     the router's logits are computed in FP32 (autocast off: DeepSeek-V3 keeps gating in
#     higher precision); the routing-margin diagnostic (a host sync per layer) is skipped.
#   - swiglu: unchanged math, optionally torch.compile'd (--compile, with the attention core).
# --compile: torch.compile on the attention core and the SwiGLU FFN (tensor-only functions);
#   if compiling fails, says so and continues uncompiled.
# On cuda every timed step is bracketed by torch.cuda.synchronize(); weights are drawn on the
# device (same distributions as on the CPU: matrices N(0, 0.02), embedding N(0, 1), norm gains
# 1 + N(0, 0.1), router biases 0).
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "bench", "gpu"))
import deepseek_v3_ref as ref  # noqa: E402
import flops  # noqa: E402
import make_case  # noqa: E402


# ----------------------------------------------------------------------------------------------
# fast implementation (same math as deepseek_v3_ref.py, GPU-friendly)
# ----------------------------------------------------------------------------------------------
def _ffn(x, w1, w3, w2):
    """SwiGLU: W2 (silu(W1 x) * W3 x), as ref.swiglu."""
    return (F.silu(x @ w1.t()) * (x @ w3.t())) @ w2.t()


class Fast:
    """Drop-in replacements for ref.mla / ref.moe / ref.swiglu (installed by install())."""

    def __init__(self, cfg, device, attn, amp_dtype, compile_):
        self.cfg, self.device, self.attn, self.amp_dtype = cfg, device, attn, amp_dtype
        self.freqs = ref.rope_frequencies(cfg).to(device)   # float64, as the reference
        self.scale = cfg.softmax_scale()
        self.ffn = _ffn
        self.core = self._mla_core
        self.compiled = False
        if compile_:
            self.set_compiled(True)

    def set_compiled(self, on):
        if on:
            self.ffn = torch.compile(_ffn)
            self.core = torch.compile(self._mla_core)
        else:
            self.ffn, self.core = _ffn, self._mla_core
        self.compiled = on

    def install(self):
        self.saved = (ref.mla, ref.moe, ref.swiglu)
        ref.mla, ref.moe, ref.swiglu = self.mla, self.moe, self.swiglu

    def uninstall(self):
        ref.mla, ref.moe, ref.swiglu = self.saved

    # --- SwiGLU
    def swiglu(self, P, prefix, x):
        return self.ffn(x, P[prefix + "gate_proj.weight"], P[prefix + "up_proj.weight"],
                        P[prefix + "down_proj.weight"])

    # --- MLA
    def mla(self, cfg, P, prefix, x, pos, segments):
        a = prefix + "self_attn."
        if cfg.q_lora_rank > 0:
            wq = (P[a + "q_a_proj.weight"], P[a + "q_a_layernorm.weight"], P[a + "q_b_proj.weight"])
        else:
            wq = (None, None, P[a + "q_proj.weight"])
        return self.core(x, pos, segments, *wq, P[a + "kv_a_proj_with_mqa.weight"],
                         P[a + "kv_a_layernorm.weight"], P[a + "kv_b_proj.weight"],
                         P[a + "o_proj.weight"])

    def _mla_core(self, x, pos, segments, wq_a, q_norm, wq_b, wkv_a, kv_norm, wkv_b, wo):
        c = self.cfg
        B, T, _ = x.shape
        H, dn, dr, dv = c.n_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        if wq_a is not None:
            q = ref.linear(ref.rms_norm(ref.linear(x, wq_a), q_norm, c.norm_eps), wq_b)
        else:
            q = ref.linear(x, wq_b)
        q = q.view(B, T, H, dn + dr)
        q_nope, q_pe = q[..., :dn], q[..., dn:]
        kv = ref.linear(x, wkv_a)
        ckv, k_pe = kv[..., :c.kv_lora_rank], kv[..., c.kv_lora_rank:]
        ckv = ref.rms_norm(ckv, kv_norm, c.norm_eps)
        q_pe = ref.apply_rope(q_pe, pos, self.freqs)
        k_pe = ref.apply_rope(k_pe, pos, self.freqs)
        kvb = ref.linear(ckv, wkv_b).view(B, T, H, dn + dv)
        k_nope, v = kvb[..., :dn], kvb[..., dn:]
        qf = torch.cat((q_nope, q_pe), dim=-1)
        kf = torch.cat((k_nope, k_pe[:, :, None, :].expand(B, T, H, dr)), dim=-1)
        if self.attn in ("sdpa", "sdpa-padv") and segments is None:
            dt = v.dtype
            qt, kt, vt = (t.to(dt).transpose(1, 2) for t in (qf, kf, v))   # (B, H, T, d)
            pad = self.attn == "sdpa-padv" and dv < dn + dr
            if pad:
                vt = F.pad(vt, (0, dn + dr - dv))
            o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=self.scale)
            if pad:
                o = o[..., :dv]
            o = o.transpose(1, 2).reshape(B, T, H * dv)
        else:
            scores = torch.einsum("bthd,bshd->bhts", qf, kf) * self.scale
            allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None, None]
            if segments is not None:
                allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
            scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            o = torch.einsum("bhts,bshd->bthd", probs, v).reshape(B, T, H * dv)
        return ref.linear(o, wo)

    # --- routing (ref.route without the margin diagnostic, device-resident)
    def route(self, z, bias):
        c = self.cfg
        N, E = z.shape
        K, G = c.n_activated_experts, c.n_expert_groups
        s = torch.sigmoid(z)
        sel = s.detach() + (bias if bias is not None else 0.0)
        if G > 1:
            grp = sel.view(N, G, E // G)
            top = min(2, E // G) if bias is not None else 1  # V2 (no bias): the max
            gscore = grp.sort(dim=-1, descending=True)[0][..., :top].sum(-1)  # (N, G)
            gorder = torch.sort(gscore, dim=-1, descending=True, stable=True)[1]
            keep = gorder[:, :c.n_limited_groups]
            gmask = torch.zeros(N, G, dtype=torch.bool, device=z.device)
            gmask.scatter_(1, keep, True)
            sel = sel.masked_fill(~gmask[:, :, None].expand(N, G, E // G).reshape(N, E), float("-inf"))
        idx = torch.sort(sel, dim=-1, descending=True, stable=True)[1][:, :K]
        w = s.gather(1, idx)
        if c.norm_topk_prob:
            w = w / w.sum(-1, keepdim=True)
        w = w * c.route_scale
        return s, idx, w

    # --- MoE (ref.moe with sorted dispatch)
    def moe(self, cfg, P, buffers, layer, x, alpha):
        c = cfg
        B, T, D = x.shape
        E, K = c.n_routed_experts, c.n_activated_experts
        m = "model.layers.%d.mlp." % layer
        u = x.reshape(B * T, D)
        gw = P[m + "gate.weight"]
        with torch.autocast(device_type=self.device.type, enabled=False):
            z = ref.linear(u.float(), gw.float()) if self.amp_dtype else ref.linear(u, gw)
        bias = buffers.get(ref.bias_name(layer)) if c.gate_bias else None
        s, idx, w = self.route(z, None if bias is None else bias.to(z.dtype))
        flat = idx.reshape(-1)                                   # (N*K) expert of each copy
        order = torch.sort(flat, stable=True)[1]                 # copies grouped by expert
        tok = torch.div(order, K, rounding_mode="floor")         # token of each sorted copy
        counts = torch.bincount(flat, minlength=E)
        # autocast would cast every expert's input to amp_dtype anyway: cast once, then gather
        ua = u.to(self.amp_dtype) if self.amp_dtype else u
        xs = ua.index_select(0, tok)
        sizes = counts.tolist()
        outs = [self.swiglu(P, m + "experts.%d." % e, xe)   # split: one backward concat
                for e, xe in enumerate(torch.split(xs, sizes)) if sizes[e]]
        out = torch.cat(outs) * w.reshape(-1).index_select(0, order)[:, None]
        y = torch.zeros_like(u).index_add(0, tok, out.to(u.dtype))
        if c.n_shared_experts > 0:
            y = y + self.swiglu(P, m + "shared_experts.", u)
        onehot = torch.zeros(B * T, E, dtype=s.dtype, device=u.device).scatter_(1, idx, 1.0).view(B, T, E)
        f = onehot.sum(1) * (E / (K * T))
        sn = (s / s.sum(-1, keepdim=True)).view(B, T, E)
        bal = (f * sn.mean(1)).sum(-1).mean() * alpha
        return y.view(B, T, D), bal, counts, s.new_empty(0)   # empty margin: no host sync


# ----------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------
def device_weights(cfg, device, seed, std):
    """make_case.random_weights' distributions, drawn on the device (fast for 1B parameters)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    W = {}
    for name, shape in ref.param_specs(cfg):
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        if len(shape) == 1:
            t = 1.0 + 0.1 * t
        elif name != "model.embed_tokens.weight":
            t = t * std
        W[name] = t
    Bf = {n: torch.zeros(shape, device=device, dtype=torch.float32) for n, shape in ref.buffer_specs(cfg)}
    return W, Bf, gen


def make_optimizer(P, lr, device):
    """ref.make_optimizer (AdamW, decay on >= 2-D tensors); fused kernel on cuda if available."""
    if device.type != "cuda":
        return ref.make_optimizer(P, lr), "adamw"
    decay = [t for t in P.values() if t.dim() >= 2]
    no_decay = [t for t in P.values() if t.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True), "adamw-fused"
    except (TypeError, RuntimeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8), "adamw"


def main():
    ap = argparse.ArgumentParser(description="PyTorch training-throughput baseline")
    ap.add_argument("--config")
    ap.add_argument("--preset", default="tiny", choices=sorted(make_case.PRESETS))
    ap.add_argument("--set", action="append")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: autocast forward/loss, FP32 master weights and AdamW")
    ap.add_argument("--impl", default="auto", choices=["auto", "ref", "fast"],
                    help="ref: the reference's own functions; fast: see the header "
                         "(auto: ref for cpu fp32, else fast)")
    ap.add_argument("--attn", default="auto", choices=["auto", "ref", "sdpa", "sdpa-padv"],
                    help="attention core of --impl fast (auto: sdpa on cuda, else ref)")
    ap.add_argument("--compile", action="store_true", help="torch.compile attention core + FFN")
    ap.add_argument("--peak", type=float, default=None,
                    help="peak FLOP/s for MFU (default %.1fe12, H100/H200 dense BF16)"
                         % (flops.H100_BF16_DENSE_PEAK / 1e12))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_torch_train: --device cuda but torch.cuda.is_available() is false")
    amp_dtype = torch.bfloat16 if args.dtype == "bf16" else None
    impl = args.impl if args.impl != "auto" else ("ref" if (device.type == "cpu" and amp_dtype is None) else "fast")
    attn = args.attn if args.attn != "auto" else ("sdpa" if device.type == "cuda" else "ref")
    if impl == "ref":
        if device.type != "cpu":
            sys.exit("bench_torch_train: --impl ref runs on the CPU only (its masks live there)")
        if attn != "ref":
            sys.exit("bench_torch_train: --attn %s needs --impl fast" % attn)
        if args.compile:
            sys.exit("bench_torch_train: --compile needs --impl fast")
        if amp_dtype is not None:   # its MoE combine (index_add) mixes F32 and BF16
            sys.exit("bench_torch_train: --dtype bf16 needs --impl fast")
        attn = "ref"
    if attn.startswith("sdpa") and not hasattr(F, "scaled_dot_product_attention"):
        sys.exit("bench_torch_train: --attn %s needs torch >= 2.1 (this is %s)" % (attn, torch.__version__))

    hf = make_case.load_hf_config(args)
    cfg = ref.Config(hf)
    if device.type == "cpu":   # the CPU numbers of the earlier versions: same draws
        gen = torch.Generator().manual_seed(0)
        W, Bf = make_case.random_weights(cfg, gen, 0.02, 0.0)
    else:
        W, Bf, gen = device_weights(cfg, device, 0, 0.02)
    P = {n: t.clone().requires_grad_(True) for n, t in W.items()}
    buf = dict(Bf)
    del W
    opt, opt_name = make_optimizer(P, args.lr, device)
    fast, compile_note = None, None
    if impl == "fast":
        fast = Fast(cfg, device, attn, amp_dtype, False)
        fast.install()
        if args.compile:
            try:
                fast.set_compiled(True)
            except Exception as e:  # noqa: BLE001  (e.g. no torch.compile in this torch)
                compile_note = "torch.compile unavailable, running uncompiled: %s: %s" % (
                    type(e).__name__, str(e)[:500])
                print("bench_torch_train: " + compile_note, file=sys.stderr)
    positions = None
    if impl == "fast":
        positions = torch.arange(args.seq, device=device)[None].expand(args.batch, args.seq)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(tokens):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            out = ref.forward(cfg, P, buf, tokens, alpha=1e-4, mtp_lambda=0.3, positions=positions)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
        opt.step()
        ref.update_router_bias(cfg, buf, out["counts"], 1e-3)
        return out

    times, losses = [], []
    ntok = args.batch * args.seq
    for s in range(args.warmup + args.steps):
        tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen,
                               device=device)
        sync()
        t0 = time.perf_counter()
        try:
            out = step(tokens)
        except Exception as e:  # noqa: BLE001  (compile failures surface at a (re)compile)
            if not (fast and fast.compiled):
                raise
            compile_note = "torch.compile failed, continuing uncompiled: %s: %s" % (type(e).__name__, str(e)[:500])
            print("bench_torch_train: " + compile_note, file=sys.stderr)
            fast.set_compiled(False)
            sync()
            t0 = time.perf_counter()
            out = step(tokens)
        sync()
        dt = time.perf_counter() - t0
        losses.append(out["loss"].item())
        if s >= args.warmup:
            times.append(dt)
        del out
    if fast:
        fast.uninstall()
    nparams = sum(t.numel() for t in P.values())
    med = statistics.median(times)
    dname = "float32" if amp_dtype is None else "bf16-autocast"
    print("torch %s %s params %d B=%d T=%d threads=%d: median step %.1f ms, %.0f tokens/s "
          "(loss %.3f -> %.3f)" % (torch.__version__, dname, nparams, args.batch, args.seq, args.threads,
                                   med * 1e3, ntok / med, losses[0], losses[-1]))
    pc = flops.param_counts(hf)
    fpt = flops.train_flops_per_token(hf, args.seq)
    peak = args.peak or flops.H100_BF16_DENSE_PEAK
    tps = ntok / med
    rec = {
        "bench": "train_step", "impl": "torch", "device": args.device, "dtype": args.dtype,
        "preset": args.config or args.preset, "batch": args.batch, "seq": args.seq,
        "tokens_per_s": tps, "step_ms": med * 1e3, "tflops": fpt * tps / 1e12,
        "mfu": fpt * tps / peak, "peak_tflops": peak / 1e12,
        "params_total": pc["total"], "params_active": pc["activated"], "params_mtp": pc["mtp"],
        "flops_per_token": fpt, "steps": args.steps, "warmup": args.warmup,
        "step_ms_all": [round(t * 1e3, 3) for t in times], "loss_first": losses[0],
        "loss_last": losses[-1], "torch": torch.__version__, "model_impl": impl, "attn": attn,
        "compile": bool(fast and fast.compiled), "optimizer": opt_name, "threads": args.threads,
    }
    if args.peak:
        rec["mfu_datasheet_peak"] = fpt * tps / flops.H100_BF16_DENSE_PEAK
    if nparams != pc["total"] + pc["mtp"]:
        rec["params_numel_mismatch"] = nparams
    if compile_note:
        rec["compile_error"] = compile_note
    if device.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name()
        rec["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rec["max_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
