#!/usr/bin/env python3
# The optimised CPU kernels' per-ISA copies (DS_CLONES, lib/ops/cpu/vec_math.hpp: GCC's
# target_clones) must really be vector code. A loop GCC cannot vectorise stays scalar in its
# clone without an error or a warning. That is how the AVX2 clones of the exp loops
# (cross-entropy, the attention softmax and its backward, the token log-probabilities, SwiGLU)
# once ran scalar and branchy, up to 6x slower: without -fno-trapping-math GCC would not turn
# exp_f's selects into blends (lib/ops/CMakeLists.txt), while AVX-512's masks got round it.
# Two rules, per function:
#  - every `.avx2` and `.avx512f` clone uses ymm or zmm registers (GCC picks 256-bit vectors
#    for some AVX-512 loops);
#  - the `.avx2` clone does at least a quarter of the packed float arithmetic (add, sub, mul,
#    div, FMA, min, max on ymm/zmm) of the function's `.avx512f` clone, when that has 8 or more:
#    both compile the same loops, so far fewer means a loop vectorised for one ISA only.
# Usage: check_simd_clones.py LIBDS_OPS.a (or any object or binary holding the clones).
# Exits 77 (skip) where there is nothing to check: no objdump, or a build without clones
# (clang, the fuzz build).
import re
import shutil
import subprocess
import sys

CLONE = re.compile(r"^[0-9a-f]+ <(.+)\.(avx2|avx512f)>:$")
OTHER = re.compile(r"^[0-9a-f]+ <.+>:$")
WIDE = re.compile(r"%[yz]mm")
PACKED = re.compile(r"\sv(add|sub|mul|div|min|max|fn?m(add|sub)[0-9]+)ps\s.*%[yz]mm")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_simd_clones.py LIBDS_OPS.a")
    objdump = shutil.which("objdump")
    if not objdump:
        print("objdump not found: not checked")
        sys.exit(77)
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", sys.argv[1]], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    wide, packed = {}, {}   # (symbol, isa) -> instruction counts
    cur = None
    for line in out.splitlines():
        m = CLONE.match(line)
        if m:
            cur = (m.group(1), m.group(2))
            wide.setdefault(cur, 0)
            packed.setdefault(cur, 0)
        elif OTHER.match(line):
            cur = None
        elif cur:
            wide[cur] += bool(WIDE.search(line))
            packed[cur] += bool(PACKED.search(line))
    if not wide:
        print("no target_clones copies in %s (clang or a build without them): not checked"
              % sys.argv[1])
        sys.exit(77)
    bad = []
    for (sym, isa), n in sorted(wide.items()):
        if n == 0:
            bad.append("%s.%s: scalar clone (no ymm/zmm register used)" % (sym, isa))
    for (sym, isa), n in sorted(packed.items()):
        ref = packed.get((sym, "avx512f"), 0)
        if isa == "avx2" and ref >= 8 and 4 * n < ref:
            bad.append("%s.avx2: %d packed float ops against %d in its .avx512f clone"
                       % (sym, n, ref))
    for line in bad:
        print(line)
    print("%d clones checked, %d problems" % (len(wide), len(bad)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
