#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan into build-fuzz/ and runs each for a short
# time (default 20 s; --seconds N). Crashes leave their input in build-fuzz/crashes/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=20
[ "${1:-}" = "--seconds" ] && SECONDS_PER_TARGET=$2
CXX_BIN=$(command -v clang++ || command -v clang++-14)
C_BIN=$(command -v clang || command -v clang-14)
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=$C_BIN CXX=$CXX_BIN cmake -S . -B build-fuzz "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDS_FUZZ=ON -DDS_CUDA=OFF -DDS_BUILD_TESTS=OFF >/dev/null
fi
TARGETS=(fuzz_tokenizer_json fuzz_pretokenizer fuzz_shard_reader fuzz_safetensors
         fuzz_model_config fuzz_jsonl_records fuzz_run_files fuzz_eval_tasks)
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}" fuzz_make_seeds
mkdir -p build-fuzz/crashes
build-fuzz/bin/fuzz_make_seeds build-fuzz/corpus
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  if ! "build-fuzz/bin/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 \
      -artifact_prefix="build-fuzz/crashes/$t-" "build-fuzz/corpus/$t" >"build-fuzz/$t.log" 2>&1; then
    echo "fuzz: $t FAILED (see build-fuzz/$t.log)"; tail -20 "build-fuzz/$t.log"; status=1
  else
    grep -E "^#[0-9]+.*DONE" "build-fuzz/$t.log" | tail -1 || true
  fi
done
exit $status
