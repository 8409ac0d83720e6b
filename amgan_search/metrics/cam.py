"""How well the CNN+CAM network localises, against the synthetic renderer's true masks.

For test scenes from seeds training never saw, the CAM of the scene's own value of an attribute,
thresholded at 0.5 (it is normalised to [0, 1] per image, see `AttributeClassifier.cam`), is
compared with the region that attribute lives in: the garment for color (and pattern), the
sleeves plus the visible arm skin for sleeve (a sleeveless top's evidence is bare arms).
Its mean IoU says whether a* is a usable attention truth for L_a.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from amgan_search.images import resize_batch, to_tensor
from amgan_search.metrics.edits import test_seeds

CAM_THRESHOLD = 0.5
REGIONS = {"color": ("garment",), "pattern": ("garment",), "sleeve": ("sleeves", "arms")}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def cam_iou(classifier, n: int = 200, seed: int = 777, size: int | None = None,
            render_size: int = 128, batch_size: int = 50) -> dict[str, Any]:
    """Mean IoU per attribute of CAM > 0.5 with the attribute's true region, over n scenes."""
    from amgan_search.synthetic import render, sample_scene

    schema = classifier.schema
    size = size or int(classifier.config["size"])
    scenes = [sample_scene(s, schema) for s in test_seeds(n, seed)]
    out: dict[str, Any] = {}
    for j, attr in enumerate(schema.attributes):
        parts = REGIONS.get(attr.name, ("garment",))
        scores = []
        for start in range(0, n, batch_size):
            chunk = scenes[start:start + batch_size]
            # Render at catalog resolution, then resize like every catalog image is.
            drawn = [render(sc, render_size) for sc in chunk]
            x = resize_batch(to_tensor([d[0] for d in drawn]), size, antialias=True)
            values = torch.tensor([attr.index(sc.attributes[attr.name]) for sc in chunk])
            cams = classifier.cam(x, j, values)[:, 0].cpu().numpy() > CAM_THRESHOLD
            for cam, (_, masks) in zip(cams, drawn):
                truth = np.zeros_like(masks["garment"])
                for p in parts:
                    truth |= masks[p]
                truth = _resize_mask(truth, size)
                scores.append(iou(cam, truth))
        out[attr.name] = {"mean_iou": float(np.mean(scores)), "region": "|".join(parts), "n": n}
    return out


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)) >= 128


CAM_SHEET = "evaluate-classifier"  # what its PNG records as its maker (`images.save_image`)


def cam_sheet(classifier, out, n: int = 6, seed: int = 777, render_size: int = 128,
              tile: int = 96) -> None:
    """A picture for people: each scene, then the CAM of its own value of every attribute over it."""
    from PIL import Image

    from amgan_search.images import save_image
    from amgan_search.synthetic import render, sample_scene

    schema = classifier.schema
    size = int(classifier.config["size"])
    rows = []
    for s in test_seeds(n, seed):
        scene = sample_scene(s, schema)
        image = render(scene, render_size)[0]
        x = resize_batch(to_tensor(image), size, antialias=True)
        shown = np.asarray(Image.fromarray(image).resize((tile, tile), Image.BILINEAR), np.float32)
        tiles = [shown]
        for j, attr in enumerate(schema.attributes):
            cam = classifier.cam(x, j, attr.index(scene.attributes[attr.name]))[0, 0].cpu().numpy()
            heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR),
                              np.float32)[..., None] / 255.0
            red = np.zeros_like(shown)
            red[..., 0] = 255
            tiles.append(0.45 * shown + 0.55 * (heat * red + (1 - heat) * shown * 0.3))
        rows.append(np.concatenate(tiles, axis=1))
    save_image(out, np.clip(np.concatenate(rows, axis=0), 0, 255).astype(np.uint8),
               made_by=CAM_SHEET)
