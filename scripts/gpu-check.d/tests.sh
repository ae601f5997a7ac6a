# Part of scripts/gpu-check.sh, which sources it from the repository root after its helpers
# (limit, room, row, elapsed) and the variables P, O, QUICK, BIN, D, T0 and BUDGET are set.
# Section 1: the GPU unit tests, one process per test group (STATUS holds each group's exit).
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

