"""One table of retrieval over several benchmark runs, read from their summary.json files.
python experiments/method_table.py LABEL=BENCHMARK_DIR [LABEL=BENCHMARK_DIR ...] prints, per run
and method, the kept queries, top-1/5/10/30, ADDE's NDCG@30, graded NDCG@30 and MRR, each with
the run's 95% interval (`benchmark` writes them), as a markdown table: the tables of
docs/feature-space.md come from here, so their figures are the files'."""
import sys
from pathlib import Path

from amgan_search.index.evaluate.table import fmt
from amgan_search.io import read_json
from experiment import arguments

COLUMNS = ("top-1", "top-5", "top-10", "top-30", "ADDE's NDCG@30", "graded NDCG@30", "MRR")


def rows(label: str, folder: Path) -> list[str]:
    """The markdown rows of one benchmark run, in the order its methods ran."""
    summary = read_json(folder / "summary.json")
    out = []
    for method, iv in summary["intervals"]["methods"].items():
        cells = [fmt(iv["topk"].get(k)) for k in ("1", "5", "10", "30")]
        cells += [fmt(iv.get("adde_ndcg@30")), fmt(iv.get("ndcg@30")), fmt(iv.get("mrr"))]
        out.append(f"| {label} | {method} | {iv['kept']} of {iv['records']} | " + " | ".join(cells)
                   + " |")
    return out


def table(runs: list[tuple[str, Path]]) -> str:
    head = "| setting | method | kept queries | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for label, folder in runs:
        lines += rows(label, folder)
    return "\n".join(lines)


def main() -> None:
    specs = arguments(__doc__, 1)
    runs = []
    for spec in specs:
        label, _, folder = spec.partition("=")
        if not folder or not (Path(folder) / "summary.json").is_file():
            sys.exit(f"{spec}: expected LABEL=BENCHMARK_DIR holding summary.json")
        runs.append((label, Path(folder)))
    print(table(runs))


if __name__ == "__main__":
    main()
