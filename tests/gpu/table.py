#!/usr/bin/env python3
"""One markdown table from `pretext bench --json` and torch_bench.py --json files.

    table.py pretext.json torch-eager.json [torch-compile.json]

Rows are encoders; columns the median step time of each, and pretext's speed as a ratio of
each PyTorch variant's (above 1.0: pretext is faster). Missing files or encoders show as -.
"""

import json
import sys


def load(path):
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return {}
    return {r["encoder"]: r for r in rows}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ours = load(sys.argv[1])
    others = [(p, load(p)) for p in sys.argv[2:]]
    names = ["torch eager", "torch.compile"][: len(others)]
    head = ["encoder", "batch", "pretext ms"]
    for n in names:
        head += [f"{n} ms", f"pretext speed vs {n}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for enc in sorted(set(ours) | {e for _, o in others for e in o}):
        r = ours.get(enc)
        ms = r["step_ms_median"] if r else None
        cells = [enc, str(r["batch"]) if r else "-", f"{ms:.1f}" if ms else "-"]
        for _, o in others:
            t = o.get(enc, {}).get("step_ms_median")
            cells += [f"{t:.1f}" if t else "-", f"{t / ms:.2f}x" if t and ms else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
