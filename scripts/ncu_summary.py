#!/usr/bin/env python3
"""Nsight Compute's raw CSV (`ncu --csv --page raw --print-units base`, as scripts/gpu-check.sh
runs it) -> one line per profiled kernel: time, SM and DRAM throughput, issue slots, the tensor
and ALU pipes, registers, achieved occupancy, and the largest warp stall reasons (warps
stalled per issued instruction: what keeps a latency-bound kernel from issuing).
Used by gpu-check.sh for its rows and by gpu-report.py for its table. A kernel profiled more
than once (the same name: one run of a benchmark that launches it for several variants) is
reported once, its first launch. --labels: each line is prefixed by the variant of the wgmma
attention backward the kernel belongs to (attention_variant) and a tab.
Usage: ncu_summary.py [--labels] FILE...   (exit 1 when the files hold no profiled kernel)"""
import csv
import re
import sys

STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
PIPE = re.compile(r"^sm__pipe_(\w+?)_cycles_active\.avg\.pct_of_peak_sustained_active$")
# Not stalls: the warp issuing, or eligible and waiting for another warp to issue.
NOT_STALLS = {"selected", "not_selected"}


def number(v):
    try:
        return float(v.replace(",", "").strip())
    except (ValueError, AttributeError):
        return None


def short_name(full):
    """sm90_bwd_kernel<96, 64, 1> from ncu's demangled name (namespaces, argument list and
    the casts of template arguments dropped)."""
    s = re.sub(r"^void ", "", full.strip())
    s = re.sub(r"\(anonymous namespace\)::|<unnamed>::", "", s)
    s = re.sub(r"\((?:[\w:<> ]+)\)(?=-?\d)", "", s)   # (int)96 -> 96, (Mode)0 -> 0
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):   # the argument list: the first '(' outside template brackets
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            cut = i
            break
    s = s[:cut]
    lt = s.find("<")
    base, tmpl = (s[:lt], s[lt:]) if lt >= 0 else (s, "")
    return base.split("::")[-1] + tmpl


def kernels(path):
    """The profiled kernels of one file, in order: [{column: value}]. The application's own
    output before ncu's report is skipped."""
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l), None)
    if start is None:
        return []
    rows = list(csv.reader(lines[start:]))
    head = rows[0]
    at = head.index("Kernel Name")
    return [dict(zip(head, r)) for r in rows[1:]
            if len(r) == len(head) and r[at].strip()]   # not the units row (no name)


def unique(ks):
    """The kernels of kernels(), each name once (its first launch)."""
    seen, out = set(), []
    for k in ks:
        name = short_name(k.get("Kernel Name", "?"))
        if name not in seen:
            seen.add(name)
            out.append(k)
    return out


def attention_variant(name):
    """The opt-ins a wgmma attention backward kernel (flash_attention_sm90.cu's
    sm90_bwd_kernel<DK, DV, PASS, BQ, STAG, QS, PIPE>, as short_name writes it) was built
    for, as gpu-check.sh labels its rows: "" for the default split passes, else e.g.
    "pipelined", "64-row blocks + dK/dV fused", "one pass"; None for any other kernel."""
    m = re.match(r"^sm90_bwd_kernel<([^>]*)>$", name)
    if not m:
        return None
    a = [x.strip() for x in m.group(1).split(",")]
    if len(a) < 6:
        return None
    on = lambda x: x in ("1", "true")
    pas, bq = int(a[2]), int(a[3])
    stag, qs, pipe = on(a[4]), on(a[5]), len(a) > 6 and on(a[6])
    parts = ["64-row blocks"] if bq == 64 else []
    parts += ["staggered"] if stag else []
    parts += ["pipelined"] if pipe else []
    parts += ["query-stats table"] if qs and pas in (1, 2) else []
    parts += {3: ["dK/dV fused"], 4: ["one pass"]}.get(pas, [])
    return " + ".join(parts)


def summary(k):
    """A kernel's figures: name, ms, sm, dram, issue, tensor, alu (percent), regs, occupancy
    (percent of the SM's warps), stalls [(reason, warps per issue)], largest first."""
    def m(name):
        return number(k.get(name, ""))
    ns = m("gpu__time_duration.sum")
    pipes = {}
    for col, v in k.items():
        p = PIPE.match(col)
        if p and number(v) is not None:
            pipes[p.group(1)] = number(v)
    tensor = [v for p, v in pipes.items() if p.startswith("tensor")]
    stalls = []
    for col, v in k.items():
        s = STALL.match(col)
        if s and s.group(1) not in NOT_STALLS and number(v) is not None:
            stalls.append((s.group(1), number(v)))
    stalls.sort(key=lambda x: -x[1])
    return {"name": short_name(k.get("Kernel Name", "?")),
            "ms": ns / 1e6 if ns is not None else None,
            "sm": m("sm__throughput.avg.pct_of_peak_sustained_elapsed"),
            "dram": m("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
            "issue": m("smsp__issue_active.avg.pct_of_peak_sustained_active"),
            "tensor": max(tensor) if tensor else None,
            "alu": pipes.get("alu"),
            "regs": m("launch__registers_per_thread"),
            "occupancy": m("sm__warps_active.avg.pct_of_peak_sustained_active"),
            "stalls": stalls}


def fmt(v, spec=".1f", suffix=""):
    return "–" if v is None else format(v, spec) + suffix


def line(s):
    stalls = ", ".join(f"{r} {v:.2f}" for r, v in s["stalls"][:3]) or "–"
    return (f"{s['name']}: {fmt(s['ms'], '.3f', ' ms')}, SM {fmt(s['sm'], '.0f', '%')}, "
            f"DRAM {fmt(s['dram'], '.0f', '%')}, issue {fmt(s['issue'], '.0f', '%')}, "
            f"tensor {fmt(s['tensor'], '.0f', '%')}, ALU {fmt(s['alu'], '.0f', '%')}, "
            f"{fmt(s['regs'], '.0f')} regs, occupancy {fmt(s['occupancy'], '.1f', '%')}; "
            f"stalls per issue: {stalls}")


def main(argv):
    labels = len(argv) > 1 and argv[1] == "--labels"
    files = argv[2:] if labels else argv[1:]
    if not files:
        print("usage: ncu_summary.py [--labels] FILE...", file=sys.stderr)
        return 2
    ks = []
    for path in files:
        try:
            ks += kernels(path)
        except OSError as e:
            print(f"ncu_summary: {path}: {e.strerror}", file=sys.stderr)
            return 1
    for k in unique(ks):
        s = summary(k)
        print((f"{attention_variant(s['name']) or ''}\t" if labels else "") + line(s))
    return 0 if ks else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
