"""Catalog embedding: the CNN+CAM classifier's avg-pool features, L2-normalised, in batches.

A DataLoader with worker processes decodes and resizes images while the model runs, so decoding
never starves the forward pass. Under `torchrun` each rank embeds a contiguous shard of the
catalog; `index.build` merges the shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from amgan_search.errors import UserError


@dataclass
class Embedder:
    """A model with `embed(x [B,3,S,S] in [0,1]) -> [B,C]` plus what an index records about it.

    `precision` (see `use_precision`) is fp32 unless asked: the catalog is embedded in fp32, on
    purpose. Its vectors are what every query is compared with, so they stay the same on every
    machine (bf16 would make an index depend on the CPU that built it), and no bf16 build was
    measured faster here: on a CPU without native bf16 it is slower. Only the query, one image,
    runs in bf16 where the hardware has it, checked by its top-10 agreement with fp32
    (perf/query_latency.py).
    """

    model: Any
    size: int
    dim: int
    digest: str
    path: str | None = None  # None: the shipped CAM classifier, so an index stays portable
    device: str = "cpu"
    precision: str = "fp32"
    fast: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.use_precision(self.precision)

    def use_precision(self, precision: str) -> "Embedder":
        """Embed in `precision` ("fp32", "bf16", or "auto": bf16 where the device has it natively)."""
        from amgan_search.device import FastPath, prepare_module, resolve_precision

        self.precision = resolve_precision(precision, str(self.device))
        prepare_module(self.model, self.precision)
        self.fast = FastPath(self.model.embed, self.precision, str(self.device))
        return self

    def compile_steps(self, batch_sizes=(1,)) -> list:
        """What `device.compile_paths` compiles: the embedding, warmed up at these batch sizes."""
        import torch

        return [("the embedder", self.fast,
                 [lambda b=b: self(torch.rand(b, 3, self.size, self.size)) for b in batch_sizes])]

    def __call__(self, x) -> np.ndarray:
        """Float [0, 1] NCHW at any size -> float32 [B, C], L2-normalised."""
        import torch
        import torch.nn.functional as F

        from amgan_search.images import resize_batch

        with torch.inference_mode():
            x = resize_batch(torch.as_tensor(x).float(), self.size, antialias=True)
            v = self.fast(x.to(self.device)).float()
            # The classifier already normalises; again here so inner product is cosine for any model.
            v = F.normalize(v, dim=1)
        return v.cpu().numpy().astype(np.float32, copy=False)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 at any size -> [1, d], through the square fit the catalog images had."""
        from amgan_search.images import fit_square, to_tensor

        return self(to_tensor(fit_square(image, self.size)[0]))

    def meta(self) -> dict:
        """What index.json records about the embedder."""
        return {"path": self.path, "digest": self.digest, "dim": self.dim, "size": self.size}


def load_embedder(path: str | Path | None = None, device: str | None = None) -> Embedder:
    """The model at `path` as an Embedder: a CAM classifier (None: the shipped one) or a
    disentangled embedding (`nets.adde`), by what its config.json says it is."""
    from amgan_search.checkpoint import CONFIG
    from amgan_search.device import pick_device
    from amgan_search.io import read_json
    from amgan_search.nets.classifier import classifier_digest
    from amgan_search.registry import load_model, shipped_model

    device = pick_device(device)
    resolved = Path(path).expanduser().resolve() if path is not None else shipped_model("classifier-cam")
    config = read_json(resolved / CONFIG) if (resolved / CONFIG).is_file() else {}
    kind = "encoder" if isinstance(config, dict) and config.get("kind") == "adde" else "classifier"
    model = load_model(resolved, kind, device=device)
    return Embedder(model=model, size=int(model.size), dim=int(model.embed_dim),
                    digest=classifier_digest(resolved),
                    path=str(resolved) if path is not None else None, device=device)


def index_embedder(index_dir: str | Path, path: str | Path | None = None, device: str | None = None,
                   info: dict | None = None) -> Embedder:
    """The embedder an index was built with (or the one at `path`), checked against its digest."""
    from amgan_search.index.index_dir import check_embedder, load_info

    info = info if info is not None else load_info(index_dir)
    embedder = load_embedder(path if path is not None else info["embedder"].get("path"), device=device)
    check_embedder(info, embedder, index_dir)
    return embedder


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of rank's share of n rows: shards concatenate back to row order."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def embed_dataset(embedder: Embedder, dataset, batch_size: int = 128, workers: int = 2,
                  progress: bool = True, desc: str = "embedding") -> np.ndarray:
    """Every image of a dataset yielding (image [3,S,S], ...) -> float32 [n, C] in dataset order."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    n = len(dataset)
    out = np.empty((n, embedder.dim), dtype=np.float32)
    if n == 0:
        return out
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=embedder.device.startswith("cuda"),
                        persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
    row = 0
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            v = embedder(x)
            out[row:row + len(v)] = v
            row += len(v)
            bar.update(len(v))
    if row != n:  # a dataset whose __len__ lies would leave rows unset
        raise UserError(f"{desc}: expected {n} images, got {row}")
    return out


def catalog_dataset(db: str | Path, size: int, positions: Sequence[int] | None = None):
    """(dataset, items DataFrame) over the whole catalog, optionally restricted to row positions."""
    from torch.utils.data import Subset

    from amgan_search.dataset import CatalogImages

    dataset = CatalogImages(str(db), split=None, size=size, augment=False)
    items = dataset.items.reset_index(drop=True)
    if positions is not None:
        positions = list(positions)
        return Subset(dataset, positions), items.iloc[positions].reset_index(drop=True)
    return dataset, items


def forward_throughput(embedder: Embedder, batch_size: int = 128, batches: int = 5) -> float:
    """Images/s of the embedder alone on random input (no decoding): the ceiling for a build."""
    import torch

    x = torch.rand(batch_size, 3, embedder.size, embedder.size)
    embedder(x[:2])  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for _ in range(batches):
        embedder(x)
    return batch_size * batches / (time.perf_counter() - start)
