"""A synthetic catalog at a glance: one labelled row of pictures per attribute value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import SYNTHETIC_ATTRIBUTES
from amgan_search.synthetic.catalog import load_scene_table
from amgan_search.synthetic.paint import render
from amgan_search.synthetic.scene import Scene

SHEET = "catalog sheet"  # what its PNGs record as their maker (`images.save_image`)


def contact_sheet(source: str | os.PathLike | Sequence[Scene], out_png: str | os.PathLike,
                  per_row: int = 8, size: int = 64) -> Path:
    """One row per attribute value (labelled attribute=value) of images having that value.

    `source` is a catalog directory (its image files are shown, JPEG artefacts and all) or a
    list of scenes (rendered at `size`). `out_png` is written where nothing is, or over a sheet
    this function wrote: never over the catalog's files, an input or a user's picture.
    """
    from PIL import Image

    from amgan_search.images import load_image, picture_grid, save_image
    from amgan_search.outputs import claim_pngs

    if per_row < 1:
        raise UserError(f"{out_png}: per_row must be at least 1, got {per_row}")
    if size < 16:
        raise UserError(f"{out_png}: thumbnail size must be at least 16, got {size}")
    claim_pngs([out_png], SHEET)
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        table = load_scene_table(root)
        scenes = [row.scene for row in table]

        def picture(k: int) -> np.ndarray:
            return load_image(root / table[k].path)
    else:
        scenes = list(source)

        def picture(k: int) -> np.ndarray:
            return render(scenes[k], size)[0]
    if not scenes:
        raise UserError(f"{out_png}: no scenes to draw")

    def thumbnail(k: int) -> np.ndarray:
        img = Image.fromarray(picture(k))
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img)

    names = list(scenes[0].attributes)
    rows = [(name, value) for name in names for value in SYNTHETIC_ATTRIBUTES[name]
            if any(s.attributes.get(name) == value for s in scenes)]
    chosen = [[k for k, s in enumerate(scenes) if s.attributes.get(name) == value][:per_row]
              for name, value in rows]
    cells = [[(thumbnail(k), "") for k in row] for row in chosen]
    sheet = picture_grid(cells, size, columns=per_row, labels=[f"{n}={v}" for n, v in rows],
                         label_px=max(10, size // 5))
    out = Path(out_png)
    save_image(out, sheet, made_by=SHEET)
    return out
