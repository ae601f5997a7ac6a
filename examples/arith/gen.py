#!/usr/bin/env python3
"""Generated arithmetic problems whose answers can be checked, for the SFT -> GRPO example.

Every problem is a sum of --terms operands drawn from [--min-operand, --max-operand], asked as
"What is 3+5+8?". The worked answer adds left to right, one partial sum per step, and ends
with the GSM8K answer marker that ds-eval and ds-rl read:
    "3+5=8, 8+8=16. #### 16"
(written without spaces around the operators: with the DeepSeek-V3 pre-tokenizer every space
would be a token of its own, a third of the sequence for nothing).
All distinct problems are enumerated, shuffled with --seed, and cut into disjoint sets:
    heldout.jsonl  the first --heldout problems    {"question", "answer"}    (ds-eval generate)
    sft.jsonl      the next --sft problems          {"messages": [user, assistant]}   (ds-sft)
    rl.jsonl       --rl problems from the rest      {"prompt", "reference"}   (ds-rl)
The RL prompts are the problems after the SFT ones, or the SFT problems themselves when SFT
took all of them or with --rl-overlap (0 for --sft/--rl means "all available"). The held-out
problems never
appear in sft.jsonl or rl.jsonl (checked before writing). Python 3 standard library only;
the output depends only on the flags (byte-identical reruns).
"""
import argparse
import itertools
import json
import os
import random
import sys


def problems(terms, lo, hi):
    """All operand tuples, in lexicographic order."""
    return list(itertools.product(range(lo, hi + 1), repeat=terms))


def question(ops):
    return "What is " + "+".join(str(x) for x in ops) + "?"


def worked(ops):
    """Left-to-right partial sums, then "#### total"."""
    steps, acc = [], ops[0]
    for x in ops[1:]:
        steps.append(f"{acc}+{x}={acc + x}")
        acc += x
    if not steps:   # a single operand: nothing to add
        steps.append(f"{acc}")
    return ", ".join(steps) + f". #### {acc}"


def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the split (default 0)")
    p.add_argument("--terms", type=int, default=3, help="operands per problem (default 3)")
    p.add_argument("--min-operand", type=int, default=0, help="smallest operand (default 0)")
    p.add_argument("--max-operand", type=int, default=9, help="largest operand (default 9)")
    p.add_argument("--heldout", type=int, default=200, help="held-out problems (default 200)")
    p.add_argument("--sft", type=int, default=0, help="SFT problems (0: all after the held-out)")
    p.add_argument("--rl", type=int, default=0, help="RL prompts (0: all that remain)")
    p.add_argument("--rl-overlap", action="store_true",
                   help="draw the RL prompts from the SFT problems instead of the rest")
    a = p.parse_args(argv)
    if a.terms < 1 or a.min_operand < 0 or a.max_operand < a.min_operand:
        p.error("need --terms >= 1 and 0 <= --min-operand <= --max-operand")

    pool = problems(a.terms, a.min_operand, a.max_operand)
    random.Random(a.seed).shuffle(pool)
    if a.heldout < 1 or a.heldout >= len(pool):
        p.error(f"--heldout must be in [1, {len(pool)}) ({len(pool)} distinct problems)")
    heldout, rest = pool[:a.heldout], pool[a.heldout:]
    n_sft = a.sft or len(rest)
    if n_sft > len(rest):
        p.error(f"--sft {n_sft}: only {len(rest)} problems remain after the held-out set")
    sft = rest[:n_sft]
    rl_pool = sft if a.rl_overlap or n_sft == len(rest) else rest[n_sft:]
    n_rl = a.rl or len(rl_pool)
    if n_rl > len(rl_pool):
        p.error(f"--rl {n_rl}: only {len(rl_pool)} problems available for RL prompts")
    rl = rl_pool[:n_rl]
    held = set(heldout)
    assert not held.intersection(sft) and not held.intersection(rl), "held-out problem leaked"

    os.makedirs(a.out, exist_ok=True)
    write_jsonl(os.path.join(a.out, "heldout.jsonl"),
                ({"question": question(o), "answer": worked(o)} for o in heldout))
    write_jsonl(os.path.join(a.out, "sft.jsonl"),
                ({"messages": [{"role": "user", "content": question(o)},
                               {"role": "assistant", "content": worked(o)}]} for o in sft))
    write_jsonl(os.path.join(a.out, "rl.jsonl"),
                ({"prompt": question(o), "reference": str(sum(o))} for o in rl))
    print(f"gen.py: {len(pool)} problems ({a.terms} terms in [{a.min_operand}, {a.max_operand}]): "
          f"{len(heldout)} held-out, {len(sft)} SFT, {len(rl)} RL -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
