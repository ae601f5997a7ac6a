#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from one scripts/gpu-check.sh run.

Usage: python3 scripts/gpu-report.py DIR [--commit SHA] [--date YYYY-MM-DD]

DIR is gpu-check.sh's output folder ($OUT; the device tool hands it back as logs.tgz, unpack
it first), holding gpu.txt, the benchmarks' bench_*.txt and, if saved beside them,
console.txt (the script's own output, for the "switch:" verdicts and the unit-test rows) and
Nsight Compute's ncu_*.csv (scripts/ncu_summary.py reads them).
Every figure comes from the JSON lines the benchmarks print ({"bench": ...}); nothing is
computed here but the ratios shown (of 4.8 TB/s, of the measured BF16 peak, of a step). A
table whose benchmark did not run is left out, with a note saying so. Exit 1 when DIR has
no benchmark output at all.
"""
import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ncu_summary  # noqa: E402  (scripts/ncu_summary.py)

HBM_GBPS = 4800.0


def json_lines(path):
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{") and '"bench"' in line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    return out


def fmt(v, spec=".1f"):
    if v is None or (isinstance(v, (int, float)) and v < 0):
        return "–"
    return format(v, spec)


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# A step variant's label from its file name (the files gpu-check.sh copies each variant's
# lines into).
VARIANTS = {
    "bench_train.txt": "default",
    "bench_train_vbase.txt": "default again (the variants' process)",
    "bench_train_unfused.txt": "DS_CUDA_FUSED=0, inputs not shared",
    "bench_train_cublas.txt": "cuBLAS experts (DS_GROUPED_GEMM=cublas)",
    "bench_train_1stream.txt": "cuBLAS experts on 1 stream",
    "bench_train_4streams.txt": "cuBLAS experts on 4 streams",
    "bench_train_mma.txt": "mma.sync attention (DS_ATTENTION=mma)",
    "bench_train_fp8loop.txt": "FP8 experts' loop (--moe-gemm loop)",
    "bench_train_noshare.txt": "inputs not shared",
    "bench_train_attnf32.txt": "attention inputs F32",
    "bench_train_apart.txt": "gate/up apart",
    "bench_train_noacc.txt": "sums by add_",
    "bench_train_norefresh.txt": "operands re-rounded each step",
    "bench_train_b16out.txt": "expert outputs BF16 (opt-in)",
    "bench_train_bwdfused.txt": "attention backward, dK/dV fused (opt-in)",
    "bench_train_onepass.txt": "attention backward in one pass, dQ by atomics (opt-in)",
    "bench_train_onepipe.txt": "attention backward in one pass, pipelined (opt-ins)",
    "bench_train_rows64.txt": "attention in 64-row blocks (opt-in)",
    "bench_train_rows64f.txt": "attention in 64-row blocks, dK/dV fused (opt-ins)",
    "bench_train_stag.txt": "attention warpgroups staggered (opt-in)",
    "bench_train_stagf.txt": "attention warpgroups staggered, dK/dV fused (opt-ins)",
    "bench_train_pipe.txt": "attention warpgroups pipelined (opt-in)",
    "bench_train_pipef.txt": "attention warpgroups pipelined, dK/dV fused (opt-ins)",
    "bench_train_gwgmma.txt": "grouped GEMM on wgmma (opt-in)",
    "bench_train_qstats.txt": "split dK/dV passes on the query-stats table (opt-in)",
    "bench_train_fp8ksplit.txt": "FP8 weight gradients split along K (opt-in)",
    "bench_train_fp8tiles.txt": "FP8 quantisers on 128x128 tiles (opt-in)",
    "bench_train_vbase2.txt": "default, last (the variants' process)",
    "bench_train_winners.txt": "the faster opt-ins together",
}


def train_tables(d):
    rows, profile = [], None
    for name, label in VARIANTS.items():
        for r in json_lines(os.path.join(d, name)):
            if r["bench"] == "train_step":
                lab = label if "variant" not in r or name != "bench_train_winners.txt" \
                    else f'{label} ({r["variant"]})'
                rows.append([lab, r["precision"], fmt(r["step_ms"]), fmt(r["tokens_per_s"], ".0f"),
                             fmt(r["tflops"]), fmt(100 * r["mfu"]) + "%", fmt(r["gpu_peak_gib"])])
            elif r["bench"] == "train_step_profile" and name == "bench_train.txt" \
                    and r["precision"] == "bf16":
                profile = r["profile"]
    torch = json_lines(os.path.join(d, "bench_torch.txt"))
    for r in torch[-1:]:
        rows.append(["PyTorch", "bf16 autocast", fmt(r.get("step_ms")),
                     fmt(r.get("tokens_per_s"), ".0f"), "–", fmt(100 * r.get("mfu", -0.01)) + "%",
                     fmt(r.get("max_mem_gib"))])
    out = []
    if rows:
        out.append("**Training step of the `1b` preset** (`bench_train_step --preset 1b --batch 4 "
                   "--seq 4096`)\n\n" + table(
                       ["variant", "precision", "step ms", "tokens/s", "TFLOP/s", "MFU",
                        "GPU peak GiB"], rows))
    if profile:
        ops = sorted(profile.get("ops", []), key=lambda o: -o.get("seconds", 0))
        step_s = profile.get("step_seconds", 0) or 1
        prow = [[o["op"], o["calls"], fmt(1e3 * o["seconds"], ".2f"),
                 fmt(100 * o["seconds"] / step_s) + "%", fmt(o["bytes"] / 1e9, ".2f"),
                 fmt(o.get("gbytes_per_s"), ".0f"), fmt(o.get("gflops", 0) / 1e3, ".1f")]
                for o in ops[:20]]
        out.append("**Per-op profile of the default bf16 step** (CUDA events; outside ops "
                   f"{fmt(100 * profile.get('op_share', {}).get('outside_ops', -0.01))}%, "
                   f"{fmt(profile.get('op_gbytes_per_step'), '.1f')} GB of operands)\n\n" +
                   table(["op", "calls", "ms", "of step", "GB", "GB/s", "TFLOP/s"], prow))
    return out


def gemm_tables(d):
    rows, grows = [], []
    for r in json_lines(os.path.join(d, "bench_gemm.txt")):
        if r["bench"] == "gemm":
            rows.append([r["shape"], r["M"], r["N"], r["K"], fmt(r["bf16_tflops"]),
                         fmt(r["fp8_wgmma_tflops"]), fmt(r["fp8_overlap_tflops"]),
                         fmt(r["fp8_fallback_tflops"])])
        elif r["bench"] == "grouped_gemm":
            grows.append([r["shape"], r["M"], r["N"], r["K"], fmt(r["cublas_tflops"]),
                          fmt(r["kernel_tflops"]), fmt(r.get("wgmma_tflops", -1)),
                          fmt(r.get("bf16_out_tflops", -1)), fmt(r["fp8_tflops"])])
    out = []
    if rows:
        out.append("**GEMMs** (`bench_gemm`, TFLOP/s)\n\n" + table(
            ["shape", "M", "N", "K", "BF16 cuBLAS", "FP8 wgmma", "FP8 overlap", "FP8 portable"],
            rows))
    if grows:
        out.append("**Grouped expert GEMMs** (`bench_gemm`, TFLOP/s)\n\n" + table(
            ["shape", "M", "N", "K", "cuBLAS (F32 out)", "our kernel", "our wgmma kernel",
             "cuBLAS BF16 out", "FP8 grouped"], grows))
    return out


def attention_tables(d):
    rows, wrows, drows, r64, plans, one = [], [], [], [], [], []
    for r in json_lines(os.path.join(d, "bench_mla_plans.txt")):
        if r.get("bench") == "mla_plan":
            ask = ("own plan" if r["ask_stages"] == 0 and r["ask_splits"] == 0 else
                   f'stages {r["ask_stages"] or "own"}, splits {r["ask_splits"] or "own"}')
            plans.append([r["N"], r["H"], r["L"], ask, r["stages"], r["splits"],
                          r["keys_per_split"], r["blocks_per_sm"], fmt(r["ms"], ".3f"),
                          fmt(r["gbps"], ".0f"), fmt(100 * r["gbps"] / HBM_GBPS) + "%"])
    for name in ("bench_attention.txt", "bench_attention_wgmma.txt"):
        for r in json_lines(os.path.join(d, name)):
            if r["bench"] == "attention" and name == "bench_attention.txt":
                rows.append([r["precision"], f'{r["B"]}×{r["T"]}', r["H"], f'{r["Dk"]}/{r["Dv"]}',
                             fmt(r["fwd_ms"], ".3f"), fmt(r["fwd_tflops"]), fmt(r["bwd_ms"], ".3f"),
                             fmt(r["bwd_tflops"])])
            elif r["bench"] == "attention_wgmma":
                fused = r.get("bwd_fused_tflops", -1)
                wrows.append([f'{r["B"]}×{r["T"]}', r["H"], f'{r["Dk"]}/{r["Dv"]}',
                              fmt(r["fwd_tflops"]), fmt(r["fwd_speedup"], ".2f") + "×",
                              fmt(r["bwd_tflops"]), fmt(r["bwd_speedup"], ".2f") + "×",
                              fmt(fused) if fused > 0 else "–",
                              {True: "yes", False: "NO"}.get(r.get("bwd_fused_identical"), "–"),
                              f'{r["nmse_out"]:.1e}'])
            elif r["bench"] in ("attention_rows64", "attention_staggered",
                                "attention_pipelined", "attention_qstats"):
                fused = r.get("bwd_fused_tflops", -1)
                label = {"attention_rows64": "64-row blocks", "attention_staggered": "staggered",
                         "attention_pipelined": "pipelined",
                         "attention_qstats": "query-stats table"}[r["bench"]]
                r64.append([label,
                            f'{r["B"]}×{r["T"]}', r["H"], f'{r["Dk"]}/{r["Dv"]}',
                            fmt(r["fwd_tflops"]), fmt(r["fwd_speedup"], ".2f") + "×",
                            r["fwd_launches"], fmt(r["bwd_tflops"]),
                            fmt(r["bwd_speedup"], ".2f") + "×", r["bwd_launches"],
                            fmt(fused) if fused > 0 else "–",
                            {True: "yes", False: "NO"}.get(r.get("identical"), "–")])
            elif r["bench"] == "attention_onepass":
                one.append([r.get("schedule", "lockstep"), f'{r["B"]}×{r["T"]}', r["H"],
                            f'{r["Dk"]}/{r["Dv"]}',
                            fmt(r["bwd_ms"], ".3f"), fmt(r["bwd_tflops"]),
                            fmt(r["bwd_speedup"], ".2f") + "×",
                            fmt(r["vs_fused"], ".2f") + "×" if r["vs_fused"] > 0 else "–",
                            r["launches"], "yes" if r["dkdv_identical"] else "NO",
                            f'{r["nmse_dq"]:.1e}'])
            elif r["bench"] == "mla_decode" and name == "bench_attention.txt":
                drows.append([r["cache"], r["N"], r["H"], r["L"], fmt(r["ms"], ".3f"),
                              fmt(r["gbps"], ".0f"), fmt(100 * r["gbps"] / HBM_GBPS) + "%",
                              fmt(r["tflops"])])
    out = []
    if rows:
        out.append("**Attention** (`bench_attention`, causal)\n\n" + table(
            ["path", "B×T", "heads", "Dk/Dv", "fwd ms", "fwd TFLOP/s", "bwd ms", "bwd TFLOP/s"],
            rows))
    if wrows:
        out.append("**Attention on wgmma** (`bench_attention --wgmma`; speedup over mma.sync)\n\n" +
                   table(["B×T", "heads", "Dk/Dv", "fwd TFLOP/s", "fwd ×", "bwd TFLOP/s",
                          "bwd ×", "bwd dK/dV fused TFLOP/s", "fused = split bits",
                          "nmse out"], wrows))
    if r64:
        out.append("**Attention on wgmma in other blocks** (`bench_attention --wgmma`: 64-row "
                   "blocks, staggered or pipelined warpgroups, the query-stats table; speedup "
                   "over the default blocks; launches of "
                   "the switched kernels in the timed calls, 0: the default ran)\n\n" +
                   table(["blocks", "B×T", "heads", "Dk/Dv", "fwd TFLOP/s", "fwd ×",
                          "fwd launches", "bwd TFLOP/s", "bwd ×", "bwd launches",
                          "bwd fused TFLOP/s", "= default bits"], r64))
    if one:
        out.append("**Attention backward in one pass** (`bench_attention --wgmma`, opt-in "
                   "`DS_ATTENTION_BWD=onepass`: dQ added by F32 atomics; speedup over the "
                   "split passes and over the fused dK/dV pass)\n\n" +
                   table(["schedule", "B×T", "heads", "Dk/Dv", "bwd ms", "bwd TFLOP/s", "× split",
                          "× fused", "launches", "dK, dV = split bits", "nmse dQ"], one))
    if drows:
        out.append("**MLA decode** (`bench_attention`, absorbed, latent cache)\n\n" + table(
            ["cache", "sequences", "heads", "length", "ms", "GB/s", "of 4.8 TB/s", "TFLOP/s"],
            drows))
    if plans:
        out.append("**MLA decode plans** (`bench_attention --mla-plans`, BF16 cache: forced ring "
                   "depths and key splits beside the launcher's own)\n\n" + table(
                       ["sequences", "heads", "length", "asked", "stages", "splits",
                        "keys/split", "blocks/SM", "ms", "GB/s", "of 4.8 TB/s"], plans))
    return out


def ncu_tables(d):
    """Nsight Compute's figures for the kernels gpu-check.sh profiled (ncu_*.csv)."""
    rows = []
    ks = []
    for path in sorted(glob.glob(os.path.join(d, "ncu_*.csv"))):
        ks += ncu_summary.kernels(path)
    for k in ncu_summary.unique(ks):
        s = ncu_summary.summary(k)
        f = ncu_summary.fmt
        stalls = ", ".join(f"{r} {v:.2f}" for r, v in s["stalls"][:3]) or "–"
        v = ncu_summary.attention_variant(s["name"])
        rows.append([s["name"], "–" if v is None else v or "default", f(s["ms"], ".3f"),
                     f(s["sm"], ".0f"), f(s["dram"], ".0f"), f(s["issue"], ".0f"),
                     f(s["tensor"], ".0f"), f(s["alu"], ".0f"), f(s["regs"], ".0f"),
                     f(s["occupancy"], ".1f"), stalls])
    if not rows:
        return []
    return ["**Nsight Compute** (one launch each; clocks locked by ncu; percent of peak; stalls: "
            "warps stalled per issued instruction, the three largest; the attention "
            "backward's opt-ins by kernel)\n\n" + table(
                ["kernel", "attention opt-ins", "ms", "SM %", "DRAM %", "issue %", "tensor %",
                 "ALU %", "registers", "occupancy %", "stalls"], rows)]


def console_rows(d):
    path = os.path.join(d, "console.txt")
    if not os.path.exists(path):
        return []
    tests, switches = [], []
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"^\[row\] (.*)$", line.rstrip())
            if not m:
                continue
            r = m.group(1)
            if r.startswith("switch: "):
                switches.append(r[len("switch: "):])
            elif r.startswith("ds_test_"):
                tests.append(r)
    out = []
    if tests:
        out.append("**GPU tests**\n\n" + "\n".join("- `" + t + "`" for t in tests))
    if switches:
        out.append("**Switches** (gpu-check.sh's verdicts)\n\n" +
                   "\n".join("- " + s for s in switches))
        todo = decisions(switches)
        if todo:
            out.append("**What the verdicts ask for** "
                       "(docs/cuda-kernels.md, \"Deciding the opt-ins\")"
                       "\n\n" + "\n".join("- " + t for t in todo))
    return out


def decisions(switches):
    """From the "switch:" rows: opt-ins whose tests passed and whose step was faster (make
    them defaults), defaults whose tests failed or whose step was slower (switch them back).
    A row reads '<label> (opt-in|default...) INFO <precision> tests <status>; without A ms,
    with B ms: <verdict>'."""
    out = []
    for s in switches:
        m = re.match(r"^(.*?) +INFO +\S+ tests (.*?); without (\S+) ms, with (\S+) ms: (.*)$", s)
        if not m:
            continue
        label, tests, off, on, verdict = m.groups()
        opt_in, passed = "(opt-in" in label, tests == "pass"
        if opt_in and passed and verdict == "faster with it":
            out.append(f"make the default: {label} ({off} -> {on} ms)")
        elif not opt_in and "(default" in label and not passed:
            out.append(f"a default whose tests fail: {label} ({tests})")
        elif not opt_in and "(default" in label and verdict == "slower with it":
            out.append(f"a default that is slower: {label} ({off} -> {on} ms)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--commit", default="")
    ap.add_argument("--date", default="")
    a = ap.parse_args()
    if not os.path.isdir(a.dir):
        print(f"gpu-report: {a.dir}: not a directory", file=sys.stderr)
        return 1
    gpu = ""
    try:
        with open(os.path.join(a.dir, "gpu.txt")) as f:
            gpu = " ".join(l.strip() for l in f.readlines()[1:2])
    except OSError:
        pass
    train, gemm, attn = train_tables(a.dir), gemm_tables(a.dir), attention_tables(a.dir)
    if not (train or gemm or attn):
        print(f"gpu-report: {a.dir}: no benchmark output (bench_*.txt with JSON lines)",
              file=sys.stderr)
        return 1
    parts = console_rows(a.dir) + train + gemm + attn + ncu_tables(a.dir)
    meta = ", ".join(x for x in (a.date, f"commit {a.commit}" if a.commit else "", gpu) if x)
    print("## CUDA: gpu-check.sh run" + (f" ({meta})" if meta else "") + "\n")
    missing = [n for n, t in (("training step", train), ("GEMMs", gemm), ("attention", attn))
               if not t]
    if missing:
        print("Not in this run: " + ", ".join(missing) + ".\n")
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
