"""The classifier's data: the seed's epoch order, class weights, held-out split, accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from amgan_search.errors import UserError
from amgan_search.nets.classifier import AttributeClassifier
from amgan_search.schema import MISSING, Schema


class EpochSampler(Sampler):
    """A permutation of range(n) drawn from (seed, epoch), from position `skip` on."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.skip:].tolist())

    def __len__(self) -> int:
        return max(0, self.n - self.skip)


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Label indices [n, M] of a dataset: its `.labels`, through Subsets, else read item by item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.stack([np.asarray(dataset[i][1], dtype=np.int64) for i in range(len(dataset))])


def class_weights(labels: np.ndarray, schema: Schema) -> list[torch.Tensor]:
    """Per attribute, weights proportional to 1/sqrt(frequency), mean 1 over the labelled samples."""
    weights = []
    for j, attr in enumerate(schema.attributes):
        known = labels[:, j][labels[:, j] != MISSING]
        counts = np.bincount(known, minlength=len(attr.values)).astype(np.float64)
        w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
        if counts.sum() > 0:
            w = w * counts.sum() / (w * counts).sum()
        weights.append(torch.tensor(w, dtype=torch.float32))
    return weights


def holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): a fixed share of the items, chosen from the seed."""
    n_val = int(round(n * fraction))
    if fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class Splits(NamedTuple):
    """What a classifier trains on, picks its best epoch with, and reports at the end."""

    schema: Schema
    train: Dataset
    val: Dataset | None
    test: Dataset | None


def catalog_splits(db: str | Path, size: int, val_fraction: float, seed: int) -> Splits:
    """The catalog's train split (augmented), its held-out share or the test split, and the test
    split."""
    from amgan_search.dataset import CatalogImages

    db = Path(db)
    if not db.is_file():
        raise UserError(f"{db}: no such catalog DB")
    train_aug = CatalogImages(db, split="train", size=size, augment=True)
    if len(train_aug) == 0:
        raise UserError(f"{db}: the catalog has no items in the 'train' split")
    test = CatalogImages(db, split="test", size=size, augment=False)
    test = test if len(test) else None
    if val_fraction > 0:
        plain = CatalogImages(db, split="train", size=size, augment=False)
        fit, held = holdout(len(train_aug), val_fraction, seed)
        return Splits(train_aug.schema, Subset(train_aug, fit), Subset(plain, held), test)
    if test is None:
        raise UserError(f"{db}: no 'test' split to validate on; use a val fraction above 0")
    return Splits(train_aug.schema, train_aug, test, test)


def given_splits(train: Dataset, val: Dataset | None, test: Dataset | None,
                 schema: Schema | None, val_fraction: float, seed: int) -> Splits:
    """Datasets passed in: without `val`, a `val_fraction` share of `train` is held out."""
    if schema is None:
        schema = getattr(train, "schema", None)
    if schema is None:
        raise ValueError("train_classifier: pass the schema with datasets that carry none")
    if val is None:
        if val_fraction > 0:
            fit, held = holdout(len(train), val_fraction, seed)
            train, val = Subset(train, fit), Subset(train, held)
        else:
            val = test
    return Splits(schema, train, val, test)


def evaluate_classifier(model: AttributeClassifier, dataset: Dataset, batch_size: int = 128,
                        workers: int = 0, device: str = "cpu", channels_last: bool = False) -> dict:
    """Accuracy per attribute on a dataset, missing labels left out, and their mean; `counts` holds
    each attribute's [correct, labelled] (what an interval over the items is computed from) and
    `confusion` its [true value][read value] counts."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    attributes = model.schema.attributes
    confusion = [np.zeros((len(a.values), len(a.values)), dtype=np.int64) for a in attributes]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            predicted, _ = model.predict(x)
            predicted, y = predicted.cpu().numpy(), y.numpy()
            for j, counts in enumerate(confusion):
                known = y[:, j] != MISSING
                np.add.at(counts, (y[known, j], predicted[known, j]), 1)
    model.train(was_training)
    counts = {a.name: [int(np.trace(c)), int(c.sum())] for a, c in zip(attributes, confusion)}
    accuracy = {name: (right / seen if seen else None) for name, (right, seen) in counts.items()}
    present = [a for a in accuracy.values() if a is not None]
    return {"accuracy": accuracy, "mean_accuracy": float(np.mean(present)) if present else 0.0,
            "n": len(dataset), "counts": counts,
            "confusion": {a.name: c.tolist() for a, c in zip(attributes, confusion)}}


def top_confusions(confusion: list[list[int]], values: tuple[str, ...], k: int = 2) -> str:
    """'long read as three-quarter 79, three-quarter read as long 51': the k commonest misreadings."""
    pairs = sorted(((n, t, r) for t, row in enumerate(confusion) for r, n in enumerate(row)
                    if t != r and n), reverse=True)[:k]
    return ", ".join(f"{values[t]} read as {values[r]} {n}" for n, t, r in pairs) or "none"


def accuracy_line(accuracy: dict, none: str = "-") -> str:
    """'color 0.912, sleeve 0.870': the attributes that have an accuracy; `none` when none has."""
    return ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items() if v is not None) or none
