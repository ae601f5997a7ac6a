#!/usr/bin/env python3
"""scripts/gpu-check.sh run end to end without a GPU, so that a script error cannot spend the
one device run a session gets. Usage: check_gpu_check.py BIN_DIR (the built tools).

The pack it runs from is made here:
- the GPU test binaries and benchmarks are stand-ins that print in their real formats. One
  test group fails (the wgmma attention), and the step benchmark's time depends on the
  switches it is given;
- the tools are the real ones behind wrappers that turn `--device cuda` into `--device cpu`
  and shorten the runs;
- ncu prints Nsight Compute's raw CSV for the kernels it is asked for (and fails for one);
- the corpus is a small synthetic text.

Checked: every section's rows are made, the "switch:" verdicts follow the test status and the
step times (faster, slower, no difference, a failed group), an opt-in whose tests failed is
left out of the step benchmarks, a variants' process that dies is started again without the
variant it died in, the tools' GPU-vs-CPU rows compare equal runs as equal, the summary comes
last, and bash reports no error (set -u, a missing command)."""
import os
import re
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "gpu-check.sh")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# A doctest binary: the wgmma attention's group fails, the runtime group's filter matches no
# test (doctest then passes: a stale pack), every other group passes; with CRASH_IN_VARIANTS=1
# the wgmma grouped GEMM's group fails instead of the wgmma attention's.
TEST_STUB = """#!/usr/bin/env bash
if [ "${CRASH_IN_VARIANTS:-}" = 1 ]; then
  case "$*" in *"--test-case=gpu wgmma grouped"*)
    echo "[doctest] test cases: 1 | 0 passed | 1 failed | 0 skipped"; exit 1;;
  esac
fi
case "${CRASH_IN_VARIANTS:-}:$*" in
  1:*"--test-case=gpu attention wgmma"*) ;;
  *"--test-case=gpu attention wgmma"*)
    echo "[doctest] test cases: 2 | 1 passed | 1 failed | 0 skipped"
    echo "[doctest] assertions: 9 | 8 passed | 1 failed |"
    echo "ERROR: CHECK( nmse < 1e-4 ) is NOT correct!"; exit 1;;
  *"--test-case=gpu runtime:"*)
    echo "[doctest] test cases: 0 | 0 passed | 0 failed | 0 skipped"
    echo "[doctest] assertions: 0 | 0 passed | 0 failed |"; exit 0;;
esac
echo "[doctest] test cases: 3 | 3 passed | 0 failed | 0 skipped"
echo "[doctest] assertions: 12 | 12 passed | 0 failed |"
"""

# bench_train_step: 100 ms a step, 120 without shared inputs (the default is faster), 110 with
# the mma.sync attention (the default wgmma is faster, but its tests fail), 150 with the cuBLAS
# experts and 160 with those on 4 streams (the defaults are faster), 130 with BF16 expert
# outputs (slower), 90 with the fused attention backward (faster), 80 with the one-pass
# backward (faster), 95 with the attention in
# 64-row blocks (faster; 90 with the fused backward too), 97 with staggered warpgroups (within
# 4%), 110 with the query-stats table (slower); fp8 steps 1.5 times that,
# 300 ms with the FP8 experts' loop. With
# --variant, one run per variant as the real program prints them, its closing "routed
# experts" line last. With CRASH_IN_VARIANTS=1 the process dies (a fault) in two variants: in
# "operands re-rounded" after its step line (as in a profile), and in the opt-in "expert
# outputs BF16" before any line, so the script must start it again without each.
STEP_STUB = """#!/usr/bin/env bash
ms_of() {   # ms_of SETTINGS...: the step time for flags / variant keys
  local ms=100 a
  for a in "$@"; do
    case $a in
      share-inputs=0|--share-inputs=0) ms=120;;
      expert-outputs=1|--expert-outputs=1) ms=130;;
      attention=mma) ms=110;;
      grouped-gemm=cublas) [ $ms = 100 ] && ms=150;;
      grouped-experts=0) ms=200;;
      attention-bwd=fused) ms=90;;
      attention-bwd=onepass) ms=80;;
      attention-rows=64) ms=95;;
      attention-schedule=staggered) ms=97;;
      attention-schedule=pipelined) ms=92;;
      attention-qstats=table) ms=110;;
      grouped-gemm=wgmma) ms=85;;
      fp8-ksplit=on) ms=80;;
      fp8-quant=tiles) ms=90;;
    esac
  done
  for a in "$@"; do [ "$a" = streams=4 ] && [ $ms = 150 ] && ms=160; done
  echo $ms
}
emit() {   # emit PRECISIONS MS LABEL
  local p m tag="" jtag=""
  [ -n "$3" ] && { tag=" [variant $3]"; jtag=",\\"variant\\":\\"$3\\""; }
  for p in ${1//[,+]/ }; do
    m=$2; [ "$p" = fp8 ] && m=$(( $2 * 3 / 2 ))
    echo "train step 1b $p B=4 T=4096: $m.0 ms, 1000 tokens/s, 1.0 TFLOP/s, MFU 0.1% (of the BF16 dense peak 989.4)$tag"
    echo "{\\"bench\\":\\"train_step\\",\\"impl\\":\\"ds\\",\\"precision\\":\\"$p\\",\\"step_ms\\":$m,\\"loss\\":10.5$jtag}"
  done
}
precs=bf16; prev=""; flags=(); variants=()
for a in "$@"; do
  [ "$prev" = --precision ] && precs=$a
  [ "$prev" = --variant ] && variants+=("$a")
  case $prev in --share-inputs|--expert-outputs) flags+=("$prev=$a");; esac
  prev=$a
done
if [ ${#variants[@]} = 0 ]; then emit "$precs" "$(ms_of "${flags[@]}")" ""; exit 0; fi
for v in "${variants[@]}"; do
  label=${v%%:*}; spec=${v#*:}
  case $label in   # the real program's rule: the whole process stops at a bad label
    *[!A-Za-z0-9\ _+=/.-]*) echo "bench_train_step: --variant $v: the label takes letters, digits and ' _-+=/.'" >&2; exit 2;;
  esac
  if [ "${CRASH_IN_VARIANTS:-}" = 1 ] && [ "$label" = "expert outputs BF16" ]; then
    echo "illegal address" >&2; exit 134
  fi
  p=bf16; keys=()
  IFS=, read -ra kv <<< "$spec"
  for k in "${kv[@]}"; do
    case $k in precision=*) p=${k#precision=};; *) keys+=("$k");; esac
  done
  emit "$p" "$(ms_of "${keys[@]}")" "$label"
  if [ "${CRASH_IN_VARIANTS:-}" = 1 ] && [ "$label" = "operands re-rounded" ]; then
    echo "illegal address" >&2; exit 134
  fi
  k=ran; g=kernel; nf=0; n1=0; nr=0; ns=0; np=0; nq=0; nw=0
  for x in "${keys[@]}"; do [ "$x" = grouped-gemm=cublas ] && { k="not run"; g=cublas; }; done
  for x in "${keys[@]}"; do [ "$x" = grouped-gemm=wgmma ] && { g=wgmma; nw=72; }; done
  for x in "${keys[@]}"; do [ "$x" = attention-bwd=fused ] && nf=13; done
  for x in "${keys[@]}"; do [ "$x" = attention-bwd=onepass ] && n1=13; done
  for x in "${keys[@]}"; do [ "$x" = attention-rows=64 ] && nr=52; done
  for x in "${keys[@]}"; do [ "$x" = attention-schedule=staggered ] && ns=52; done
  for x in "${keys[@]}"; do [ "$x" = attention-schedule=pipelined ] && np=52; done
  for x in "${keys[@]}"; do [ "$x" = attention-qstats=table ] && nq=26; done
  echo "attention: fused dK/dV passes $nf, one-pass backwards $n1, 64-row kernels $nr, staggered kernels $ns, pipelined kernels $np, split passes on the query-stats table $nq [variant $label]"
  nk=0; for x in "${keys[@]}"; do [ "$x" = fp8-ksplit=on ] && nk=115; done
  nt=0; for x in "${keys[@]}"; do [ "$x" = fp8-quant=tiles ] && nt=345; done
  echo "fp8: split-K weight gradients $nk, tile quantisers $nt [variant $label]"
  echo "routed experts: grouped GEMMs (DS_GROUPED_GEMM=$g; our kernel $k; wgmma kernel launches $nw; cuBLAS grouped entry point used) [variant $label]"
done
"""

# bench_fp8_quant: two of its rows at K 4096 (the ones gpu-check summarises) and one other.
FP8_QUANT_BENCH_STUB = """#!/usr/bin/env bash
echo "quantize_dual            4096     84      0.100      0.050      840     1680   2.00x"
echo "requantize_transposed    4096     84      0.080      0.040     1050     2100   2.00x"
echo "quantize_dual            7168    147      0.170      0.090      865     1633   1.89x"
"""

# bench_attention: with --mla-plans, two plans at 16 heads and the launcher's own at 128.
ATTN_BENCH_STUB = """#!/usr/bin/env bash
case "$*" in
  *--mla-plans*)
    echo "mla plan   N=128 H= 16 L= 2048 asked stages 0 splits 0 -> heads/block 16, stages 4, splits 1 (2048 keys), 1 blocks/SM:   0.198 ms  1568 GB/s (32.7% of 4800)"
    echo "mla plan   N=128 H= 16 L= 2048 asked stages 0 splits 4 -> heads/block 16, stages 4, splits 4 (512 keys), 1 blocks/SM:   0.150 ms  2068 GB/s (42.7% of 4800)"
    echo "mla plan   N= 64 H=128 L= 4096 asked stages 0 splits 0 -> heads/block 64, stages 2, splits 2 (2048 keys), 1 blocks/SM:   0.742 ms   455 GB/s (9.5% of 4800)";;
  *) echo '{}'
    case "$*" in *--no-mla-wgmma*) ;; *)
      echo "mla decode  N= 64 H=128 L= 4096 R=512 Dr=64  BF16 cache (wgmma)   0.200 ms  1690 GB/s (35.2% of 4800) 365.1 TFLOP/s (3.71x mma.sync), nmse vs F32 4.1e-06";;
    esac;;
esac
"""

# bench_gemm: one grouped shape's JSON line, with the wgmma kernel's column unless left out.
GEMM_BENCH_STUB = """#!/usr/bin/env bash
echo "$*" >> "$OUT/stub_bench_gemm_args.txt"
w=410.5; case "$*" in *"--without wgmma"*) w=-1;; esac
echo "{\\"bench\\":\\"grouped_gemm\\",\\"shape\\":\\"fwd gate/up\\",\\"M\\":98304,\\"N\\":768,\\"K\\":1024,\\"cublas_tflops\\":135.0,\\"kernel_tflops\\":243.0,\\"wgmma_tflops\\":$w,\\"fp8_tflops\\":255.0}"
"""

# ncu: the benchmark's own line, then N kernels (-c N) in Nsight Compute's raw CSV; for the
# MLA decode kernel it fails as a metric ncu does not know would (nothing profiled). For the
# attention backward (bench_attention --profile-once), the kernels each variant launches, as
# flash_attention_sm90.cu names them (sm90_bwd_kernel<DK, DV, PASS, BQ, STAG, QS, PIPE>), for
# the opt-ins not left out by a --no-* flag; the 64-row blocks launch none (two do not fit).
NCU_STAND_IN = """#!/usr/bin/env bash
k=""; c=1; prev=""
for a in "$@"; do
  [ "$prev" = -k ] && k=$a
  [ "$prev" = -c ] && c=$a
  prev=$a
done
case $k in *mla*) echo "==ERROR== Failed to find metric" >&2; exit 1;; esac
names=()
add() { names+=("void ds::cuda::flash::(anonymous namespace)::sm90_bwd_kernel<(int)96, (int)64, (int)$1, (int)$2, (bool)$3, (bool)$4, (bool)$5>(const __nv_bfloat16 *, int)"); }
no() { case " $* " in *" --no-$1 "*) return 0;; esac; return 1; }
case $k in *sm90_bwd_kernel*)
  for p in 0 1 2; do add $p 128 0 0 0; done
  no fused "$@" || { add 0 128 0 0 0; add 3 128 0 0 0; }
  no onepass "$@" || add 4 128 0 0 0
  no onepass-pipelined "$@" || add 4 128 0 0 1
  no staggered "$@" || { for p in 0 1 2; do add $p 128 1 0 0; done; add 3 128 1 0 0; }
  no pipelined "$@" || { for p in 0 1 2; do add $p 128 0 0 1; done; add 3 128 0 0 1; }
  no qstats "$@" || { add 0 128 0 0 0; add 1 128 0 1 0; add 2 128 0 1 0; };;
esac
echo "attention bf16 B=4 T= 4096 H= 16 Dk=96 Dv=64 (the benchmark's line)"
echo '"ID","Process ID","Kernel Name","gpu__time_duration.sum","sm__throughput.avg.pct_of_peak_sustained_elapsed","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio","smsp__average_warps_issue_stalled_wait_per_issue_active.ratio"'
echo '"","","","nsecond","%","inst","inst"'
for i in $(seq 0 $(( c - 1 ))); do
  n="void ds::cuda::<unnamed>::profiled_kernel<(int)$i>(int)"
  if [ ${#names[@]} -gt 0 ]; then [ "$i" -ge ${#names[@]} ] && break; n=${names[$i]}; fi
  printf '"%s","1","%s",' "$i" "$n"
  echo '"1,500,000","30.5","2.5","0.5"'
done
"""

# The tools, real, on the CPU: --device cuda becomes cpu, and the runs are shortened.
TOOL_WRAPPER = """#!/usr/bin/env bash
args=(); prev=""
for a in "$@"; do
  [ "$a" = cuda ] && a=cpu
  case "$prev" in --steps|--eval-every|--save-every) [ "$a" -gt 6 ] && a=6;; esac
  args+=("$a"); prev=$a
done
exec "{bin}/{tool}" "${{args[@]}}"
"""


def main():
    if len(sys.argv) != 2:
        print("usage: check_gpu_check.py BIN_DIR", file=sys.stderr)
        return 2
    bin_dir = os.path.abspath(sys.argv[1])
    tools = ["ds-pretrain", "ds-sft", "ds-rl", "ds-convert-fp8", "ds-generate", "ds-eval",
             "ds-tokenize"]
    missing = [t for t in tools if not os.access(os.path.join(bin_dir, t), os.X_OK)]
    if missing:
        print(f"check_gpu_check: not built in {bin_dir}: {' '.join(missing)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as d:
        pack, fake_path, out = (os.path.join(d, x) for x in ("pack", "path", "out"))
        for x in (os.path.join(pack, "bin"), os.path.join(pack, "lib"),
                  os.path.join(pack, "data"), fake_path):
            os.makedirs(x)
        for t in ("ds_test_backend_ops", "ds_test_model_gpu", "ds_test_kernels",
                  "ds_test_nccl_gpu"):
            write_exe(os.path.join(pack, "bin", t), TEST_STUB)
        write_exe(os.path.join(pack, "bin", "bench_train_step"), STEP_STUB)
        write_exe(os.path.join(pack, "bin", "bench_gemm"), GEMM_BENCH_STUB)
        write_exe(os.path.join(pack, "bin", "bench_losses"), "#!/usr/bin/env bash\necho '{}'\n")
        write_exe(os.path.join(pack, "bin", "bench_fp8_quant"), FP8_QUANT_BENCH_STUB)
        write_exe(os.path.join(pack, "bin", "bench_attention"), ATTN_BENCH_STUB)
        for t in tools[:-1]:
            write_exe(os.path.join(pack, "bin", t), TOOL_WRAPPER.format(bin=bin_dir, tool=t))
        write_exe(os.path.join(fake_path, "ncu"), NCU_STAND_IN)
        write_exe(os.path.join(fake_path, "nvidia-smi"),
                  "#!/usr/bin/env bash\necho 'name, driver_version'\necho 'stand-in, 0'\n")
        # the corpus: ds-tokenize as gpu-pack.sh runs it, on generated text
        data = os.path.join(pack, "data")
        words = ["the", "light", "waters", "earth", "and", "day", "night", "was", "good",
                 "made", "heaven", "said", "it", "so", "in", "beginning"]
        with open(os.path.join(d, "corpus.txt"), "w") as f:
            for i in range(4000):
                f.write(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)))
                f.write(".\n" if i % 5 else ".\n\n")
        with open(os.path.join(data, "heldout.txt"), "w") as f:
            f.write("In the beginning the light was good, and the night was made.\n")
        tok = os.path.join(bin_dir, "ds-tokenize")
        for cmd in ([tok, "train", "--vocab-size", "512", "--out", os.path.join(data, "tokenizer"),
                     os.path.join(d, "corpus.txt")],
                    [tok, "encode", "--tokenizer", os.path.join(data, "tokenizer", "tokenizer.json"),
                     "--out", os.path.join(data, "data"), "--doc-split", "blank-line", "--force",
                     os.path.join(d, "corpus.txt")]):
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"check_gpu_check: {' '.join(cmd[:2])} failed: {p.stderr.strip()}",
                      file=sys.stderr)
                return 1
        def run(out_dir, **extra):   # the script's output, its summary rows, the summary
            env = dict(os.environ, GPU_PACK=pack, OUT=out_dir,
                       PATH=fake_path + ":" + os.environ["PATH"], PYTHONDONTWRITEBYTECODE="1",
                       **extra)
            p = subprocess.run(["bash", SCRIPT, "--quick"], capture_output=True, text=True,
                               env=env, cwd=ROOT, timeout=600)
            text = p.stdout + p.stderr
            check(p.returncode == 0, f"gpu-check.sh exit {p.returncode} ({extra})")
            for bad in ("unbound variable", "command not found", "syntax error", "Traceback",
                        "No such file"):
                check(bad not in text, f"the output has '{bad}' ({extra})")
            summary = text.split("==================== gpu-check summary:", 1)
            check(len(summary) == 2, f"no summary ({extra})")
            check(text.rstrip().splitlines()[-1].startswith("total "),
                  f"the summary is not last ({extra})")
            found = {}
            for line in (summary[1] if len(summary) == 2 else "").splitlines()[1:]:
                m = re.match(r"^(.+?)\s+(PASS|FAIL\d*|INFO|SKIP|MISS)\s+(.*)$", line)
                if m:
                    found[m.group(1).strip()] = (m.group(2), m.group(3))
            return text, found, summary

        # Out of time: with a 20 s budget the tests run, then every step that would get too
        # little time is skipped with a row saying so (not a failure), and the summary comes.
        short_text, short_rows, _ = run(os.path.join(d, "short"), GPU_CHECK_BUDGET="20")
        for name in ("train step 1b bf16 (ds)", "train step 1b bf16 (ds, inputs not shared)",
                     "train step 1b bf16 (ds, cuBLAS experts)", "train step 1b bf16 (PyTorch)",
                     "bench_gemm", "bench_losses"):
            got = short_rows.get(name)
            check(got is not None and got[0] == "SKIP" and "out of time" in got[1],
                  f"budget 20 s: row '{name}' is {got}, expected SKIP out of time")
        check(not any(st.startswith("FAIL124") for st, _ in short_rows.values()),
              "budget 20 s: a step was killed at its limit instead of skipped")

        # The variants' process dies twice: each time started again without the variant it
        # died in, the variants after it still timed.
        crash_text, crash_rows, _ = run(os.path.join(d, "crash"), CRASH_IN_VARIANTS="1")
        # ... where the wgmma grouped GEMM's tests also fail: it is neither timed nor profiled
        for name, status, part in (
                ("ds_test_backend_ops-ops-grouped-wgmma", "FAIL1", ""),
                ("ds_test_model_gpu-model-gwgmma", "SKIP", "ops-grouped-wgmma did not pass"),
                ("train step 1b bf16 (ds, grouped wgmma)", "SKIP", "tests did not all pass"),
                ("switch: grouped GEMM on warpgroup MMAs (opt-in; DS_GROUPED_GEMM=wgmma)",
                 "INFO", "tests not all passed"),
                ("grouped wgmma vs mma.sync", "SKIP", "tests did not all pass"),
                ("ncu grouped BF16 GEMM, wgmma", "SKIP", "tests did not all pass")):
            got = crash_rows.get(name)
            check(got is not None and got[0] == status and part in got[1],
                  f"wgmma grouped failed: row '{name}' is {got}, expected {status} with '{part}'")
        with open(os.path.join(d, "crash", "stub_bench_gemm_args.txt")) as f:
            first = f.readline()
        check("--without wgmma" in first, f"bench_gemm ran with '{first.strip()}' after the "
              "wgmma grouped GEMM's tests failed")
        for name, status, part in (
                ("train step 1b bf16 (ds, operands re-rounded)", "INFO",
                 "then the process died in it"),
                ("train step 1b bf16 (ds, expert outputs BF16)", "FAIL", "the process died in it"),
                ("train step 1b bf16 (ds, cuBLAS experts on 4 streams)", "INFO", "160.0 ms"),
                ("train step 1b bf16 (ds, default: variants' process, last)", "INFO", "100.0 ms"),
                ("switch: 4 side streams for the cuBLAS experts (DS_GROUPED_GEMM_STREAMS=4)",
                 "INFO", "slower with it")):
            got = crash_rows.get(name)
            check(got is not None and got[0] == status and part in got[1],
                  f"crashes: row '{name}' is {got}, expected {status} with '{part}'")
        # ... where the wgmma attention passes: its backward and every opt-in in one Nsight
        # Compute run, each kernel once, named by its opt-ins; the 64-row blocks ran none
        b = "ncu attention backward 96/64"
        for name, status, part in (
                (b, "INFO", "sm90_bwd_kernel<96, 64, 2, 128, 0, 0, 0>"),
                (b + ", dK/dV fused", "INFO", "sm90_bwd_kernel<96, 64, 3, 128, 0, 0, 0>"),
                (b + ", one pass", "INFO", "sm90_bwd_kernel<96, 64, 4, 128, 0, 0, 0>"),
                (b + ", pipelined + one pass", "INFO", "<96, 64, 4, 128, 0, 0, 1>"),
                (b + ", staggered", "INFO", "<96, 64, 2, 128, 1, 0, 0>"),
                (b + ", staggered + dK/dV fused", "INFO", "<96, 64, 3, 128, 1, 0, 0>"),
                (b + ", pipelined", "INFO", "<96, 64, 2, 128, 0, 0, 1>"),
                (b + ", pipelined + dK/dV fused", "INFO", "<96, 64, 3, 128, 0, 0, 1>"),
                (b + ", query-stats table", "INFO", "<96, 64, 2, 128, 0, 1, 0>"),
                (b + ", 64-row blocks", "SKIP", "no 64-row kernel ran")):
            got = crash_rows.get(name)
            check(got is not None and got[0] == status and part in got[1],
                  f"crashes, ncu: row '{name}' is {got}, expected {status} with '{part}'")
        n = sum(1 for ln in crash_text.splitlines() if ln.startswith("[row] " + b))
        check(n == 17, f"crashes, ncu: {n} attention backward rows, expected 17 (16 kernels "
              "once each, one SKIP)")

        text, rows, summary = run(out)
        with open(os.path.join(out, "stub_bench_gemm_args.txt")) as f:
            first = f.readline()
        check("--without wgmma" not in first, f"bench_gemm ran with '{first.strip()}'")
        with open(os.path.join(d, "console.txt"), "w") as f:
            f.write(text)

        def row(name, status, *parts):
            got = rows.get(name)
            if got is None:
                failures.append(f"no row '{name}'")
                return
            check(got[0] == status, f"row '{name}': status {got[0]}, expected {status}")
            for part in parts:
                check(part in got[1], f"row '{name}': '{part}' not in '{got[1]}'")

        row("ds_test_backend_ops-ops-verified", "PASS", "test cases: 3")
        row("ds_test_backend_ops-ops-attn-wgmma", "FAIL1", "see ds_test_backend_ops-ops-attn-wgmma.log")
        row("ds_test_model_gpu-model", "PASS")
        check("ds_test_model_gpu-model-unfused" not in rows, "model:unfused ran after a pass")
        row("train step 1b bf16 (ds)", "INFO", "100.0 ms")
        row("train step 1b fp8 (ds)", "INFO", "150.0 ms")
        row("train step 1b bf16 (ds, inputs not shared)", "INFO", "120.0 ms")
        row("switch: shared GEMM inputs (default)", "INFO", "without 120.0 ms, with 100.0 ms",
            "faster with it")
        row("ds_test_model_gpu-model-cublas", "PASS")
        row("switch: wgmma attention (default; DS_ATTENTION=mma)", "INFO",
            "without 110.0 ms, with 100.0 ms", "FAIL1 (ds_test_backend_ops-ops-attn-wgmma)",
            "tests not all passed")
        row("switch: our grouped kernel (default; DS_GROUPED_GEMM=cublas)", "INFO",
            "without 150.0 ms, with 100.0 ms", "faster with it")
        row("switch: grouped FP8 experts (default; --moe-gemm loop)", "INFO",
            "fp8 tests pass", "without 300.0 ms, with 150.0 ms", "faster with it")
        row("switch: expert outputs BF16 (opt-in; numerics: outputs rounded to BF16)", "INFO",
            "slower with it")
        row("switch: 4 side streams for the cuBLAS experts (DS_GROUPED_GEMM_STREAMS=4)", "INFO",
            "without 150.0 ms, with 160.0 ms", "slower with it")
        row("train step 1b bf16 (ds, default: variants' process, first)", "INFO", "100.0 ms",
            "[our kernel ran]")
        row("train step 1b bf16 (ds, default: variants' process, last)", "INFO", "100.0 ms")
        row("step drift in the variants' run", "INFO", "(+0.0%)")
        row("train step 1b bf16 (ds, operands re-rounded)", "INFO", "100.0 ms")
        row("train step 1b bf16 (ds, cuBLAS experts)", "INFO", "150.0 ms")
        row("train step 1b bf16 (ds, mma.sync attention)", "INFO", "110.0 ms")
        row("train step 1b fp8 (ds, FP8 experts loop)", "INFO", "300.0 ms")
        row("train step 1b bf16 (ds, expert outputs BF16)", "INFO", "130.0 ms")
        row("attention wgmma", "SKIP", "tests did not all pass")
        row("ds_test_backend_ops-ops-fp8-quant", "PASS")
        row("ds_test_backend_ops-ops-runtime", "FAIL", "no test case ran")
        check("pack built from commit" in summary[-1], "the summary does not name the pack")
        row("ds_test_backend_ops-ops-fp8-overlap", "PASS")
        row("ds-pretrain tiny cuda", "PASS")
        row("ds-pretrain tiny cpu", "PASS")
        row("loss curve GPU vs CPU", "INFO", "max_rel_dev=0")
        row("ds-generate greedy cuda vs cpu", "INFO", "identical text")
        row("ds-eval ppl cuda | cpu", "INFO")
        ppl = rows.get("ds-eval ppl cuda | cpu", ("", ""))[1].split(" | ")
        check(len(ppl) == 2 and ppl[0] == ppl[1] and re.match(r"^[0-9.]+$", ppl[0]),
              f"ds-eval perplexities {ppl}")
        row("ds-sft arith cuda", "PASS")
        row("ds-sft arith cpu", "PASS")
        row("ds-sft loss GPU vs CPU", "INFO", "max_rel_dev=0")
        row("ds-eval generate cuda vs cpu", "INFO", "0 of 100 greedy answers differ")
        row("ds-rl arith cuda", "PASS")
        row("ds-rl arith cpu", "PASS")
        row("ds-rl step 1 cuda | cpu", "INFO", "reward", "entropy", "no-signal groups")
        # the step must carry a gradient (a zero on both devices would compare nothing)
        rl = rows.get("ds-rl step 1 cuda | cpu", ("", ""))[1]
        gn = re.search(r"grad norm (\S+) \| (\S+),", rl)
        check(gn is not None and gn.group(1) == gn.group(2) and float(gn.group(1)) > 0,
              f"ds-rl step 1 grad norms {gn.groups() if gn else None}")
        row("ds-convert-fp8 quantize cuda vs cpu", "INFO", "identical safetensors")
        # Nsight Compute: one row per profiled kernel, a failed run says so, and kernels
        # whose tests failed (the wgmma attention here) are not profiled
        row("ncu grouped BF16 GEMM", "INFO", "profiled_kernel<0>: 1.500 ms, SM 30%",
            "stalls per issue: barrier 2.50, wait 0.50")
        row("ncu attention forward 96/64", "SKIP", "tests did not all pass")
        row("ncu attention backward 96/64", "SKIP", "tests did not all pass")
        check(not any(n.startswith("ncu attention backward 96/64,") for n in rows),
              "an attention opt-in profiled although the wgmma attention's tests failed")
        row("ncu MLA decode BF16, 16 heads", "FAIL", "no kernel profiled")
        # the opt-in fused attention backward: its own test group, step and verdict
        row("ds_test_backend_ops-ops-attn-fused", "PASS")
        row("train step 1b bf16 (ds, attention backward fused)", "INFO", "90.0 ms")
        row("switch: attention backward with dK and dV fused (opt-in; DS_ATTENTION_BWD=fused)",
            "INFO", "without 100.0 ms, with 90.0 ms", "faster with it")
        row("attention backward fused: loss", "INFO",
            "10.5 | 10.5 (default; its last run 10.5): equal")
        # the opt-in 64-row attention blocks: the same, alone and with the fused backward
        row("ds_test_backend_ops-ops-attn-rows64", "PASS")
        row("train step 1b bf16 (ds, attention 64-row blocks)", "INFO", "95.0 ms")
        row("switch: attention in 64-row blocks (opt-in; DS_ATTENTION_ROWS=64)", "INFO",
            "without 100.0 ms, with 95.0 ms", "faster with it")
        row("switch: attention in 64-row blocks with the fused dK/dV pass (both opt-in)",
            "INFO", "without 100.0 ms, with 90.0 ms", "faster with it")
        row("launches in bench_train_rows64", "INFO",
            "fused dK/dV passes 0, one-pass backwards 0, 64-row kernels 52")
        row("launches in bench_train_rows64f", "INFO",
            "fused dK/dV passes 13, one-pass backwards 0, 64-row kernels 52")
        # the MLA decode kernel's plans: the fastest at each head count beside its own
        row("mla decode plans", "INFO", "3 plans timed",
            "H 16: fastest 2068 GB/s (stages 4, splits 4), own plan 1568 GB/s",
            "H 128: fastest 455 GB/s (stages 2, splits 2), own plan 455 GB/s")
        # the opt-in wgmma MLA kernel: its own group and its benchmark line
        row("ds_test_backend_ops-ops-mla-wgmma", "PASS")
        row("mla decode wgmma", "INFO", "BF16 cache (wgmma)", "3.71x mma.sync")
        # the opt-in staggered warpgroups: the same
        row("ds_test_backend_ops-ops-attn-staggered", "PASS")
        row("train step 1b bf16 (ds, attention staggered)", "INFO", "97.0 ms")
        row("switch: attention warpgroups staggered (opt-in; DS_ATTENTION_SCHEDULE=staggered)",
            "INFO", "without 100.0 ms, with 97.0 ms", "no difference (within 4%)")
        row("switch: attention warpgroups staggered with the fused dK/dV pass (both opt-in)",
            "INFO", "with 90.0 ms", "faster with it")
        row("launches in bench_train_stag", "INFO", "64-row kernels 0, staggered kernels 52")
        # the opt-in query-stats table in the split passes: the same
        row("ds_test_backend_ops-ops-attn-qstats", "PASS")
        row("switch: split dK/dV passes on the query-stats table (opt-in; "
            "DS_ATTENTION_QSTATS=table)", "INFO", "without 100.0 ms, with 110.0 ms",
            "slower with it")
        row("launches in bench_train_qstats", "INFO", "query-stats table 26")
        # the opt-in wgmma grouped GEMM: its group, step, verdict, launches, kernel timings
        row("ds_test_backend_ops-ops-grouped-wgmma", "PASS")
        row("ds_test_model_gpu-model-gwgmma", "PASS")
        row("train step 1b bf16 (ds, grouped wgmma)", "INFO", "85.0 ms")
        row("switch: grouped GEMM on warpgroup MMAs (opt-in; DS_GROUPED_GEMM=wgmma)", "INFO",
            "without 100.0 ms, with 85.0 ms", "faster with it")
        row("launches in bench_train_gwgmma", "INFO", "wgmma kernel launches 72")
        row("grouped wgmma vs mma.sync", "INFO", "fwd gate/up: 243 -> 410 TF/s")
        row("ncu grouped BF16 GEMM, wgmma", "INFO", "profiled_kernel<0>")
        # the opt-in pipelined warpgroups: group, steps, verdicts, launches, profile
        row("ds_test_backend_ops-ops-attn-pipelined", "PASS")
        row("train step 1b bf16 (ds, attention pipelined)", "INFO", "92.0 ms")
        row("switch: attention warpgroups pipelined (opt-in; DS_ATTENTION_SCHEDULE=pipelined)",
            "INFO", "without 100.0 ms, with 92.0 ms", "faster with it")
        row("switch: attention warpgroups pipelined with the fused dK/dV pass (both opt-in)",
            "INFO", "with 90.0 ms", "faster with it")
        row("launches in bench_train_pipe", "INFO", "staggered kernels 0, pipelined kernels 52")
        # the opt-in one-pass backward: group, step, verdict, launches, loss, profile
        row("ds_test_backend_ops-ops-attn-onepass", "PASS")
        row("train step 1b bf16 (ds, attention backward one pass)", "INFO", "80.0 ms")
        row("switch: attention backward in one pass (opt-in; DS_ATTENTION_BWD=onepass)",
            "INFO", "without 100.0 ms, with 80.0 ms", "faster with it")
        row("launches in bench_train_onepass", "INFO",
            "fused dK/dV passes 0, one-pass backwards 13")
        row("attention backward one pass: loss", "INFO", "relative difference 0.0e+00")
        row("train step 1b bf16 (ds, attention one pass + pipelined)", "INFO", "92.0 ms")
        row("switch: attention backward in one pass, pipelined (both opt-in)", "INFO",
            "without 100.0 ms, with 92.0 ms", "faster with it")
        row("launches in bench_train_onepipe", "INFO", "one-pass backwards 13",
            "pipelined kernels 52")
        row("ds_test_backend_ops-ops-attn-onepipe", "PASS")
        # the opt-in split-K FP8 Wgrad: its group, the fp8 step (1.5 x 80 ms), verdict, count
        row("ds_test_backend_ops-ops-fp8-ksplit", "PASS")
        row("train step 1b fp8 (ds, FP8 Wgrad split-K)", "INFO", "120.0 ms")
        row("switch: FP8 weight gradients split along K (opt-in; DS_FP8_KSPLIT=on)", "INFO",
            "fp8 tests pass; without 150.0 ms, with 120.0 ms", "faster with it")
        row("launches in bench_train_fp8ksplit", "INFO", "split-K weight gradients 115")
        # the opt-in tile quantisers: both groups, the fp8 step (1.5 x 90 ms), verdict, count
        row("ds_test_backend_ops-ops-fp8-tiles", "PASS")
        row("ds_test_model_gpu-model-fp8-tiles", "PASS")
        row("train step 1b fp8 (ds, FP8 tile quantisers)", "INFO", "135.0 ms")
        row("switch: FP8 quantisers on 128x128 tiles (opt-in; DS_FP8_QUANT=tiles)", "INFO",
            "fp8 tests pass; without 150.0 ms, with 135.0 ms", "faster with it")
        row("launches in bench_train_fp8tiles", "INFO", "tile quantisers 345")
        # the faster opt-ins together: the fastest attention variant (the one-pass backward,
        # 80 ms) with the wgmma grouped GEMM (85 ms, the last key's time in the stand-in), and
        # both fp8 opt-ins, each beside the default in one more process
        row("train step 1b bf16 (ds, winners together)", "INFO",
            "attention-bwd=onepass,grouped-gemm=wgmma: bf16 B=4 T=4096: 85.0 ms against "
            "bf16 B=4 T=4096: 100.0 ms")
        row("train step 1b fp8 (ds, winners together)", "INFO",
            "fp8-ksplit=on,fp8-quant=tiles: fp8 B=4 T=4096: 135.0 ms against "
            "fp8 B=4 T=4096: 150.0 ms")
        row("fp8 quantisers, tiles vs plain", "INFO", "quantize_dual K 4096: 840 -> 1680 GB/s "
            "(2.00x)", "requantize_transposed K 4096: 1050 -> 2100 GB/s (2.00x)")
        row("switch: attention one pass: pipelined against lockstep (both opt-in)", "INFO",
            "without 80.0 ms, with 92.0 ms", "slower with it")
        if failures:
            print("gpu-check.sh output with a 20 s budget (last 40 lines):")
            print("\n".join(short_text.splitlines()[-40:]))
            print("gpu-check.sh output (last 60 lines):")
            print("\n".join(text.splitlines()[-60:]))
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("gpu-check.sh on stand-ins: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
