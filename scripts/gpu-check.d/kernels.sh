# Part of scripts/gpu-check.sh, which sources it from the repository root after its helpers
# (limit, room, row, elapsed) and the variables P, O, QUICK, BIN, D, T0 and BUDGET are set.
# Sections 3-5: kernel benchmarks, the PyTorch step and Nsight Compute on the hottest kernels.
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
