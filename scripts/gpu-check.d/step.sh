# Part of scripts/gpu-check.sh, which sources it from the repository root after its helpers
# (limit, room, row, elapsed) and the variables P, O, QUICK, BIN, D, T0 and BUDGET are set.
# Section 2: the 1b training step: defaults, switches and opt-ins, with their verdicts.
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

