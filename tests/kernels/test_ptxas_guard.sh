#!/usr/bin/env bash
# cmake/ptxas_guard.sh: a compile whose ptxas output says wgmma was serialised (C7514 as a
# warning, C7515 as info: the codes name the cause) fails and loses its object; a
# clean compile, and one with other ptxas warnings, passes with its object and output intact;
# a failing compile keeps its exit status.
set -u
guard="$1"
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
fail=0
check() { if [ "$1" != "$2" ]; then echo "FAIL: $3 (got $1, want $2)"; fail=1; fi; }

fake() {   # a compiler that writes its -o file and the given text on stderr
  local out=$1 msg=$2 rc=$3
  printf '#!/usr/bin/env bash\nprev=""; for a in "$@"; do [ "$prev" = -o ] && echo obj > "$a"; prev=$a; done\necho "%s" >&2\nexit %s\n' "$msg" "$rc" > "$d/cc"
  chmod +x "$d/cc"
}

for msg in "ptxas warning : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized due to a wgmma pipeline crossing function boundary at a function call in the function 'k'" \
           "ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in the function 'k'" \
           "ptxas info    : (C7517) Potential Performance Loss: warpgroup.wait is injected in around line 120 in the function 'k'"; do
  fake x "$msg" 0
  bash "$guard" "$d/cc" -c k.cu -o "$d/a.o" 2> "$d/err"; rc=$?
  check $rc 1 "a serialised wgmma fails the compile"
  check "$([ -e "$d/a.o" ] && echo kept || echo removed)" removed "a serialised wgmma removes the object"
  check "$(grep -c 'error: ptxas serialised wgmma' "$d/err")" 1 "the guard names the error"
  check "$(grep -c 'Potential Performance Loss' "$d/err")" 1 "the compiler's own output is shown"
done

fake x "ptxas warning : Local memory used for function 'k', size of stack frame: 8 bytes" 0
bash "$guard" "$d/cc" -c k.cu -o "$d/b.o" 2> "$d/err"; rc=$?
check $rc 0 "other ptxas warnings pass"
check "$(cat "$d/b.o" 2>/dev/null)" obj "the object is kept"
check "$(grep -c 'stack frame' "$d/err")" 1 "other warnings are shown"

fake x "k.cu(3): error: expected a ;" 2
bash "$guard" "$d/cc" -c k.cu -o "$d/c.o" 2> /dev/null; rc=$?
check $rc 2 "a failing compile keeps its status"

[ $fail = 0 ] && echo "ptxas guard: all checks passed"
exit $fail
