"""Is run A ahead of run B by the truth, beyond what the test scenes can tell apart?
python docs/results/experiments/paired.py A B [A B ...] reads both runs' `evaluate-edits` records
(docs/results/experiments/NAME.jsonl: the same scenes and targets, seed 777) and prints, per
attribute and for the shorter-sleeve edits, A's truth accuracy minus B's on the same edits with a
95% interval (percentile bootstrap over scenes, 1000 draws, seed 0: an interval that excludes 0
is a difference these scenes show)."""
import sys
from pathlib import Path

import numpy as np

from amgan_search.io import read_jsonl
from amgan_search.metrics.intervals import interval
from amgan_search.schema import SYNTHETIC_SLEEVES

HERE = Path(__file__).parent


def hits(name: str) -> dict:
    """(scene, attribute, target) -> (truth read the target, the edit shortens a sleeve)."""
    out = {}
    for r in read_jsonl(HERE / f"{name}.jsonl"):
        shorter = (r["attribute"] == "sleeve" and SYNTHETIC_SLEEVES.index(r["target"])
                   > SYNTHETIC_SLEEVES.index(r["source"]))
        out[(r["scene"], r["attribute"], r["target"])] = (r["truth"] == r["target"], shorter)
    return out


def main(pairs: list[str]) -> None:
    print("| A | B | edits | A - B truth accuracy [95% interval] |")
    print("|---|---|---|---|")
    for a, b in zip(pairs[::2], pairs[1::2]):
        ha, hb = hits(a), hits(b)
        if ha.keys() != hb.keys():
            sys.exit(f"{a} and {b} did not edit the same scenes and targets")
        for part in ("color", "sleeve", "sleeve, shorter"):
            keys = [k for k in ha if k[1] == part.split(",")[0]
                    and (part != "sleeve, shorter" or ha[k][1])]
            diff = np.array([float(ha[k][0]) - float(hb[k][0]) for k in keys])
            est, low, high = interval(diff, groups=[k[0] for k in keys])
            print(f"| {a} | {b} | {part}: {len(keys)} | {est:+.3f} [{low:+.3f}, {high:+.3f}] |")


if __name__ == "__main__":
    if len(sys.argv) < 3 or len(sys.argv) % 2 == 0:
        sys.exit(__doc__)
    main(sys.argv[1:])
