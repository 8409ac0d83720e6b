"""Cold start: a whole `amgan-search query` in a fresh process against `import torch` plus loading
the models it uses, and `--help` against a bare interpreter.

Every figure is the median wall time of fresh Python processes, measured in the same run:
`python -c pass`; `python -c "import torch"`; `import torch` plus loading the models a query
loads (the shipped AMGAN with its classifier, and the embedder); a cold `amgan-search query
PHOTO --color red --json` on a 10,000-item index; `amgan-search --help` and `query --help`. The
query's ratio to "import torch + models" is what the query path adds around the unavoidable
(target at most 1.5); `--help` should stay instant (target under 0.3 s). `--tiny` leaves out the
models and the cold query (seconds each).

    python perf/cold_start.py [--tiny] [--repeats 5] [--json]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The installed command, as a user runs it (next to this interpreter), else the module.
_SCRIPT = Path(sys.executable).with_name("amgan-search")
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "amgan_search.cli.main"]
LOAD_MODELS = ("import torch\n"
               "from amgan_search.registry import load_model\n"
               "load_model(None, 'editor', device='cpu')\n"
               "load_model(None, 'classifier', device='cpu')\n")


def _wall(argv: list[str], repeats: int) -> float:
    """Median seconds of `argv` run in a fresh process (it must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} ...: exit {done.returncode}\n{done.stderr[-2000:]}")
    return statistics.median(times)


def _index(out: Path, n: int) -> None:
    """An index of random unit vectors recorded as the shipped embedder's (cost depends on size only)."""
    import pandas as pd

    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.index_dir import item_records
    from amgan_search.schema import DEFAULT_SCHEMA

    embedder = load_embedder(None, device="cpu")
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, embedder.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.stack([rng.integers(0, len(a.values), n) for a in DEFAULT_SCHEMA.attributes], 1)
    items = pd.DataFrame({"id": [f"item{i}" for i in range(n)],
                          "path": [f"/catalog/img/{i}.jpg" for i in range(n)], "split": "train"})
    build_from_vectors(out, v, labels, item_records(items, labels, DEFAULT_SCHEMA),
                       DEFAULT_SCHEMA, embedder.meta(), index_type="auto", progress=False)


def run(tiny: bool = False, repeats: int | None = None, n: int = 10_000) -> list[dict]:
    repeats = repeats or (1 if tiny else 5)
    t = {"python": _wall([sys.executable, "-c", "pass"], repeats),
         "torch": _wall([sys.executable, "-c", "import torch"], repeats),
         "help": _wall(CLI + ["--help"], repeats),
         "query help": _wall(CLI + ["query", "--help"], repeats)}
    note = f"median of {repeats} fresh processes; OMP_NUM_THREADS=" \
           f"{os.environ.get('OMP_NUM_THREADS', 'unset')}"
    rows = [
        {"measure": "python -c pass", "value": round(t["python"], 3), "unit": "s", "note": note},
        {"measure": "import torch", "value": round(t["torch"], 3), "unit": "s",
         "baseline": "python -c pass", "baseline_value": round(t["python"], 3),
         "ratio": round(t["torch"] / t["python"], 2)},
        {"measure": "amgan-search --help (target < 0.3 s)", "value": round(t["help"], 3), "unit": "s",
         "baseline": "python -c pass", "baseline_value": round(t["python"], 3),
         "ratio": round(t["help"] / t["python"], 2)},
        {"measure": "amgan-search query --help (target < 0.3 s)", "value": round(t["query help"], 3),
         "unit": "s", "baseline": "python -c pass", "baseline_value": round(t["python"], 3),
         "ratio": round(t["query help"] / t["python"], 2)},
    ]
    return rows if tiny else rows + _cold_query(repeats, n, t["torch"])


def _cold_query(repeats: int, n: int, torch_s: float) -> list[dict]:
    """`import torch` + the models, and a cold query on an n-item index (seconds each)."""
    from amgan_search.images import save_image
    from amgan_search.synthetic import render, sample_scene

    with tempfile.TemporaryDirectory() as tmp:
        index_dir, photo = Path(tmp) / "index", Path(tmp) / "photo.png"
        _index(index_dir, n)
        save_image(photo, render(sample_scene(7), 96)[0])
        models = _wall([sys.executable, "-c", LOAD_MODELS], repeats)
        query = _wall(CLI + ["query", str(photo), "--index", str(index_dir), "--color", "red",
                             "--json", "--device", "cpu"], repeats)
    return [
        {"measure": "import torch + load the query's models", "value": round(models, 3), "unit": "s",
         "baseline": "import torch", "baseline_value": round(torch_s, 3),
         "ratio": round(models / torch_s, 2)},
        {"measure": "cold query --json (target <= 1.5x)", "value": round(query, 3), "unit": "s",
         "note": f"{n:,}-item index", "baseline": "import torch + models",
         "baseline_value": round(models, 3), "ratio": round(query / models, 2)},
    ]


if __name__ == "__main__":  # `python -m perf.cold_start`, or the script: reach the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from perf.run import standalone

    standalone(run, __doc__.splitlines()[0], repeats="fresh processes per measure")
