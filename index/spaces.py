"""Where a method's query vector lives, and the index it searches there.

A method (`index.methods`) is an editor of pixels (`editors`) followed by a space of vectors:
- `IndexSpace`: the index's own embedding of the (edited) image; real, oracle and the GANs.
- `PrototypeSpace`: the index's embedding moved by class means, f - mean(old) + mean(new), the
  means taken over the index's training items: no training at all, the floor a trained method
  must clear.
- `MemorySpace`: a disentangled embedding (`nets.adde`) manipulated with its attribute memory
  (ADDE's f - M[old] + M[new], or the chunk set to M[new] for an image already edited), searched
  in an index of the same catalog embedded with its own encoder (`space_index`: built once beside
  the base index and reused while it holds the same items).

Every space answers the same calls: `embed(x)` (images [B,3,S,S] in [0,1] -> [B, D], L2-
normalised), `read(f)` (the values the vectors show, for a shopper's photo whose labels nobody
gave), `manipulate(f, labels, attribute, target)` (attribute: a position in the index's schema),
and `searcher`, its index. Labels and attributes are in the index's schema throughout; a model of
fewer attributes is seen through it by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amgan_search.errors import UserError
from amgan_search.index.search import Searcher
from amgan_search.schema import MISSING, Schema


def _normalised(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class IndexSpace:
    """The index's own embedding; no manipulation."""

    manipulates = False

    def __init__(self, searcher: Searcher, embedder):
        self.searcher, self.embedder = searcher, embedder

    def embed(self, x) -> np.ndarray:
        return self.embedder(x)

    def read(self, f: np.ndarray) -> np.ndarray:
        return np.full((len(f), self.searcher.schema.n_attributes), MISSING, dtype=np.int64)

    def manipulate(self, f: np.ndarray, labels, attribute: int, target) -> np.ndarray:
        return f

    def old_values(self, f: np.ndarray, labels, attribute: int) -> np.ndarray:
        """The attribute's current value per row: its label, or what the vector reads where the
        label is missing."""
        old = np.asarray(labels)[:, attribute]
        if (old == MISSING).any():
            old = np.where(old == MISSING, self.read(f)[:, attribute], old)
        return old


class PrototypeSpace(IndexSpace):
    """The index's embedding, f - mean(old value) + mean(new value), renormalised.

    The means are those of the index's own items in the training split (all items when the
    catalog has no split): what a catalog owner has without training anything.
    """

    manipulates = True

    def __init__(self, searcher: Searcher, embedder):
        super().__init__(searcher, embedder)
        vectors = np.asarray(searcher.embeddings(), dtype=np.float32)
        labels = searcher.labels
        split = searcher.items["split"].astype(str).to_numpy() if "split" in searcher.items else None
        train = split == "train" if split is not None and (split == "train").any() else \
            np.ones(len(labels), dtype=bool)
        self.means = []
        for j, attr in enumerate(searcher.schema.attributes):
            means = np.zeros((len(attr.values), vectors.shape[1]), dtype=np.float32)
            for v in range(len(attr.values)):
                rows = train & (labels[:, j] == v)
                if rows.any():
                    means[v] = vectors[rows].mean(axis=0)
            self.means.append(means)
        self.unit_means = [_normalised(m) for m in self.means]  # what `read` compares with

    def read(self, f: np.ndarray) -> np.ndarray:
        """Each attribute's value whose mean is nearest (cosine)."""
        return np.stack([np.argmax(f @ m.T, axis=1) for m in self.unit_means], axis=1)

    def manipulate(self, f, labels, attribute, target):
        old = self.old_values(f, labels, attribute)
        means = self.means[attribute]
        return _normalised(f - means[old] + means[np.broadcast_to(target, len(f))])


class MemorySpace(IndexSpace):
    """A disentangled embedding with its memory, in its own index (`space_index`).

    `mode` "arith": ADDE's f - M[old] + M[new] (old: the query's label, or what its chunk reads);
    "set": the changed chunks set to the new value's prototype (the hybrid: the image is already
    an edit toward the target).
    """

    manipulates = True

    def __init__(self, searcher: Searcher, embedder, schema: Schema, mode: str = "arith"):
        super().__init__(searcher, embedder)
        self.encoder, self.mode = embedder.model, mode
        own = self.encoder.schema
        self.own_position = {j: own.names.index(a.name) for j, a in enumerate(schema.attributes)
                             if a.name in own.names}
        self.schema = schema

    def read(self, f: np.ndarray) -> np.ndarray:
        import torch

        out = np.full((len(f), self.schema.n_attributes), MISSING, dtype=np.int64)
        with torch.inference_mode():
            read = self.encoder.predict(torch.from_numpy(f)).numpy()
        for j, k in self.own_position.items():
            out[:, j] = read[:, k]
        return out

    def manipulate(self, f, labels, attribute, target):
        import torch

        if attribute not in self.own_position:
            raise UserError(f"the embedding {self.embedder.path or 'adde'} has no chunk for "
                            f"{self.schema.names[attribute]!r}")
        k = self.own_position[attribute]
        old = None
        if self.mode == "arith":
            old = torch.from_numpy(self.old_values(f, labels, attribute))
        with torch.inference_mode():
            # f is normalised as a whole; the encoder's chunks are at their weights' norms
            raw = torch.from_numpy(f) * self.encoder.scale.norm()
            out = self.encoder.manipulate(raw, k, torch.as_tensor(np.asarray(target)), old=old,
                                          mode=self.mode)
        return _normalised(out.numpy())


def space_index(base: str | Path, embedder, progress: bool = True) -> Path:
    """The index of the base index's catalog embedded with `embedder`: the base itself when it was
    built with it, else `<base>.<digest[:12]>` beside it, built on first use (the same claim, lock
    and checks as `index build`) and rebuilt when it no longer holds the base's items."""
    from amgan_search.index.build import build_index
    from amgan_search.index.index_dir import is_index, load_info

    base = Path(base)
    info = load_info(base)
    if info["embedder"].get("digest") == embedder.digest:
        return base
    sibling = sibling_dir(base, embedder.digest)
    if is_index(sibling) and _same_items(base, sibling):
        return sibling
    db = info.get("db")
    if not db or not Path(db).is_file():
        raise UserError(f"{base}: its catalog DB ({db}) is not there, so no index can be embedded "
                        "with the method's own encoder")
    if progress:
        print(f"embedding the catalog of {base} with {embedder.path} into {sibling} (once)",
              flush=True)
    build_index(db, sibling, embedder, workers=0, progress=progress, force=is_index(sibling))
    return sibling


def sibling_dir(base: str | Path, digest: str) -> Path:
    """Where `space_index` keeps the base index's catalog embedded by the embedder of `digest`."""
    base = Path(base)
    return base.with_name(f"{base.name}.{digest[:12]}")


def _same_items(base: Path, sibling: Path) -> bool:
    """Whether two indexes hold the same items in the same order."""
    from amgan_search.index.index_dir import current, read_items

    return read_items(current(base))["id"].astype(str).tolist() == \
        read_items(current(sibling))["id"].astype(str).tolist()
