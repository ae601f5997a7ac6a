#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every CTest test except the
# ones labelled `long` (GPU tests skip cleanly without a device). .ci/run runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)" -LE long
