#!/usr/bin/env bash
# ds-convert-fp8 benchmark: peak resident memory and throughput of quantize, dequantize and
# verify against the checkpoint's size, for two sizes (LAYERS), to show that memory does not
# grow with the checkpoint. Each checkpoint is a ds-pretrain checkpoint (one optimiser step, so
# every name and shape comes from the model registry) of a config with larger matrices than the
# presets' (dim 1024, dense FFN 2816, 8 experts of 704: partial 128-blocks), F32 weights in one
# model.safetensors: about 480 MB with 2 layers, 990 MB with 8. The largest tensor (the 131 MB
# embedding) is copied in 16 MiB chunks; weights are quantised in bands of 4 Mi values. Peak RSS
# from /usr/bin/time -v (mapped input pages included); MB/s = input tensor bytes / conversion
# time (the tool's JSON line). Prints a Markdown table.
# Usage: bench/convert/bench_convert.sh [BUILD_DIR (build)]; env THREADS (quantize's --threads,
# default 1; 0: all cores),
# LAYERS ("2 8"), WORK (scratch directory; default a new temporary one, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build}/bin
THREADS=${THREADS:-1}
if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK"
  trap 'rm -rf "${WORK:?}"/l[0-9]*' EXIT
else
  WORK=$(mktemp -d -t ds_bench_convert.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
TIME=/usr/bin/time

# ---- inputs --------------------------------------------------------------------------------
for i in $(seq 1 400); do
  echo "the shepherd $i went up to the mountain and spoke unto the people of the city $((i * 7))."
done > "$WORK/corpus.txt"
"$BIN/ds-tokenize" --log-level warn train --vocab-size 512 --out "$WORK/tok" --force \
  "$WORK/corpus.txt" > /dev/null
"$BIN/ds-tokenize" --log-level warn encode --tokenizer "$WORK/tok/tokenizer.json" \
  --out "$WORK/data" --force "$WORK/corpus.txt" > /dev/null

# checkpoint LAYERS: a one-step ds-pretrain checkpoint of the config with LAYERS layers -> $CKPT
checkpoint() {
  local d="$WORK/l$1"
  mkdir -p "$d"
  cat > "$d/config.json" <<EOF
{"model_type": "deepseek_v3", "vocab_size": 32000, "hidden_size": 1024,
 "intermediate_size": 2816, "moe_intermediate_size": 704, "num_hidden_layers": $1,
 "first_k_dense_replace": 1, "num_attention_heads": 8, "n_routed_experts": 8,
 "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
 "q_lora_rank": 384, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
 "v_head_dim": 64, "max_position_embeddings": 4096, "num_nextn_predict_layers": 1,
 "scoring_func": "sigmoid", "routed_scaling_factor": 2.5, "norm_topk_prob": true,
 "topk_method": "noaux_tc", "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
EOF
  "$BIN/ds-pretrain" --log-level warn --model-config "$d/config.json" \
    --tokenizer "$WORK/tok/tokenizer.json" --data "$WORK/data" --out "$d/run" --steps 1 \
    --batch-size 1 --seq-len 16 --val-sequences 0 > /dev/null
  CKPT=$(ls -d "$d"/run/step-* | tail -1)
  rm -rf "$CKPT/training_state"
}

# measure NAME CMD...: peak RSS and wall time into $WORK/NAME.time, the tool's stdout into .out
measure() {
  local name=$1; shift
  $TIME -v -o "$WORK/$name.time" "$@" > "$WORK/$name.out"
}
cpu_s() { awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.2f", u + s}' "$WORK/$1.time"; }
rss_mb() { awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$WORK/$1.time"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/$1.time"; }
field() {
  /usr/bin/python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])$2)" \
    "$WORK/$1.out"
}
mb() { du -cb "$@" | tail -1 | awk '{printf "%d", $1 / 1e6}'; }

echo "$(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), THREADS=$THREADS; peak RSS includes the mapped input pages"
printf "| %-6s | %-10s | %9s | %11s | %8s | %6s | %14s |\n" layers step "input MB" "peak RSS MB" wall "CPU s" "MB/s (input)"
printf "|%s|%s|%s|%s|%s|%s|%s|\n" -------- ------------ ----------- ------------- ---------- -------- ----------------
for L in ${LAYERS:-2 8}; do
  checkpoint "$L"
  out="$WORK/l$L"
  measure q "$BIN/ds-convert-fp8" --log-level warn quantize --model "$CKPT" --out "$out/fp8" \
    --threads "$THREADS"
  measure d "$BIN/ds-convert-fp8" --log-level warn dequantize --model "$out/fp8" --out "$out/bf16"
  measure v "$BIN/ds-convert-fp8" --log-level warn verify --model "$out/fp8" --reference "$CKPT" \
    --max-rel-error 0.036
  printf "| %-6s | %-10s | %9s | %11s | %8s | %6s | %14.0f |\n" "$L" quantize \
    "$(mb "$CKPT"/*.safetensors)" "$(rss_mb q)" "$(wall q)" "$(cpu_s q)" "$(field q "['mb_per_s']")"
  printf "| %-6s | %-10s | %9s | %11s | %8s | %6s | %14.0f |\n" "$L" dequantize \
    "$(mb "$out"/fp8/*.safetensors)" "$(rss_mb d)" "$(wall d)" "$(cpu_s d)" "$(field d "['mb_per_s']")"
  printf "| %-6s | %-10s | %9s | %11s | %8s | %6s | %14s |\n" "$L" verify \
    "$(mb "$out"/fp8/*.safetensors "$CKPT"/*.safetensors)" "$(rss_mb v)" "$(wall v)" "$(cpu_s v)" \
    "max rel $(field v "['summary']['max_rel_error']" | cut -c1-6)"
  echo "  layers $L: BF16 after dequantize $(mb "$out"/bf16/*.safetensors) MB" >&2
  rm -rf "${out:?}"
done
