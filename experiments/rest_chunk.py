"""Which rest chunk keeps what no label names through a manipulation? The harder setting's crux.
python experiments/rest_chunk.py EVAL_DB [TRUNK] [SAMPLE] ranks, for the benchmark's queries (a
sample of SAMPLE test images, seed 0, default 100: each colour and sleeve changed to every other
value), the items of the catalog by the true colour and sleeve of the target first (perfect
attribute chunks: what a trained one can at best do) and then by each candidate rest chunk's
cosine to the query's. Every candidate is computed from the images alone (no pattern or neckline
label): what the trunk (a classifier folder, default the shipped classifier-cam) sees of them,
and means over the catalog's training split. Printed per candidate: how many of the top 30 among
the items of the target's colour and sleeve share the query's pattern (a random order gives the
share of that pattern, about 0.25; the true pattern 1), top-30 and ADDE's NDCG@30. Rows are
appended to docs/results/experiments/rest_chunk.jsonl."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from amgan_search.catalog import Catalog
from amgan_search.dataset import CatalogImages
from amgan_search.index.evaluate.benchmark import query_rows
from amgan_search.metrics.retrieval import adde_ndcg
from amgan_search.registry import load_model
from experiment import append_row, arguments

K = 30


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def features(trunk, db: str) -> dict[str, np.ndarray]:
    """Per image: the trunk's pooled features (conv5 and layer2) of the picture, of its
    contrast-normalised grey version, and of the grey version's first layers pooled over the
    garment (the colour head's CAM)."""
    from torch.utils.data import DataLoader

    out: dict[str, list] = {}
    b = trunk.backbone
    with torch.inference_mode():
        for x, _ in DataLoader(CatalogImages(db, split=None, size=trunk.size), batch_size=128):
            z = b.maxpool(b.relu(b.bn1(b.conv1((x - trunk.mean) / trunk.std))))
            l2 = b.layer2(b.layer1(z))
            l4 = b.layer4(b.layer3(l2))
            out.setdefault("trunk", []).append(l4.mean((2, 3)))
            out.setdefault("layer2", []).append(l2.mean((2, 3)))
            grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
            mu, sd = grey.mean((1, 2, 3), keepdim=True), grey.std((1, 2, 3), keepdim=True)
            g = ((grey - mu) / (sd + 1e-6) * 0.25 + 0.5).clamp(0, 1).expand(-1, 3, -1, -1)
            out.setdefault("grey", []).append(trunk.pooled(g.contiguous()))
            cam = torch.einsum("bchw,bc->bhw", l4, trunk.heads[0].weight[
                trunk.heads[0](l4.mean((2, 3))).argmax(1)]).relu()
            l1 = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1((g - trunk.mean) / trunk.std)))))
            w = F.interpolate(cam[:, None], size=l1.shape[-2:], mode="bilinear")
            out.setdefault("garment texture", []).append(
                (l1 * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-6))
    return {k: torch.cat(v).float().numpy() for k, v in out.items()}


def residual(f: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features minus the mean of their colour and sleeve's combination (training split)."""
    key = labels[:, 0] * 100 + labels[:, 1]
    means = {k: f[train & (key == k)].mean(0) for k in np.unique(key)}
    return f - np.stack([means[k] for k in key])


def nullspace(f: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features with the span of colour's and sleeve's class means (training split) removed."""
    mu = f[train].mean(0)
    dirs = [f[train & (labels[:, j] == v)].mean(0) - mu for j in (0, 1)
            for v in np.unique(labels[:, j])]
    q, _ = np.linalg.qr(np.stack(dirs, 1))
    return (f - mu) - ((f - mu) @ q) @ q.T


def measure(rest: np.ndarray, labels: np.ndarray, queries) -> dict:
    rest = unit(rest)
    same, hits, ndcg = [], [], []
    for r, target in queries:
        group = np.flatnonzero((labels[:, 0] == target[0]) & (labels[:, 1] == target[1]))
        group = group[group != r]
        top = group[np.argsort(-(rest[group] @ rest[r]), kind="stable")[:K]]
        if len(top):
            same.append(float((labels[top, 2] == labels[r, 2]).mean()))
        hits.append(bool((labels[top] == target).all(axis=1).any()))
        ndcg.append(adde_ndcg((labels[top] == target).sum(axis=1), labels.shape[1], K))
    return {"same_pattern@30": round(float(np.mean(same)), 3),
            "top30": round(float(np.mean(hits)), 3), "adde_ndcg30": round(float(np.mean(ndcg)), 3)}


def main(db: str, trunk_dir: str | None, sample: int) -> None:
    catalog = Catalog.open(db)
    if catalog.schema.names[:3] != ["color", "sleeve", "pattern"]:
        sys.exit(f"{db}: needs the harder setting's catalog (color, sleeve, pattern, neckline)")
    items = catalog.items()
    labels = np.asarray(catalog.labels(items), dtype=np.int64)
    split = items["split"].astype(str).to_numpy()
    train, test = split == "train", np.flatnonzero(split == "test")
    queries = []
    for r in test[query_rows(len(test), None, sample, 0)]:
        for j, n in ((0, len(catalog.schema.attributes[0].values)),
                     (1, len(catalog.schema.attributes[1].values))):
            for v in range(n):
                if v != labels[r, j]:
                    target = labels[r].copy()
                    target[j] = v
                    queries.append((r, target))
    torch.set_num_threads(1)
    f = features(load_model(trunk_dir, "classifier", "cpu"), db)
    rng = np.random.default_rng(0)
    candidates = {
        "random": rng.normal(size=(len(labels), 16)),
        "true pattern (a label the setting lacks)": np.eye(4)[labels[:, 2]] + 1e-3 * rng.normal(size=(len(labels), 4)),
        "trunk": f["trunk"],
        "trunk, residual of colour x sleeve": residual(f["trunk"], labels, train),
        "trunk, colour and sleeve means projected out": nullspace(f["trunk"], labels, train),
        "layer2, residual of colour x sleeve": residual(f["layer2"], labels, train),
        "contrast-normalised grey": f["grey"],
        "garment texture (grey, CAM-pooled layer1)": f["garment texture"],
    }
    print(f"{len(queries)} queries; per candidate: same pattern among the top {K} of the "
          "target's colour and sleeve, top-30, ADDE's NDCG@30")
    for name, rest in candidates.items():
        append_row("rest_chunk.jsonl", {"db": db, "trunk": trunk_dir or "classifier-cam",
                                        "sample": sample, "rest": name,
                                        **measure(rest, labels, queries)})


if __name__ == "__main__":
    args = arguments(__doc__, 1, 3)
    main(args[0], (args[1] or None) if len(args) > 1 else None,
         int(args[2]) if len(args) > 2 else 100)
