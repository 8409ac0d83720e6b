"""Catalog embedding: the CNN+CAM classifier's avg-pool features, L2-normalised, in batches.

A DataLoader with worker processes decodes and resizes images while the model runs, so decoding
never starves the forward pass. Under `torchrun` each rank embeds a contiguous shard of the
catalog; `index.store` merges the shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from amgan_search.errors import UserError


@dataclass
class Embedder:
    """A model with `embed(x [B,3,S,S] in [0,1]) -> [B,C]` plus what an index records about it."""

    model: Any
    size: int
    dim: int
    digest: str
    path: str | None = None  # None: the shipped CAM classifier, so an index stays portable
    device: str = "cpu"

    def __call__(self, x) -> np.ndarray:
        """Float [0, 1] NCHW at any size -> float32 [B, C], L2-normalised."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.as_tensor(x).float()
            if x.shape[-2:] != (self.size, self.size):
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)
            v = self.model.embed(x.to(self.device)).float()
            # The classifier already normalises; again here so inner product is cosine for any model.
            v = F.normalize(v, dim=1)
        return v.cpu().numpy().astype(np.float32, copy=False)

    def meta(self) -> dict:
        return {"path": self.path, "digest": self.digest, "dim": self.dim, "size": self.size}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embedder(path: str | Path | None = None, device: str | None = None) -> Embedder:
    """The CAM classifier at `path` (None: the shipped one) as an Embedder."""
    from amgan_search.checkpoint import shipped_model
    from amgan_search.classifier import classifier_digest, load_classifier

    device = device or default_device()
    resolved = Path(path).expanduser().resolve() if path is not None else shipped_model("classifier-cam")
    model = load_classifier(resolved, role="cam", device=device)
    model.eval()
    return Embedder(model=model, size=int(model.config["size"]), dim=int(model.embed_dim),
                    digest=classifier_digest(resolved),
                    path=str(resolved) if path is not None else None, device=device)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of rank's share of n rows: shards concatenate back to row order."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def embed_dataset(embedder: Embedder, dataset, batch_size: int = 128, workers: int = 2,
                  progress: bool = True, desc: str = "embedding") -> np.ndarray:
    """Every image of a dataset yielding (image [3,S,S], ...) -> float32 [n, C] in dataset order."""
    import torch
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

    from amgan_search.data import CatalogImages

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
