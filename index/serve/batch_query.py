"""The query pipeline over a batch of queries, each answered as `Retriever.query` answers it alone.

A batch may mix methods (`index.methods`): its jobs are grouped by method and each group runs
through that method's editor and space (`run_method`), stage by stage, so that each model runs
once per group:
- edit (`edit_many`, methods that edit pixels): one fit to the generator's square per photo, one
  reading of the current attributes for all, then the targets applied attribute by attribute in
  schema order, each step one `Manipulator.edit_batch` call over the queries that edit that
  attribute (each row with its own target value: the condition m is per row), and the region
  masks (`only_region`) likewise. The editor's forward pass treats rows independently, so every
  edit and mask is the one the query would get alone (the tests check them bitwise against
  `Manipulator.edit`);
- embed (`embed_many`): the square fits stacked into one forward pass of the space's embedder;
  then, for a method that moves vectors (`prototype`, `adde`, the hybrid), each row moved toward
  its own targets (`retrieve.manipulate_rows`, as `Retriever.query` moves one). Summation order in
  a batched forward pass may change the last float bits (measured: up to 3e-8), so scores agree
  with the unbatched query's to 1e-6 and the ranking is the same but for exact ties;
- search: one FAISS call per distinct (k, where) in the group, in the space's index, joined with
  the metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from amgan_search.editors import REGION_THRESHOLD, combine_masks, compose
from amgan_search.images import fit_square, to_tensor
from amgan_search.index.retrieve import manipulate_rows
from amgan_search.index.search import Hit


@dataclass
class Job:
    """One query: the start photo (uint8 HxWx3), checked targets, what to search, and the name of
    the method that answers it."""

    image: np.ndarray
    targets: dict[str, str] = field(default_factory=dict)
    only_region: str | None = None
    k: int = 10
    where: dict[str, str] | None = None
    search: bool = True  # False: the edit alone
    method: str = field(kw_only=True)


@dataclass
class Outcome:
    """A job's answer: the edit and its combined mask (None unedited), targets applied, results,
    the method that answered."""

    edited: np.ndarray | None
    mask: np.ndarray | None
    targets: dict[str, str]
    results: list[Hit] | None
    timing_ms: dict[str, float]
    method: str
    batch: int = 1


def run_jobs(retrievers: Mapping[str, object], jobs: Sequence[Job]) -> list[Outcome]:
    """A batch of jobs, each group of one method through its retriever (`run_method`); the
    outcomes in the jobs' order. `retrievers`: {method name: `Retriever`}."""
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.method, []).append(i)
    out: list = [None] * len(jobs)
    for name, rows in groups.items():
        for i, outcome in zip(rows, run_method(retrievers[name], [jobs[i] for i in rows])):
            outcome.batch = len(jobs)
            out[i] = outcome
    return out


def run_method(retriever, jobs: Sequence[Job]) -> list[Outcome]:
    """Edit, embed (and move) and search jobs of the retriever's method, one model pass per
    stage. timing_ms: the stages of this group (moving the vectors counts in "embed")."""
    t0 = time.perf_counter()
    method, space = retriever.method, retriever.space
    editing = [i for i, j in enumerate(jobs) if j.targets and method.edits_pixels]
    edits: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    if editing:
        done = edit_many(retriever.manipulator, [jobs[i].image for i in editing],
                         [jobs[i].targets for i in editing], [jobs[i].only_region for i in editing])
        edits = dict(zip(editing, done))
    t1 = time.perf_counter()
    searching = [i for i, j in enumerate(jobs) if j.search]
    pictures = [edits[i][0] if i in edits else jobs[i].image for i in searching]
    vectors = None
    if pictures:
        vectors = manipulate_rows(space, retriever.schema, embed_many(space.embedder, pictures),
                                  [jobs[i].targets for i in searching])
    t2 = time.perf_counter()
    results = search_many(space.searcher, vectors, [jobs[i] for i in searching])
    t3 = time.perf_counter()
    timing = {"edit": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3, "search": (t3 - t2) * 1e3}
    found = dict(zip(searching, results))
    moved = {i for i in searching if space.manipulates}
    return [Outcome(*(edits.get(i) or (None, None)),
                    dict(job.targets) if i in edits or i in moved else {}, found.get(i),
                    dict(timing), method.name, len(jobs))
            for i, job in enumerate(jobs)]


def embed_many(embedder, images: Sequence[np.ndarray]) -> np.ndarray:
    """Photos of any sizes -> [B, d]: each fit square as `Embedder.embed_image` fits it, one pass."""
    return embedder(to_tensor([fit_square(np.asarray(im, dtype=np.uint8), embedder.size)[0]
                               for im in images]))


def search_many(searcher, vectors, jobs: Sequence[Job]) -> list[list[Hit]]:
    """Top-k results per job, one FAISS search per distinct (k, where)."""
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = (job.k, tuple(sorted((job.where or {}).items())))
        groups.setdefault(key, []).append(i)
    out: list[list[Hit]] = [[] for _ in jobs]
    for (k, where), rows in groups.items():
        found, scores = searcher.search(vectors[rows], k, where=dict(where) or None)
        for i, hits in zip(rows, searcher.results(found, scores)):
            out[i] = hits
    return out


def edit_many(manipulator, images: Sequence[np.ndarray], targets: Sequence[Mapping[str, str]],
              regions: Sequence[str | None]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """`Manipulator.edit` over a batch -> per photo (edited uint8 HxWx3, combined mask uint8 HxW)."""
    import torch

    m = manipulator
    wanted = [m.check_targets(t) for t in targets]
    images = [np.asarray(im, dtype=np.uint8) for im in images]
    fits = [fit_square(im, m.size) for im in images]
    x = to_tensor([sq for sq, _ in fits]).to(m.device)
    labels = m.predict(x)
    region = _regions(m, x, labels, regions)
    out, keep = x, torch.ones_like(x[:, :1])
    masks: list[dict] = [{} for _ in images]
    for j in sorted(set().union(*wanted)):
        rows = [i for i, w in enumerate(wanted) if j in w]
        sel = torch.tensor(rows)
        x_star, alpha = m.edit_batch(out[sel], labels[sel], j,
                                     torch.tensor([wanted[i][j] for i in rows]))
        out, keep, labels = out.clone(), keep.clone(), labels.clone()
        for n, i in enumerate(rows):
            a, xs = alpha[n:n + 1], x_star[n:n + 1]
            if region[i] is not None:
                a = a * region[i]
                xs = region[i] * xs + (1 - region[i]) * out[i:i + 1]
            out[i:i + 1] = xs
            labels[i, j] = wanted[i][j]
            keep[i:i + 1] = keep[i:i + 1] * (1 - a)
            masks[i][m.schema.attributes[j].name] = a
    for i, r in enumerate(region):
        if r is not None:
            masks[i]["region"] = r
    return [_compose(images[i], out[i:i + 1], keep[i:i + 1], masks[i], fits[i][1])
            for i in range(len(images))]


def _regions(m, x, labels, regions: Sequence[str | None]) -> list:
    """Per row the region mask [1,1,S,S] of its `only_region` (None for none): one
    `edit_batch` per region attribute, as `Manipulator.edit` makes it for one photo."""
    import torch

    out: list = [None] * len(regions)
    parsed = {i: m.parse_region(r) for i, r in enumerate(regions) if r is not None}
    for j in sorted({j for j, _ in parsed.values()}):
        rows = [i for i, (jj, _) in parsed.items() if jj == j]
        sel = torch.tensor(rows)
        _, alpha = m.edit_batch(x[sel], labels[sel], j, torch.tensor([parsed[i][1] for i in rows]))
        for n, i in enumerate(rows):
            out[i] = (alpha[n:n + 1] > REGION_THRESHOLD).float()
    return out


def _compose(image, out, keep, masks, box) -> tuple[np.ndarray, np.ndarray | None]:
    """The edit at the photo's own resolution (`editors.compose`, as `Manipulator.edit` does) and
    the masks combined as `Retriever.edit` combines them."""
    edited, full = compose(image, out, keep, masks, box)
    return edited, combine_masks(full)
