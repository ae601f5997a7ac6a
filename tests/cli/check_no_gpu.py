# --device cuda on a machine without a usable GPU: every tool that computes stops with one
# error line naming the reason, exit 1, before touching its inputs or creating its output.
# Skipped (exit 77) where a GPU is present. Usage: check_no_gpu.py BIN_DIR
import os
import shutil
import subprocess
import sys
import tempfile


def has_gpu():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


def main():
    if has_gpu():
        print("a GPU is present: nothing to check")
        return 77
    bin_dir = sys.argv[1]
    here = os.path.abspath(__file__)   # any existing file, for flags that must name one
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        with open(os.path.join(tmp, "config.json"), "w") as f:   # passes the --init path check
            f.write("{}")
        cases = {
            "ds-pretrain": ["--preset", "tiny", "--data", tmp, "--out", out, "--steps", "1"],
            "ds-sft": ["--init", tmp, "--data", here, "--out", out, "--steps", "1"],
            "ds-rl": ["--init", tmp, "--prompts", here, "--out", out, "--steps", "1"],
            "ds-generate": ["--model", tmp, "--prompt", "hi"],
            "ds-eval": ["perplexity", "--model", tmp, here],
        }
        for tool, args in cases.items():
            exe = os.path.join(bin_dir, tool)
            if not os.path.exists(exe):
                continue
            r = subprocess.run([exe, *args, "--device", "cuda"], capture_output=True, text=True)
            lines = [l for l in r.stderr.splitlines() if l.strip()]
            ok = (r.returncode == 1 and len(lines) == 1 and "CUDA" in lines[0]
                  and not os.path.exists(out))
            print(f"{tool}: rc={r.returncode} {lines[-1] if lines else '(no stderr)'}")
            if not ok:
                print(f"  FAILED: expected exit 1, one line naming CUDA, no {out}")
                fails += 1
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
