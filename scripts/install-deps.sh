#!/usr/bin/env bash
# Installs what is missing to build and test ds on Debian 12 (bookworm), non-interactively.
# Every package comes from Debian, except the Hugging Face `tokenizers` wheel (PyPI), used
# only by the conformance tests and benchmarks, which skip without it.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  libcli11-dev libspdlog-dev libfmt-dev libzstd-dev doctest-dev
  libopenblas-dev nlohmann-json3-dev libpcre2-dev
  libopenmpi-dev openmpi-bin slurm-wlm   # slurm-wlm: tests/slurm (a local cluster; munge unused)
  clang libclang-rt-14-dev
  bible-kjv gnuplot-nox
  python3-torch   # the PyTorch reference of tests/model (run through /usr/bin/python3)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Optional: Hugging Face tokenizers for the conformance test and the benchmark.
PY=${DS_PYTHON:-python3}
if command -v "$PY" >/dev/null && ! "$PY" -c "import tokenizers" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check tokenizers >/dev/null 2>&1 \
    || echo "install-deps: note: could not install Python 'tokenizers' (its tests will skip)" >&2
fi
exit 0
