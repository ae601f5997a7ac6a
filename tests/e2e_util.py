"""Shared helpers of the end-to-end Python tests (tests/<area>/e2e_*.py): run a ds tool with
quiet logs, record named checks, fail fast when a setup command fails."""
import os
import subprocess

FAILS = []


def check(cond, what):
    """Records one named check; the test's main() exits non-zero when FAILS is not empty."""
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def run(tool, *args, timeout=900):
    """(exit code, stdout, stderr) of `tool --log-level warn ARGS...`."""
    cmd = [tool, "--log-level", "warn"] + [str(a) for a in args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode("utf-8", "replace")


def ok(tool, *args):
    """stdout of a command that must succeed (a setup step: stops the test otherwise)."""
    rc, out, err = run(tool, *args)
    if rc != 0:
        raise SystemExit(f"FAIL: {os.path.basename(tool)} {' '.join(map(str, args))} -> {rc}: {err}")
    return out
