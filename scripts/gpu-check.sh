#!/usr/bin/env bash
# One run on a GPU machine (the lent H200; ../shared/device/README.md), most important first:
#   1. the GPU unit tests: every CUDA op against the CPU reference (ds_test_backend_ops), the
#      tiny model's loss/gradients and a 30-step run GPU vs CPU (ds_test_model_gpu), casts
#      and NCCL on one rank;
#   2. a training step of the 1b preset (BF16 and FP8 GEMMs): tokens/s and MFU, per-op
#      profiles, each default switched off and the opt-in alone, in one process;
#   3. kernel benchmarks: GEMMs (BF16 cuBLAS, FP8 wgmma/portable, the grouped expert GEMMs),
#      attention (mma.sync and wgmma, each opt-in), MLA decode and its plans, cross-entropy
#      over a 129280 vocabulary and the MoE router;
#   4. the same 1b step in PyTorch on the card (the issue's side-by-side figure);
#   5. Nsight Compute on the hottest kernels (the attention backward, default and opt-ins, in
#      one profiler run; the wgmma grouped GEMM): throughputs, pipes, warp stall reasons;
#   6. ds-pretrain --device cuda and --device cpu on the tiny preset, loss curves side by side,
#      then ds-generate and ds-eval on the GPU-trained checkpoint (cuda and cpu);
#   7. ds-sft, ds-eval generate, ds-rl and ds-convert-fp8 with --device cuda beside --device cpu;
#   8. Nsight Compute on the defaults profiled before (the forward, the grouped GEMM, MLA).
# What the issue asks one run to measure (tests, the step and its PyTorch twin, the kernel
# benchmarks) and what decides the opt-ins (their tests, step variants, kernel timings,
# profiles) come before the tools' GPU-vs-CPU runs, which passed twice on the H200 and check
# the defaults.
# Logs go to $OUT (or gpu-check-out/); each table row is printed when it is made and the
# whole table last. Needs gpu-pack/ from scripts/gpu-pack.sh (binaries, libraries, data). Each
# step has its own time limit, cut to what is left of the whole run's budget (BUDGET, 430 s:
# the run stays under 8 minutes with the unpacking and the device call's margin); a step that
# would get too little time is skipped with an "out of time" row, so a run cut short still
# reports the rows that matter most, which come first. --quick took 229 s and 235 s on the
# H200 (2026-11-30, commits c135dd4 and 029fe18): 19 test processes in 91 s, the step
# benchmarks (the variants' process included) 50 s, the tools 29 s, the kernel benchmarks
# 42 s, PyTorch 23 s. Since then (not yet run): 14 more test groups (35 entries, some run
# only where another failed), 13 more step variants (25), the attention opt-ins', the wgmma
# grouped GEMM's, the MLA plans' and the FP8 quantisers' benchmarks, the faster opt-ins'
# step together, and 5 Nsight Compute runs (the attention backward's variants in one, the
# wgmma grouped GEMM, the defaults' three); about 480-540 s estimated, so a slow run loses the defaults' Nsight rows (profiled
# on 2026-11-30) first, then the tools' runs.
# Usage: bash scripts/gpu-check.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
P=${GPU_PACK:-gpu-pack}
O=${OUT:-gpu-check-out}
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
mkdir -p "$O"
if [ ! -d "$P/bin" ] && [ -f gpu-carry/gpu-pack.tar.xz ]; then   # what gpu-pack.sh packed
  tar -xJf gpu-carry/gpu-pack.tar.xz || { echo "gpu-check: cannot unpack gpu-carry/gpu-pack.tar.xz" >&2; exit 1; }
fi
export LD_LIBRARY_PATH="$PWD/$P/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuBLAS/cuBLASLt 13 (shared; the CUDA runtime is linked statically): the toolkit's, else
# the copy PyTorch's wheels carry.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt.so.13'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
    [ -e "$d/libcublasLt.so.13" ] && { LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"; break; }
  done
fi
BIN=$P/bin
D=$P/data
T0=$(date +%s)
# The whole run stays within BUDGET seconds (the device call's own limit is a little more), so
# that the summary and the logs always come back: every step's limit is cut to what is left,
# and a step with under 10 s left is skipped.
BUDGET=${GPU_CHECK_BUDGET:-430}
limit() {   # limit N: N seconds, or what is left of the budget (minus a margin), at least 1
  local left=$(( BUDGET - ($(date +%s) - T0) - 5 ))
  [ "$left" -lt 1 ] && left=1   # (timeout 0 would mean no limit at all)
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
room() {   # room N MIN: a step of limit N still gets at least MIN seconds
  [ "$(limit "$1")" -ge "$2" ]
}
declare -a ROWS
declare -A STATUS   # test group -> exit status, for the switches' verdicts
# A row of the final table, also printed at once (a run killed by its time limit keeps them).
row() {
  local r; r=$(printf '%-32s %-6s %s' "$1" "$2" "$3"); ROWS+=("$r"); echo "[row] $r"
}
elapsed() { echo $(( $(date +%s) - T0 ))s; }
summary() {
  echo
  echo "==================== gpu-check summary: $(sed -n 2p "$O/gpu.txt") ===================="
  echo "pack built from commit ${PACKED:-unknown}"
  for r in "${ROWS[@]}"; do echo "$r"; done
  grep -h '^{' "$O"/bench_*.txt > "$O/bench.jsonl" 2>/dev/null
  echo "total $(elapsed)"
}
trap summary EXIT

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  > "$O/gpu.txt" 2>&1; cat "$O/gpu.txt"
PACKED=$(cat "$P/COMMIT" 2>/dev/null || echo "unknown (no $P/COMMIT)")
echo "pack built from commit $PACKED"

# ---- 1. unit tests ------------------------------------------------------------------------
# Kernels that have not run on a GPU before get invocations of their own (a fault in one
# poisons the CUDA context for every later case of the same process): ds_test_backend_ops
# runs as the verified suite, then the grouped GEMMs, the many-tensor ops, the BF16-cache
# MLA decode, the grouped FP8 GEMMs and the event-timed profiler each alone; ds_test_model_gpu likewise without and
# with its FP8 grouped-experts case. The model runs twice: routed experts through our grouped
# BF16 GEMM kernel (the default since commit c135dd4 ran on the H200) and through cuBLAS
# (DS_GROUPED_GEMM=cublas, still taken by shapes the kernel does not take and by BF16
# outputs).
NEW_GROUPED='gpu grouped*'
NEW_GROUPED_WG='gpu wgmma grouped*'
NEW_MULTI='multi-tensor*'
NEW_MLA='*BF16 cache*,*one visible key*,*BF16 caches the kernel*'
NEW_FP8_ALL='fp8 grouped*'
NEW_FP8Q='fp8 grouped: quantize*,fp8 grouped: a weight*'
NEW_FP8G='fp8 grouped m-grouped*,fp8 grouped k-grouped*,fp8 grouped: one k-group*'
NEW_FP8O='fp8 grouped: the overlapped*'
NEW_FP8K='fp8 grouped: k-split*'
NEW_FP8T='fp8 tiles*'
NEW_FP8T_MODEL='*fp8 tile quantisers*'
NEW_FP8G_MODEL='*FP8 routed experts as grouped*'
NEW_B16OUT='gpu expert outputs*'
NEW_B16OUT_MODEL='*BF16 expert outputs*'
NEW_PROF='gpu profiler*'
NEW_ATTN='gpu attention wgmma*'
NEW_ATTN_FUSED='gpu attention fused*'
NEW_ATTN_ONE='gpu attention one-pass*'
NEW_ATTN_ONEPIPE='gpu attention onepass pipelined*'
NEW_ATTN_ROWS='gpu attention 64-row*'
NEW_ATTN_STAG='gpu attention staggered*'
NEW_ATTN_PIPE='gpu attention pipelined*'
NEW_PROBE='gpu sm90 probe*'
NEW_ATTN_QS='gpu attention query-stats*'
NEW_MLA_WG='gpu mla wgmma*'
NEW_FUSED='fused:*'
NEW_RUNTIME='gpu runtime:*'
NEW_DEFAULT='gpu attention: BF16-code*,moe: gather_rows_bf16_dot*,gpu bf16_round*,gpu moe_sort_pairs*,gpu moe_pad_pairs*,gpu combine_pairs*,elementwise: rmsnorm*,elementwise: rope*,elementwise: swiglu with BF16*,elementwise: swiglu packed*,gpu gather_rows_scaled*,layout: mla_kv_split*,loss: cross_entropy with BF16*,loss: token_logprob_backward with BF16*'
NEW_OPERANDS='gpu gather_rows_scaled*,gpu moe_pad_pairs*,elementwise: rope_tail_codes*,gpu attention: BF16-code*,moe: gather_rows_bf16_dot*,gpu moe_sort_pairs*,elementwise: swiglu with BF16*,elementwise: rmsnorm with*,layout: mla_kv_split*,loss: cross_entropy with BF16*,loss: token_logprob_backward with BF16*'
declare -A FILTER=(
  [ops]="--test-case-exclude=$NEW_GROUPED,$NEW_GROUPED_WG,$NEW_MULTI,$NEW_MLA,$NEW_FP8_ALL,$NEW_PROF,$NEW_ATTN,$NEW_ATTN_FUSED,$NEW_ATTN_ONE,$NEW_ATTN_ONEPIPE,$NEW_ATTN_ROWS,$NEW_ATTN_STAG,$NEW_ATTN_PIPE,$NEW_PROBE,$NEW_ATTN_QS,$NEW_MLA_WG,$NEW_FUSED,$NEW_DEFAULT,$NEW_B16OUT,$NEW_RUNTIME,$NEW_FP8T"
  [ops-grouped]="--test-case=$NEW_GROUPED"
  [ops-grouped-wgmma]="--test-case=$NEW_GROUPED_WG"
  [ops-multi]="--test-case=$NEW_MULTI"
  [ops-mla-bf16]="--test-case=$NEW_MLA"
  [ops-fp8-quant]="--test-case=$NEW_FP8Q"
  [ops-fp8-grouped]="--test-case=$NEW_FP8G"
  [ops-fp8-overlap]="--test-case=$NEW_FP8O"
  [ops-fp8-ksplit]="--test-case=$NEW_FP8K"
  [ops-fp8-tiles]="--test-case=$NEW_FP8T"
  [ops-profiler]="--test-case=$NEW_PROF"
  [ops-attn-wgmma]="--test-case=$NEW_ATTN"
  [ops-attn-fused]="--test-case=$NEW_ATTN_FUSED"
  [ops-attn-onepass]="--test-case=$NEW_ATTN_ONE"
  [ops-attn-onepipe]="--test-case=$NEW_ATTN_ONEPIPE"
  [ops-attn-rows64]="--test-case=$NEW_ATTN_ROWS"
  [ops-attn-staggered]="--test-case=$NEW_ATTN_STAG"
  [ops-attn-pipelined]="--test-case=$NEW_ATTN_PIPE"
  [ops-sm90-probes]="--test-case=$NEW_PROBE"
  [ops-attn-qstats]="--test-case=$NEW_ATTN_QS"
  [ops-mla-wgmma]="--test-case=$NEW_MLA_WG"
  [ops-fused]="--test-case=$NEW_FUSED"
  [ops-runtime]="--test-case=$NEW_RUNTIME"
  [ops-new]="--test-case=$NEW_DEFAULT"
  [ops-operands]="--test-case=$NEW_OPERANDS"
  [ops-bf16-outputs]="--test-case=$NEW_B16OUT"
  [model]="--test-case-exclude=$NEW_FP8G_MODEL,$NEW_B16OUT_MODEL,$NEW_FP8T_MODEL"
  [model-fp8-grouped]="--test-case=$NEW_FP8G_MODEL"
  [model-bf16-outputs]="--test-case=$NEW_B16OUT_MODEL"
  [model-fp8-tiles]="--test-case=$NEW_FP8T_MODEL")
# entries: binary[:filter][:variant]; variant cublas runs with DS_GROUPED_GEMM=cublas; unfused
# with DS_CUDA_FUSED=0 (the per-tensor ops that ran on the H200 instead of the many-tensor ops,
# the one-pass transposed quantiser, the experts' fused BF16 gather, the pinned staging ring
# and the FP8 Linears' Wgrad added into the gradient by the k-grouped GEMM (whose kernels
# ops-fp8-grouped tests), which are on by default but
# have not run on a GPU): model:unfused runs only when the default model group failed, to tell
# a fault in those paths from one elsewhere. ops:verified, the established suite, always runs
# with DS_CUDA_FUSED=0 (the ops on the paths that ran on the H200, uploads as plain copies),
# the experts on cuBLAS, the attention on mma.sync and the FP8 GEMM's plain main loop (as do
# model:unfused and ops-operands:fallback: the kernels of commit 1479fb2, to tell a fault in a
# newer one; the FP8 GEMM tests there run the plain loop, the ops-fp8-* groups the overlapped
# one; the FP8 experts stay grouped, which is no environment switch);
# ops-new runs the tests of kernels changed since (4-wide BF16 rounding, the device-side pair
# sort, the per-token combine, the BF16 outputs of SwiGLU, RMSNorm and the cross-entropy,
# MLA's one-pass keys, the residual adds fused into RMSNorm, the packed SwiGLU of the stacked
# gate/up GEMM, the RMSNorm weight-gradient
# reduction's wider lanes and the RoPE kernel's row stride, neither of those two switchable)
# with the defaults, which the later
# groups also use (staged uploads); ops-operands:fallback runs the BF16-output, one-pass key,
# q RoPE-into-codes, weighted-gather and padded-layout tests again under DS_CUDA_FUSED=0 (the
# fallbacks that model:unfused would use).
# The FP8 tests run as three processes, so that a fault in one kernel (which poisons the CUDA
# context) cannot hide the others' results: ops-fp8-quant, the many-matrix and transposed
# quantisers (on by default in every FP8 Linear), first; ops-fp8-grouped, the m- and k-grouped
# FP8 GEMMs and the one-group Wgrad; ops-fp8-overlap, the overlapped main loop (the
# default since c135dd4), last; ops-fp8-ksplit, the split-K of one k-group (opt-in,
# DS_FP8_KSPLIT=on; not yet run on a GPU), after them; ops-fp8-tiles, the quantisers that
# read x in 128x128 tiles (opt-in, DS_FP8_QUANT=tiles; not yet run on a GPU; their kernel
# source passes on the CPU under ds_test_kernel_emu) through the four ops that use them, and
# model-fp8-tiles, the tiny model's fp8 step with them against the plain quantisers'.
# ops-attn-fused: the wgmma backward with dK and dV in one pass (opt-in, DS_ATTENTION_BWD=fused;
# not yet run on a GPU) against the split passes, bit for bit, and against the reference;
# ops-attn-onepass: the wgmma backward in one pass, dQ added by atomics (opt-in,
# DS_ATTENTION_BWD=onepass; not yet run on a GPU): dK, dV against the fused pass bit for bit,
# dQ within a tolerance, and all three against the reference; ops-attn-onepipe: the same for
# its pipelined schedule (with DS_ATTENTION_SCHEDULE=pipelined), in a process of its own;
# ops-attn-rows64: the wgmma kernels in 64-row blocks (opt-in, DS_ATTENTION_ROWS=64; not yet
# run on a GPU) against the 128-row blocks, bit for bit, and against the reference;
# ops-attn-staggered: the 128-row blocks with staggered warpgroups (opt-in,
# DS_ATTENTION_SCHEDULE=staggered; not yet run on a GPU), the same against lockstep;
# ops-attn-pipelined: each warpgroup's next first products under its previous outputs
# (opt-in, DS_ATTENTION_SCHEDULE=pipelined; not yet run on a GPU), the same against lockstep;
# ops-attn-qstats: the split dK and dV passes reading the query-stats table (opt-in,
# DS_ATTENTION_QSTATS=table; not yet run on a GPU), the same against the inline loads;
# ops-grouped-wgmma: the grouped BF16 GEMM on warpgroup MMAs (opt-in, DS_GROUPED_GEMM=wgmma;
# not yet run on a GPU) against the reference in all four layouts and the experts' shapes;
# model:gwgmma the model's tests on it (DS_GROUPED_GEMM=wgmma), where that group passed;
# ops-mla-wgmma: the wgmma MLA decode kernel (opt-in, DS_MLA_KERNEL=wgmma; not yet run on a
# GPU) against the reference;
# ops-sm90-probes: what no kernel uses yet, settled on the card (kernels/sm90_probe.cu): a
# TMA box with the 128-byte swizzle, wgmma reading MN-major operands (its log says which
# descriptor offsets the card took).
# ops-runtime: uploads and frees from worker threads (each bound to the backend's GPU first)
# and the one-GPU-per-process check.
# ops-bf16-outputs and model-bf16-outputs test the routed experts' BF16 GEMM outputs
# (opt-in: grouped_matmul writing BF16 codes, the ops reading them, the layer on the card).
# ops-grouped also compares the per-expert cuBLAS calls spread over side streams
# (DS_GROUPED_GEMM_STREAMS, default 1 since commit 029fe18 ran on the H200) with one stream,
# bit for bit.
# Groups of kernels that have not run on a GPU yet: a hang there (a barrier or an mbarrier
# phase that never completes) is stopped after 45 s instead of the others' 90.
declare -A TLIM=([ops-attn-fused]=45 [ops-attn-onepass]=45 [ops-attn-onepipe]=45
                 [ops-attn-rows64]=45
                 [ops-attn-staggered]=45 [ops-attn-pipelined]=45 [ops-attn-qstats]=45
                 [ops-sm90-probes]=45 [ops-mla-wgmma]=45 [ops-grouped-wgmma]=45
                 [ops-fp8-ksplit]=45 [ops-fp8-tiles]=45)
MODEL_RC=0
for t in ds_test_backend_ops:ops:verified ds_test_backend_ops:ops-new \
         ds_test_backend_ops:ops-grouped ds_test_backend_ops:ops-grouped-wgmma \
         ds_test_backend_ops:ops-multi \
         ds_test_backend_ops:ops-mla-bf16 ds_test_backend_ops:ops-fp8-quant \
         ds_test_backend_ops:ops-fp8-grouped \
         ds_test_backend_ops:ops-profiler ds_test_backend_ops:ops-attn-wgmma \
         ds_test_backend_ops:ops-attn-fused ds_test_backend_ops:ops-attn-onepass \
         ds_test_backend_ops:ops-attn-onepipe \
         ds_test_backend_ops:ops-attn-rows64 \
         ds_test_backend_ops:ops-attn-staggered ds_test_backend_ops:ops-attn-pipelined \
         ds_test_backend_ops:ops-attn-qstats \
         ds_test_backend_ops:ops-sm90-probes ds_test_backend_ops:ops-mla-wgmma \
         ds_test_backend_ops:ops-fused ds_test_backend_ops:ops-bf16-outputs \
         ds_test_backend_ops:ops-runtime ds_test_backend_ops:ops-fp8-overlap \
         ds_test_backend_ops:ops-fp8-ksplit ds_test_backend_ops:ops-fp8-tiles \
         ds_test_model_gpu:model ds_test_model_gpu:model:unfused \
         ds_test_backend_ops:ops-operands:fallback ds_test_model_gpu:model:cublas \
         ds_test_model_gpu:model-fp8-grouped ds_test_model_gpu:model-bf16-outputs \
         ds_test_model_gpu:model-fp8-tiles \
         ds_test_model_gpu:model:gwgmma \
         ds_test_kernels ds_test_nccl_gpu; do
  g=; at=; f8=; fused=1; args=(); name=$t   # g, at, f8 empty: the defaults
  case $t in
    *:cublas) g=cublas; t=${t%:cublas};;
    *:gwgmma) g=wgmma; t=${t%:gwgmma}   # the model on the wgmma grouped GEMM, where it passed
      if [ "${STATUS[ds_test_backend_ops-ops-grouped-wgmma]:-1}" != 0 ]; then
        row "${name//:/-}" SKIP "not run: ops-grouped-wgmma did not pass"; continue
      fi;;
    *:unfused) fused=0; g=cublas; at=mma; f8=wgmma; t=${t%:unfused}
      [ $MODEL_RC = 0 ] && continue;;
    *:verified) fused=0; g=cublas; at=mma; f8=wgmma; t=${t%:verified};;
    *:fallback) fused=0; g=cublas; at=mma; f8=wgmma; t=${t%:fallback}   # where defaults failed
      [ "${STATUS[ds_test_backend_ops-ops-new]:-1}" = 0 ] && [ $MODEL_RC = 0 ] && continue;;
  esac
  tl=90
  case $t in *:*) tl=${TLIM[${t#*:}]:-90}; args=("${FILTER[${t#*:}]}"); t=${t%%:*};; esac
  name=${name//:/-}
  if [ ! -x "$BIN/$t" ]; then row "$name" MISS "not built"; continue; fi
  if [ "$(limit "$tl")" -lt 10 ]; then row "$name" SKIP "out of time"; continue; fi
  s=$(date +%s)
  DS_GROUPED_GEMM=$g DS_ATTENTION=$at DS_FP8_GEMM=$f8 DS_CUDA_FUSED=$fused \
    timeout "$(limit "$tl")" "$BIN/$t" \
    ${args[@]+"${args[@]}"} > "$O/$name.log" 2>&1; rc=$?
  [ "$name" = ds_test_model_gpu-model ] && MODEL_RC=$rc
  STATUS[$name]=$rc
  sum=$(grep -E "^\[doctest\] (test cases|assertions)" "$O/$name.log" | tr -s ' ' | tr '\n' ' ')
  # doctest passes a filter that matches nothing: that is a stale pack or a renamed test
  if [ $rc = 0 ] && ! grep -qE "^\[doctest\] test cases: *[1-9]" "$O/$name.log"; then
    rc=99; STATUS[$name]=$rc
    row "$name" FAIL "no test case ran ($sum) - a stale pack or a renamed test?"
  elif [ $rc = 0 ]; then row "$name" PASS "$sum($(( $(date +%s) - s ))s)"
  elif [ $rc = 124 ]; then row "$name" FAIL124 "$sum timed out at its limit ($(( $(date +%s) - s ))s) see $name.log"
  else row "$name" "FAIL$rc" "$sum($(( $(date +%s) - s ))s) see $name.log"; fi
  grep -E "^model step|30-step|^step +[0-9]+ loss|^engine .* cache GPU|^moe fp8 grouped|^policy pass" \
    "$O/$name.log" | head -40
  [ $rc = 0 ] || grep -B2 -A8 -E "ERROR|FAILED|error:" "$O/$name.log" | head -50
done
echo "[gpu-check] unit tests done at $(elapsed)"

# ---- 2. training step of the 1b preset ------------------------------------------------------
NS=$([ $QUICK = 1 ] && echo 3 || echo 5)
rc=skipped
room 150 25 && { timeout "$(limit 150)" "$BIN/bench_train_step" --preset 1b --batch 4 \
  --seq 4096 --precision bf16,fp8 --steps "$NS" --warmup 2 --profile 1 > "$O/bench_train.txt" \
  2> "$O/bench_train_profile.txt"; rc=$?; }
tail -3 "$O/bench_train_profile.txt" 2>/dev/null | grep -i "bench_train_step:"
grep -E "^(profile|GEMM share|operand traffic|matmul|grouped|attention|fp8_gemm|gather|scatter|bf16_round|moe_sort|adamw|rmsnorm|swiglu|split|concat|add)" \
  "$O/bench_train_profile.txt" 2>/dev/null | head -40
echo "bench_train_step rc=$rc"; grep -v '^{' "$O/bench_train.txt" 2>/dev/null | tail -4
for prec in bf16 fp8; do
  l=$(grep "^train step 1b $prec" "$O/bench_train.txt" 2>/dev/null | head -1 |
    sed 's/^train step 1b //')
  if [ "$rc" = skipped ]; then row "train step 1b $prec (ds)" SKIP "out of time"
  else row "train step 1b $prec (ds)" INFO "${l:-failed (rc $rc), see bench_train_profile.txt}"; fi
done
# A failed step is run again with DS_CUDA_FUSED=0 (the per-tensor paths measured on the H200)
# and every Linear rounding its own input (--share-inputs 0, as there): a process of its own.
if [ "$rc" != skipped ] && ! grep -q "^train step 1b bf16" "$O/bench_train.txt" 2>/dev/null; then
  if room 60 20; then
    DS_CUDA_FUSED=0 timeout "$(limit 60)" "$BIN/bench_train_step" --preset 1b --batch 4 \
      --seq 4096 --precision bf16 --steps "$NS" --warmup 1 --share-inputs 0 \
      > "$O/bench_train_unfused.txt" 2>&1
    l=$(grep "^train step 1b bf16 " "$O/bench_train_unfused.txt" | head -1 |
      sed 's/^train step 1b //')
    row "train step 1b bf16 (ds, unfused)" INFO "${l:-failed, see bench_train_unfused.txt}"
  else row "train step 1b bf16 (ds, unfused)" SKIP "out of time"; fi
fi
# The opt-ins run only where their test groups passed: a kernel that failed its tests gives
# no meaningful time, and one that faults or hangs would spend the run's budget.
passed() {   # passed GROUP...: every group ran and passed
  local g
  for g in "$@"; do [ "${STATUS[$g]:-}" = 0 ] || return 1; done
}
# The test groups of the pieces made defaults after the H200 run of commit c135dd4 (bench_gemm
# and the wgmma attention benchmark below leave out what failed), and of the one opt-in left.
T_KERNEL=(ds_test_backend_ops-ops-grouped)
T_WGMMA=(ds_test_backend_ops-ops-attn-wgmma)
T_B16OUT=(ds_test_backend_ops-ops-bf16-outputs ds_test_model_gpu-model-bf16-outputs)
T_BWDFUSED=(ds_test_backend_ops-ops-attn-fused)
T_ONE=(ds_test_backend_ops-ops-attn-onepass)
T_ONE_PIPE=(ds_test_backend_ops-ops-attn-onepipe ds_test_backend_ops-ops-attn-pipelined)
T_ROWS64=(ds_test_backend_ops-ops-attn-rows64)
T_ROWS64_FUSED=(ds_test_backend_ops-ops-attn-rows64 ds_test_backend_ops-ops-attn-fused)
T_STAG=(ds_test_backend_ops-ops-attn-staggered)
T_MLA=(ds_test_backend_ops-ops-mla-bf16)
T_STAG_FUSED=(ds_test_backend_ops-ops-attn-staggered ds_test_backend_ops-ops-attn-fused)
T_PIPE=(ds_test_backend_ops-ops-attn-pipelined)
T_PIPE_FUSED=(ds_test_backend_ops-ops-attn-pipelined ds_test_backend_ops-ops-attn-fused)
T_QS=(ds_test_backend_ops-ops-attn-qstats)
T_MLAW=(ds_test_backend_ops-ops-mla-wgmma)
T_GWG=(ds_test_backend_ops-ops-grouped-wgmma)
T_KSPLIT=(ds_test_backend_ops-ops-fp8-ksplit)
T_TILES=(ds_test_backend_ops-ops-fp8-tiles ds_test_model_gpu-model-fp8-tiles)
T_FP8G=(ds_test_backend_ops-ops-fp8-quant ds_test_backend_ops-ops-fp8-grouped
        ds_test_model_gpu-model-fp8-grouped)
# Every switch's step in ONE process (bench_train_step --variant: the model built and uploaded
# once, every run from the same initial weights, router biases and optimizer state), each
# variant's lines then copied to a file of its own for the rows, the verdicts and
# gpu-report.py. The verdicts compare within this process.
V_LABEL=(); V_FILE=(); V_PREC=(); V_SPEC=()
variant() {   # variant LABEL FILE PRECISION(bf16, fp8, bf16+fp8) KEY=VALUE,...
  V_LABEL+=("$1"); V_FILE+=("$2"); V_PREC+=("$3"); V_SPEC+=("$4")
}
optin() {   # optin LABEL FILE PRECISION GROUPS_ARRAY_NAME KEY=VALUE,...
  local -n groups=$4
  if passed "${groups[@]}"; then variant "$1" "$2" "$3" "$5"
  else row "train step 1b $3 (ds, $1)" SKIP "not run: its tests did not all pass"; fi
}
# Order: the default step, each default switched off (what decides whether a default stays),
# the opt-in, and the default step once more (the drift: clocks, the allocator; the model is
# the same).
variant baseline bench_train_vbase.txt bf16+fp8 ""
# - the routed experts' BF16 GEMMs as per-expert cuBLAS calls, not one launch of our grouped
#   kernel per projection;
variant "cuBLAS experts" bench_train_cublas.txt bf16 grouped-gemm=cublas
# - the same on 4 side streams (what the side streams give the cuBLAS path);
variant "cuBLAS experts on 4 streams" bench_train_4streams.txt bf16 grouped-gemm=cublas,streams=4
# - the attention on the mma.sync kernels, not the warpgroup MMAs;
variant "mma.sync attention" bench_train_mma.txt bf16 attention=mma
# - the FP8 step's routed experts as a loop of per-expert FP8 Linears, not grouped FP8 GEMMs
#   over the padded layout;
variant "FP8 experts loop" bench_train_fp8loop.txt fp8 grouped-experts=0
# - every Linear rounding its own input (the activations' BF16 operands not made once);
variant "inputs not shared" bench_train_noshare.txt bf16 share-inputs=0
# - the attention's q, k, v F32 (converted inside the attention), not BF16 from their producers;
variant "attention inputs F32" bench_train_attnf32.txt bf16 attention-inputs=0
# - every MLP's gate_proj and up_proj (the routed experts' grouped GEMMs too) as two GEMMs,
#   not one over the stacked matrices;
variant "gate/up apart" bench_train_apart.txt bf16 stacked-gate-up=0
# - sums into existing tensors through a temporary and an add_, not by the GEMMs (MLA's input
#   gradients, the routers'; in fp8 also every FP8 Linear's Wgrad);
variant "sums by add_" bench_train_noacc.txt bf16+fp8 gemm-accumulate=0
# - the operand cache cleared at the optimizer step, not refreshed by AdamW (which writes the
#   next step's BF16 weight operands with the update);
variant "operands re-rounded" bench_train_norefresh.txt bf16 operand-refresh=0
# - the routed experts' GEMM outputs as BF16 (opt-in, a numerics change: their forward and
#   input-gradient GEMMs then take cuBLAS, which writes BF16), with the per-op profile;
optin "expert outputs BF16" bench_train_b16out.txt bf16 T_B16OUT expert-outputs=1,profile=1
# - the routed experts' grouped BF16 GEMMs on warpgroup MMAs (opt-in), with the per-op profile;
optin "grouped wgmma" bench_train_gwgmma.txt bf16 T_GWG grouped-gemm=wgmma,profile=1
# - the attention backward with dK and dV in one pass (opt-in; the same bits, so the same loss
#   as the default step), with the per-op profile;
optin "attention backward fused" bench_train_bwdfused.txt bf16 T_BWDFUSED \
  attention-bwd=fused,profile=1
# - the attention backward in one pass, dQ added by atomics (opt-in; dK and dV the same bits,
#   dQ not bit-reproducible), with the per-op profile;
optin "attention backward one pass" bench_train_onepass.txt bf16 T_ONE \
  attention-bwd=onepass,profile=1
# - and pipelined (the one-pass kernel's own pipelined schedule, the forward's too);
optin "attention one pass + pipelined" bench_train_onepipe.txt bf16 T_ONE_PIPE \
  attention-bwd=onepass,attention-schedule=pipelined
# - the attention kernels in 64-row blocks, two per SM where they fit (opt-in; the same bits),
#   with the per-op profile; and with the fused dK/dV pass as well;
optin "attention 64-row blocks" bench_train_rows64.txt bf16 T_ROWS64 \
  attention-rows=64,profile=1
optin "attention 64-row blocks + fused bwd" bench_train_rows64f.txt bf16 T_ROWS64_FUSED \
  attention-rows=64,attention-bwd=fused
# - the 128-row blocks' warpgroups staggered (opt-in; the same bits), with the per-op profile;
#   and with the fused dK/dV pass as well;
optin "attention staggered" bench_train_stag.txt bf16 T_STAG \
  attention-schedule=staggered,profile=1
optin "attention staggered + fused bwd" bench_train_stagf.txt bf16 T_STAG_FUSED \
  attention-schedule=staggered,attention-bwd=fused
# - each warpgroup's next first products under its previous outputs (opt-in; the same bits),
#   with the per-op profile; and with the fused dK/dV pass as well;
optin "attention pipelined" bench_train_pipe.txt bf16 T_PIPE \
  attention-schedule=pipelined,profile=1
optin "attention pipelined + fused bwd" bench_train_pipef.txt bf16 T_PIPE_FUSED \
  attention-schedule=pipelined,attention-bwd=fused
# - the FP8 Linears' weight gradients split along K (opt-in; fp8 step), with the per-op
#   profile;
optin "FP8 Wgrad split-K" bench_train_fp8ksplit.txt fp8 T_KSPLIT fp8-ksplit=on,profile=1
# - the FP8 quantisers reading x in 128x128 tiles (opt-in; fp8 step; the same bits), with the
#   per-op profile;
optin "FP8 tile quantisers" bench_train_fp8tiles.txt fp8 T_TILES fp8-quant=tiles,profile=1
# - the split dK and dV passes reading the query-stats table (opt-in; the same bits);
optin "attention query-stats table" bench_train_qstats.txt bf16 T_QS attention-qstats=table
# - the default step again.
variant "baseline again" bench_train_vbase2.txt bf16 ""
# Run them; a process that dies (a fault in one variant poisons the CUDA context) or hangs is
# started again without the variant it stopped in, while there is time. A variant is done
# when its closing line ("routed experts: ... [variant LABEL]") is out.
VO=$O/train_variants.txt
VE=$O/train_variants_err.txt
: > "$VO"
declare -A V_NOTE   # label -> why it has no time
pending=("${!V_LABEL[@]}")
for attempt in 1 2 3 4; do
  [ ${#pending[@]} = 0 ] && break
  if ! room 180 25; then
    for i in "${pending[@]}"; do V_NOTE[${V_LABEL[$i]}]="out of time"; done
    pending=(); break
  fi
  args=()
  for i in "${pending[@]}"; do
    args+=(--variant "${V_LABEL[$i]}:precision=${V_PREC[$i]},${V_SPEC[$i]}")
  done
  # one warm-up step a variant: the process's first step pays for pool growth and cuBLAS
  # heuristics, the main run's second warm-up step showed no difference worth its time
  # (13 variants, 15 timings of 4 steps: 64 s on the H200 at c135dd4, plus the restores of
  # the initial state, about 8 GB from the host each; 180 s is a hang)
  timeout "$(limit 180)" "$BIN/bench_train_step" --preset 1b --batch 4 --seq 4096 \
    --steps "$NS" --warmup 1 "${args[@]}" >> "$VO" 2>> "$VE"
  vrc=$?
  echo "bench_train_step (variants, attempt $attempt) rc=$vrc"
  left=()
  for i in "${pending[@]}"; do
    grep -F "[variant ${V_LABEL[$i]}]" "$VO" | grep -q "^routed experts:" || left+=("$i")
  done
  [ ${#left[@]} = 0 ] && { pending=(); break; }
  lab=${V_LABEL[${left[0]}]}
  if [ "$vrc" = 124 ]; then V_NOTE[$lab]="hung: the process was stopped at its time limit"
  else V_NOTE[$lab]="the process died in it (rc $vrc)"; fi
  pending=("${left[@]:1}")
done
for i in "${pending[@]}"; do V_NOTE[${V_LABEL[$i]}]="not run (the process kept dying)"; done
for lab in "expert outputs BF16" "grouped wgmma" "attention backward fused" \
           "attention backward one pass" "attention 64-row blocks" "attention staggered" \
           "attention pipelined" "FP8 Wgrad split-K" "FP8 tile quantisers"; do
  grep -A45 -F "[variant $lab]" "$VE" 2>/dev/null |
    grep -E "^(profile|GEMM share|[a-z_0-9]+ +[a-z_]+ +[0-9]+ )" | head -12
done
for i in "${!V_LABEL[@]}"; do
  lab=${V_LABEL[$i]}
  { grep -F "[variant $lab]" "$VO"; grep -F "\"variant\":\"$lab\"" "$VO"; } > "$O/${V_FILE[$i]}"
  for p in $(echo "${V_PREC[$i]}" | tr '+' ' '); do
    l=$(grep "^train step 1b $p " "$O/${V_FILE[$i]}" | head -1 |
      sed -e 's/^train step 1b //' -e 's/ \[variant .*\]$//')
    name="train step 1b $p (ds, $lab)"
    [ "$lab" = baseline ] && name="train step 1b $p (ds, default: variants' process, first)"
    [ "$lab" = "baseline again" ] && name="train step 1b $p (ds, default: variants' process, last)"
    if [ "$lab" = baseline ] && [ "$p" = bf16 ] && [ -n "$l" ]; then   # did the kernel run?
      k=$(grep -o "our kernel [a-z ]*;" "$O/${V_FILE[$i]}" | head -1)
      l="$l [${k%;}]"
    fi
    [ -n "$l" ] && [ -n "${V_NOTE[$lab]:-}" ] && l="$l [then ${V_NOTE[$lab]}]"
    if [ -n "$l" ]; then row "$name" INFO "$l"
    elif [ "${V_NOTE[$lab]:-}" = "out of time" ]; then row "$name" SKIP "${V_NOTE[$lab]}"
    else row "$name" FAIL "${V_NOTE[$lab]:-no result}, see train_variants_err.txt"; fi
  done
done
# The drift of the default step over the variants' process (the same model each run: clocks
# and the allocator): a switch's verdict within this much says little.
d0=$(grep -m1 "^train step 1b bf16 " "$O/bench_train_vbase.txt" 2>/dev/null |
  sed -nE 's/^[^:]*: ([0-9.]+) ms.*/\1/p')
d1=$(grep -m1 "^train step 1b bf16 " "$O/bench_train_vbase2.txt" 2>/dev/null |
  sed -nE 's/^[^:]*: ([0-9.]+) ms.*/\1/p')
if [ -n "$d0" ] && [ -n "$d1" ]; then
  row "step drift in the variants' run" INFO "$(awk -v a="$d0" -v b="$d1" \
    'BEGIN { printf "bf16 default first %.1f ms, last %.1f ms (%+.1f%%)", a, b, 100 * (b - a) / a }')"
fi
# Verdicts on the switches: each path's tests and its step time beside the other setting's,
# both from the variants' process (rows "switch: ..."), what a session needs to decide which
# defaults to flip.
step_ms() {   # step_ms FILE PRECISION: the step's median ms, or nothing
  grep -m1 "^train step 1b $2 " "$O/$1" 2>/dev/null | sed -nE 's/^[^:]*: ([0-9.]+) ms.*/\1/p'
}
verdict() {   # verdict LABEL TEST_GROUPS(comma-separated) FILE_WITHOUT FILE_WITH [PRECISION]
  local p=${5:-bf16} off on t="pass" g rc
  off=$(step_ms "$3" "$p"); on=$(step_ms "$4" "$p")
  for g in ${2//,/ }; do   # every group must have passed
    rc=${STATUS[$g]:-}
    if [ -z "$rc" ]; then [ "$t" = pass ] && t="not run ($g)"
    elif [ "$rc" != 0 ]; then t="FAIL$rc ($g)"; fi
  done
  local v="tests not all passed: fix it, or keep it off"
  if [ "$t" = pass ]; then
    v="a step time is missing"
    [ -n "$off" ] && [ -n "$on" ] && v=$(awk -v a="$off" -v b="$on" 'BEGIN {
      print (b < 0.96 * a) ? "faster with it" : (b > 1.04 * a) ? "slower with it" : \
        "no difference (within 4%)" }')
  fi
  row "switch: $1" INFO "$p tests $t; without ${off:-?} ms, with ${on:-?} ms: $v"
}
B0=bench_train_vbase.txt   # the default step in the variants' process
verdict "our grouped kernel (default; DS_GROUPED_GEMM=cublas)" \
  ds_test_backend_ops-ops-grouped,ds_test_model_gpu-model bench_train_cublas.txt $B0
verdict "wgmma attention (default; DS_ATTENTION=mma)" \
  ds_test_backend_ops-ops-attn-wgmma,ds_test_model_gpu-model bench_train_mma.txt $B0
verdict "grouped FP8 experts (default; --moe-gemm loop)" \
  ds_test_backend_ops-ops-fp8-quant,ds_test_backend_ops-ops-fp8-grouped,ds_test_model_gpu-model-fp8-grouped \
  bench_train_fp8loop.txt $B0 fp8
verdict "expert outputs BF16 (opt-in; numerics: outputs rounded to BF16)" \
  ds_test_backend_ops-ops-bf16-outputs,ds_test_model_gpu-model-bf16-outputs $B0 \
  bench_train_b16out.txt
verdict "grouped GEMM on warpgroup MMAs (opt-in; DS_GROUPED_GEMM=wgmma)" \
  ds_test_backend_ops-ops-grouped-wgmma,ds_test_model_gpu-model-gwgmma $B0 bench_train_gwgmma.txt
l=$(grep -m1 "^routed experts:" "$O/bench_train_gwgmma.txt" 2>/dev/null |
  grep -o "wgmma kernel launches [0-9]*")
[ -n "$l" ] && row "launches in bench_train_gwgmma" INFO "$l"
verdict "attention backward with dK and dV fused (opt-in; DS_ATTENTION_BWD=fused)" \
  ds_test_backend_ops-ops-attn-fused $B0 bench_train_bwdfused.txt
verdict "attention backward in one pass (opt-in; DS_ATTENTION_BWD=onepass)" \
  ds_test_backend_ops-ops-attn-onepass $B0 bench_train_onepass.txt
verdict "attention backward in one pass, pipelined (both opt-in)" \
  ds_test_backend_ops-ops-attn-onepipe,ds_test_backend_ops-ops-attn-pipelined $B0 \
  bench_train_onepipe.txt
# what the pipelined schedule gives the one-pass backward (and the forward) by itself
verdict "attention one pass: pipelined against lockstep (both opt-in)" \
  ds_test_backend_ops-ops-attn-onepipe,ds_test_backend_ops-ops-attn-pipelined \
  bench_train_onepass.txt bench_train_onepipe.txt
verdict "attention in 64-row blocks (opt-in; DS_ATTENTION_ROWS=64)" \
  ds_test_backend_ops-ops-attn-rows64 $B0 bench_train_rows64.txt
verdict "attention in 64-row blocks with the fused dK/dV pass (both opt-in)" \
  ds_test_backend_ops-ops-attn-rows64,ds_test_backend_ops-ops-attn-fused $B0 \
  bench_train_rows64f.txt
verdict "attention warpgroups staggered (opt-in; DS_ATTENTION_SCHEDULE=staggered)" \
  ds_test_backend_ops-ops-attn-staggered $B0 bench_train_stag.txt
verdict "attention warpgroups staggered with the fused dK/dV pass (both opt-in)" \
  ds_test_backend_ops-ops-attn-staggered,ds_test_backend_ops-ops-attn-fused $B0 \
  bench_train_stagf.txt
verdict "attention warpgroups pipelined (opt-in; DS_ATTENTION_SCHEDULE=pipelined)" \
  ds_test_backend_ops-ops-attn-pipelined $B0 bench_train_pipe.txt
verdict "attention warpgroups pipelined with the fused dK/dV pass (both opt-in)" \
  ds_test_backend_ops-ops-attn-pipelined,ds_test_backend_ops-ops-attn-fused $B0 \
  bench_train_pipef.txt
verdict "split dK/dV passes on the query-stats table (opt-in; DS_ATTENTION_QSTATS=table)" \
  ds_test_backend_ops-ops-attn-qstats $B0 bench_train_qstats.txt
verdict "FP8 weight gradients split along K (opt-in; DS_FP8_KSPLIT=on)" \
  ds_test_backend_ops-ops-fp8-ksplit $B0 bench_train_fp8ksplit.txt fp8
l=$(grep -m1 "^fp8: split-K" "$O/bench_train_fp8ksplit.txt" 2>/dev/null |
  sed 's/ \[variant .*\]$//')
[ -n "$l" ] && row "launches in bench_train_fp8ksplit" INFO "$l"
verdict "FP8 quantisers on 128x128 tiles (opt-in; DS_FP8_QUANT=tiles)" \
  ds_test_backend_ops-ops-fp8-tiles,ds_test_model_gpu-model-fp8-tiles $B0 \
  bench_train_fp8tiles.txt fp8
l=$(grep -m1 "^fp8: split-K" "$O/bench_train_fp8tiles.txt" 2>/dev/null |
  sed 's/ \[variant .*\]$//')
[ -n "$l" ] && row "launches in bench_train_fp8tiles" INFO "$l"
for f in bench_train_onepass.txt bench_train_onepipe.txt bench_train_rows64.txt \
         bench_train_rows64f.txt bench_train_stag.txt bench_train_stagf.txt \
         bench_train_pipe.txt bench_train_pipef.txt \
         bench_train_qstats.txt; do   # did the switched kernels run?
  l=$(grep -m1 "^attention: fused" "$O/$f" 2>/dev/null | sed 's/ \[variant .*\]$//')
  [ -n "$l" ] && row "launches in ${f%.txt}" INFO "$l"
done
# Its gradients are the split passes' bits (its test checks that), so its step should end at
# the default step's loss; the default step itself is not bit-reproducible (the embedding's
# backward adds with atomics), so the row shows both and the default's own last run.
loss_of() {   # loss_of FILE: the bf16 step's loss from its JSON line, or nothing
  grep -m1 '"precision":"bf16"' "$O/$1" 2>/dev/null | sed -nE 's/.*"loss":([-0-9.e+]+).*/\1/p'
}
l0=$(loss_of $B0); l1=$(loss_of bench_train_bwdfused.txt); l2=$(loss_of bench_train_vbase2.txt)
if [ -n "$l0" ] && [ -n "$l1" ]; then
  row "attention backward fused: loss" INFO "$(awk -v a="$l1" -v b="$l0" -v c="${l2:-?}" 'BEGIN {
    d = a - b; if (d < 0) d = -d; r = b != 0 ? d / (b < 0 ? -b : b) : d
    printf "%s | %s (default; its last run %s): %s", a, b, c,
      (a == b) ? "equal" : sprintf("relative difference %.1e", r) }')"
fi
# The one-pass backward's dQ sums in another order (atomics): its loss may differ from the
# default's in the last digits after the first update, as the default's own reruns do.
l1=$(loss_of bench_train_onepass.txt)
if [ -n "$l0" ] && [ -n "$l1" ]; then
  row "attention backward one pass: loss" INFO "$(awk -v a="$l1" -v b="$l0" -v c="${l2:-?}" \
    'BEGIN { d = a - b; if (d < 0) d = -d; r = b != 0 ? d / (b < 0 ? -b : b) : d
    printf "%s | %s (default; its last run %s): relative difference %.1e", a, b, c, r }')"
fi
verdict "4 side streams for the cuBLAS experts (DS_GROUPED_GEMM_STREAMS=4)" \
  ds_test_backend_ops-ops-grouped,ds_test_model_gpu-model-cublas bench_train_cublas.txt \
  bench_train_4streams.txt
verdict "AdamW writes the next step's BF16 operands (default)" \
  ds_test_backend_ops-ops-multi,ds_test_model_gpu-model bench_train_norefresh.txt $B0
verdict "BF16 attention inputs (default)" ds_test_backend_ops-ops-new,ds_test_model_gpu-model \
  bench_train_attnf32.txt $B0
verdict "shared GEMM inputs (default)" ds_test_backend_ops-ops-new,ds_test_model_gpu-model \
  bench_train_noshare.txt $B0
verdict "stacked gate/up (default)" ds_test_backend_ops-ops-new,ds_test_model_gpu-model \
  bench_train_apart.txt $B0
verdict "sums by the GEMM (default)" \
  ds_test_backend_ops-ops-verified,ds_test_model_gpu-model bench_train_noacc.txt $B0
verdict "sums by the GEMM, fp8 step (FP8 Wgrad by the k-grouped GEMM too; default)" \
  ds_test_backend_ops-ops-fp8-grouped,ds_test_model_gpu-model bench_train_noacc.txt $B0 fp8
# The winners together: the fastest attention variant that was faster than the default (they
# exclude each other or are already combined), the wgmma grouped GEMM and, for the fp8 step,
# the split-K Wgrad and the tile quantisers, each where it was faster (> 4%), in one more
# process beside the default: the combined step time (and its per-op profile) that a session
# flipping those defaults needs, from this same run.
faster() {   # faster FILE PRECISION: the variant's step beat the default's by more than 4%
  local a b; a=$(step_ms $B0 "$2"); b=$(step_ms "$1" "$2")
  [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { exit !(b < 0.96 * a) }'
}
spec_of() {   # spec_of FILE: the variant's keys, less profile=1
  local i
  for i in "${!V_FILE[@]}"; do
    [ "${V_FILE[$i]}" = "$1" ] && { echo "${V_SPEC[$i]}" | sed -e 's/,*profile=1//'; return; }
  done
}
W_BF16=; best=
for f in bench_train_bwdfused.txt bench_train_onepass.txt bench_train_onepipe.txt \
         bench_train_rows64.txt bench_train_rows64f.txt bench_train_stag.txt \
         bench_train_stagf.txt bench_train_pipe.txt bench_train_pipef.txt \
         bench_train_qstats.txt; do
  faster "$f" bf16 || continue
  ms=$(step_ms "$f" bf16)
  if [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; then
    best=$ms; W_BF16=$(spec_of "$f")
  fi
done
faster bench_train_gwgmma.txt bf16 && W_BF16=${W_BF16:+$W_BF16,}grouped-gemm=wgmma
W_FP8=
faster bench_train_fp8ksplit.txt fp8 && W_FP8=fp8-ksplit=on
faster bench_train_fp8tiles.txt fp8 && W_FP8=${W_FP8:+$W_FP8,}fp8-quant=tiles
if [ -z "$W_BF16$W_FP8" ]; then
  row "train step 1b (ds, winners together)" INFO "none: no opt-in was more than 4% faster"
elif room 90 40; then
  wargs=(--variant "winners baseline:precision=bf16+fp8")
  [ -n "$W_BF16" ] && wargs+=(--variant "winners:precision=bf16,$W_BF16,profile=1")
  [ -n "$W_FP8" ] && wargs+=(--variant "winners fp8:precision=fp8,$W_FP8,profile=1")
  timeout "$(limit 90)" "$BIN/bench_train_step" --preset 1b --batch 4 --seq 4096 \
    --steps "$NS" --warmup 1 "${wargs[@]}" > "$O/bench_train_winners.txt" \
    2> "$O/bench_train_winners_err.txt"
  echo "bench_train_step (winners) rc=$?"
  wl() {   # wl LABEL PRECISION: the variant's step line, less its tag
    grep -m1 "^train step 1b $2 .*\[variant $1\]$" "$O/bench_train_winners.txt" |
      sed -e 's/^train step 1b //' -e 's/ \[variant .*\]$//'
  }
  for pw in "bf16:winners:$W_BF16" "fp8:winners fp8:$W_FP8"; do
    p=${pw%%:*}; rest=${pw#*:}; lab=${rest%%:*}; sp=${rest#*:}
    [ -n "$sp" ] || continue
    l=$(wl "$lab" "$p"); b=$(wl "winners baseline" "$p")
    if [ -n "$l" ] && [ -n "$b" ]; then
      row "train step 1b $p (ds, winners together)" INFO "$sp: ${l%%,*} against ${b%%,*} (the \
default, same process); $(echo "$l" | grep -o 'MFU [0-9.]*%')"
    else
      row "train step 1b $p (ds, winners together)" FAIL "$sp: no result, see \
bench_train_winners_err.txt"
    fi
  done
else row "train step 1b (ds, winners together)" SKIP "out of time"; fi
echo "[gpu-check] training-step benchmarks done at $(elapsed)"

# ---- 3. kernel benchmarks ---------------------------------------------------------------------
T_OVERLAP=(ds_test_backend_ops-ops-fp8-overlap)
gemm_without=()   # the opt-ins whose tests failed are not timed
passed "${T_OVERLAP[@]}" || gemm_without+=(--without overlap)
passed "${T_KERNEL[@]}" || gemm_without+=(--without kernel)
passed "${T_FP8G[@]}" || gemm_without+=(--without fp8-grouped)
passed "${T_GWG[@]}" || gemm_without+=(--without wgmma)
if room 45 15; then
  timeout "$(limit 45)" "$BIN/bench_gemm" ${gemm_without[@]+"${gemm_without[@]}"} \
    > "$O/bench_gemm.txt" 2>&1; echo "bench_gemm rc=$? ${gemm_without[*]:-}"
  grep -v '^{' "$O/bench_gemm.txt" | tail -14
  # the grouped GEMMs: our mma.sync kernel beside its wgmma version, per shape
  if passed "${T_GWG[@]}"; then
    l=$(python3 - "$O/bench_gemm.txt" <<'PY' 2>/dev/null
import json, sys
out = []
for line in open(sys.argv[1]):
    if line.startswith("{") and '"grouped_gemm"' in line:
        r = json.loads(line)
        if r.get("wgmma_tflops", -1) > 0:
            k = r.get("kernel_tflops", -1)
            out.append("%s: %s -> %.0f TF/s (nmse %.1e)" % (
                r["shape"], "%.0f" % k if k > 0 else "?", r["wgmma_tflops"],
                r.get("wgmma_nmse", -1)))
print("; ".join(out))
PY
)
    row "grouped wgmma vs mma.sync" INFO "${l:-no wgmma timing, see bench_gemm.txt}"
  else row "grouped wgmma vs mma.sync" SKIP "not run: its tests did not all pass"; fi
else row "bench_gemm" SKIP "out of time"; fi
q=$([ $QUICK = 1 ] && echo --quick || true)
if room 45 20; then
  nm=--no-mla-wgmma; passed "${T_MLAW[@]}" && nm=   # the wgmma MLA kernel where it passed
  timeout "$(limit 45)" "$BIN/bench_attention" $q $nm > "$O/bench_attention.txt" 2>&1
  echo "bench_attention $nm rc=$?"
  grep -v '^{' "$O/bench_attention.txt"
  if [ -n "$nm" ]; then row "mla decode wgmma" SKIP "not run: its tests did not all pass"
  else
    l=$(grep "BF16 cache (wgmma)" "$O/bench_attention.txt" | sed 's/^mla decode *//' |
      tr -s ' ' | paste -sd';')
    row "mla decode wgmma" INFO "${l:-failed, see bench_attention.txt}"
  fi
else row "bench_attention" SKIP "out of time"; fi
# The wgmma attention's opt-ins that bench_attention --wgmma times and Nsight Compute
# profiles: each where its tests passed.
nf=--no-fused; passed "${T_BWDFUSED[@]}" && nf=   # the fused dK/dV pass
n1=--no-onepass; passed "${T_ONE[@]}" && n1=       # the one-pass backward
n2=--no-onepass-pipelined; passed "${T_ONE_PIPE[@]}" && n2=   # and pipelined
nr=--no-rows64; passed "${T_ROWS64[@]}" && nr=     # the 64-row blocks
ns=--no-staggered; passed "${T_STAG[@]}" && ns=    # the staggered warpgroups
np=--no-pipelined; passed "${T_PIPE[@]}" && np=    # the pipelined ones
nq=--no-qstats; passed "${T_QS[@]}" && nq=         # the query-stats table
if ! room 30 15; then
  row "attention wgmma" SKIP "out of time"
elif passed "${T_WGMMA[@]}"; then
  timeout "$(limit 30)" "$BIN/bench_attention" $q --wgmma $nf $n1 $n2 $nr $ns $np $nq \
    > "$O/bench_attention_wgmma.txt" 2>&1
  echo "bench_attention --wgmma $nf $n1 $n2 $nr $ns $np $nq rc=$?"
  grep -v '^{' "$O/bench_attention_wgmma.txt"
  l=$(grep "wgmma fwd" "$O/bench_attention_wgmma.txt" | sed 's/^attention bf16 //' | tr -s ' ' \
    | paste -sd';')
  row "attention wgmma" INFO "${l:-failed, see bench_attention_wgmma.txt}"
  opt_rows() {   # opt_rows LABEL SKIP_FLAG PATTERN: the opt-in's lines, or why none
    if [ -n "$2" ]; then row "attention wgmma, $1" SKIP "not run: its tests did not all pass"
    else
      l=$(grep "$3" "$O/bench_attention_wgmma.txt" | grep -v '^{' | sed 's/^attention bf16 //' \
        | tr -s ' ' | paste -sd';')
      row "attention wgmma, $1" INFO "${l:-failed, see bench_attention_wgmma.txt}"
    fi
  }
  opt_rows "dK/dV fused" "$nf" "dK and dV fused"
  opt_rows "one pass" "$n1" "bwd in one pass, lockstep"
  opt_rows "one pass, pipelined" "$n2" "bwd in one pass, pipelined"
  opt_rows "64-row blocks" "$nr" "64-row blocks"
  opt_rows "staggered" "$ns" "staggered warpgroups"
  opt_rows "pipelined" "$np" "pipelined warpgroups"
  opt_rows "query-stats table" "$nq" "query-stats table"
else
  row "attention wgmma" SKIP "not run: its tests did not all pass"
fi
# The BF16 MLA decode kernel under forced ring depths and key splits beside its own plan (16
# and 128 heads): what a change of its plan would give.
if ! passed "${T_MLA[@]}"; then row "mla decode plans" SKIP "not run: its tests did not all pass"
elif room 30 15; then
  timeout "$(limit 30)" "$BIN/bench_attention" $q --mla-plans > "$O/bench_mla_plans.txt" 2>&1
  echo "bench_attention --mla-plans rc=$?"; grep -v '^{' "$O/bench_mla_plans.txt"
  l=$(grep -c '^mla plan' "$O/bench_mla_plans.txt")
  b=""
  for h in 16 128; do   # the fastest plan at each head count, and the launcher's own
    f=$(grep "^mla plan .* H= *$h " "$O/bench_mla_plans.txt" | sed -nE \
      's/.*stages ([0-9]+), splits ([0-9]+) .*: +[0-9.]+ ms +([0-9]+) GB.*/\3 GB\/s (stages \1, splits \2)/p' \
      | sort -rn | head -1)
    o=$(grep "^mla plan .* H= *$h .*asked stages 0 splits 0" "$O/bench_mla_plans.txt" |
      sed -nE 's/.*: +[0-9.]+ ms +([0-9]+) GB.*/\1 GB\/s/p')
    [ -n "$f" ] && b="$b H $h: fastest $f, own plan ${o:-?};"
  done
  row "mla decode plans" INFO "$l plans timed;${b:- none, see bench_mla_plans.txt}"
else row "mla decode plans" SKIP "out of time"; fi
if room 30 15; then
  timeout "$(limit 30)" "$BIN/bench_losses" > "$O/bench_losses.txt" 2>&1; echo "bench_losses rc=$?"
  grep -v '^{' "$O/bench_losses.txt" | tail -3
else row "bench_losses" SKIP "out of time"; fi
# The FP8 Linears' quantisations, plain against the tile quantisers (opt-in), side by side.
if ! passed "${T_TILES[0]}"; then row "fp8 quantisers, tiles vs plain" SKIP \
  "not run: ops-fp8-tiles did not pass"
elif [ ! -x "$BIN/bench_fp8_quant" ]; then row "fp8 quantisers, tiles vs plain" MISS "not built"
elif room 20 10; then
  timeout "$(limit 20)" "$BIN/bench_fp8_quant" $q > "$O/bench_fp8_quant.txt" 2>&1
  echo "bench_fp8_quant rc=$?"; grep -v '^{' "$O/bench_fp8_quant.txt"
  l=$(grep -E '^(quantize_dual|requantize_transposed) ' "$O/bench_fp8_quant.txt" |
    awk '$2 == 4096 { printf "%s K 4096: %s -> %s GB/s (%s); ", $1, $6, $7, $8 }')
  row "fp8 quantisers, tiles vs plain" INFO "${l:-no result, see bench_fp8_quant.txt}"
else row "fp8 quantisers, tiles vs plain" SKIP "out of time"; fi
echo "[gpu-check] kernel benchmarks done at $(elapsed)"
# ---- 4. the same 1b step in PyTorch on the card (the issue's side-by-side figure) ---------
if ! room 100 40; then
  row "train step 1b bf16 (PyTorch)" SKIP "out of time"
elif python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  timeout "$(limit 100)" env PYTHONUNBUFFERED=1 python3 tests/model/torch_ref/bench_torch_train.py \
    --preset 1b --device cuda --dtype bf16 --batch 4 --seq 4096 --steps "$NS" --warmup 2 \
    --threads 8 > "$O/bench_torch.txt" 2>&1
  echo "torch baseline rc=$?"; tail -2 "$O/bench_torch.txt"
  l=$(grep '^{' "$O/bench_torch.txt" | tail -1 | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%.1f ms, %.0f tokens/s, MFU %.1f%%, %.1f GiB" % (r["step_ms"], r["tokens_per_s"], 100*r["mfu"], r.get("max_mem_gib", 0)))' 2>/dev/null)
  row "train step 1b bf16 (PyTorch)" INFO "${l:-failed, see bench_torch.txt}"
else
  row "train step 1b bf16 (PyTorch)" SKIP "no PyTorch with CUDA here"
fi
# ---- 5. Nsight Compute on the hottest kernels (what the next optimisation needs) -------------
# Time, throughputs, pipes and warp stall reasons (scripts/ncu_summary.py) of one launch each:
# the wgmma attention forward and its backward at the 1b preset's head dims (37% and 8% of its
# step on the H200 at 029fe18), the backward's opt-ins (the fused dK/dV pass, the one-pass
# backward, 64-row blocks, staggered and pipelined warpgroups, the query-stats table), the
# grouped BF16 GEMM (18%) and the BF16-cache MLA decode at 16 heads; each only where its tests
# passed (the demangled names: ncu writes template arguments as (int)96; a bool's spelling is
# matched both ways). It re-runs benchmarks under the profiler (clocks locked to base, so its
# times are longer than theirs). Here the attention backward (the baseline and the opt-ins)
# and the wgmma grouped GEMM; the defaults' forward, grouped GEMM and MLA decode, profiled on
# 2026-11-30, after the tools (section 8).
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
NCU_METRICS="gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed"
NCU_METRICS+=",dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread"
NCU_METRICS+=",sm__warps_active.avg.pct_of_peak_sustained_active"
NCU_METRICS+=",smsp__issue_active.avg.pct_of_peak_sustained_active"
NCU_METRICS+=",regex:^sm__pipe_(alu|tensor\w*)_cycles_active\.avg\.pct_of_peak_sustained_active$"
NCU_METRICS+=",regex:^smsp__average_warps_issue_stalled_\w+_per_issue_active\.ratio$"
# entries: label:file:test groups (the T_* array):kernel regex:launches:benchmark and its flags
A_ONLY="bench_attention --quick --only-1b --wgmma --no-fused --no-onepass"
A_ONLY+=" --no-onepass-pipelined --no-rows64 --no-staggered --no-pipelined --no-qstats"
ncu_entries() {   # ncu_entries SPEC...: one Nsight Compute run and its rows per entry
  local spec lab f groups k c cmd gref rc s l
  for spec in "$@"; do
    IFS=: read -r lab f groups k c cmd <<< "$spec"
    gref="$groups[@]"   # the group array's elements, by indirection
    if [ -z "$NCU" ]; then row "ncu $lab" SKIP "no ncu here"; continue; fi
    if ! passed "${!gref}"; then
      row "ncu $lab" SKIP "not run: its tests did not all pass"; continue
    fi
    if ! room 40 20; then row "ncu $lab" SKIP "out of time"; continue; fi
    # shellcheck disable=SC2086 # cmd: the benchmark and its flags
    timeout "$(limit 40)" "$NCU" --csv --page raw --print-units base \
      --kernel-name-base demangled -k "regex:$k" -c "$c" --metrics "$NCU_METRICS" \
      "$BIN/"$cmd > "$O/ncu_$f.csv" 2> "$O/ncu_$f.err"
    rc=$?
    s=$(python3 scripts/ncu_summary.py "$O/ncu_$f.csv" 2>&1)
    if [ -n "$s" ] && [ "$rc" = 0 ]; then
      while IFS= read -r l; do row "ncu $lab" INFO "$l"; done <<< "$s"
    else   # nothing profiled: a crash, or a regex a rename broke
      row "ncu $lab" FAIL "rc $rc, no kernel profiled: see ncu_$f.err"
      tail -3 "$O/ncu_$f.err" 2>/dev/null
    fi
  done
}
# The attention backward at the 1b preset's head dims, the default and every opt-in whose
# tests passed, in ONE profiler run: bench_attention --profile-once launches each variant's
# kernels once, ncu profiles every sm90_bwd_kernel<96, ...> launch up to a count above the
# variants' total (27 with every opt-in), and ncu_summary.py reports each kernel once and
# names its opt-ins from its template arguments (rows "ncu attention backward 96/64" for the
# default split passes, "..., pipelined", "..., one pass", "..., staggered + dK/dV fused").
ncu_attention_bwd() {
  local lab="attention backward 96/64" rc s v l want
  if [ -z "$NCU" ]; then row "ncu $lab" SKIP "no ncu here"; return; fi
  if ! passed "${T_WGMMA[@]}"; then row "ncu $lab" SKIP "not run: its tests did not all pass"
    return; fi
  if ! room 60 30; then row "ncu $lab" SKIP "out of time"; return; fi
  # shellcheck disable=SC2086 # the opt-ins' flags: empty or one word each
  timeout "$(limit 60)" "$NCU" --csv --page raw --print-units base \
    --kernel-name-base demangled -k "regex:sm90_bwd_kernel<.int.96" -c 40 \
    --metrics "$NCU_METRICS" "$BIN/bench_attention" --quick --only-1b --wgmma --profile-once \
    $nf $n1 $n2 $nr $ns $np $nq > "$O/ncu_attn_bwd.csv" 2> "$O/ncu_attn_bwd.err"
  rc=$?
  s=$(python3 scripts/ncu_summary.py --labels "$O/ncu_attn_bwd.csv" 2>/dev/null)
  # the kernels profiled before a failure keep their rows
  [ -n "$s" ] && while IFS= read -r l; do   # (the default's label is empty: a leading tab)
    v=${l%%$'\t'*}; row "ncu $lab${v:+, $v}" INFO "${l#*$'\t'}"
  done <<< "$s"
  if [ "$rc" != 0 ] || [ -z "$s" ]; then
    row "ncu $lab" FAIL \
      "rc $rc${s:+ after the rows above}${s:-, no kernel profiled}: see ncu_attn_bwd.err"
    tail -3 "$O/ncu_attn_bwd.err" 2>/dev/null
    return
  fi
  # an opt-in that was asked for and left no kernel (the 64-row blocks keep 128 rows where
  # two do not fit an SM)
  for want in "$nf:dK/dV fused" "$n1:one pass" "$n2:pipelined + one pass" \
              "$nr:64-row blocks" "$ns:staggered" "$np:pipelined" "$nq:query-stats table"; do
    [ -n "${want%%:*}" ] && continue
    v=${want#*:}
    grep -q "^$v"$'\t' <<< "$s" && continue
    if [ "$v" = "64-row blocks" ]; then
      row "ncu $lab, $v" SKIP "no 64-row kernel ran (two blocks do not fit an SM: 128 rows ran)"
    else row "ncu $lab, $v" FAIL "no such kernel profiled: see ncu_attn_bwd.csv"; fi
  done
}
ncu_attention_bwd
ncu_entries "grouped BF16 GEMM, wgmma:grouped_wg:T_GWG:grouped_bf16_wgmma_kernel:1:bench_gemm --grouped-only --without overlap --without fp8-grouped"
echo "[gpu-check] Nsight Compute (opt-ins) done at $(elapsed)"
# ---- 6. the tools on the GPU: pretraining (GPU vs CPU), generation, evaluation ---------------
STEPS=$([ $QUICK = 1 ] && echo 60 || echo 200)
for dev in cuda cpu; do
  rm -rf "$O/run-$dev"
  if ! room 60 10; then row "ds-pretrain tiny $dev" SKIP "out of time"; continue; fi
  s=$(date +%s)
  timeout "$(limit 60)" "$BIN/ds-pretrain" --preset tiny --tokenizer "$D/tokenizer/tokenizer.json" \
    --data "$D/data" --out "$O/run-$dev" --steps "$STEPS" --batch-size 16 --seq-len 128 \
    --lr 3e-3 --eval-every "$STEPS" --save-every "$STEPS" --metrics "$O/run-$dev/metrics.jsonl" \
    --device "$dev" --precision fp32 > "$O/pretrain-$dev.log" 2>&1; rc=$?
  [ $rc = 0 ] && row "ds-pretrain tiny $dev" PASS "$STEPS steps in $(( $(date +%s) - s ))s" \
             || { row "ds-pretrain tiny $dev" "FAIL$rc" "see pretrain-$dev.log"; tail -5 "$O/pretrain-$dev.log"; }
done
# curves GPU_METRICS CPU_METRICS: the two runs' losses at their common steps, side by side, and
# the largest relative gap (the last line, "LOSSCURVE steps=N max_rel_dev=X").
curves() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    out = {}
    for line in open(p):
        r = json.loads(line)
        if "loss" in r and "step" in r and "val_loss" not in r:
            out[r["step"]] = r
    return out
g, c = load(sys.argv[1]), load(sys.argv[2])
steps = sorted(set(g) & set(c))
worst = max((abs(g[s]["loss"] - c[s]["loss"]) / abs(c[s]["loss"]) for s in steps if c[s]["loss"]),
            default=float("nan"))
for s in steps[:: max(1, len(steps) // 8)] + steps[-1:]:
    print(f"step {s:4d}  loss gpu {g[s]['loss']:.5f}  cpu {c[s]['loss']:.5f}"
          f"  tok/s gpu {g[s].get('tokens_per_s', 0):.0f} cpu {c[s].get('tokens_per_s', 0):.0f}")
print(f"LOSSCURVE steps={len(steps)} max_rel_dev={worst:.3g}")
PY
}
if [ -f "$O/run-cuda/metrics.jsonl" ] && [ -f "$O/run-cpu/metrics.jsonl" ]; then
  curves "$O/run-cuda/metrics.jsonl" "$O/run-cpu/metrics.jsonl" > "$O/loss-curves.txt"
  cat "$O/loss-curves.txt"
  row "loss curve GPU vs CPU" INFO "$(tail -1 "$O/loss-curves.txt")"
fi
if [ -d "$O/run-cuda" ] && ! room 30 25; then   # six short runs
  row "ds-generate/ds-eval" SKIP "out of time"
elif [ -d "$O/run-cuda" ]; then
  gbad=""
  for dev in cuda cpu; do
    timeout "$(limit 30)" "$BIN/ds-generate" --model "$O/run-cuda" --prompt "In the beginning" \
      --max-new-tokens 24 --device "$dev" > "$O/generate-$dev.txt" 2> "$O/generate-$dev.log"
    rc=$?; echo "ds-generate $dev rc=$rc: $(head -c 200 "$O/generate-$dev.txt")"
    { [ $rc = 0 ] && [ -s "$O/generate-$dev.txt" ]; } || gbad="$gbad $dev(rc=$rc)"
    timeout "$(limit 30)" "$BIN/ds-eval" perplexity --model "$O/run-cuda" --device "$dev" \
      --no-progress \
      "$D/heldout.txt" > "$O/eval-$dev.txt" 2> "$O/eval-$dev.log"
    echo "ds-eval $dev rc=$?: $(head -c 300 "$O/eval-$dev.txt")"
  done
  cmp -s "$O/generate-cuda.txt" "$O/generate-cpu.txt" && same=identical || same=DIFFERENT
  if [ -n "$gbad" ]; then row "ds-generate greedy" FAIL "failed or empty:$gbad"
  else row "ds-generate greedy cuda vs cpu" INFO "$same text"; fi
  # BF16 latent cache (the tensor-core decode kernel on cuda; opt-in: only where its tests
  # passed)
  bad=""
  passed ds_test_backend_ops-ops-mla-bf16 || bad=" (not run: its tests did not all pass)"
  for dev in cuda cpu; do
    [ -n "$bad" ] && break
    timeout "$(limit 30)" "$BIN/ds-generate" --model "$O/run-cuda" --prompt "In the beginning" \
      --max-new-tokens 24 --device "$dev" --kv-cache bf16 --stats > "$O/generate-bf16-$dev.txt" \
      2> "$O/generate-bf16-$dev.log"; rc=$?
    echo "ds-generate --kv-cache bf16 $dev rc=$rc: $(head -c 200 "$O/generate-bf16-$dev.txt")"
    { [ $rc = 0 ] && [ -s "$O/generate-bf16-$dev.txt" ]; } || bad="$bad $dev(rc=$rc)"
  done
  if [ "${bad:0:9}" = " (not run" ]; then row "ds-generate bf16 cache" SKIP "${bad# }"
  elif [ -n "$bad" ]; then
    row "ds-generate bf16 cache" FAIL "failed or empty:$bad, see generate-bf16-*.log"
  else
    cmp -s "$O/generate-bf16-cuda.txt" "$O/generate-bf16-cpu.txt" && same=identical || same=DIFFERENT
    cmp -s "$O/generate-bf16-cuda.txt" "$O/generate-cuda.txt" && vs32=identical || vs32=DIFFERENT
    row "ds-generate bf16 cache cuda vs cpu" INFO "$same text; vs the f32 cache: $vs32"
  fi
  ppl() {   # ppl FILE: the perplexity in a ds-eval report, or why not
    python3 -c 'import json, sys
print("%.6f" % json.load(open(sys.argv[1]))["metrics"]["perplexity"]["value"])' "$1" 2>/dev/null ||
      echo "failed, see $(basename "$1" .txt).log"
  }
  row "ds-eval ppl cuda | cpu" INFO "$(ppl "$O/eval-cuda.txt") | $(ppl "$O/eval-cpu.txt")"
fi
echo "[gpu-check] tools done at $(elapsed)"
# ---- 7. the other tools with --device cuda, each beside --device cpu ----------------------------
# From the GPU-trained checkpoint (the CPU-trained one should the GPU run have failed), on the
# arithmetic task of examples/arith (its generator needs only Python's standard library):
# ds-sft (loss curves side by side), ds-eval generate on the SFT checkpoint (greedy answers
# compared), ds-rl (GRPO; the first step's rollouts are sampled with the same seed, so its
# reward, gradient norm and entropy should agree; a reward for short completions and a small
# balance loss make sure that step has a gradient: with only the exact and format rewards a
# barely trained policy gets equal rewards in every group, zero advantages, and a gradient
# of 0 on both devices whatever the GPU computed), and ds-convert-fp8's block quantisation (the two
# outputs compared byte for byte).
last_ckpt() { ls -d "$1"/step-* 2>/dev/null | sort | tail -n 1; }
BASE=$(last_ckpt "$O/run-cuda"); [ -n "$BASE" ] || BASE=$(last_ckpt "$O/run-cpu")
A=$O/arith
if [ -z "$BASE" ]; then
  row "ds-sft/ds-rl/ds-convert-fp8" SKIP "no ds-pretrain checkpoint"
elif ! python3 examples/arith/gen.py --out "$A" --seed 0 --terms 3 --max-operand 9 \
       --heldout 100 > "$O/arith-gen.log" 2>&1; then
  row "ds-sft/ds-rl (arith data)" FAIL "see arith-gen.log"
else
  for dev in cuda cpu; do   # SFT long enough for some completions to end in "#### N"
    rm -rf "$O/sft-$dev"
    if [ "$(limit 40)" -lt 10 ]; then row "ds-sft arith $dev" SKIP "out of time"; continue; fi
    s=$(date +%s)
    timeout "$(limit 40)" "$BIN/ds-sft" --init "$BASE" --data "$A/sft.jsonl" --out "$O/sft-$dev" \
      --seed 1 --steps 100 --batch-size 16 --seq-len 104 --lr 1e-3 --device "$dev" \
      --metrics "$O/sft-$dev/metrics.jsonl" > "$O/sft-$dev.log" 2>&1; rc=$?
    if [ $rc = 0 ]; then row "ds-sft arith $dev" PASS "100 steps in $(( $(date +%s) - s ))s"
    else row "ds-sft arith $dev" "FAIL$rc" "see sft-$dev.log"; tail -5 "$O/sft-$dev.log"; fi
  done
  if [ -f "$O/sft-cuda/metrics.jsonl" ] && [ -f "$O/sft-cpu/metrics.jsonl" ]; then
    curves "$O/sft-cuda/metrics.jsonl" "$O/sft-cpu/metrics.jsonl" > "$O/sft-curves.txt"
    cat "$O/sft-curves.txt"
    row "ds-sft loss GPU vs CPU" INFO "$(tail -1 "$O/sft-curves.txt")"
  fi
  SFT=$(last_ckpt "$O/sft-cuda"); [ -n "$SFT" ] || SFT=$(last_ckpt "$O/sft-cpu")
  if [ -n "$SFT" ] && ! room 30 15; then
    row "ds-eval generate/ds-rl" SKIP "out of time"
  elif [ -n "$SFT" ]; then
    for dev in cuda cpu; do
      timeout "$(limit 30)" "$BIN/ds-eval" generate --model "$SFT" --task "$A/heldout.jsonl" \
        --chat --max-new-tokens 32 --batch-size 50 --device "$dev" --no-progress \
        --log-samples "$O/evalgen-$dev.samples.jsonl" --out "$O/evalgen-$dev.json" \
        > "$O/evalgen-$dev.log" 2>&1
      echo "ds-eval generate $dev rc=$?"
    done
    row "ds-eval generate cuda vs cpu" INFO "$(python3 - "$O/evalgen-cuda" "$O/evalgen-cpu" \
      <<'PY' 2>&1 | tail -1
import json, sys
def load(p):
    em = json.load(open(p + ".json"))["metrics"]["exact_match"]["value"]
    return em, [json.loads(l)["completion"] for l in open(p + ".samples.jsonl")]
(ga, gs), (ca, cs) = load(sys.argv[1]), load(sys.argv[2])
diff = sum(a != b for a, b in zip(gs, cs)) + abs(len(gs) - len(cs))
print(f"exact match {ga:.3f} | {ca:.3f}; {diff} of {max(len(gs), len(cs))} greedy answers differ")
PY
)"
    for dev in cuda cpu; do
      rm -rf "$O/rl-$dev"
      if [ "$(limit 40)" -lt 10 ]; then row "ds-rl arith $dev" SKIP "out of time"; continue; fi
      s=$(date +%s)
      timeout "$(limit 40)" "$BIN/ds-rl" --init "$SFT" --prompts "$A/rl.jsonl" --out "$O/rl-$dev" \
        --seed 1 --steps 3 --prompts-per-step 8 --group-size 4 --max-new-tokens 24 --chat \
        --reward exact --reward format --reward regex=0.5 --reward-regex '^[^#]{0,14}$' \
        --balance-alpha 0.01 --device "$dev" --metrics "$O/rl-$dev/metrics.jsonl" \
        > "$O/rl-$dev.log" 2>&1; rc=$?
      if [ $rc = 0 ]; then row "ds-rl arith $dev" PASS "3 GRPO steps in $(( $(date +%s) - s ))s"
      else row "ds-rl arith $dev" "FAIL$rc" "see rl-$dev.log"; tail -5 "$O/rl-$dev.log"; fi
    done
    if [ -f "$O/rl-cuda/metrics.jsonl" ] && [ -f "$O/rl-cpu/metrics.jsonl" ]; then
      python3 - "$O/rl-cuda/metrics.jsonl" "$O/rl-cpu/metrics.jsonl" > "$O/rl-compare.txt" \
        2>&1 <<'PY'
import json, sys
g, c = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
for a, b in zip(g, c):
    print("step %d: reward %.4f | %.4f, grad norm %.6g | %.6g, entropy %.6g | %.6g, kl %.3g | %.3g, "
          "no-signal groups %.3f | %.3f" % (a["step"], a["reward"], b["reward"], a["grad_norm"],
          b["grad_norm"], a["entropy"], b["entropy"], a["kl"], b["kl"], a["no_signal_groups"],
          b["no_signal_groups"]))
PY
      cat "$O/rl-compare.txt"
      row "ds-rl step 1 cuda | cpu" INFO "$(head -1 "$O/rl-compare.txt" | sed 's/^step 1: //')"
    fi
  fi
fi
if [ -n "$BASE" ] && ! room 30 10; then
  row "ds-convert-fp8 quantize" SKIP "out of time"
elif [ -n "$BASE" ]; then
  for dev in cuda cpu; do
    rm -rf "$O/fp8-$dev"
    timeout "$(limit 30)" "$BIN/ds-convert-fp8" quantize --model "$BASE" --out "$O/fp8-$dev" \
      --device "$dev" > "$O/fp8-$dev.log" 2>&1 ||
      echo "ds-convert-fp8 $dev: $(tail -1 "$O/fp8-$dev.log")"
  done
  if [ -f "$O/fp8-cuda/model.safetensors" ] && [ -f "$O/fp8-cpu/model.safetensors" ]; then
    same=identical
    for f in "$O"/fp8-cpu/*.safetensors; do
      cmp -s "$f" "$O/fp8-cuda/$(basename "$f")" || same=DIFFERENT
    done
    row "ds-convert-fp8 quantize cuda vs cpu" INFO "$same safetensors"
  else
    row "ds-convert-fp8 quantize" FAIL "see fp8-cuda.log, fp8-cpu.log"
  fi
fi
echo "[gpu-check] other tools done at $(elapsed)"
# ---- 8. Nsight Compute on the defaults profiled before (2026-11-30) -------------------------
ncu_entries "attention forward 96/64:attn_fwd:T_WGMMA:sm90_fwd_kernel<.int.96:1:$A_ONLY" \
            "grouped BF16 GEMM:grouped:T_KERNEL:grouped_bf16_gemm_kernel:1:bench_gemm --grouped-only --without overlap --without fp8-grouped --without wgmma" \
            "MLA decode BF16, 16 heads:mla:T_MLA:mla_tc_kernel<.int.1>:1:bench_attention --quick --mla-plans"
echo "[gpu-check] Nsight Compute (defaults) done at $(elapsed)"
