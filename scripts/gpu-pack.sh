#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on the GPU machine (see ../shared/device/README.md):
# builds with CUDA, then copies the GPU test binaries, the tools and the GPU benchmarks
# (stripped) into gpu-pack/bin, the non-system shared libraries they need into gpu-pack/lib
# (pack-libs.sh beside ../shared/device), and a small tokenised corpus (the embedded default
# data, as the quick start makes it) into gpu-pack/data; then compresses it all into
# gpu-carry/gpu-pack.tar.xz (~20 MB on 2026-11-30), within the device tool's 64 MiB carry.
# gpu-pack/ and gpu-carry/ are git-ignored; the device call carries gpu-carry.
# Usage: scripts/gpu-pack.sh [BUILD_DIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
P=gpu-pack
cmake -S . -B "$B" -DDS_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j"$(nproc)" --target ds_test_kernels ds_test_backend_ops ds_test_model_gpu \
  ds_test_nccl_gpu ds-pretrain ds-sft ds-rl ds-convert-fp8 ds-generate ds-eval ds-tokenize \
  bench_gemm bench_attention bench_losses bench_train_step bench_fp8_quant
rm -rf "$P/bin" "$P/lib"
mkdir -p "$P/bin" "$P/lib" "$P/data"
for f in ds_test_kernels ds_test_backend_ops ds_test_model_gpu ds_test_nccl_gpu ds-pretrain \
         ds-sft ds-rl ds-convert-fp8 ds-generate ds-eval bench_gemm bench_attention bench_losses \
         bench_train_step bench_fp8_quant; do
  [ -x "$B/bin/$f" ] && strip -o "$P/bin/$f" "$B/bin/$f"
done
pack=../shared/device/pack-libs.sh
[ -x "$pack" ] || pack="bash $pack"
$pack "$P/bin" "$P/lib" >/dev/null
# The corpus: Genesis-Revelation 21 for training, Revelation 22 held out (quick start data).
D=$P/data
if [ ! -f "$D/data/manifest.json" ]; then
  command -v bible >/dev/null || { echo "gpu-pack: needs the bible-kjv package" >&2; exit 1; }
  bible "Gen1:1-Rev21:27" > "$D/kjv.txt"
  bible "Rev22:1-Rev22:21" > "$D/heldout.txt"
  "$B/bin/ds-tokenize" train --vocab-size 4096 --out "$D/tokenizer" --force "$D/kjv.txt"
  "$B/bin/ds-tokenize" encode --tokenizer "$D/tokenizer/tokenizer.json" --out "$D/data" \
    --doc-split blank-line --force "$D/kjv.txt"
  rm -f "$D/kjv.txt"
fi
# The commit the binaries were built from (gpu-check.sh prints it: a stale pack shows)
c=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || c="$c with uncommitted changes"
echo "$c" > "$P/COMMIT"
du -sh "$P"/*
mkdir -p gpu-carry
# xz -9: a 64 MiB dictionary reaches across the binaries, which share most of their bytes (the
# static library and its CUDA fat binary): 20 MB instead of 54 MB at the default level.
XZ_OPT="-9 -T0" tar -cJf gpu-carry/gpu-pack.tar.xz "$P"
du -sh gpu-carry/gpu-pack.tar.xz
