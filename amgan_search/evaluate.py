"""The paper's two metrics: classification accuracy of edits and top-k retrieval accuracy.

Pure functions compute both from arrays; `run_benchmark` produces those arrays for every method
over a catalog's test split, resumably, and writes queries.jsonl, summary.json, summary.md and
topk.png.

Protocol (DESIGN "Metrics"): for every test image, every attribute and every target value other
than its current one, the query is embed(G(x, target)); the gallery is the indexed catalog without
the query's own item; the target vector is the input's attributes with that one value replaced.
A query is kept only if some gallery item has the whole target vector; it is a hit at k if some
item among its top k has the whole target vector.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import UserError
from .schema import MISSING, Schema

DEFAULT_KS = (1, 5, 10, 20, 30, 50)
TABLE_K = 30  # the paper's per-attribute retrieval table is at top-30


# ---------------------------------------------------------------- pure metrics

def target_matches(target: Sequence[int], labels: np.ndarray) -> np.ndarray:
    """Gallery rows that have the whole target vector.

    A missing entry (-1) in the target, which only an input with an unknown value produces,
    constrains nothing: the paper is silent, and requiring "unknown" would reward missing labels.
    """
    target = np.asarray(target, dtype=np.int64)
    known = target != MISSING
    return np.all(labels[:, known] == target[known], axis=1)


def retrieval_hits(targets: np.ndarray, retrieved: Sequence[Sequence], gallery_ids: Sequence,
                   gallery_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                   own_ids: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept [Q] bool, hits [Q, len(ks)] bool) for queries with target vectors [Q, M].

    `retrieved[q]` lists gallery ids best first; `own_ids[q]` (or None) is the query's own item,
    which is neither a gallery item for the kept rule nor a result (dropped before cutting at k).
    """
    targets = np.asarray(targets, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    row_of = {str(i): r for r, i in enumerate(gallery_ids)}
    ks = list(ks)
    kept = np.zeros(len(targets), dtype=bool)
    hits = np.zeros((len(targets), len(ks)), dtype=bool)
    cache: dict[tuple, np.ndarray] = {}
    for q, target in enumerate(targets):
        key = tuple(target.tolist())
        if key not in cache:
            cache[key] = target_matches(target, gallery_labels)
        match = cache[key]
        own = None if own_ids is None or own_ids[q] is None else str(own_ids[q])
        own_row = row_of.get(own) if own is not None else None
        n_match = int(match.sum()) - (1 if own_row is not None and match[own_row] else 0)
        kept[q] = n_match > 0
        if not kept[q]:
            continue
        ranked = [row_of[str(i)] for i in retrieved[q] if str(i) != own and str(i) in row_of]
        first = next((rank for rank, r in enumerate(ranked, start=1) if match[r]), None)
        if first is not None:
            hits[q] = [first <= k for k in ks]
    return kept, hits


def topk_accuracy(kept: np.ndarray, hits: np.ndarray, ks: Sequence[int]) -> dict[int, float | None]:
    """Fraction of kept queries with a hit at each k (None when no query is kept)."""
    n = int(np.sum(kept))
    return {int(k): (float(hits[kept, j].mean()) if n else None) for j, k in enumerate(ks)}


def classification_accuracy(predicted: Sequence[int], targets: np.ndarray, attributes: Sequence[int],
                            schema: Schema) -> dict[str, float | None]:
    """Per manipulated attribute: how often the evaluation classifier says the target value.

    `average` is the mean over attributes (each attribute counts once, as in the paper's tables).
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    attributes = np.asarray(attributes, dtype=np.int64)
    wanted = targets[np.arange(len(targets)), attributes] if len(targets) else np.zeros(0, np.int64)
    out: dict[str, float | None] = {}
    for j, name in enumerate(schema.names):
        sel = attributes == j
        out[name] = float(np.mean(predicted[sel] == wanted[sel])) if sel.any() else None
    values = [v for v in out.values() if v is not None]
    out["average"] = float(np.mean(values)) if values else None
    return out


def query_targets(labels: np.ndarray, schema: Schema) -> list[tuple[int, int, np.ndarray]]:
    """Every (attribute, target value, target vector) for one input's labels [M]."""
    out = []
    for j, attr in enumerate(schema.attributes):
        for v in range(len(attr.values)):
            if v == labels[j]:
                continue
            target = labels.copy()
            target[j] = v
            out.append((j, v, target))
    return out


# ---------------------------------------------------------------- methods

@dataclass
class Method:
    """`real` (unedited query), `oracle` (the synthetic renderer's true edit) or a manipulator."""

    name: str
    kind: str  # real | oracle | model
    path: str | None = None  # a model directory; None with kind model: the shipped `name`


def parse_methods(spec: str | Sequence[str]) -> list[Method]:
    """"real,amgan,stargan,oracle,mine=runs/x,runs/y" -> methods (a bare folder is named after itself)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    methods = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if "=" in part:
            name, path = (s.strip() for s in part.split("=", 1))
            if not name or not Path(path).is_dir():
                raise UserError(f"--methods: {part!r}: expected NAME=DIR with an existing model folder")
            methods.append(Method(name, "model", str(Path(path).resolve())))
        elif part in ("real", "oracle"):
            methods.append(Method(part, part))
        elif part in ("amgan", "stargan"):
            methods.append(Method(part, "model"))
        elif Path(part).is_dir():
            methods.append(Method(Path(part).resolve().name, "model", str(Path(part).resolve())))
        else:
            raise UserError(f"--methods: unknown method {part!r}; valid: real, oracle, amgan, "
                            "stargan, a model folder, or NAME=DIR")
    if not methods:
        raise UserError("--methods: no method given")
    names = [m.name for m in methods]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"--methods: method name {dup!r} appears twice")
    return methods


def parse_ks(spec: str | Sequence[int]) -> list[int]:
    try:
        ks = sorted({int(k) for k in (spec.split(",") if isinstance(spec, str) else spec)})
    except ValueError:
        raise UserError(f"--k: expected comma-separated integers, got {spec!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--k: values must be at least 1, got {spec!r}")
    return ks


# ---------------------------------------------------------------- the runner

@dataclass
class BenchmarkConfig:
    db: str
    index: str
    out: str
    methods: list[Method]
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    limit: int | None = None
    eval_classifier: str | None = "eval"  # "eval": the shipped evaluation classifier; a folder; None: skip
    split: str = "test"
    batch_size: int = 32
    workers: int = 0
    device: str | None = None
    progress: bool = True


QUERIES, SUMMARY_JSON, SUMMARY_MD, TOPK_PNG, RUN_JSON = (
    "queries.jsonl", "summary.json", "summary.md", "topk.png", "run.json")


def _record_key(query, method, attribute, target) -> tuple:
    return (str(query), method, attribute, tuple(int(t) for t in target))


def read_records(path: Path) -> list[dict]:
    """queries.jsonl, dropping a last line a kill cut short (and cutting it from the file)."""
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("partial line")
                records.append(json.loads(line))
                good_bytes += len(line)
            except ValueError:
                break
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


class _Appender:
    """Append JSON lines and make them durable per batch, so a kill loses at most one batch."""

    def __init__(self, path: Path):
        self.f = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        for r in records:
            self.f.write(json.dumps(r, separators=(",", ":")) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _resize(x, size: int):
    import torch.nn.functional as F

    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _check_run(out: Path, run: dict) -> None:
    """A resumed run must be the same run: same index, catalog, split, limit and enough k."""
    from .checkpoint import read_json, write_json

    path = out / RUN_JSON
    if path.is_file():
        old = read_json(path)
        for key in ("index", "index_digest", "db", "split", "limit"):
            if old.get(key) != run.get(key):
                raise UserError(f"{path}: this folder holds a run with another {key} "
                                f"({old.get(key)!r}, now {run.get(key)!r}); use another --out")
        if old.get("k_max", 0) < run["k_max"]:
            raise UserError(f"{path}: the queries there were searched to k={old.get('k_max')}, "
                            f"fewer than {run['k_max']}; use another --out")
        run = {**run, "k_max": old["k_max"]}
    write_json(path, run)


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run every method over the test split (resuming what queries.jsonl already holds) and summarise."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from .catalog import Catalog
    from .data import CatalogImages
    from .index.embed import default_device
    from .index.store import Searcher

    device = config.device or default_device()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    searcher = Searcher(config.index)
    embedder = searcher.embedder(device=device)
    schema = searcher.schema
    catalog = Catalog.open(config.db)
    if catalog.schema.to_dict() != schema.to_dict():
        raise UserError(f"{config.db}: its attribute schema differs from the index's ({config.index})")
    ks = parse_ks(config.ks)
    k_max = max(ks)
    _check_run(out, {"index": str(Path(config.index).resolve()),
                     "index_digest": searcher.info["embedder"].get("digest"),
                     "db": str(Path(config.db).resolve()), "split": config.split,
                     "limit": config.limit, "k_max": k_max})

    records_path = out / QUERIES
    done = {_record_key(r["query"], r["method"], r["attribute"], r["target"])
            for r in read_records(records_path)}
    evaluator = _load_evaluator(config.eval_classifier, device)
    appender = _Appender(records_path)
    try:
        for method in config.methods:
            editor = _load_editor(method, catalog, schema, device)
            size = getattr(editor, "size", None) or embedder.size
            dataset = CatalogImages(config.db, split=config.split, size=size)
            n = len(dataset) if config.limit is None else min(config.limit, len(dataset))
            if n == 0:
                raise UserError(f"{config.db}: no items in split {config.split!r}")
            ids = dataset.items["id"].astype(str).tolist()[:n]
            labels = np.asarray(dataset.labels[:n], dtype=np.int64)
            total = sum(len(query_targets(labels[i], schema)) for i in range(n))
            todo = sum(1 for i in range(n) for j, v, t in query_targets(labels[i], schema)
                       if _record_key(ids[i], method.name, schema.names[j], t) not in done)
            if todo == 0:
                continue
            loader = DataLoader(Subset(dataset, range(n)), batch_size=config.batch_size,
                                num_workers=config.workers, shuffle=False)
            bar = tqdm(total=total, initial=total - todo, desc=f"benchmark {method.name}",
                       unit="query", disable=not config.progress, dynamic_ncols=True)
            start = 0
            for x, y in loader:
                batch_ids = ids[start:start + len(x)]
                start += len(x)
                fresh = _run_batch(method, editor, embedder, evaluator, searcher, schema, x,
                                   y.long(), batch_ids, k_max, done, device)
                appender.write(fresh)
                bar.update(len(fresh))
            bar.close()
    finally:
        appender.close()
    summary = summarise(read_records(records_path), searcher, schema, ks, config)
    write_outputs(out, summary)
    return summary


def _load_evaluator(spec: str | None, device: str):
    if spec is None:
        return None
    from .classifier import load_classifier

    model = load_classifier(None if spec == "eval" else spec, role="eval", device=device)
    model.eval()
    return model


def _load_editor(method: Method, catalog, schema: Schema, device: str):
    if method.kind == "real":
        return None
    if method.kind == "oracle":
        return _Oracle(catalog, schema)
    from .manipulate import Manipulator

    if method.path is None:
        editor = Manipulator.load(None, method=method.name, device=device)
    else:
        editor = Manipulator.load(method.path, device=device)
    if editor.schema.to_dict() != schema.to_dict():
        raise UserError(f"{method.path or method.name}: the model's attribute schema differs from the index's")
    return editor


class _Oracle:
    """The synthetic renderer's true edit: the same scene drawn with the target value."""

    def __init__(self, catalog, schema: Schema):
        from . import synthetic

        root = Path(catalog.root)
        if catalog.format != "synthetic" or not (root / "catalog.csv").is_file():
            raise UserError(f"{catalog.path}: the oracle method needs a synthetic catalog "
                            "(format 'synthetic' with catalog.csv in its root)")
        self.scenes = {str(row.id): row.scene for row in synthetic.load_scene_table(root)}
        self.render = synthetic.render
        self.schema = schema
        self.size = None

    def edit(self, item_ids: Sequence[str], attribute: str, value: str, size: int):
        from .images import fit_square, to_tensor

        images = []
        for item_id in item_ids:
            if str(item_id) not in self.scenes:
                raise UserError(f"oracle: item {item_id!r} has no scene in the synthetic catalog")
            drawn = self.render(self.scenes[str(item_id)].with_attributes(**{attribute: value}), size)
            image = drawn[0] if isinstance(drawn, tuple) else getattr(drawn, "image", drawn)
            images.append(fit_square(np.asarray(image, dtype=np.uint8), size)[0])
        return to_tensor(images)


def _run_batch(method: Method, editor, embedder, evaluator, searcher, schema: Schema, x, y,
               batch_ids: Sequence[str], k_max: int, done: set, device: str) -> list[dict]:
    """Every (input, attribute, target) query of one batch not yet done -> records."""
    import torch

    records = []
    own_rows = np.array([searcher.row_of(i) for i in batch_ids], dtype=np.int64)
    real_vec = real_pred = None
    for j, attr in enumerate(schema.attributes):
        for v, value in enumerate(attr.values):
            sel = [b for b in range(len(batch_ids)) if y[b, j].item() != v]
            targets = y[sel].clone()
            if len(sel):
                targets[:, j] = v
            sel = [b for b, t in zip(sel, targets)
                   if _record_key(batch_ids[b], method.name, attr.name, t.tolist()) not in done]
            if not sel:
                continue
            targets = y[sel].clone()
            targets[:, j] = v
            with torch.inference_mode():
                if method.kind == "real":
                    if real_vec is None:  # the unedited query is the same for every target
                        real_vec = embedder(x)
                        real_pred = _predict(evaluator, x, device)
                    vectors = real_vec[sel]
                    predicted = None if real_pred is None else real_pred[sel]
                else:
                    if method.kind == "oracle":
                        x_star = editor.edit([batch_ids[b] for b in sel], attr.name, value, x.shape[-1])
                    else:
                        x_star, _ = editor.edit_batch(x[sel].to(device), y[sel].to(device), j,
                                                      torch.full((len(sel),), v, dtype=torch.long,
                                                                 device=device))
                    vectors = embedder(x_star)
                    predicted = _predict(evaluator, x_star, device)
            rows, _ = searcher.search(vectors, k_max, exclude_rows=own_rows[sel])
            for i, b in enumerate(sel):
                records.append({
                    "query": batch_ids[b], "method": method.name, "attribute": attr.name,
                    "target": targets[i].tolist(),
                    "predicted": None if predicted is None else int(predicted[i, j]),
                    "retrieved": [searcher.ids[r] for r in rows[i] if r >= 0],
                })
                done.add(_record_key(batch_ids[b], method.name, attr.name, targets[i].tolist()))
    return records


def _predict(evaluator, x, device: str):
    if evaluator is None:
        return None
    size = int(evaluator.config["size"])
    indices, _ = evaluator.predict(_resize(x.float(), size).to(device))
    return np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices)


# ---------------------------------------------------------------- summary, tables and the plot

def summarise(records: list[dict], searcher, schema: Schema, ks: Sequence[int],
              config: BenchmarkConfig | None = None) -> dict:
    """Both metrics per method from the query records."""
    ks = list(ks)
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    order = [m.name for m in config.methods] if config else list(by_method)
    methods = {}
    for name in order:
        recs = by_method.get(name, [])
        if not recs:
            continue
        targets = np.array([r["target"] for r in recs], dtype=np.int64)
        attrs = np.array([schema.names.index(r["attribute"]) for r in recs], dtype=np.int64)
        kept, hits = retrieval_hits(targets, [r["retrieved"] for r in recs], searcher.ids,
                                    searcher.labels, ks, [r["query"] for r in recs])
        per_attr_k = TABLE_K if TABLE_K in ks else max(ks)
        col = ks.index(per_attr_k)
        per_attr = {}
        for j, a in enumerate(schema.names):
            sel = kept & (attrs == j)
            per_attr[a] = float(hits[sel, col].mean()) if sel.any() else None
        entry = {
            "queries": len(recs),
            "kept": int(kept.sum()),
            "topk": {str(k): v for k, v in topk_accuracy(kept, hits, ks).items()},
            f"top{per_attr_k}_per_attribute": per_attr,
        }
        preds = [r.get("predicted") for r in recs]
        if all(p is not None for p in preds):
            entry["classification"] = classification_accuracy(preds, targets, attrs, schema)
        methods[name] = entry
    return {
        "ks": ks,
        "table_k": TABLE_K if TABLE_K in ks else max(ks),
        "index": str(searcher.dir),
        "gallery": searcher.count,
        "db": config.db if config else None,
        "split": config.split if config else None,
        "limit": config.limit if config else None,
        "eval_classifier": config.eval_classifier if config else None,
        "schema": schema.to_dict(),
        "methods": methods,
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _acc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary_markdown(summary: dict) -> str:
    names = list(summary["schema"])
    ks = summary["ks"]
    tk = summary["table_k"]
    methods = summary["methods"]
    lines = [f"# Benchmark: {summary.get('db')} ({summary.get('split')} split) against {summary['index']}",
             "", f"Gallery: {summary['gallery']:,} items. Queries kept: those whose target vector some "
             "gallery item other than the query's own has.", ""]
    lines += ["## Classification accuracy of edits (%, evaluation classifier)", "",
              "| method | " + " | ".join(names) + " | average |",
              "|---" * (len(names) + 2) + "|"]
    for m, e in methods.items():
        c = e.get("classification")
        cells = [_pct(c.get(a)) for a in names] + [_pct(c.get("average"))] if c else ["-"] * (len(names) + 1)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Top-k retrieval accuracy", "",
              "| method | queries | kept | " + " | ".join(f"top-{k}" for k in ks) + " |",
              "|---" * (len(ks) + 3) + "|"]
    for m, e in methods.items():
        lines.append(f"| {m} | {e['queries']} | {e['kept']} | "
                     + " | ".join(_acc(e["topk"][str(k)]) for k in ks) + " |")
    lines += ["", f"## Top-{tk} retrieval accuracy per attribute", "",
              "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m, e in methods.items():
        per = e[f"top{tk}_per_attribute"]
        lines.append(f"| {m} | " + " | ".join(_acc(per.get(a)) for a in names) + " |")
    return "\n".join(lines) + "\n"


def plot_topk(summary: dict, path: Path) -> None:
    """Top-k curves per method, like the paper's Fig. 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for name, e in summary["methods"].items():
        ks = [k for k in summary["ks"] if e["topk"][str(k)] is not None]
        ax.plot(ks, [e["topk"][str(k)] for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("top-k retrieval accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_outputs(out: Path, summary: dict) -> None:
    from .checkpoint import write_json, write_text

    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary))
    plot_topk(summary, out / TOPK_PNG)
