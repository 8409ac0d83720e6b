"""The benchmark runner: the paper's metrics for every method over a catalog's test split.

Every (test image, attribute to edit, other value) query of every method is edited, embedded,
searched against the index and appended to queries.jsonl, durably per batch, so a killed run
resumes where it stopped; the records are then summarised (`amgan_search.metrics.retrieval`) into
summary.json, summary.md and topk.png (`evaluate.report`). The protocol is in the metrics module's
docstring.

Protocol choices (the defaults first; ADDE's public evaluation makes the other ones), recorded in
run.json so a rerun resumes only the same run:
- gallery: "all" searches the whole catalog, "test" only its test split;
- queries: the first `limit` items of the split, or a seeded random `sample` of them;
- missing: a missing label in a target vector is a "wildcard" or a "value" of its own;
- own: the query's own item is left out of the gallery ("exclude") or stays in it ("keep");
- edit_attributes: the attributes a query changes (None: every attribute of the index).
ADDE's protocol is gallery "test", missing "value", own "keep", every test image as a reference
(`ADDE_PROTOCOL`); a query is kept when the gallery holds an item with its whole target vector,
as in ours.

Methods (`index.methods`): each is an editor of pixels and a space of vectors. A method that
makes an image (the GANs, the oracle, the hybrid's preview) has it read by the graders; one that
manipulates vectors only (`prototype`, `adde`) has no image, so its records hold no readings.

The harder setting: the catalog and its index label four attributes (color, sleeve, pattern,
neckline) while the generators edit two (color, sleeve). The queries change only
`edit_attributes`, a hit still needs the whole target vector (all four), and a model whose
attributes are a part of the index's (same values, same order) edits through
`editors.for_schema`; a method that cannot edit one of the edit attributes is refused before
anything runs.

Every edited query image is read by each CNN grader (`graders`, `registry.parse_graders`: e.g.
"eval,indep=runs/grader"; "none" for none), by attribute name, so a grader of another schema than
the index's reads what it knows. A record holds the readings of its edited attribute as
"predicted": {grader: value name, or null where the grader does not read that attribute}
(records of old runs held one value index; `metrics.retrieval.record_readings` reads them as
{"eval": name}). run.json records the graders ({name: shipped name or folder}).

On a synthetic catalog every edited query image is also read by the grader that is no network
(`metrics.truth`, against renders of the query item's own scene): each record holds its reading as
"truth" ({attribute: value or null}); on any other catalog records have no "truth".

A record (one JSON line of queries.jsonl):
    {"query": item id, "method": name, "attribute": edited attribute, "target": [value index per
     index attribute], "retrieved": [item id, ...], "relevance": [target attributes each result
     matches, ...], "predicted": {grader: value name | null}, "truth": {attribute: value | null}}
("predicted" and "truth" only where there is an image to read.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from amgan_search.editors import IdentityEditor
from amgan_search.errors import UserError
from amgan_search.index.methods import Loaded, Method, check_methods
from amgan_search.metrics.retrieval import (DEFAULT_KS, MISSING_RULES, WILDCARD, parse_ks,
                                            query_targets, relevance)
from amgan_search.schema import Schema

QUERIES, RUN_JSON = "queries.jsonl", "run.json"
GALLERIES = ("all", "test")
OWN_ITEM = ("exclude", "keep")
# The protocol's choices and their defaults (today's protocol): a run.json without them had these.
PROTOCOL = {"gallery": "all", "sample": None, "sample_seed": 0, "missing": WILDCARD,
            "own": "exclude", "edit_attributes": None}
ADDE_PROTOCOL = {"gallery": "test", "missing": "value", "own": "keep"}


@dataclass
class BenchmarkConfig:
    db: str
    index: str
    out: str
    methods: list[Method]
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    limit: int | None = None
    graders: str = "eval"  # CNN graders (`registry.parse_graders`): "eval,indep=DIR"; "none"
    split: str = "test"
    batch_size: int = 32
    workers: int = 0
    device: str | None = None
    progress: bool = True
    gallery: str = "all"  # all: the whole catalog; test: only the test split (ADDE)
    sample: int | None = None  # a seeded random sample of this many query images (the paper: 2,000)
    sample_seed: int = 0
    missing: str = WILDCARD  # wildcard: a missing target label matches anything; value: only missing
    own: str = "exclude"  # exclude: the query's own item is no gallery item; keep: it is (ADDE)
    edit_attributes: list[str] | None = None  # the attributes queries change; None: every one

    def protocol(self) -> dict:
        return {key: getattr(self, key) for key in PROTOCOL}

    def check(self) -> None:
        """One-line refusals of choices that cannot go together or do not exist."""
        if self.gallery not in GALLERIES:
            raise UserError(f"gallery is {' or '.join(GALLERIES)}, got {self.gallery!r}")
        if self.missing not in MISSING_RULES:
            raise UserError(f"missing labels are {' or '.join(MISSING_RULES)}, got {self.missing!r}")
        if self.own not in OWN_ITEM:
            raise UserError(f"the query's own item is {' or '.join(OWN_ITEM)}d, got {self.own!r}")
        if self.sample is not None and (self.limit is not None or self.sample < 1):
            raise UserError("a sample of queries is at least 1 and replaces the limit; give one of them")
        grader_sources(self.graders)  # a bad spec is refused before anything is loaded


def grader_sources(spec: str | None) -> dict[str, str]:
    """{grader name: shipped name or model folder as given} of a graders spec: what run.json
    records, so a rerun with other graders (or another folder under a name) is refused."""
    from amgan_search.registry import parse_graders

    return dict(parse_graders(spec))


def resolve_edit_attributes(names: Sequence[str] | None, schema: Schema) -> list[str] | None:
    """The attributes queries change, in the schema's order; None for every attribute (also when
    all are named, so one run is recorded one way). Unknown names: a UserError listing the valid."""
    if names is None:
        return None
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise UserError(f"no attribute to edit named; valid: {', '.join(schema.names)}")
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        raise UserError(f"unknown attribute to edit {unknown[0]!r}; the index's: "
                        f"{', '.join(schema.names)}")
    chosen = [n for n in schema.names if n in names]
    return None if chosen == schema.names else chosen


def gallery_where(gallery: str) -> dict | None:
    """The Searcher's `where` filter of a gallery choice."""
    return {"split": "test"} if gallery == "test" else None


def query_rows(n_split: int, limit: int | None, sample: int | None, seed: int) -> list[int]:
    """Rows of the split that are queries: the first `limit`, or `sample` drawn with `seed`."""
    if sample is None:
        return list(range(n_split if limit is None else min(limit, n_split)))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_split, size=min(sample, n_split), replace=False).tolist())


def _record_key(query, method, attribute, target) -> tuple:
    return (str(query), method, attribute, tuple(int(t) for t in target))


def _check_run(out: Path, run: dict) -> None:
    """A resumed run must be the same run: same index, catalog, split, limit, protocol, graders
    and enough k. A run.json of old without a protocol choice had its default; one without
    graders did not record its classifier, so any graders resume it."""
    from amgan_search.io import as_named, read_json, write_json

    path = out / RUN_JSON
    if path.is_file():
        old = read_json(path)
        keys = ("index", "index_digest", "db", "split", "limit", *PROTOCOL,
                *(["graders"] if "graders" in old else []))
        for key in keys:
            if as_named(old.get(key, PROTOCOL.get(key))) != as_named(run.get(key)):
                raise UserError(f"{path}: this folder holds a run with another {key} "
                                f"({old.get(key, PROTOCOL.get(key))!r}, now {run.get(key)!r}); "
                                "use another --out")
        if old.get("k_max", 0) < run["k_max"]:
            raise UserError(f"{path}: the queries there were searched to k={old.get('k_max')}, "
                            f"fewer than {run['k_max']}; use another --out")
        run = {**run, "k_max": old["k_max"]}
    write_json(path, run)


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run every method over the test split (resuming what queries.jsonl already holds) and summarise."""
    from amgan_search.catalog import Catalog
    from amgan_search.device import pick_device
    from amgan_search.index.evaluate.report import summarise, write_outputs
    from amgan_search.index.search import Searcher
    from amgan_search.io import JsonlWriter, read_jsonl
    from amgan_search.registry import load_graders

    config.check()
    device = pick_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    searcher = Searcher(config.index)
    embedder = searcher.embedder(device=device)
    schema = searcher.schema
    catalog = Catalog.open(config.db)
    if catalog.schema.to_dict() != schema.to_dict():
        raise UserError(f"{config.db}: its attribute schema differs from the index's ({config.index})")
    config = replace(config, edit_attributes=resolve_edit_attributes(config.edit_attributes, schema))
    check_methods(config.methods, config.edit_attributes or schema.names, schema)
    ks = parse_ks(config.ks)
    k_max = max(ks)
    gallery = searcher.allowed(gallery_where(config.gallery))
    if gallery is not None and not gallery.any():
        raise UserError(f"{config.index}: no indexed item is in the test split, so the test gallery is empty")
    graders = load_graders(config.graders, device)  # before run.json: a bad folder writes nothing
    _check_run(out, {"index": str(config.index),
                     "index_digest": searcher.info["embedder"].get("digest"),
                     "db": str(config.db), "split": config.split,
                     "limit": config.limit, **config.protocol(),
                     "graders": grader_sources(config.graders), "k_max": k_max})

    records_path = out / QUERIES
    done = {_record_key(r["query"], r["method"], r["attribute"], r["target"])
            for r in read_jsonl(records_path, repair=True)}
    runner = _Runner(config, searcher, graders, done, k_max, device)
    runner.scenes = truth_scenes(catalog)
    # fsync per batch: a kill loses at most the batch being written, and a rerun resumes after it.
    with JsonlWriter(records_path, durable=True, compact=True) as writer:
        for method in config.methods:
            loaded = method.load(catalog, searcher, embedder, device, progress=config.progress)
            runner.run_method(method, loaded, writer)
    summary = summarise(read_jsonl(records_path, repair=True), searcher, schema, ks, config)
    write_outputs(out, summary)
    return summary


def truth_scenes(catalog) -> dict | None:
    """The scene behind each item of a synthetic catalog (the truth grader's), else None."""
    from amgan_search.synthetic import load_scene_table

    root = Path(catalog.root)
    if catalog.format != "synthetic" or not (root / "catalog.csv").is_file():
        return None
    return {str(row.id): row.scene for row in load_scene_table(root)}


class _Runner:
    """What every method's queries share: the index, the CNN graders, the edited attributes and
    the keys of the records already written."""

    def __init__(self, config: BenchmarkConfig, searcher, graders: dict, done: set,
                 k_max: int, device: str):
        self.config, self.searcher, self.graders = config, searcher, graders
        self.schema: Schema = searcher.schema
        self.edited = [self.schema.position(a) for a in config.edit_attributes or self.schema.names]
        self.done, self.k_max, self.device = done, k_max, device
        self.where = gallery_where(config.gallery)
        self.scenes: dict | None = None  # item id -> scene on a synthetic catalog: truth graded

    def run_method(self, method: Method, loaded: Loaded, writer) -> None:
        """The method's queries over the split's query rows (`query_rows`), skipping those done."""
        from torch.utils.data import DataLoader, Subset
        from tqdm import tqdm

        from amgan_search.dataset import CatalogImages

        config, schema = self.config, self.schema
        size = loaded.editor.size or loaded.space.embedder.size
        dataset = CatalogImages(config.db, split=config.split, size=size)
        rows = query_rows(len(dataset), config.limit, config.sample, config.sample_seed)
        n = len(rows)
        if n == 0:
            raise UserError(f"{config.db}: no items in split {config.split!r}")
        split_ids = dataset.items["id"].astype(str).tolist()
        ids = [split_ids[r] for r in rows]
        labels = np.asarray(dataset.labels, dtype=np.int64)[rows]
        total = sum(len(query_targets(labels[i], schema, self.edited)) for i in range(n))
        todo = sum(1 for i in range(n) for j, v, t in query_targets(labels[i], schema, self.edited)
                   if _record_key(ids[i], method.name, schema.names[j], t) not in self.done)
        if todo == 0:
            return
        loader = DataLoader(Subset(dataset, rows), batch_size=config.batch_size,
                            num_workers=config.workers, shuffle=False)
        bar = tqdm(total=total, initial=total - todo, desc=f"benchmark {method.name}",
                   unit="query", disable=not config.progress, dynamic_ncols=True)
        start = 0
        for x, y in loader:
            batch_ids = ids[start:start + len(x)]
            start += len(x)
            fresh = self.run_batch(method, loaded, x, y.long(), batch_ids)
            writer.write(fresh)
            bar.update(len(fresh))
        bar.close()

    def run_batch(self, method: Method, loaded: Loaded, x, y, batch_ids: Sequence[str]) -> list[dict]:
        """Every (input, edited attribute, target) query of one batch not yet done -> records."""
        import torch

        editor, space = loaded
        searcher, records = space.searcher, []
        own_rows = np.array([searcher.row_of(i) if self.config.own == "exclude" else -1
                             for i in batch_ids], dtype=np.int64)
        unedited: dict = {"reads": {}}  # x itself: embedded (and read) once for every target
        refs: dict = {}  # the truth grader's references per query of the batch, drawn once
        for j in self.edited:
            attr = self.schema.attributes[j]
            for v in range(len(attr.values)):
                sel, targets = self.todo(method.name, y, batch_ids, j, v)
                if not sel:
                    continue
                reads, truth = None, None  # None: no image is read (a vector-only method)
                with torch.inference_mode():
                    if isinstance(editor, IdentityEditor):
                        f = self.unedited(space, x, unedited)[sel]
                        if not space.manipulates:  # `real`: the unedited image is what is read
                            reads, truth = self.unedited_reads(x, batch_ids, attr.name, unedited, refs)
                            reads = {g: [r[b] for b in sel] for g, r in reads.items()}
                            truth = None if truth is None else [truth[b] for b in sel]
                    else:
                        x_star, _ = editor.edit_batch(
                            x[sel].to(self.device), y[sel].to(self.device), j,
                            torch.full((len(sel),), v, dtype=torch.long, device=self.device),
                            items=[batch_ids[b] for b in sel])
                        f, reads = space.embed(x_star), self.read(x_star, attr.name)
                        truth = self.truth(x_star, batch_ids, sel, refs)
                    vectors = space.manipulate(f, y[sel].numpy(), j, targets[:, j].numpy())
                rows, _ = searcher.search(vectors, self.k_max, where=self.where,
                                          exclude_rows=own_rows[sel])
                for i, b in enumerate(sel):
                    found = rows[i][rows[i] >= 0]
                    records.append({
                        "query": batch_ids[b], "method": method.name, "attribute": attr.name,
                        "target": targets[i].tolist(),
                        "retrieved": [searcher.ids[r] for r in found],
                        # attributes of the target each result matches: NDCG's graded relevance
                        "relevance": relevance(targets[i].numpy(), searcher.labels[found],
                                               self.config.missing).tolist(),
                    })
                    if reads is not None:
                        records[-1]["predicted"] = {g: r[i] for g, r in reads.items()}
                    if truth is not None:
                        records[-1]["truth"] = truth[i]
                    self.done.add(_record_key(batch_ids[b], method.name, attr.name, targets[i].tolist()))
        return records

    def unedited(self, space, x, cache: dict) -> np.ndarray:
        """The space's vectors of the unedited batch x, computed once per batch."""
        if "vectors" not in cache:
            cache["vectors"] = space.embed(x)
        return cache["vectors"]

    def unedited_reads(self, x, batch_ids: Sequence[str], attribute: str, cache: dict, refs: dict):
        """(CNN readings of `attribute`, truth readings) of the unedited batch x, each computed
        once per batch (readings once per attribute) and kept in `cache`."""
        if "truth" not in cache:
            cache["truth"] = self.truth(x, batch_ids, range(len(x)), refs)
        if attribute not in cache["reads"]:
            cache["reads"][attribute] = self.read(x, attribute)
        return cache["reads"][attribute], cache["truth"]

    def todo(self, method: str, y, batch_ids: Sequence[str], j: int, v: int):
        """(rows of the batch whose query for value v of attribute j is not done, their targets)."""
        targets = y.clone()
        targets[:, j] = v
        name = self.schema.names[j]
        sel = [b for b in range(len(batch_ids)) if y[b, j].item() != v
               and _record_key(batch_ids[b], method, name, targets[b].tolist()) not in self.done]
        return sel, targets[sel]

    def truth(self, x, batch_ids: Sequence[str], sel, refs: dict) -> list[dict] | None:
        """The truth grader's reading of each image x [B,3,S,S] of the rows `sel` of the batch
        (against its query's scene; refs caches the references per query), or None when the
        catalog is not synthetic."""
        from amgan_search.images import to_uint8
        from amgan_search.metrics.truth import References, grade_with

        if self.scenes is None:
            return None
        readings = []
        for image, b in zip(to_uint8(x), sel):
            if b not in refs:
                scene = self.scenes.get(str(batch_ids[b]))
                if scene is None:
                    raise UserError(f"{self.config.db}: item {batch_ids[b]!r} has no scene in "
                                    "the synthetic catalog's catalog.csv")
                refs[b] = References(scene, image.shape[0])
            readings.append(grade_with(image, refs[b]))
        return readings

    def read(self, x, attribute: str) -> dict[str, list[str | None]]:
        """Each CNN grader's reading of `attribute` on images x: {grader: [value name or None]}
        (None throughout from a grader that does not know the attribute)."""
        from amgan_search.nets.classifier import read_attribute

        return {name: read_attribute(grader, x, attribute) for name, grader in self.graders.items()}
