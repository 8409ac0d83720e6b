"""Torch data: a catalog DB split as (image [3, S, S] in [0, 1], attribute indices [M]) pairs."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from amgan_search.catalog import Catalog
from amgan_search.images import fit_square

# Augmentation limits, our choice (the paper does not describe its classifier's augmentation):
# a scale change of up to 8% and a shift of up to 1/16 of the side (4 px at 64x64) move the garment
# without cutting off a sleeve, so neither color nor sleeve length can change.
MAX_SCALE = 0.08
MAX_SHIFT = 1 / 16


class CatalogImages(Dataset):
    """Items of one split of a catalog DB, resized with `fit_square` (aspect kept, white padding).

    `augment` (classifier training only) applies transforms that cannot change a label: horizontal
    flip and a small random scale and shift. No color jitter: color is a label.
    The Catalog is opened lazily in each process, so the dataset is safe in DataLoader workers.
    Images are read through `Catalog.read_image`, which never opens a file outside the catalog.
    """

    def __init__(self, db_path: str | os.PathLike, split: str | None = None, size: int = 64,
                 augment: bool = False):
        catalog = Catalog.open(db_path)
        self.db_path = str(db_path)
        self.root = catalog.root
        self.split = split
        self.size = int(size)
        self.augment = bool(augment)
        self.schema = catalog.schema
        self.items = catalog.items(split)
        self.labels = catalog.labels(self.items)
        self._paths = self.items["path"].tolist()
        self._catalog: Catalog | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_catalog"] = None
        return state

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            # Checked when this dataset was made; a DataLoader worker does not hash the DB again.
            self._catalog = Catalog.open(self.db_path, root=self.root, check=False)
        return self._catalog

    def __len__(self) -> int:
        return len(self._paths)

    def image(self, index: int) -> np.ndarray:
        """The item's image as uint8 size x size x 3, augmented when the dataset augments."""
        square, _ = fit_square(self.catalog.read_image(self._paths[index]), self.size)
        return self._augment(square) if self.augment else square

    def _augment(self, square: np.ndarray) -> np.ndarray:
        # torch's generator, so each DataLoader worker draws its own stream from its own seed.
        flip, scale_u, dx_u, dy_u = torch.rand(4).tolist()
        img = Image.fromarray(square)
        if flip < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        s = 1.0 + (2 * scale_u - 1) * MAX_SCALE
        shift = MAX_SHIFT * self.size
        dx, dy = (2 * dx_u - 1) * shift, (2 * dy_u - 1) * shift
        c = (self.size - 1) / 2
        # PIL's affine maps output pixels to input pixels: scale about the centre, then shift.
        coeffs = (1 / s, 0, c - (c + dx) / s, 0, 1 / s, c - (c + dy) / s)
        img = img.transform(img.size, Image.Transform.AFFINE, coeffs,
                            resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
        return np.array(img)  # writable, so torch.from_numpy does not warn

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(self.image(index))).permute(2, 0, 1)
        return image.float().div_(255.0), torch.from_numpy(self.labels[index].copy())
