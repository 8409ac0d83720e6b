"""Run every performance benchmark and print one table of figures and ratios.

Each row names what was measured, the figure, the baseline it is compared with (measured in the
same run, on this machine) and their ratio. `--tiny` runs each on toy sizes in seconds (the test
suite does this so the scripts cannot rot); without it the sizes are the ones the issues name.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

SUITE = ("embedder", "train_step", "index_build", "query_latency", "cold_start", "integrity", "ann")


def format_table(rows: list[dict]) -> str:
    header = ("benchmark", "measure", "value", "baseline", "baseline value", "ratio")
    lines = [header]
    for r in rows:
        ratio = r.get("ratio")
        lines.append((
            r["benchmark"], r["measure"], _fmt(r.get("value"), r.get("unit")),
            r.get("baseline", ""), _fmt(r.get("baseline_value"), r.get("unit")),
            "" if ratio is None else f"{ratio:.2f}x",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(value, unit) -> str:
    if value is None:
        return ""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds in all")
    parser.add_argument("--only", default=",".join(SUITE), help="comma-separated subset of: " + ", ".join(SUITE))
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    for name in args.only.split(","):
        if name not in SUITE:
            parser.error(f"unknown benchmark {name!r}; known: {', '.join(SUITE)}")
        start = time.perf_counter()
        module = importlib.import_module(f"perf.{name}")
        for row in module.run(tiny=args.tiny):
            rows.append({"benchmark": name, **row})
        print(f"[{name}: {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def print_rows(name: str, rows: list[dict], as_json: bool = False) -> None:
    """A benchmark's rows as JSON, or as the table with each row's note under it."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(format_table([{"benchmark": name, **r} for r in rows]))
    for r in rows:
        if r.get("note"):
            print(f"note ({r['measure']}): {r['note']}")


def standalone(run, description: str, argv=None, **int_options) -> None:
    """`python perf/X.py [--tiny] [--OPTION N] [--json]` for one benchmark's run()."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds")
    for name, help_text in int_options.items():
        parser.add_argument(f"--{name}", type=int, default=None, help=help_text)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    rows = run(**args)
    print(json.dumps(rows, indent=2) if as_json else
          format_table([{"benchmark": Path(run.__code__.co_filename).stem, **r} for r in rows]))
