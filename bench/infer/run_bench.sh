#!/usr/bin/env bash
# Inference benchmark driver: (1) prefill / decode tokens/s of ds's engine (ds_bench_infer) and
# of a PyTorch generation loop with a naive full-K/V cache (bench_torch_generate.py) on the same
# random weights, tiny and small presets; (2) KV-cache bytes per token (formula, measured, naive);
# (3) MTP speculative decoding acceptance rate and speed-up with ds-generate on a trained tiny
# model (MTP_MODEL, default runs/quickstart/pretrain; trained here on tinyshakespeare with
# ds-pretrain when absent). Medians of REPS runs; prints a table.
# Usage: bench/infer/run_bench.sh [BUILD_DIR (build)]; env THREADS (0: all), REPS (3), NEW (64),
# PROMPT (128), MTP_MODEL, MTP_STEPS (300), BF16 (1: random weights rounded to BF16 values, as
# in a released BF16 checkpoint, so the engine streams BF16 linear weights; 0: F32 weights).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build}/bin
THREADS=${THREADS:-0}; REPS=${REPS:-3}; NEW=${NEW:-64}; PROMPT=${PROMPT:-128}
BF16_FLAG=(); [ "${BF16:-1}" = 1 ] && BF16_FLAG=(--bf16-weights)
W=$(mktemp -d -t ds_bench_infer.XXXXXX)
trap 'rm -rf "$W"' EXIT
PY=/usr/bin/python3

for p in tiny small; do
  "$BIN/ds_bench_infer" --preset "$p" --save "$W/$p" --threads "$THREADS" --reps "$REPS" \
    --prompt-len "$PROMPT" --new-tokens "$NEW" "${BF16_FLAG[@]}" > "$W/$p.ds.json"
  if $PY -c 'import torch' 2>/dev/null; then
    $PY bench/infer/bench_torch_generate.py --model "$W/$p" --threads "$THREADS" --reps "$REPS" \
      --prompt-len "$PROMPT" --new-tokens "$NEW" > "$W/$p.torch.json"
  else
    echo '{}' > "$W/$p.torch.json"
  fi
  rm -rf "${W:?}/$p"
done

# ---- MTP speculative decoding on a trained tiny model ----
MTP_MODEL=${MTP_MODEL:-runs/quickstart/pretrain}
CORPUS=../shared/data/tinyshakespeare/input.txt
if [ ! -d "$MTP_MODEL" ]; then
  MTP_MODEL="$W/mtp/pretrain"
  "$BIN/ds-tokenize" train --vocab-size 4096 --out "$W/mtp/tok" --threads "$THREADS" --force \
    "$CORPUS" >/dev/null 2>&1
  "$BIN/ds-tokenize" encode --tokenizer "$W/mtp/tok/tokenizer.json" --out "$W/mtp/data" \
    --doc-split blank-line --threads "$THREADS" --force "$CORPUS" >/dev/null 2>&1
  "$BIN/ds-pretrain" --preset tiny --tokenizer "$W/mtp/tok/tokenizer.json" --data "$W/mtp/data" \
    --out "$MTP_MODEL" --steps "${MTP_STEPS:-300}" --batch-size 16 --seq-len 128 --lr 3e-3 \
    --save-every 0 --threads "$THREADS" >/dev/null 2>&1
fi
if [ -f "$CORPUS" ]; then
  awk 'NF && ++n % 97 == 1 && c++ < 16' "$CORPUS" | \
    $PY -c 'import json,sys; [print(json.dumps({"prompt": l.rstrip("\n")})) for l in sys.stdin]' > "$W/prompts.jsonl"
else
  for i in $(seq 16); do echo '{"prompt": "And the LORD said"}'; done > "$W/prompts.jsonl"
fi
for r in $(seq "$REPS"); do
  for mode in none mtp; do
    "$BIN/ds-generate" --model "$MTP_MODEL" --jsonl --batch-size 1 --max-new-tokens "$NEW" \
      --speculative "$mode" --threads "$THREADS" --stats < "$W/prompts.jsonl" \
      > "$W/out.$mode.$r.jsonl" 2> "$W/stats.$mode.$r.json"
  done
  cmp -s "$W/out.none.$r.jsonl" "$W/out.mtp.$r.jsonl" || echo "WARNING: speculative output differs from greedy" >&2
done

$PY - "$W" "$REPS" <<'PYEOF'
import json, os, statistics, sys
w, reps = sys.argv[1], int(sys.argv[2])
def load(p):
    try:
        return json.loads(open(p).read().strip().splitlines()[-1])
    except Exception:
        return {}
print("%-6s %-8s %14s %14s %12s %14s %14s" % ("preset", "impl", "prefill tok/s", "decode tok/s",
      "KV B/token", "KV measured", "naive KV B/tok"))
for p in ("tiny", "small"):
    d, t = load(f"{w}/{p}.ds.json"), load(f"{w}/{p}.torch.json")
    print("%-6s %-8s %14.1f %14.1f %12d %14d %14d" % (p, "ds", d["prefill_tokens_per_s"],
          d["decode_tokens_per_s"], d["kv_bytes_per_token"], d["kv_bytes_per_token_measured"],
          d["naive_kv_bytes_per_token"]))
    if t:
        print("%-6s %-8s %14.1f %14.1f %12s %14s %14d" % (p, "torch", t["prefill_tokens_per_s"],
              t["decode_tokens_per_s"], "-", "-", t["naive_kv_bytes_per_token"]))
        print("%-6s %-8s %13.2fx %13.2fx" % (p, "ds/torch", d["prefill_tokens_per_s"] / t["prefill_tokens_per_s"],
              d["decode_tokens_per_s"] / t["decode_tokens_per_s"]))
    print("%-6s threads %s, batch %s, prompt %s, new %s, median of %d" % (p, d["threads"], d["batch"],
          d["prompt_len"], d["new_tokens"], reps))
none = [load(f"{w}/stats.none.{r}.json") for r in range(1, reps + 1)]
mtp = [load(f"{w}/stats.mtp.{r}.json") for r in range(1, reps + 1)]
dn = statistics.median(s["decode_tokens_per_s"] for s in none)
dm = statistics.median(s["decode_tokens_per_s"] for s in mtp)
acc = statistics.median(s["acceptance_rate"] or 0.0 for s in mtp)   # null: nothing drafted
print("MTP speculative (trained tiny, 16 prompts, greedy): acceptance %.3f, decode tok/s %.1f -> %.1f, speed-up %.2fx, main forwards %d -> %d"
      % (acc, dn, dm, dm / dn, none[0]["main_forwards"], mtp[0]["main_forwards"]))
PYEOF
