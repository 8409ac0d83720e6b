"""Is run A ahead of run B by the truth, beyond what the test scenes can tell apart?
python experiments/paired.py A B [A B ...] reads both runs' `evaluate-edits` records
(docs/results/experiments/NAME.jsonl.gz: the same scenes and targets, seed 777) and prints, per
attribute and for the shorter-sleeve edits, A's truth accuracy minus B's on the same edits with a
95% interval (percentile bootstrap over scenes, 1000 draws, seed 0: an interval that excludes 0
is a difference these scenes show)."""
import sys

import numpy as np

from amgan_search.metrics.intervals import interval
from experiment import arguments, records  # this folder's scripts, beside this one
from sleeve_directions import shortens

PARTS = {"color": lambda r: r["attribute"] == "color",
         "sleeve": lambda r: r["attribute"] == "sleeve",
         "sleeve, shorter": shortens}


def edits(name: str) -> dict:
    """(scene, attribute, target) -> the run's record of that edit."""
    return {(r["scene"], r["attribute"], r["target"]): r for r in records(name)}


def difference(ea: dict, eb: dict, part: str) -> tuple[int, str]:
    """(edits of the part, "A - B [low, high]" as printed) for two runs' `edits`."""
    keys = [k for k, r in ea.items() if PARTS[part](r)]
    diff = np.array([float(ea[k]["truth"] == k[2]) - float(eb[k]["truth"] == k[2])
                     for k in keys])
    est, low, high = interval(diff, groups=[k[0] for k in keys])
    return len(keys), f"{est:+.3f} [{low:+.3f}, {high:+.3f}]"


def main(pairs: list[str]) -> None:
    print("| A | B | edits | A - B truth accuracy [95% interval] |")
    print("|---|---|---|---|")
    for a, b in zip(pairs[::2], pairs[1::2]):
        ea, eb = edits(a), edits(b)
        if ea.keys() != eb.keys():
            sys.exit(f"{a} and {b} did not edit the same scenes and targets")
        for part in PARTS:
            n, text = difference(ea, eb, part)
            print(f"| {a} | {b} | {part}: {n} | {text} |")


if __name__ == "__main__":
    args = arguments(__doc__, 2)
    if len(args) % 2:
        sys.exit(__doc__)
    main(args)
