"""Index build throughput against the embedder's forward-only throughput, in the same run.

`index build` decodes images in DataLoader workers while the model runs; if decoding kept up, the
build embeds about as many images a second as the model alone does on ready tensors (ratio 1.0).
The catalog is written first (untimed): JPEG images of the synthetic renderer's size (128x128).
The embedder is the shipped classifier-cam when present, else an untrained ResNet-18 at 64x64.

    python perf/index_build.py [--tiny] [--images 2000] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from amgan_search.errors import UserError


def _catalog(root: Path, n: int, size: int = 128) -> Path:
    from amgan_search.catalog import import_catalog
    from amgan_search.images import save_image

    rng = np.random.default_rng(0)
    folder = root / "catalog"
    (folder / "img").mkdir(parents=True)
    lines = ["id,path,color,sleeve"]
    base = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
    for i in range(n):
        # a smooth picture plus noise: JPEG decoding cost like a photo's, not like flat color
        img = np.roll(base, i, axis=1) // 2 + rng.integers(0, 128, (size, size, 3)).astype(np.uint8)
        save_image(folder / "img" / f"{i}.jpg", img, quality=90)
        lines.append(f"{i},img/{i}.jpg,{'red' if i % 2 else 'blue'},{'long' if i % 3 else 'short'}")
    (folder / "catalog.csv").write_text("\n".join(lines) + "\n")
    db = root / "catalog.db"
    import_catalog("csv", folder, db, progress=False)
    return db


def _embedder(tiny: bool):
    from amgan_search.index.embed import Embedder, load_embedder
    from amgan_search.registry import shipped_model

    if not tiny:
        try:
            shipped_model("classifier-cam")
            return load_embedder(None, device="cpu"), "shipped classifier-cam"
        except UserError:
            pass
    import torch

    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import Schema

    torch.manual_seed(0)
    size = 32 if tiny else 64
    model = AttributeClassifier(Schema.from_dict({"color": ["blue", "red"], "sleeve": ["long", "short"]}),
                                arch="resnet18", size=size).eval()
    return Embedder(model, size=size, dim=model.embed_dim, digest="untrained"), f"untrained resnet18 at {size}px"


def run(tiny: bool = False, images: int | None = None, workers: int = 2, batch_size: int = 128) -> list[dict]:
    import torch

    from amgan_search.index.build import build_index
    from amgan_search.index.embed import forward_throughput

    n = images or (96 if tiny else 2000)
    batch_size = 32 if tiny else batch_size
    embedder, note = _embedder(tiny)
    with tempfile.TemporaryDirectory() as tmp:
        db = _catalog(Path(tmp), n)
        forward = forward_throughput(embedder, batch_size=batch_size, batches=2 if tiny else 5)
        t = time.perf_counter()
        info = build_index(db, Path(tmp) / "index", embedder, batch_size=batch_size, workers=workers,
                           progress=False)
        total_s = time.perf_counter() - t
    embed_rate = info["timing"]["images_per_s"]
    return [
        {"measure": "index build: embedding images/s", "value": round(embed_rate, 1), "unit": "img/s",
         "baseline": "embedder forward only", "baseline_value": round(forward, 1),
         "ratio": round(embed_rate / forward, 3),
         "note": f"{n} JPEGs 128px -> {embedder.size}px, batch {batch_size}, {workers} workers, "
                 f"{torch.get_num_threads()} torch threads; {note}"},
        {"measure": "index build: whole build images/s (embed + index + write)", "value": round(n / total_s, 1),
         "unit": "img/s", "baseline": "embedder forward only", "baseline_value": round(forward, 1),
         "ratio": round(n / total_s / forward, 3)},
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(tiny=args.tiny, images=args.images, workers=args.workers)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(map(str, rows)))


if __name__ == "__main__":
    main()
