"""The demo: the whole pipeline on the embedded default, from nothing to an HTML report.

It renders a synthetic catalog, imports it into a catalog DB, builds the default index with the
shipped CNN+CAM embedder, renders a few shopper photos the catalog has never seen, runs example
queries (one attribute, two attributes, a region-specific edit, and an unedited search for contrast)
and writes `report.html` with every query's edit, attention mask and results. Everything it makes
is kept: a second run reuses the catalog, DB and index and only re-runs the queries.
"""

from __future__ import annotations

import html
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amgan_search.errors import UserError

DEMO_ITEMS = 3000
DEMO_SEED = 2024  # the shipped models were trained on seed 0: the demo catalog is new to them
QUERY_SEED = 9000  # shopper photos: scenes in neither the training data nor the demo catalog


@dataclass
class Example:
    name: str
    title: str
    scene_seed: int
    start: dict[str, str]
    targets: dict[str, str]
    only_region: str | None = None
    edit: bool = True
    notes: list[str] = field(default_factory=list)


EXAMPLES = (
    Example("one-attribute", "This top, in red", 1, {"color": "blue", "sleeve": "short"},
            {"color": "red"}),
    Example("two-attributes", "This top, in white with long sleeves", 2,
            {"color": "black", "sleeve": "sleeveless"}, {"color": "white", "sleeve": "long"}),
    Example("region-specific", "Yellow, but only on the sleeves", 3,
            {"color": "navy", "sleeve": "long"}, {"color": "yellow"}, only_region="sleeves"),
    Example("no-edit", "The same photo, searched as it is", 1, {"color": "blue", "sleeve": "short"},
            {"color": "red"}, edit=False),
)


def home_dir() -> Path:
    """Where the demo keeps its catalog, DB and default index ($AMGAN_SEARCH_HOME)."""
    return Path(os.environ.get("AMGAN_SEARCH_HOME", Path.home() / ".cache" / "amgan-search"))


Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    """The demo's progress lines: one a step, on stderr."""
    print(message, file=sys.stderr, flush=True)


def ensure_catalog(home: Path, n: int, seed: int, size: int,
                   log: Log = log_to_stderr) -> tuple[Path, Path]:
    """The demo catalog folder and its DB, made when missing."""
    from amgan_search.catalog import import_catalog
    from amgan_search.synthetic import write_catalog

    catalog_dir = home / "catalog" / f"demo-{n}-{seed}-{size}"
    db = home / "catalog" / f"demo-{n}-{seed}-{size}.db"
    if not (catalog_dir / "catalog.csv").is_file():
        log(f"rendering {n} catalog images into {catalog_dir}")
        write_catalog(catalog_dir, n, seed=seed, size=size, overwrite=True)
    if not db.is_file():
        log(f"importing the catalog into {db}")
        import_catalog("synthetic", catalog_dir, db)
    return catalog_dir, db


def ensure_index(db: Path, index_dir: Path, embedder, batch_size: int, workers: int,
                 log: Log = log_to_stderr) -> None:
    """Build the default index unless it exists over this DB with this embedder.

    The demo replaces only its own index: one over its catalog (or a damaged one in its place).
    An index over another catalog there was someone's own work: refused with one line.
    """
    from amgan_search.index.build import build_index
    from amgan_search.index.index_dir import load_info

    if (index_dir / "index.json").is_file():
        try:
            info = load_info(index_dir)
        except UserError:
            info = None
        if info is not None:
            if info.get("db") is None or Path(info["db"]).resolve() != db.resolve():
                raise UserError(f"{index_dir}: holds an index of another catalog ({info.get('db')}); "
                                "the demo replaces only its own: move it, or set AMGAN_SEARCH_HOME")
            if info["embedder"]["digest"] == embedder.digest:
                return
    log(f"building the default index at {index_dir}")
    build_index(db, index_dir, embedder, batch_size=batch_size, workers=workers, force=True)


def query_photo(example: Example, size: int):
    """A shopper's photo: a scene from a seed the catalog never used, with the example's garment."""
    from amgan_search.synthetic import render, sample_scene

    scene = sample_scene(QUERY_SEED + example.scene_seed).with_attributes(**example.start)
    return render(scene, size)[0]


def run_demo(out: Path, n: int = DEMO_ITEMS, seed: int = DEMO_SEED, size: int = 128, k: int = 10,
             batch_size: int = 128, workers: int = 2, device: str | None = None,
             log: Log = log_to_stderr) -> Path:
    """Run the whole demo; returns the path of report.html. `log` gets one line a step."""
    from amgan_search.images import save_image
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.index_dir import default_index_dir
    from amgan_search.index.retrieve import Retriever
    from amgan_search.io import write_json, write_text

    started = time.perf_counter()
    _, db = ensure_catalog(home_dir(), n, seed, size, log)
    embedder = load_embedder(None, device=device)
    index_dir = default_index_dir()
    ensure_index(db, index_dir, embedder, batch_size, workers, log)
    retriever = Retriever(index_dir, device=device, embedder=embedder)

    out.mkdir(parents=True, exist_ok=True)
    records = []
    for example in EXAMPLES:
        photo = query_photo(example, size)
        folder = out / example.name
        save_image(folder / "query.png", photo)
        result = retriever.query(photo, example.targets, k=k, edit=example.edit,
                                 only_region=example.only_region)
        retriever.save(result, folder)
        records.append(_record(example, result, folder, out))
        rate = records[-1]["match_rate"]
        log(f"{example.name}: " + (f"top-{k} attribute match {rate:.2f}" if rate is not None
                                    else "region-specific edit, see the report"))
    report = out / "report.html"
    write_json(out / "report.json", {"index": str(index_dir), "db": str(db), "k": k,
                                     "examples": records,
                                     "seconds": round(time.perf_counter() - started, 1)})
    write_text(report, render_html(records, index_dir, db))
    return report


def _record(example: Example, result, folder: Path, out: Path) -> dict:
    """What the report shows of one query; `wanted` is the attribute vector a shopper asked for.

    A region-specific edit (yellow sleeves on a navy top) asks for a garment no attribute vector
    describes, so it has no `wanted` vector and no match rate: it is there to be looked at.
    """
    wanted = None if example.only_region else {**example.start, **example.targets}
    results = []
    for r in result.results:
        match = wanted is not None and all(r.attributes.get(a) == v for a, v in wanted.items())
        results.append({**r.as_dict(), "match": match})
    rel = lambda name: (folder / name).relative_to(out).as_posix()  # noqa: E731
    return {
        "name": example.name, "title": example.title, "start": example.start,
        "targets": example.targets, "only_region": example.only_region, "edited": example.edit,
        "wanted": wanted, "query": rel("query.png"),
        "edit": rel("edited.png") if result.edited is not None else None,
        "mask": rel("mask.png") if result.mask is not None else None,
        "contact_sheet": rel("contact.png"),
        "match_rate": (None if wanted is None else
                       sum(r["match"] for r in results) / max(1, len(results))),
        "results": results,
    }


def render_html(records: list[dict], index_dir: Path, db: Path) -> str:
    """A self-contained page: per query, the photo, edit, mask and the results with attributes."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>amgan-search demo</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{width:128px;image-rendering:pixelated}"
        "table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        ".hit{background:#e6f4e6}figure{display:inline-block;margin:0 8px 8px 0}</style>",
        "<h1>amgan-search demo</h1>",
        f"<p>Index <code>{e(str(index_dir))}</code> over the catalog <code>{e(str(db))}</code>. "
        "Each query edits a shopper's photo with the shipped AMGAN, embeds the edit with the shipped "
        "CNN+CAM ResNet and returns the nearest catalog items. Green rows have every wanted attribute."
        "</p>",
    ]
    for rec in records:
        how = ("searched unedited" if not rec["edited"] else
               "edit " + ", ".join(f"{a}={v}" for a, v in rec["targets"].items())
               + (f" only on {rec['only_region']}" if rec["only_region"] else ""))
        if rec["wanted"] is None:
            verdict = "no catalog item has this garment: judge the edit by eye."
        else:
            wanted = ", ".join(f"{a}={v}" for a, v in rec["wanted"].items())
            verdict = f"wanted: {wanted}; {rec['match_rate']:.0%} of the results have it."
        parts.append(f"<h2>{e(rec['title'])}</h2><p>{e(how)}; {e(verdict)}</p>")
        for key, caption in (("query", "photo"), ("edit", "edit"), ("mask", "attention")):
            if rec[key]:
                parts.append(f"<figure><img src='{e(rec[key])}'><figcaption>{caption}</figcaption></figure>")
        parts.append("<table><tr><th>rank</th><th>id</th><th>score</th><th>attributes</th><th>image</th></tr>")
        for r in rec["results"]:
            attrs = ", ".join(f"{a}={v}" for a, v in r["attributes"].items())
            src = Path(r["path"]).resolve().as_uri() if r.get("path") else ""
            parts.append(f"<tr class='{'hit' if r['match'] else ''}'><td>{r['rank']}</td>"
                         f"<td>{e(str(r['id']))}</td><td>{r['score']:.3f}</td><td>{e(attrs)}</td>"
                         f"<td><img src='{e(src)}' style='width:64px'></td></tr>")
        parts.append(f"</table><p><a href='{e(rec['contact_sheet'])}'>contact sheet</a></p>")
    return "\n".join(parts) + "\n"
