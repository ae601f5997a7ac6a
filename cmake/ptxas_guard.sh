#!/usr/bin/env bash
# Compiler launcher of the CUDA sources of kernels/ (kernels/CMakeLists.txt): runs the compile
# command it is given and fails it when ptxas reports that it serialised wgmma instructions
# ("Potential Performance Loss: wgmma.mma_async instructions are serialized due to ...", with
# one code per cause: C7511, C7514, C7515, ...): the wgmma FP8 GEMM then
# still computes the right numbers but waits for every matrix product, a silent loss of the
# asynchrony its main loop is built on; likewise "warpgroup.wait is injected" (C7517: ptxas
# added a wait of its own between a wgmma and its operands' next use). The object file is
# removed so the next build retries.
# Usage: ptxas_guard.sh <compiler> <args...>
log=$(mktemp "${TMPDIR:-/tmp}/ptxas-guard.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT
"$@" 2> "$log"
rc=$?
cat "$log" >&2
if [ $rc -eq 0 ] && grep -qE 'instructions are serialized|warpgroup.wait is injected' "$log"; then
  out=""
  prev=""
  for a in "$@"; do
    [ "$prev" = "-o" ] && out=$a
    prev=$a
  done
  [ -n "$out" ] && rm -f "$out"
  echo "error: ptxas serialised wgmma instructions in ${out:-this compile} (see its message above):" \
       "keep the wgmma accumulators out of code that ptxas cannot keep asynchronous" >&2
  exit 1
fi
exit $rc
