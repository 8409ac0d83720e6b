"""Integrity checks: what verifying SHA256SUMS and the catalog DB's checksum costs, against a cold query.

A cold `amgan-search query` verifies the shipped editor's and embedder's weights and the index
version it reads; this times those checks alone (sha256 of the same files, fresh each repeat) and
a cold query in a fresh process, in the same run. The catalog DB is checked on every open: its
open is timed with and without the check. An index records each catalog image's size and mtime
when it is built and compares a query's results with them: both are timed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model_and_index_checks(index_dir: Path) -> None:
    """sha256 of every file a cold query verifies: the two shipped models and the index version."""
    from amgan_search.checkpoint import MODEL_FILES
    from amgan_search.index.index_dir import FILES, current
    from amgan_search.integrity import verify
    from amgan_search.registry import shipped_model

    for name in ("amgan", "classifier-cam"):
        verify(shipped_model(name), MODEL_FILES)
    verify(current(index_dir).folder, FILES)


def _catalog_db(root: Path, n: int) -> Path:
    from amgan_search.catalog import import_catalog
    from amgan_search.synthetic import write_catalog

    write_catalog(root / "cat", n, seed=3, size=16, workers=1, progress=False)
    db = root / "cat.db"
    import_catalog("synthetic", root / "cat", db, progress=False)
    return db


def run(tiny: bool = False, repeats: int | None = None, n: int = 10_000) -> list[dict]:
    from amgan_search.catalog import Catalog
    from amgan_search.index.index_dir import file_identity
    from perf.cold_start import CLI, _index, _wall

    repeats = repeats or (1 if tiny else 5)
    n = 200 if tiny else n
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _index(tmp / "index", n)
        checks = _median(lambda: _model_and_index_checks(tmp / "index"), repeats)
        db = _catalog_db(tmp, 100 if tiny else 2_000)
        with_check = _median(lambda: Catalog.open(db).close(), repeats)
        without = _median(lambda: Catalog.open(db, check=False).close(), repeats)
        rows = [{"measure": "catalog DB open, checksum checked", "value": round(with_check * 1000, 2),
                 "unit": "ms", "note": f"{db.stat().st_size / 2**20:.1f} MB DB",
                 "baseline": "open unchecked", "baseline_value": round(without * 1000, 2),
                 "ratio": round(with_check / max(without, 1e-9), 1)}]
        images = sorted((tmp / "cat" / "images").iterdir())
        record = _median(lambda: [file_identity(p) for p in images], repeats) / len(images)
        results = _median(lambda: [file_identity(p) for p in images[:10]], repeats)
        rows.append({"measure": "index build: record of one catalog image (stat)",
                     "value": round(record * 1e6, 1), "unit": "us",
                     "note": f"{len(images):,} images"})
        if tiny:
            return rows + [{"measure": "sha256 checks of a cold query", "value": round(checks, 3),
                            "unit": "s"},
                           {"measure": "check of a query's 10 results' images",
                            "value": round(results * 1000, 3), "unit": "ms"}]
        from amgan_search.images import save_image
        from amgan_search.synthetic import render, sample_scene

        save_image(tmp / "photo.png", render(sample_scene(7), 96)[0])
        query = _wall(CLI + ["query", str(tmp / "photo.png"), "--index", str(tmp / "index"),
                             "--color", "red", "--json", "--device", "cpu"], repeats)
    return rows + [{"measure": "sha256 checks of a cold query (target < 5%)", "value": round(checks, 3),
                    "unit": "s", "note": f"shipped amgan + classifier-cam, {n:,}-item index",
                    "baseline": "cold query --json", "baseline_value": round(query, 3),
                    "ratio": round(checks / query, 3)},
                   {"measure": "check of a query's 10 results' images",
                    "value": round(results * 1000, 3), "unit": "ms",
                    "baseline": "cold query --json", "baseline_value": round(query * 1000),
                    "ratio": round(results / query, 6)}]


if __name__ == "__main__":  # `python -m perf.integrity`, or the script: reach the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from perf.run import standalone

    standalone(run, __doc__.splitlines()[0], repeats="repeats per measure")
