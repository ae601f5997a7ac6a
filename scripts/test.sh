#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs the libFuzzer targets for a
# short time (clang + ASan; DS_FUZZ_SECONDS per target, default 15; 0 skips), then every CTest
# test except the ones labelled `long` (GPU tests skip cleanly without a device).
# .ci/run runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
FUZZ_SECONDS=${DS_FUZZ_SECONDS:-15}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  bash scripts/fuzz.sh --seconds "$FUZZ_SECONDS"
fi
cd build
# torch is installed by install-deps.sh, so the PyTorch cross-check must run, not skip.
export DS_REQUIRE_TORCH_REF=${DS_REQUIRE_TORCH_REF:-1}
ctest --output-on-failure -j"$(nproc)" -LE long
