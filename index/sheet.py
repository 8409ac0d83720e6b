"""A query's contact sheet: the photo, its edit and attention mask, and the top-k results."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def contact_sheet(query: np.ndarray, edited: np.ndarray | None, mask: np.ndarray | None,
                  thumbs: Sequence[tuple[np.ndarray | None, str]], targets: Mapping[str, str],
                  tile: int = 128, columns: int = 5) -> np.ndarray:
    """One PNG: query, edit and mask on the first row, the top-k below, each captioned."""
    from amgan_search.images import fit_square, picture_grid

    first = [(query, "query")]
    if edited is not None:
        first.append((edited, "edit: " + " ".join(f"{k}={v}" for k, v in targets.items())))
    if mask is not None:
        first.append((np.repeat(mask[..., None], 3, axis=2), "attention mask"))
    rows = [first] + [list(thumbs[i:i + columns]) for i in range(0, len(thumbs), columns)]
    cells = [[(None if image is None else fit_square(np.asarray(image, dtype=np.uint8), tile)[0],
               caption) for image, caption in row] for row in rows]
    return picture_grid(cells, tile, caption_h=30)
