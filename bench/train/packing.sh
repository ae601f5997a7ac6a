#!/usr/bin/env bash
# Stride rows vs best-fit document packing (ds-pretrain --packing; DeepSeek-V3 §4.2 after Ding
# et al. 2024): the same model, seed, token budget and held-out windows, with the training
# rows cut at a fixed stride or packed from whole documents. Prints, per run, the packing
# statistics ds-pretrain logs (rows, documents not whole in one row, padding), the last
# validation loss (the held-out windows are the same for both packings), the last step's
# training loss, and ds-eval's perplexity on held-out documents (windows of seq-len tokens).
#
# CORPUS=kjv (default): corpus and tokenizer as scripts/quickstart.sh, the King James Bible
# with --doc-split blank-line (2,376 documents: each chapter's title line, then its text), and
# the held-out text Revelation 22 scored as one document. CORPUS=gsm8k: GSM8K's train.jsonl
# (GSM8K, default ../shared/data/gsm8k/train.jsonl), each problem "question\nanswer" one
# document; the first 7,000 are trained on (a 4096-token BPE trained on them), the other 473
# are the held-out documents ds-eval scores, each from its own start.
# SEQ_LENS picks the row lengths; each gets BATCH_TOKENS / seq-len rows per step, so every run
# trains on the same number of tokens. One thread per run, JOBS runs side by side.
#
# Variables (environment): PACKING_BENCH_DIR (runs/packing-CORPUS), BIN (build/bin), STEPS
# (1000), SEQ_LENS ("128 512"), BATCH_TOKENS (2048), SEED (1234), JOBS (2), THREADS (1),
# CORPUS (kjv), GSM8K.
# Re-running resumes unfinished runs and skips finished ones.
# Results: docs/results.md "Best-fit packing vs stride rows".
# usage: bash bench/train/packing.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS=${CORPUS:-kjv}
R=${PACKING_BENCH_DIR:-runs/packing-$CORPUS}
BIN=${BIN:-build/bin}
STEPS=${STEPS:-1000}
SEQ_LENS=${SEQ_LENS:-128 512}
BATCH_TOKENS=${BATCH_TOKENS:-2048}
SEED=${SEED:-1234}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
mkdir -p "$R"

case "$CORPUS" in
  kjv)
    bash scripts/kjv-data.sh "$R" "$BIN" "$THREADS"
    HELDOUT=("$R/heldout.txt") ;;
  gsm8k)
    GSM8K=${GSM8K:-../shared/data/gsm8k/train.jsonl}
    [ -s "$GSM8K" ] || { echo "packing bench: $GSM8K not found (set GSM8K)" >&2; exit 1; }
    if [ ! -s "$R/heldout.jsonl" ]; then
      python3 - "$GSM8K" "$R" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
docs = [json.dumps({"text": r["question"] + "\n" + r["answer"]}) + "\n" for r in rows]
open(sys.argv[2] + "/train.jsonl", "w").writelines(docs[:7000])
open(sys.argv[2] + "/heldout.jsonl", "w").writelines(docs[7000:])
PY
    fi
    if [ ! -f "$R/tokenizer/tokenizer.json" ]; then
      "$BIN/ds-tokenize" train --vocab-size 4096 --format jsonl --out "$R/tokenizer" \
        --threads "$THREADS" --force "$R/train.jsonl"
    fi
    for part in train heldout; do
      [ -f "$R/data_$part/manifest.json" ] && continue
      "$BIN/ds-tokenize" encode --tokenizer "$R/tokenizer/tokenizer.json" --format jsonl \
        --out "$R/data_$part" --threads "$THREADS" --force "$R/$part.jsonl"
    done
    ln -sfn data_train "$R/data"
    HELDOUT=(--data "$R/data_heldout") ;;
  *) echo "packing bench: CORPUS=$CORPUS is not kjv or gsm8k" >&2; exit 2 ;;
esac

one_run() {   # seq-len packing
  local T=$1 p=$2 out="$R/T$1-$2"
  [ -f "$out/DONE" ] && return 0
  mkdir -p "$out"
  local B=$((BATCH_TOKENS / T))
  "$BIN/ds-pretrain" --preset tiny --tokenizer "$R/tokenizer/tokenizer.json" --data "$R/data" \
    --out "$out" --steps "$STEPS" --batch-size "$B" --seq-len "$T" --lr 3e-3 --seed "$SEED" \
    --packing "$p" --eval-every 100 --val-sequences $((65536 / T)) \
    --eval-batches $((65536 / T / B)) --save-every 250 --metrics "$out/metrics.jsonl" \
    --threads "$THREADS" --resume 2>> "$out/log.txt" > "$out/summary.json"
  "$BIN/ds-eval" perplexity --model "$out" --threads "$THREADS" --no-progress --window "$T" \
    "${HELDOUT[@]}" > "$out/heldout.json" 2>> "$out/log.txt"
  touch "$out/DONE"
}

pids=()
for T in $SEQ_LENS; do
  for p in stride best-fit; do
    one_run "$T" "$p" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  done
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
[ "$rc" = 0 ] || { echo "packing bench: a run failed (see $R/T*/log.txt)" >&2; exit 1; }

python3 - "$R" $SEQ_LENS <<'PY'
import json, os, re, sys
R, lens = sys.argv[1], sys.argv[2:]
print("| seq-len | packing | rows | docs not whole in a row | padding | val loss (last)"
      " | train loss (last step) | held-out ppl (ds-eval) |")
print("|---|---|---|---|---|---|---|---|")
for T in lens:
    for p in ("stride", "best-fit"):
        d = os.path.join(R, f"T{T}-{p}")
        log = open(os.path.join(d, "log.txt")).read()
        m = re.findall(r"packing \S+: (\d+) training rows from (\d+) documents, (\d+) of them "
                       r"not whole in one row.*?padding ([0-9.]+)%", log)[-1]
        met = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
        val = [x["val_loss"] for x in met if "val_loss" in x][-1]
        ppl = json.load(open(os.path.join(d, "heldout.json")))["metrics"]["perplexity"]["value"]
        print(f"| {T} | {p} | {m[0]} | {m[2]} of {m[1]} | {m[3]}% | "
              f"{val:.4f} | {met[-1]['loss_main']:.4f} | "
              f"{ppl:.2f} |")
PY
