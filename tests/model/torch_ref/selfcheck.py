# Checks of the PyTorch reference itself (run: /usr/bin/python3 selfcheck.py): autograd against
# finite differences (torch.autograd.gradcheck, float64, micro config incl. routing, MTP depth 2
# and the balance loss), the balance loss at perfect balance (= alpha, spec §1.10), the YaRN
# frequency table and softmax scale (spec §1.7, §11), routing rules (group limit, ties to the
# lower index, gate weights), the bias update rule and the safetensors round trip.
# Exits non-zero on the first failure.
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_ref as ref  # noqa: E402
import make_case  # noqa: E402
import st_io  # noqa: E402

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def v3_config(**over):
    hf = dict(make_case.PRESETS["tiny"])
    hf.update({"qk_rope_head_dim": 64, "rope_theta": 10000.0,
               "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                                "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
               "qk_nope_head_dim": 128})
    hf.update(over)
    return ref.Config(hf)


def check_yarn():
    cfg = v3_config()
    f = ref.rope_frequencies(cfg)
    base = 10000.0 ** (-2.0 * torch.arange(32, dtype=torch.float64) / 64)
    check(torch.equal(f[:11], base[:11]), "YaRN: pairs 0..10 keep their frequency")
    check(torch.allclose(f[23:], base[23:] / 40, rtol=1e-15, atol=0), "YaRN: pairs 23..31 divided by 40")
    table = {11: 0.0390069, 12: 0.0268794, 13: 0.0183781, 14: 0.012448, 15: 0.00833451, 16: 0.0055,
             17: 0.003562, 18: 0.00224937, 19: 0.00137051, 20: 0.000790569, 21: 0.00041499,
             22: 0.000177828}
    worst = max(abs(f[i].item() - v) / v for i, v in table.items())
    check(worst < 2e-5, "YaRN: blended pairs 11..22 match spec §1.7 (worst rel %.2g)" % worst)
    check(abs(cfg.softmax_scale() - 0.13523378) < 1e-8, "softmax scale with YaRN = 0.13523378")
    plain = ref.Config({**cfg.hf, "rope_scaling": None})
    check(abs(plain.softmax_scale() - 0.07216878) < 1e-8, "softmax scale without YaRN = 1/sqrt(192)")
    check(torch.equal(ref.rope_frequencies(plain), base), "plain RoPE frequencies theta^(-2i/D)")
    # interleaved rotation: pair (2i, 2i+1) rotated by pos * f_i
    x = torch.zeros(1, 3, 4, dtype=torch.float64)
    x[..., 2] = 1.0  # pair 1, real part
    y = ref.apply_rope(x, torch.arange(3)[None], torch.tensor([0.5, 0.25], dtype=torch.float64))
    want = torch.tensor([[math.cos(0.25 * p), math.sin(0.25 * p)] for p in range(3)], dtype=torch.float64)
    check(torch.allclose(y[0, :, 2:], want) and torch.equal(y[0, :, :2], torch.zeros(3, 2, dtype=torch.float64)),
          "RoPE rotates interleaved pairs (2i, 2i+1)")


def check_balance_loss():
    hf = dict(make_case.PRESETS["micro"])
    hf.update({"n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
               "hidden_size": 4})
    cfg = ref.Config(hf)
    # token 0 points along e0 -> experts {0, 1}; token 1 along e1 -> experts {2, 3}
    P = {"model.layers.1.mlp.gate.weight": torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]],
                                                        dtype=torch.float64)}
    for e in range(4):
        for n, shape in (("gate_proj", (8, 4)), ("up_proj", (8, 4)), ("down_proj", (4, 8))):
            P["model.layers.1.mlp.experts.%d.%s.weight" % (e, n)] = torch.zeros(shape, dtype=torch.float64)
    for n, shape in (("gate_proj", (8, 4)), ("up_proj", (8, 4)), ("down_proj", (4, 8))):
        P["model.layers.1.mlp.shared_experts.%s.weight" % n] = torch.zeros(shape, dtype=torch.float64)
    u = torch.tensor([[[3.0, 0, 0, 0], [0, 3.0, 0, 0]]] * 3, dtype=torch.float64)  # B=3, T=2
    buf = {ref.bias_name(1): torch.zeros(4, dtype=torch.float64)}
    _, bal, counts, _ = ref.moe(cfg, P, buf, 1, u, 1e-4)
    check(counts.tolist() == [3, 3, 3, 3], "balanced routing gives equal counts")
    check(abs(bal.item() - 1e-4) < 1e-18, "balance loss at perfect balance = alpha (%.17g)" % bal.item())
    # all load on experts {0,1}: f = (2, 2, 0, 0), L = alpha * 2 * (P0 + P1)
    u2 = torch.tensor([[[3.0, 0, 0, 0], [3.0, 0, 0, 0]]], dtype=torch.float64)
    _, bal2, _, _ = ref.moe(cfg, P, buf, 1, u2, 1.0)
    s = torch.sigmoid(torch.tensor([3.0, 3.0, 0, 0], dtype=torch.float64))
    want = 2 * (s[0] + s[1]) / s.sum()
    check(abs(bal2.item() - want.item()) < 1e-15, "balance loss with all load on two experts")


def check_routing():
    hf = dict(make_case.PRESETS["micro"])
    hf.update({"n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
               "routed_scaling_factor": 2.5, "norm_topk_prob": True})
    cfg = ref.Config(hf)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    # scores per group: g0 (0.9, 0.1) sum 1.0; g1 (0.6, 0.6) sum 1.2; g2 (0.95, 0.01) 0.96; g3 (0.5, 0.55) 1.05
    s = [0.9, 0.1, 0.6, 0.6, 0.95, 0.01, 0.5, 0.55]
    z = torch.tensor([[logit(p) for p in s]], dtype=torch.float64)
    _, idx, w, _ = ref.route(cfg, z, torch.zeros(8, dtype=torch.float64))
    # groups 1 and 3 kept; expert 4 (0.95) and 0 (0.9) excluded; ties 2 vs 3 -> lower index first
    check(idx.tolist() == [[2, 3]], "group-limited routing keeps groups by top-2 sum, ties to lower index")
    check(torch.allclose(w, torch.tensor([[1.25, 1.25]], dtype=torch.float64)), "gate weights normalised x route_scale")
    bias = torch.tensor([0, 0, 0, 0, 0, 0, 0.3, 0], dtype=torch.float64)
    _, idx, w, _ = ref.route(cfg, z, bias)
    check(idx.tolist() == [[6, 2]], "bias changes the selection (expert 6 first)")
    check(torch.allclose(w, 2.5 * torch.tensor([[0.5, 0.6]], dtype=torch.float64) / 1.1),
          "gate weights use the unbiased scores")
    cfg2 = ref.Config({**hf, "n_group": 1, "topk_group": 1, "norm_topk_prob": False, "routed_scaling_factor": 1.0})
    _, idx, w, _ = ref.route(cfg2, z, torch.zeros(8, dtype=torch.float64))
    check(idx.tolist() == [[4, 0]] and torch.allclose(w, torch.tensor([[0.95, 0.9]], dtype=torch.float64)),
          "ungrouped routing without normalisation")
    buf = {ref.bias_name(1): torch.zeros(4, dtype=torch.float64)}
    ref.update_router_bias(cfg, buf, {1: torch.tensor([5, 3, 3, 1])}, 0.01)
    check(buf[ref.bias_name(1)].tolist() == [-0.01, 0.0, 0.0, 0.01], "bias update sign(mean - c), sign(0) = 0")


def check_gradcheck():
    hf = dict(make_case.PRESETS["micro"])
    cfg = ref.Config(hf)
    gen = torch.Generator().manual_seed(3)
    W, Bf = make_case.random_weights(cfg, gen, 0.3, 0.05)
    tokens = torch.randint(0, cfg.vocab_size, (2, 7), generator=gen)
    P = {n: t.double() for n, t in W.items()}
    buf = {n: t.double() for n, t in Bf.items()}
    out = ref.forward(cfg, P, buf, tokens, alpha=0.1, mtp_lambda=0.3)
    margin = min(out["margin"].values())
    check(margin > 1e-4, "gradcheck case routing margin %.3g > 1e-4" % margin)
    names = ["model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.kv_a_layernorm.weight",
             "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.1.down_proj.weight",
             "model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.2.eh_proj.weight",
             "model.layers.3.hnorm.weight", "model.layers.3.self_attn.kv_b_proj.weight",
             "model.norm.weight", "lm_head.weight"]
    for name in names:
        def f(t, name=name):
            Q = dict(P)
            Q[name] = t
            return ref.forward(cfg, Q, buf, tokens, alpha=0.1, mtp_lambda=0.3)["loss"]
        ok = torch.autograd.gradcheck(f, (P[name].clone().requires_grad_(True),), eps=1e-6, atol=1e-7,
                                      rtol=1e-5, raise_exception=False)
        check(ok, "gradcheck %s" % name)
    # the balance loss alone: gradient reaches the router only through P
    def fb(t):
        Q = dict(P)
        Q["model.layers.1.mlp.gate.weight"] = t
        return ref.forward(cfg, Q, buf, tokens, alpha=0.1, mtp_lambda=0.3)["loss_balance"]
    ok = torch.autograd.gradcheck(fb, (P["model.layers.1.mlp.gate.weight"].clone().requires_grad_(True),),
                                  eps=1e-6, atol=1e-8, rtol=1e-5, raise_exception=False)
    check(ok, "gradcheck balance loss w.r.t. the router")


def check_losses():
    cfg = ref.Config(dict(make_case.PRESETS["micro"]))
    gen = torch.Generator().manual_seed(5)
    W, Bf = make_case.random_weights(cfg, gen, 0.3, 0.05)
    tokens = torch.randint(0, cfg.vocab_size, (2, 7), generator=gen)
    P = {n: t.double() for n, t in W.items()}
    out = ref.forward(cfg, P, {n: t.double() for n, t in Bf.items()}, tokens, alpha=0.1, mtp_lambda=0.3)
    B, T = 2, 6
    lp = torch.log_softmax(out["logits"], -1)
    main = -lp.gather(-1, tokens[:, 1:, None]).sum() / (B * T)
    check(abs(main.item() - out["loss_main"].item()) < 1e-12, "L_main = mean CE")
    tot = 0.0
    for k, lk in enumerate(out["mtp_logits"], 1):
        check(lk.shape == (B, T - k, cfg.vocab_size), "MTP depth %d logits cover T-k positions" % k)
        lpk = torch.log_softmax(lk, -1)
        tot = tot - lpk.gather(-1, tokens[:, k + 1:, None]).sum() / (B * T)
    check(abs((0.3 / 2) * tot.item() - out["loss_mtp"].item()) < 1e-12, "L_mtp = lambda/D sum_k CE_k/(B*T)")
    total = out["loss_main"] + out["loss_mtp"] + sum(out["balance"].values())
    check(abs(total.item() - out["loss"].item()) < 1e-12, "L = L_main + L_mtp + sum L_bal")
    check(sorted(out["counts"]) == [1, 2, 3], "balance/counts for main MoE layer 1 and MTP layers 2, 3")
    check(out["counts"][3].sum().item() == B * (T - 2) * cfg.n_activated_experts, "MTP depth 2 routes B*(T-2)*K")


def check_packing():
    cfg = ref.Config(dict(make_case.PRESETS["micro"]))
    gen = torch.Generator().manual_seed(7)
    W, Bf = make_case.random_weights(cfg, gen, 0.3, 0.05)
    P = {n: t.double() for n, t in W.items()}
    buf = {n: t.double() for n, t in Bf.items()}
    a = torch.randint(0, cfg.vocab_size, (1, 6), generator=gen)
    b = torch.randint(0, cfg.vocab_size, (1, 6), generator=gen)
    packed = torch.cat((a[:, :5], b), dim=1)  # inputs a[0..4] | b[0..4], targets follow
    seg = torch.tensor([[0] * 5 + [1] * 5])
    pos = torch.tensor([list(range(5)) + list(range(5))])
    outp = ref.forward(cfg, P, buf, packed, positions=pos, segments=seg)
    outb = ref.forward(cfg, P, buf, b)
    outa = ref.forward(cfg, P, buf, a[:, :6])
    check(torch.allclose(outp["logits"][0, 5:], outb["logits"][0], atol=1e-12) and
          torch.allclose(outp["logits"][0, :5], outa["logits"][0, :5], atol=1e-12),
          "packed samples see only themselves (segments + restarted positions)")
    same = ref.forward(cfg, P, buf, a, positions=torch.arange(5)[None], segments=torch.zeros(1, 5, dtype=torch.long),
                       loss_mask=torch.ones(1, 5))
    check(abs(same["loss"].item() - outa["loss"].item()) < 1e-12, "one segment, full mask = no packing")
    mask = torch.tensor([[0.0, 1, 1, 0, 1]])
    m = ref.forward(cfg, P, buf, a, loss_mask=mask)
    lp = torch.log_softmax(m["logits"], -1).gather(-1, a[:, 1:, None])[..., 0]
    check(abs(m["loss_main"].item() + (lp * mask).sum().item() / 3) < 1e-12, "loss mask: L_main = sum m CE / sum m")


def check_safetensors():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        t = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int32), "c": torch.randn(2, dtype=torch.float64)}
        st_io.save(p, t, {"k": "v"})
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        back, meta = st_io.load(p)
        check(n % 8 == 0 and meta == {"k": "v"} and all(torch.equal(t[k], back[k]) for k in t),
              "safetensors round trip (header padded to 8)")


def main():
    torch.set_num_threads(1)
    check_yarn()
    check_routing()
    check_balance_loss()
    check_losses()
    check_packing()
    check_safetensors()
    check_gradcheck()
    if failures:
        print("%d FAILED" % len(failures))
        sys.exit(1)
    print("all reference self-checks passed")


if __name__ == "__main__":
    main()
