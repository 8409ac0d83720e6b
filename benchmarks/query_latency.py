"""Query latency in a warm process: edit + embed + search + metadata over a 10,000-item index.

Each stage is timed alone and the whole `Retriever.query` is timed end to end on the same image;
the overhead ratio (whole p50 / sum of the stage p50s) shows what the pipeline adds around its
stages (1.0 = nothing). The shipped models are used when they are there; otherwise untrained models
of the shipped shapes (a ResNet-18 classifier and the shipped AMGAN generator's widths): their cost
does not depend on their weights. The index holds synthetic unit vectors of the embedder's size,
with synthetic metadata: search cost depends on the count and dimension, not on what the vectors mean.

    python benchmarks/query_latency.py [--tiny] [--repeats 50] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _models(tiny: bool):
    """(embedder, manipulator, note): shipped when present, else untrained of the same shapes."""
    import torch

    from amgan_search.editors import Manipulator
    from amgan_search.registry import load_model
    from amgan_search.errors import UserError
    from amgan_search.index.embed import Embedder, load_embedder
    from amgan_search.registry import shipped_model

    if not tiny:
        try:
            shipped_model("classifier-cam")
            shipped_model("amgan")
            return (load_embedder(None, device="cpu"), load_model(None, "editor", device="cpu"),
                    "shipped classifier-cam + amgan")
        except UserError:
            pass
    from amgan_search.nets.amgan import EditNet
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA
    from amgan_search.train.config import AmganConfig

    size = 32 if tiny else 64
    torch.manual_seed(0)
    classifier = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=size).eval()
    conv, blocks = (8, 1) if tiny else (64, 6)  # the shipped 64x64 generator's widths (its card)
    net = EditNet(DEFAULT_SCHEMA.condition_dim, conv_dim=conv, repeat_num=blocks,
                  attention="generator", upsample=AmganConfig.g_upsample)
    config = {"kind": "amgan", "schema": DEFAULT_SCHEMA.to_dict(), "size": size}
    manipulator = Manipulator(net, DEFAULT_SCHEMA, size, classifier, config, device="cpu")
    embedder = Embedder(classifier, size=size, dim=classifier.embed_dim, digest="untrained")
    return embedder, manipulator, f"untrained resnet18 + generator({conv}, {blocks} blocks) at {size}px"


def _index(out: Path, embedder, n: int, seed: int = 0) -> None:
    import pandas as pd

    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.index_dir import item_records
    from amgan_search.schema import DEFAULT_SCHEMA

    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, embedder.dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.stack([rng.integers(0, len(a.values), n) for a in DEFAULT_SCHEMA.attributes], 1)
    items = pd.DataFrame({"id": [f"item{i}" for i in range(n)],
                          "path": [f"/catalog/img/{i}.jpg" for i in range(n)],
                          "split": "train", "category": "top", "gender": rng.choice(["female", "male"], n)})
    build_from_vectors(out, v, labels, item_records(items, labels, DEFAULT_SCHEMA),
                       DEFAULT_SCHEMA, embedder.meta(), index_type="auto")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def run(tiny: bool = False, repeats: int | None = None, n: int = 10_000) -> list[dict]:
    import torch

    from amgan_search.index.retrieve import Retriever
    from amgan_search.index.search import Searcher

    repeats = repeats or (5 if tiny else 50)
    n = 2_000 if tiny else n
    embedder, manipulator, note = _models(tiny)
    with tempfile.TemporaryDirectory() as tmp:
        _index(Path(tmp) / "index", embedder, n)
        retriever = Retriever(Path(tmp) / "index", searcher=Searcher(Path(tmp) / "index", use_gpu=False),
                              embedder=embedder, manipulator=manipulator)
        image = np.random.default_rng(1).integers(0, 256, (128, 128, 3)).astype(np.uint8)
        targets = {"color": "red"}
        stages = {
            "edit": lambda: retriever.edit(image, targets),
            "embed": lambda: retriever.embed_image(image),
        }
        vec = retriever.embed_image(image)
        rows, scores = retriever.searcher.search(vec, 10)
        stages["search"] = lambda: retriever.searcher.search(vec, 10)
        stages["metadata"] = lambda: retriever.searcher.results(rows, scores)
        stages["whole query"] = lambda: retriever.query(image, targets, k=10)
        times: dict[str, list[float]] = {name: [] for name in stages}
        with torch.inference_mode():
            for fn in stages.values():  # warm-up: allocations, kernel choice, caches
                fn()
            for _ in range(repeats):  # interleaved, so drift on a shared machine hits all alike
                for name, fn in stages.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
    rows_out = []
    p50 = {}
    for name, ts in times.items():
        a, b = _percentiles(ts)
        p50[name] = a
        rows_out.append({"measure": f"{name} p50", "value": round(a, 3), "unit": "ms",
                         "note": f"p95 {b:.3f} ms; {repeats} runs; {n:,}-item index; {note}"})
        rows_out.append({"measure": f"{name} p95", "value": round(b, 3), "unit": "ms"})
    parts = sum(p50[s] for s in ("edit", "embed", "search", "metadata"))
    rows_out.append({"measure": "whole query p50 vs sum of stage p50s", "value": round(p50["whole query"], 3),
                     "unit": "ms", "baseline": "sum of stages", "baseline_value": round(parts, 3),
                     "ratio": round(p50["whole query"] / parts, 3)})
    return rows_out


if __name__ == "__main__":  # `python -m benchmarks.query_latency`, or the script: reach the package
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.run import standalone

    standalone(run, __doc__.splitlines()[0], repeats="queries timed per stage")
