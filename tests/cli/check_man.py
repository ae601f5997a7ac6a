#!/usr/bin/env python3
# Generic CLI contract check for one ds-* tool (STYLE.md §13, §14): every long flag that
# `TOOL --help` and `TOOL SUB --help` print must appear in man/TOOL.1; --version must print
# the project version; an unknown flag must exit with status 2 (usage error).
# Usage: check_man.py TOOL_BINARY MAN_PAGE PROJECT_VERSION
import re
import subprocess
import sys

FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")


def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr


def subcommands(help_text):
    """Names listed under CLI11's 'Subcommands:' heading."""
    subs, inside = [], False
    for line in help_text.splitlines():
        if line.strip().lower() == "subcommands:":
            inside = True
            continue
        if inside:
            m = re.match(r"^  ([a-z0-9][a-z0-9-]*)(\s|$)", line)
            if m:
                subs.append(m.group(1))
            elif line.strip() and not line.startswith("   "):
                inside = False
    return subs


def man_flags(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"\\f(\[[^\]]*\]|.)", "", text)   # font changes \fB \fI \fR \f[B]
    text = text.replace("\\-", "-").replace("\\&", "")
    return set(FLAG.findall(text))


def main():
    if len(sys.argv) != 4:
        print(__doc__ or "usage: check_man.py TOOL MAN VERSION", file=sys.stderr)
        return 2
    tool, man, version = sys.argv[1:]
    errors = []
    documented = man_flags(man)

    rc, top, err = run([tool, "--help"])
    if rc != 0:
        errors.append(f"{tool} --help exited {rc}: {err.strip()}")
    pages = {"": top}
    for sub in subcommands(top):
        rc, out, err = run([tool, sub, "--help"])
        if rc != 0:
            errors.append(f"{tool} {sub} --help exited {rc}: {err.strip()}")
        pages[sub] = out
        rc, _, err = run([tool, sub, "--definitely-not-a-flag"])
        if rc != 2:
            errors.append(f"{tool} {sub} --definitely-not-a-flag exited {rc}, expected 2")
    n_flags = 0
    for sub, text in pages.items():
        for flag in sorted(set(FLAG.findall(text))):
            n_flags += 1
            if flag not in documented:
                where = f"{tool} {sub}".strip()
                errors.append(f"{man}: flag {flag} (from `{where} --help`) is not documented")
    if n_flags == 0:
        errors.append(f"{tool} --help printed no long flags at all")

    rc, out, err = run([tool, "--version"])
    if rc != 0 or version not in out:
        errors.append(f"{tool} --version exited {rc} and printed {out.strip()!r}; "
                      f"expected it to contain {version}")
    rc, _, err = run([tool, "--definitely-not-a-flag"])
    if rc != 2:
        errors.append(f"{tool} --definitely-not-a-flag exited {rc}, expected 2")
    if not err.strip():
        errors.append(f"{tool} --definitely-not-a-flag printed nothing on stderr")

    for e in errors:
        print("FAIL:", e)
    print(f"{tool}: {len(pages) - 1} subcommand(s), {n_flags} flag occurrence(s) checked, "
          f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
