"""Which sleeve edits fail: those that take fabric away or those that add it?
python experiments/sleeve_directions.py NAME... reads the records of
`evaluate-edits` (docs/results/experiments/NAME.jsonl.gz) and prints, per run and direction, how the
truth reads the sleeve edits: the target, the photo's own sleeve (nothing changed), a length
between the two or past the target (moved the right way, wrong length), or the other way."""
from collections import Counter

from amgan_search.schema import SYNTHETIC_SLEEVES
from experiment import arguments, records  # this folder's script, beside this one

LENGTH = {v: -i for i, v in enumerate(SYNTHETIC_SLEEVES)}  # long 0 > three-quarter > short > sleeveless


def shortens(r: dict) -> bool:
    """A sleeve edit toward a shorter sleeve than the photo's (fabric taken away)."""
    return r["attribute"] == "sleeve" and LENGTH[r["target"]] < LENGTH[r["source"]]


def outcome(r: dict) -> str:
    src, trg, read = (LENGTH[r[k]] for k in ("source", "target", "truth"))
    if read == trg:
        return "target"
    if read == src:
        return "source"
    return "right way" if (read - src) * (trg - src) > 0 else "wrong way"


def main(names: list[str]) -> None:
    kinds = ("target", "source", "right way", "wrong way")
    print("| run at iteration | direction | edits | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for name in names:
        per = {"shorter (fabric away)": Counter(), "longer (fabric added)": Counter()}
        for r in records(name):
            if r["attribute"] == "sleeve":
                direction = "shorter (fabric away)" if shortens(r) else "longer (fabric added)"
                per[direction][outcome(r)] += 1
        for direction, c in per.items():
            n = sum(c.values())
            if not n:
                continue
            print(f"| {name} | {direction} | {n} | "
                  + " | ".join(f"{c[k] / n:.3f}" for k in kinds) + " |")


if __name__ == "__main__":
    main(arguments(__doc__, 1))
