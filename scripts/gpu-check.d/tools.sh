# Part of scripts/gpu-check.sh, which sources it from the repository root after its helpers
# (limit, room, row, elapsed) and the variables P, O, QUICK, BIN, D, T0 and BUDGET are set.
# Sections 6-8: the tools with --device cuda beside --device cpu, then Nsight Compute on the
# defaults profiled before.
# ---- 6. the tools on the GPU: pretraining (GPU vs CPU), generation, evaluation ---------------
STEPS=$([ $QUICK = 1 ] && echo 60 || echo 200)
for dev in cuda cpu; do
  rm -rf "$O/run-$dev"
  # at least 20 s: the CPU run took 7 s on the H200 machine (far longer in a sanitizer build)
  if ! room 60 20; then row "ds-pretrain tiny $dev" SKIP "out of time"; continue; fi
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
