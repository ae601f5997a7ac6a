# Flag errors a tool must report before it touches its inputs or creates its output: one stderr
# line naming the reason, the documented exit status, no --out left behind. Two checks:
#   gpu      --device cuda on a machine without a usable GPU: exit 1, the line names CUDA
#            (skipped, exit 77, where a GPU is present);
#   threads  --threads outside 0..1024 (-1, 1025; at 10^5 threads a run exhausted the process
#            limit before this check): exit 2, the line names --threads;
#   values   integer flags given -1 (unsigned), 2^64, 10^20 or 1e3 (CLI11 alone read -1 as 2^64-1
#            and clamped values past 64 bits), positive flags given 0 or -5, the training tools' rates, AdamW settings,
#            schedule fractions and periods out of range or NaN: exit 2, the line names the
#            flag and the value.
# Usage: check_early_errors.py BIN_DIR {gpu|threads|values}
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


def cases(tmp, out):
    here = os.path.abspath(__file__)   # any existing file, for flags that must name one
    init = os.path.join(tmp, "init")   # beside --out, not holding it
    os.makedirs(init, exist_ok=True)
    for d in (tmp, init):   # passes the --init / --model path checks
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{}")
    return {
        "ds-pretrain": ["--preset", "tiny", "--data", tmp, "--out", out, "--steps", "1"],
        "ds-sft": ["--init", init, "--data", here, "--out", out, "--steps", "1"],
        "ds-rl": ["--init", init, "--prompts", here, "--out", out, "--steps", "1"],
        "ds-generate": ["--model", tmp, "--prompt", "hi"],
        "ds-eval": ["perplexity", "--model", tmp, here],
        "ds-tokenize train": ["train", "--vocab-size", "300", "--out", out, here],
        "ds-tokenize encode": ["encode", "--tokenizer", here, "--out", out, here],
        "ds-convert-fp8": ["quantize", "--model", tmp, "--out", out],
    }


# (tool, the case in cases(), flag, value, a text the error line must hold)
VALUES = [
    ("ds-generate", "ds-generate", "--seed", "-1", "expected a non-negative integer, got '-1'"),
    ("ds-generate", "ds-generate", "--seed", "18446744073709551616",
     "expected a non-negative integer at most 18446744073709551615"),
    ("ds-pretrain", "ds-pretrain", "--seed", "-1", "expected a non-negative integer"),
    ("ds-pretrain", "ds-pretrain", "--data-seed", "-1", "expected a non-negative integer"),
    ("ds-eval", "ds-eval", "--batch-size", "1e3", "expected an integer, got '1e3'"),
    ("ds-pretrain", "ds-pretrain", "--steps", "99999999999999999999",
     "expected an integer in [-9223372036854775808, 9223372036854775807]"),
    ("ds-tokenize", "ds-tokenize train", "--min-frequency", "-5",
     "expected a non-negative integer"),
    ("ds-tokenize", "ds-tokenize train", "--vocab-size", "0",
     "expected a positive number, got '0'"),
    ("ds-tokenize", "ds-tokenize encode", "--seed", "0x1g", "expected a non-negative integer"),
    ("ds-tokenize", "ds-tokenize encode", "--max-shard-bytes", "0", "expected a positive number"),
    ("ds-pretrain", "ds-pretrain", "--pp", "-2", "expected a positive number, got '-2'"),
    # the training tools' numeric values (a NaN --lr trained NaN weights and exited 0)
    ("ds-pretrain", "ds-pretrain", "--lr", "nan", "nan: expected a finite number >= 0"),
    ("ds-pretrain", "ds-pretrain", "--adam-beta1", "1.5", "1.5: expected a value in [0, 1)"),
    ("ds-pretrain", "ds-pretrain", "--adam-eps", "0", "0: expected a finite number > 0"),
    ("ds-pretrain", "ds-pretrain", "--weight-decay", "inf", "inf: expected a finite number >= 0"),
    ("ds-pretrain", "ds-pretrain", "--lr-constant-end", "2", "2: expected a fraction"),
    ("ds-pretrain", "ds-pretrain", "--save-every", "-1", "-1: expected an integer >= 0"),
    ("ds-pretrain", "ds-pretrain", "--bias-update-speed", "nan", "nan: expected a finite"),
    # a ramp that starts above its end
    ("ds-pretrain", "ds-pretrain", "--batch-start", "100000", "more than --batch-size"),
    ("ds-pretrain", "ds-pretrain", "--batch-size", "100000000000000000",
     "x --seq-len 128 overflows"),
    ("ds-sft", "ds-sft", "--lr", "nan", "nan: expected a finite number > 0"),
    ("ds-sft", "ds-sft", "--adam-beta2", "-0.1", "-0.1: expected a value in [0, 1)"),
    ("ds-sft", "ds-sft", "--mtp-lambda", "-1", "-1: expected a finite number >= 0"),
    # (ds-sft took these: NaN router biases were saved with exit 0; the row count wrapped)
    ("ds-sft", "ds-sft", "--bias-update-speed", "nan", "nan: expected a finite number >= 0"),
    ("ds-sft", "ds-sft", "--steps", "4611686018427387904", "the run's row count overflows"),
    ("ds-sft", "ds-sft epochs", "--epochs", "1000000", "more than 100000 epochs"),
    ("ds-pretrain", "ds-pretrain new-data", "--resume", "never", "not with --resume never"),
    ("ds-pretrain", "ds-pretrain eval", "--val-sequences", "0", "--val-sequences 0 holds none"),
    # outputs over inputs ({tmp}/init: the --init checkpoint; {out}: the --out directory)
    ("ds-rl", "ds-rl", "--out", "{tmp}/init/run", "inside the --init checkpoint"),
    ("ds-sft", "ds-sft", "--out", "{tmp}/init/run", "inside the --init checkpoint"),
    ("ds-rl", "ds-rl", "--out", "{tmp}", "holds the --init checkpoint"),
    ("ds-rl", "ds-rl", "--metrics", "{out}", "the --out directory"),
    ("ds-pretrain", "ds-pretrain", "--metrics", "{tmp}", "a directory"),
    # a reward command or pattern without its reward term was silently unused
    ("ds-rl", "ds-rl", "--reward-command", "echo 1", "add --reward command"),
    ("ds-rl", "ds-rl", "--reward-regex", "x", "add --reward regex"),
    # a micro-batch far beyond the machine's memory (it was OOM-killed without a message)
    ("ds-pretrain", "ds-pretrain", "--batch-size", "10000000", "GiB of activations"),
    # an unknown key or section in a --config file, or a key twice: the error names the file
    ("ds-pretrain", "ds-pretrain", "--config", "{tmp}/bad.ini",
     "bad.ini: unknown key 'nonsense-key'"),
    ("ds-pretrain", "ds-pretrain", "--config", "{tmp}/section.ini",
     "section.ini: unknown section [pretrain]"),
    ("ds-pretrain", "ds-pretrain", "--config", "{tmp}/twice.ini", "--config {tmp}/twice.ini"),
    # a switch's value is a yes or a no (CLI11 read `fp32-moments = 7` as on)
    ("ds-pretrain", "ds-pretrain", "--config", "{tmp}/switch.ini",
     "--fp32-moments: expected true or false (yes/no, on/off, 1/0), got '7'"),
    ("ds-sft", "ds-sft", "--no-packing=", "7", "--no-packing: expected true or false"),
    ("ds-generate", "ds-generate", "--jsonl=", "-1", "got '-1'"),
    # a bad value from the file says so
    ("ds-pretrain", "ds-pretrain", "--config", "{tmp}/nan.ini",
     "--lr nan: expected a finite number >= 0 (set in --config {tmp}/nan.ini)"),
    ("ds-rl", "ds-rl", "--clip-grad-norm", "nan", "nan: expected a finite number >= 0"),
    ("ds-rl", "ds-rl", "--log-every", "-1", "-1: expected an integer >= 0"),
    ("ds-convert-fp8", "ds-convert-fp8 verify", "--max-rel-error", "nan", "NaN is not a limit"),
    # an --out that cannot be created ({file}: this script) fails before the work, not after it
    ("ds-pretrain", "ds-pretrain", "--out", "{file}/run", "is not a directory"),
    ("ds-sft", "ds-sft", "--out", "{file}/run", "is not a directory"),
    ("ds-tokenize", "ds-tokenize train", "--out", "{file}/tok", "is not a directory"),
    # a directory where a file goes: refused before training (it once published tokenizer.json
    # and then failed on tokenizer_config.json)
    ("ds-tokenize", "ds-tokenize train", "--out", "{tmp}/tokdir",
     "tokenizer_config.json is a directory"),
    ("ds-tokenize", "ds-tokenize encode", "--out", "{file}/data", "is not a directory"),
    ("ds-eval", "ds-eval", "--out", "{file}.d/o.json", "does not exist"),
    ("ds-eval", "ds-eval", "--out", "{file}/o.json", "is not a directory"),
]


def check_values(bin_dir):
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        base = cases(tmp, out)
        base["ds-convert-fp8 verify"] = ["verify", "--model", tmp, "--reference", tmp]
        base["ds-pretrain new-data"] = base["ds-pretrain"] + ["--resume-new-data"]
        base["ds-pretrain eval"] = base["ds-pretrain"] + ["--eval-every", "1"]
        base["ds-sft epochs"] = base["ds-sft"][:-2]   # without --steps (it excludes --epochs)
        os.makedirs(os.path.join(tmp, "tokdir", "tokenizer_config.json"))
        for name, text in (("bad.ini", "nonsense-key = 1\n"),
                           ("section.ini", "[pretrain]\nlr = 0.1\n"),
                           ("twice.ini", "lr = 0.1\nlr = 0.2\n"),
                           ("switch.ini", "fp32-moments = 7\n"),
                           ("nan.ini", "lr = nan\n")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        for tool, case, flag, value, says in VALUES:
            exe = os.path.join(bin_dir, tool)
            if not os.path.exists(exe):
                continue
            args = list(base[case])
            value = value.replace("{file}", os.path.abspath(__file__))
            value = value.replace("{tmp}", tmp).replace("{out}", out)
            says = says and says.replace("{tmp}", tmp)
            if flag.endswith("="):   # --switch=VALUE
                args.append(flag + value)
                flag = flag[:-1]
            elif flag in args:   # replaces the case's own value
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
            lines = [l for l in r.stderr.splitlines() if l.strip()]
            ok = (r.returncode == 2 and len(lines) == 1 and f"{flag}" in lines[0]
                  and (says is None or says in lines[0]) and not os.path.exists(out))
            last = lines[-1] if lines else "(no stderr)"
            print(f"{case} {flag} {value}: rc={r.returncode} {last}")
            if not ok:
                print(f"  FAILED: expected exit 2, one line with {flag} and '{says}', no {out}")
                fails += 1
    return 1 if fails else 0


def main():
    bin_dir, what = sys.argv[1], sys.argv[2]
    if what == "gpu":
        if has_gpu():
            print("a GPU is present: nothing to check")
            return 77
        variants, want_rc, names = [["--device", "cuda"]], 1, "CUDA"
        tools = ("ds-pretrain", "ds-sft", "ds-rl", "ds-generate", "ds-eval")
    elif what == "threads":
        variants = [["--threads", v] for v in ("-1", "1025")]
        want_rc, names, tools = 2, "--threads", None
    elif what == "values":
        return check_values(bin_dir)
    elif what == "env":   # bad DS_* values: refused before any work (not ds-tokenize's)
        variants = [["DS_CPU_CACHE_MB=64M"], ["DS_CPU_CACHE_MB=-1"], ["DS_GEMM=openblas"],
                    ["DS_STACKED_GATE_UP=2"], ["DS_EXPERT_OUTPUTS=f16"]]
        want_rc, names = 2, "the variable"
        tools = ("ds-pretrain", "ds-sft", "ds-rl", "ds-generate", "ds-eval", "ds-convert-fp8")
    else:
        print(f"unknown check {what!r}: expected gpu, threads, values or env")
        return 2
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        for name, args in cases(tmp, out).items():
            if tools is not None and name not in tools:
                continue
            exe = os.path.join(bin_dir, name.split()[0])
            if not os.path.exists(exe):
                continue
            for extra in variants:
                env = dict(os.environ)
                if what == "env":   # NAME=VALUE entries are the environment, not flags
                    env.update(dict(v.split("=", 1) for v in extra))
                # the limit only stops a run that ignored the flag's error and went on
                r = subprocess.run([exe, *args, *([] if what == "env" else extra)],
                                   capture_output=True, text=True, timeout=120, env=env)
                lines = [l for l in r.stderr.splitlines() if l.strip()]
                named = extra[0].split("=")[0] if what == "env" else names   # the variable
                ok = (r.returncode == want_rc and len(lines) == 1 and named in lines[0]
                      and not os.path.exists(out))
                print(f"{name} {' '.join(extra)}: rc={r.returncode} "
                      f"{lines[-1] if lines else '(no stderr)'}")
                if not ok:
                    print(f"  FAILED: expected exit {want_rc}, one line naming {names}, no {out}")
                    fails += 1
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
