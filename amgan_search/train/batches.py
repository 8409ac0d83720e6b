"""What an AMGAN iteration reads: its batch in the seed's order, L_p's references, the targets.

Everything here is decided by the seed and the rank alone, so a resumed run reads exactly the
batches an uninterrupted one would have read.
"""

from __future__ import annotations

import numpy as np
import torch

from amgan_search.errors import UserError
from amgan_search.schema import MISSING


class DataOrder:
    """Deterministic batches from the seed: epoch e is a permutation drawn from (seed, e), rank r
    takes every world-th index of it (a DistributedSampler-like shard), batches drop the tail."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 epoch: int = 0, pos: int = 0):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_rank = n // world
        if self.per_rank < batch_size:
            raise UserError(f"{n} training items are too few for {world} process(es) of batch "
                            f"size {batch_size}")
        self.epoch, self.pos = epoch, pos

    def batches(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        shard = perm[self.rank::self.world][: self.per_rank]
        k = self.per_rank // self.batch_size
        return shard[: k * self.batch_size].reshape(k, self.batch_size)

    def __iter__(self):
        while True:
            order = self.batches(self.epoch)
            while self.pos < len(order):
                self.pos += 1
                yield order[self.pos - 1]
            self.epoch, self.pos = self.epoch + 1, 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def batch_stream(dataset, order: DataOrder, workers: int = 0):
    """Yield (x, labels, indices) in `order`; workers prefetch, the order stays the seed's."""
    if workers == 0:
        for idx in order:
            xs, ys = zip(*(dataset[int(i)] for i in idx))
            yield torch.stack(xs), torch.stack(ys), torch.as_tensor(idx)
        return
    while True:
        # One loader per epoch over the batches left in it: resumes start mid-epoch.
        epoch, start = order.epoch, order.pos
        left = [list(map(int, b)) for b in order.batches(epoch)[start:]]
        loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_sampler=left,
                                             num_workers=workers)
        for k, batch in enumerate(loader):
            order.pos = start + k + 1
            yield batch
        order.epoch, order.pos = epoch + 1, 0


def group_keys(dataset) -> np.ndarray | None:
    """Per item: (category, gender) as strings where the data has them, else None."""
    items = getattr(dataset, "items", None)
    if items is None:
        return None
    cols = [c for c in ("category", "gender") if c in items.columns and items[c].notna().any()]
    if not cols:
        return None
    return items[cols].astype(str).agg("|".join, axis=1).to_numpy()


class ReferencePicker:
    """Draws L_p's reference image: an item whose attributes all equal the target vector.

    Items are grouped once by their whole label vector (plus category and gender where the data has
    them, taken from the input item), which is the catalog's `matching` query done in memory. When
    no item has the whole target vector, the reference is an item with the manipulated attribute's
    target value only; when not even that exists, the sample has no reference and its L_p is masked
    out. A missing value (-1) in the target matches items missing it too.
    """

    def __init__(self, labels: np.ndarray, group_keys: np.ndarray | None = None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.group_keys = group_keys
        self.exact: dict[tuple, np.ndarray] = {}
        keys = [tuple(row) + ((group_keys[i],) if group_keys is not None else ())
                for i, row in enumerate(self.labels.tolist())]
        buckets: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            buckets.setdefault(k, []).append(i)
        self.exact = {k: np.asarray(v) for k, v in buckets.items()}
        self.by_value = [
            {int(v): np.nonzero(self.labels[:, j] == v)[0] for v in np.unique(self.labels[:, j])}
            for j in range(self.labels.shape[1])
        ]

    def pick(self, target: np.ndarray, attribute: int, rng: np.random.Generator,
             source: np.ndarray | None = None) -> np.ndarray:
        """Item index per row of `target` [B, M] (inputs' items: `source`), -1 for none."""
        out = np.full(len(target), -1, dtype=np.int64)
        for b, row in enumerate(np.asarray(target).tolist()):
            key = tuple(row)
            if self.group_keys is not None and source is not None:
                key += (self.group_keys[int(source[b])],)
            pool = self.exact.get(key)
            if pool is None:
                pool = self.by_value[attribute].get(int(row[attribute]))
            if pool is not None and len(pool):
                out[b] = pool[rng.integers(len(pool))]
        return out


def sample_targets(labels: torch.Tensor, attribute: int, n_values: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The labels with `attribute` set to a random value different from the current one."""
    trg = labels.clone()
    cur = labels[:, attribute]
    if n_values == 1:
        trg[:, attribute] = 0
        return trg
    shift = torch.randint(1, n_values, cur.shape, generator=generator)
    any_value = torch.randint(0, n_values, cur.shape, generator=generator)
    trg[:, attribute] = torch.where(cur == MISSING, any_value, (cur + shift) % n_values)
    return trg


def reference_images(dataset, idx: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of the items `idx` (black where -1) and a mask of the rows that have one."""
    imgs = torch.stack([dataset[int(i)][0] if i >= 0 else torch.zeros(3, size, size) for i in idx])
    return imgs, torch.as_tensor(idx >= 0, dtype=torch.float32)
