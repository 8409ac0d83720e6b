"""Synthetic catalogs on disk: render n scenes into images/ plus catalog.csv (one row per image,
its attributes and its whole scene as JSON), schema.json and synthetic.json (the settings), and
read the scenes back.

The folder carries the "catalog" marker (`outputs.mark`): a synthetic catalog is replaced only when
asked to (`overwrite`), and a folder holding anything else is never written into. A replaced
catalog keeps the files the renderer did not write there (`made_by_synth`: a user's notes, a DB
imported into the folder)."""

from __future__ import annotations

import csv
import os
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.io import check_parents
from amgan_search.outputs import MARKER, OutputExists, carry_over, claim_dir, mark
from amgan_search.schema import SYNTHETIC_ATTRIBUTES, Schema, synthetic_schema
from amgan_search.synthetic.paint import render
from amgan_search.synthetic.scene import SCENE_VERSION, Scene, sample_scene

FORMATS = ("png", "jpg")
CATALOG_CSV = "catalog.csv"
SCHEMA_JSON = "schema.json"
SETTINGS_JSON = "synthetic.json"

# Limits of a request, each one line when crossed rather than an allocation that fails:
# - the side: below 16 px the figure is a few pixels; one 1024 px render takes about 90 MB in
#   each render process (one per core), and the side's square grows that fast (100,000 px: a
#   37 GiB array);
# - the count: the scene table is held in memory, about 1.2 KB a scene (1.2 GB at the limit);
# - the seed: numpy's seed words are 32-bit, so a larger one adds nothing.
MIN_SIZE, MAX_SIZE = 16, 1024
MAX_N = 1_000_000
MAX_SEED = 2**32 - 1

# The synthetic catalog that is there already and was not asked to be replaced.
NotEmpty = OutputExists


class SceneRow(NamedTuple):
    """One row of catalog.csv: the item's id, image path (relative), split and scene."""

    id: int
    path: str
    split: str
    scene: Scene


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n value indices in 0..k-1, each count within 1 of the others, in shuffled order."""
    return rng.permutation(np.arange(n) % k)


def catalog_scenes(n: int, seed: int = 0, attributes: Sequence[str] = ("color", "sleeve"),
                   test_fraction: float = 0.1) -> list[tuple[str, Scene]]:
    """The (split, scene) rows `write_catalog` renders: balanced values, deterministic split."""
    schema = synthetic_schema(attributes)
    rng = np.random.default_rng([seed, 0])
    # One independent shuffle per attribute keeps every count balanced while the combinations
    # vary; each item's nuisance comes from its own generator, so rows can render in any order.
    columns = [_balanced(rng, n, len(a.values)) for a in schema.attributes]
    n_test = int(round(n * test_fraction))
    test = np.zeros(n, bool)
    test[rng.permutation(n)[:n_test]] = True
    rows = []
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, 1, i]), schema)
        attrs = tuple((a.name, a.values[int(col[i])]) for a, col in zip(schema.attributes, columns))
        rows.append(("test" if test[i] else "train", replace(scene, attribute_values=attrs)))
    return rows


def _image_name(i: int, fmt: str) -> str:
    return f"images/{i:06d}.{fmt}"


_IMAGE_NAME = re.compile(rf"^images/\d{{6}}\.(?:{'|'.join(FORMATS)})$")


def made_by_synth(rel: str) -> bool:
    """Whether a path inside a catalog folder is one the renderer writes (`_image_name`, the
    tables, the marker): what replacing the catalog may drop."""
    return rel in (CATALOG_CSV, SCHEMA_JSON, SETTINGS_JSON, MARKER) or bool(_IMAGE_NAME.match(rel))


def _render_chunk(task) -> int:
    """Worker: render and write one chunk of rows (top level so a process pool can pickle it)."""
    from amgan_search.images import save_image

    root, size, fmt, items = task
    for i, scene in items:
        image, _ = render(scene, size)
        # zlib level 1: three times faster than the default on noisy renders, 15% larger.
        save_image(Path(root) / _image_name(i, fmt), image, quality=scene.jpeg_quality,
                   compress_level=1)
    return len(items)


def _default_workers(n: int) -> int:
    # Below a few hundred images a pool costs more to start than it saves.
    if n < 300:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def write_catalog(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 128,
                  attributes: Sequence[str] = ("color", "sleeve"), fmt: str = "png",
                  test_fraction: float = 0.1, progress: bool = True, overwrite: bool = False,
                  workers: int | None = None) -> Path:
    """Render n scenes into OUT_DIR: images/, catalog.csv, schema.json, synthetic.json.

    The directory is built beside OUT_DIR under a temporary name and renamed into place, so a
    reader never sees half a catalog. Same arguments -> byte-identical files. An existing OUT_DIR
    is replaced only when it is a synthetic catalog and `overwrite` is given, keeping the files
    the renderer did not write there.
    """
    from amgan_search.io import atomic_dir, write_json, writer_lock

    out = Path(out_dir)
    schema = _check_request(out, n, seed, size, attributes, fmt, test_fraction)
    claim_dir(out, "catalog", force=overwrite)  # before the work; again once the lock is held
    rows = catalog_scenes(int(n), seed, schema.names, test_fraction)
    workers = _default_workers(n) if workers is None else max(1, int(workers))
    with writer_lock(out), atomic_dir(out) as tmp:
        claim_dir(out, "catalog", force=overwrite)
        mark(tmp, "catalog")
        _render_images(tmp, [scene for _, scene in rows], int(size), fmt, workers, progress)
        _write_table(tmp / CATALOG_CSV, schema, rows, fmt)
        write_json(tmp / SCHEMA_JSON, schema.to_dict())
        write_json(tmp / SETTINGS_JSON, {
            "n": int(n), "seed": int(seed), "size": int(size), "attributes": schema.names,
            "format": fmt, "test_fraction": float(test_fraction), "scene_version": SCENE_VERSION,
        })
        carry_over(out, tmp, made_by_synth)
    return out


def _whole(value, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and low <= value <= high


def _check_request(out: Path, n, seed, size, attributes: Sequence[str], fmt: str,
                   test_fraction: float) -> Schema:
    """The schema of the catalog asked for, or a UserError naming OUT_DIR and the bad value."""
    if not _whole(n, 1, MAX_N):
        raise UserError(f"{out}: the number of images must be a whole number in 1..{MAX_N:,}, got {n!r}")
    if not _whole(seed, 0, MAX_SEED):
        raise UserError(f"{out}: the seed must be a whole number in 0..{MAX_SEED}, got {seed!r}")
    if not _whole(size, MIN_SIZE, MAX_SIZE):
        raise UserError(f"{out}: the image size must be a whole number in {MIN_SIZE}..{MAX_SIZE}, "
                        f"got {size!r}")
    if fmt not in FORMATS:
        raise UserError(f"{out}: unknown image format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0.0 <= test_fraction < 1.0:
        raise UserError(f"{out}: test fraction must be in [0, 1), got {test_fraction}")
    try:
        schema = synthetic_schema(list(attributes))
    except UserError as exc:
        raise UserError(f"{out}: {exc}") from None
    if not schema.attributes:
        raise UserError(f"{out}: no attributes given; valid: {', '.join(SYNTHETIC_ATTRIBUTES)}")
    check_parents(out)
    return schema


def _render_images(root: Path, scenes: list[Scene], size: int, fmt: str, workers: int,
                   progress: bool) -> None:
    """Render every scene into root/images/, in chunks, on `workers` processes."""
    from tqdm import tqdm

    (root / "images").mkdir()
    items = list(enumerate(scenes))
    chunk = max(16, min(256, len(items) // (workers * 8) or 1))
    tasks = [(str(root), size, fmt, items[k:k + chunk]) for k in range(0, len(items), chunk)]
    with tqdm(total=len(items), unit="img", desc="render", file=sys.stderr,
              disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(_render_chunk(task))
        else:
            import multiprocessing as mp

            # forkserver: workers start clean even if the parent holds threads (torch).
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers) as pool:
                for done in pool.imap_unordered(_render_chunk, tasks):
                    bar.update(done)


def _write_table(path: Path, schema: Schema, rows, fmt: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "path", "split", *schema.names, "scene"])
        for i, (split, scene) in enumerate(rows):
            attrs = scene.attributes
            writer.writerow([i, _image_name(i, fmt), split, *(attrs[a] for a in schema.names),
                             scene.to_json()])


def load_scene_table(catalog_dir: str | os.PathLike) -> list[SceneRow]:
    """The rows of a synthetic catalog's catalog.csv, in order, with their scenes."""
    path = Path(catalog_dir) / CATALOG_CSV
    if not path.is_file():
        raise UserError(f"{path}: no such file (not a synthetic catalog directory?)")
    rows = []
    csv.field_size_limit(1 << 20)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "path", "split", "scene"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                scene = Scene.from_json(row["scene"])
                rows.append(SceneRow(int(row["id"]), row["path"], row["split"], scene))
            except UserError as exc:
                raise UserError(f"{path}: line {line}: {exc}") from None
            except ValueError:
                raise UserError(
                    f"{path}: line {line}: id {row['id']!r} is not an integer") from None
    return rows


def load_scenes(catalog_dir: str | os.PathLike) -> list[Scene]:
    """The scenes of a synthetic catalog in catalog.csv row order."""
    return [row.scene for row in load_scene_table(catalog_dir)]


def value_counts(rows: Sequence[SceneRow]) -> dict[str, dict[str, int]]:
    """Rows per split (train, test) and per value of each attribute, every value the renderer
    knows listed (0 included): a catalog's balance at a glance."""
    splits = Counter(row.split for row in rows)
    counts = {"split": {k: splits.get(k, 0) for k in ("train", "test")}}
    for name in rows[0].scene.attributes if rows else ():
        values = Counter(row.scene.attributes[name] for row in rows)
        counts[name] = {v: values[v] for v in SYNTHETIC_ATTRIBUTES[name]}
    return counts
