# Compares two case files written by make_case.py tensor by tensor (max abs error and max error
# relative to the reference tensor's max magnitude), e.g. a float32 run of the reference against
# the float64 one, to see what error an F32 implementation should expect.
# Usage: compare_cases.py REF.safetensors OTHER.safetensors [--prefix grad.]
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--prefix", action="append", default=None)
    ap.add_argument("--worst", type=int, default=8, help="print the N worst tensors per prefix")
    args = ap.parse_args()
    a, _ = st_io.load(args.ref)
    b, _ = st_io.load(args.other)
    prefixes = args.prefix or ["out.", "grad.", "counts.", "traj.loss", "traj.grad_norm", "final.",
                               "final_bias.", "traj.counts."]
    for pre in prefixes:
        rows = []
        for n, t in a.items():
            if not n.startswith(pre) or n not in b:
                continue
            x, y = t.double(), b[n].double()
            d = (x - y).abs().max().item() if x.numel() else 0.0
            scale = x.abs().max().item() if x.numel() else 0.0
            rows.append((d / scale if scale > 0 else d, d, scale, n))
        if not rows:
            continue
        rows.sort(reverse=True)
        print("%-14s %4d tensors  worst rel %.3g  worst abs %.3g" %
              (pre, len(rows), rows[0][0], max(r[1] for r in rows)))
        for r in rows[:args.worst]:
            print("    rel %.3g abs %.3g (max|ref| %.3g) %s" % r)


if __name__ == "__main__":
    main()
