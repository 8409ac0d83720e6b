"""Readers of the data sets a catalog can be imported from, each turned into records and a Schema.

- DeepFashion-Synthesis: `G2.h5` + `language_original.mat` + `ind.mat` (FashionGAN's release).
- Shopping100k, in the layout the public code reads: `imgs_{train,test}.txt`,
  `labels_{train,test}.txt` (one-hot blocks joined), `attr_num.txt`.
- Any catalog: a folder of images and a CSV (id, path, one column per attribute, optional split,
  category, gender); the synthetic renderer writes this layout plus `schema.json`.

Every reader checks its input fully before anything is written, and says which file and line is bad.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError
from .schema import Schema

FORMATS = ("synthetic", "deepfashion-synthesis", "shopping100k", "csv")
SPLITS = ("train", "val", "test")

# Columns of the items table that are not attributes; an attribute may not take one of these names,
# except `category` and `gender`, which, when a data set has them as attributes (Shopping100k has
# both), are the same column.
RESERVED = ("id", "path", "split")
CATEGORY, GENDER = "category", "gender"

# DeepFashion-Synthesis label names, in the 1-based label order of language_original.mat.
# No source lists the color names; they were matched from the data set's own sentences (engJ).
# Label 14 labels a single image whose sentence names no color: it stays "unknown" here.
DFS_COLORS = (
    "red", "blue", "white", "pink", "orange", "black", "brown", "green", "purple",
    "yellow", "khaki", "gray", "beige", "unknown", "silver", "olive", "multicolor",
)
DFS_SLEEVES = ("long", "short", "sleeveless", "unspecified")
DFS_CATEGORIES = (
    "Blazer", "Blouse", "Bomber", "Cardigan", "Henley", "Hoodie", "Jacket", "Jersey", "Parka",
    "Poncho", "Sweater", "Tank", "Tee", "Top", "Coat", "Dress", "Jumpsuit", "Kimono", "Romper",
)
DFS_GENDERS = ("female", "male")  # gender_ is 0/1, not 1-based
DFS_SCHEMA = Schema.from_dict({"color": DFS_COLORS, "sleeve": DFS_SLEEVES})
DFS_FILES = ("G2.h5", "language_original.mat", "ind.mat")

H5_ROW = re.compile(r"^(?P<file>.+\.(?:h5|hdf5))#(?P<row>\d+)$")


@dataclass
class Record:
    """One catalog item: attribute values by name (None: missing) and where its image is."""

    id: str
    split: str
    attributes: dict[str, str | None]
    path: str  # relative to the source root, or `file.h5#row`
    category: str | None = None
    gender: str | None = None
    extra: dict[str, str | None] = field(default_factory=dict)


@dataclass
class Source:
    """What a reader found: the schema, the records, and the folder image paths resolve against."""

    format: str
    root: Path
    schema: Schema
    records: list[Record]
    extra_columns: list[str] = field(default_factory=list)


def read_source(fmt: str, src: str | Path, attributes: Sequence[str] | None = None,
                image_root: str | Path | None = None, check_images: bool = True) -> Source:
    """Read any supported format; `attributes` names attributes (Shopping100k) or picks CSV columns.

    `check_images=False` reads the labels alone (G2.h5 not needed, image files not looked for),
    for counting a data set before its images are at hand; an import always checks them.
    """
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")
    if fmt == "deepfashion-synthesis":
        if attributes:
            raise UserError("--attributes does not apply to deepfashion-synthesis (color, sleeve)")
        return read_deepfashion_synthesis(src, require_images=check_images)
    if fmt == "shopping100k":
        return read_shopping100k(src, attributes=attributes, image_root=image_root,
                                check_images=check_images)
    if fmt == "synthetic":
        folder = src if src.is_dir() else src.parent
        if not (folder / "schema.json").is_file():
            raise UserError(f"{folder / 'schema.json'}: no such file (a synthetic catalog has one)")
        source = read_csv_catalog(src, attributes=attributes, check_images=check_images)
        source.format = "synthetic"
        return source
    if fmt == "csv":
        return read_csv_catalog(src, attributes=attributes, check_images=check_images)
    raise UserError(f"unknown catalog format {fmt!r}; valid: {', '.join(FORMATS)}")


def _check_attribute_names(names: Sequence[str], where: str) -> None:
    seen = set()
    for name in names:
        if not name or name != name.strip():
            raise UserError(f"{where}: attribute name {name!r} is empty or has surrounding spaces")
        if name in RESERVED:
            raise UserError(f"{where}: {name!r} cannot be an attribute name (reserved column)")
        if name in seen:
            raise UserError(f"{where}: attribute {name!r} appears twice")
        seen.add(name)


# ---------------------------------------------------------------------------------------------
# DeepFashion-Synthesis
# ---------------------------------------------------------------------------------------------

def _loadmat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for a bad file
        raise UserError(f"{path}: not a readable .mat file ({exc})") from None


def _mat_column(mat: dict, key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise UserError(f"{path}: no variable {key!r}")
    return np.asarray(mat[key]).ravel()


def _mat_string(cell) -> str:
    """A MATLAB cell entry ({'text'} loads as array(['text'])) -> str."""
    a = np.asarray(cell).ravel()
    return str(a[0]) if a.size else ""


@dataclass
class DfsLabels:
    """The label side of DeepFashion-Synthesis, 0-based, row-aligned with G2.h5."""

    color: np.ndarray     # [N] 0..16
    sleeve: np.ndarray    # [N] 0..3
    category: np.ndarray  # [N] 0..18
    gender: np.ndarray    # [N] 0/1
    split: np.ndarray     # [N] "train"/"test"
    names: list[str]      # DeepFashion's own image path of each row
    sentences: list[str]  # engJ

    def __len__(self) -> int:
        return len(self.color)


def read_dfs_labels(root: str | Path) -> DfsLabels:
    """language_original.mat + ind.mat -> labels; G2.h5 is not needed."""
    root = Path(root)
    lang_path, ind_path = root / "language_original.mat", root / "ind.mat"
    lang, ind = _loadmat(lang_path), _loadmat(ind_path)

    def labels(key: str, base: int, n_values: int) -> np.ndarray:
        # The stored dtype differs between writers (uint8, double): cast, then check the range.
        raw = _mat_column(lang, key, lang_path)
        values = raw.astype(np.int64)
        if not np.array_equal(values, raw) or values.min(initial=base) < base \
                or values.max(initial=base) >= base + n_values:
            raise UserError(f"{lang_path}: {key} holds values outside {base}..{base + n_values - 1}")
        return values - base

    color = labels("color_", 1, len(DFS_COLORS))
    sleeve = labels("sleeve_", 1, len(DFS_SLEEVES))
    category = labels("cate_new", 1, len(DFS_CATEGORIES))
    gender = labels("gender_", 0, len(DFS_GENDERS))
    n = len(color)
    if not (len(sleeve) == len(category) == len(gender) == n):
        raise UserError(f"{lang_path}: color_, sleeve_, cate_new and gender_ differ in length")
    names = [_mat_string(c) for c in _mat_column(lang, "nameList", lang_path)] \
        if "nameList" in lang else [""] * n
    sentences = [_mat_string(c) for c in _mat_column(lang, "engJ", lang_path)] \
        if "engJ" in lang else [""] * n
    if len(names) != n or len(sentences) != n:
        raise UserError(f"{lang_path}: nameList/engJ do not have {n} rows")

    split = np.full(n, "", dtype=object)
    for key, name in (("train_ind", "train"), ("test_ind", "test")):
        rows = _mat_column(ind, key, ind_path).astype(np.int64) - 1  # 1-based in the file
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise UserError(f"{ind_path}: {key} has rows outside 1..{n}")
        if (split[rows] != "").any() or len(np.unique(rows)) != len(rows):
            raise UserError(f"{ind_path}: {key} repeats a row or overlaps another split")
        split[rows] = name
    if (split == "").any():
        missing = int((split == "").sum())
        raise UserError(f"{ind_path}: {missing} of {n} rows are in neither train_ind nor test_ind")
    return DfsLabels(color, sleeve, category, gender, split, names, sentences)


def check_g2(path: str | Path, n_rows: int | None = None) -> tuple[int, int]:
    """Check G2.h5's keys and shapes (and its row count against the labels); return (H, W)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if "ih" not in f or "ih_mean" not in f:
                raise UserError(f"{path}: expected datasets 'ih' and 'ih_mean', found {sorted(f)}")
            ih, mean = f["ih"], f["ih_mean"]
            if ih.ndim != 4 or ih.shape[1] != 3:
                raise UserError(f"{path}: 'ih' has shape {ih.shape}, expected (N, 3, W, H)")
            if tuple(mean.shape) != tuple(ih.shape[1:]):
                raise UserError(f"{path}: 'ih_mean' has shape {mean.shape}, expected {ih.shape[1:]}")
            if n_rows is not None and ih.shape[0] != n_rows:
                raise UserError(f"{path}: {ih.shape[0]} images but the labels have {n_rows} rows")
            return int(ih.shape[3]), int(ih.shape[2])
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_g2_row(f, row: int, mean: np.ndarray | None = None) -> np.ndarray:
    """One image of an open G2.h5 -> uint8 HxWx3 (`mean`: its ih_mean, when the caller keeps it).

    G2.h5 stores the image minus a mean image, with the last two axes as (W, H): add the mean back,
    clip to [0, 1], and swap those axes so rows are image rows.
    """
    if mean is None:
        mean = np.asarray(f["ih_mean"], dtype=np.float32)
    ih = np.asarray(f["ih"][row], dtype=np.float32)
    chw = np.clip(ih + mean, 0.0, 1.0)  # (3, W, H)
    hwc = chw.transpose(2, 1, 0)
    return np.ascontiguousarray(np.round(hwc * 255.0).astype(np.uint8))


def read_deepfashion_synthesis(root: str | Path, require_images: bool = True) -> Source:
    """The DeepFashion-Synthesis folder -> records; each image is row i of G2.h5 (`G2.h5#i`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (expected one holding {', '.join(DFS_FILES)})")
    labels = read_dfs_labels(root)
    if require_images:
        check_g2(root / "G2.h5", n_rows=len(labels))
    records = [
        Record(
            id=f"{i:05d}",  # the 0-based row of G2.h5 and of the .mat files
            split=str(labels.split[i]),
            attributes={"color": DFS_COLORS[labels.color[i]], "sleeve": DFS_SLEEVES[labels.sleeve[i]]},
            path=f"G2.h5#{i}",
            category=DFS_CATEGORIES[labels.category[i]],
            gender=DFS_GENDERS[labels.gender[i]],
            extra={"name": labels.names[i], "sentence": labels.sentences[i]},
        )
        for i in range(len(labels))
    ]
    return Source("deepfashion-synthesis", root.resolve(), DFS_SCHEMA, records, ["name", "sentence"])


# ---------------------------------------------------------------------------------------------
# Shopping100k
# ---------------------------------------------------------------------------------------------

def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing blank line is not a row
        lines.pop()
    return lines


def read_attr_num(path: Path) -> list[int]:
    tokens = " ".join(_read_lines(path)).replace(",", " ").split()
    try:
        counts = [int(t) for t in tokens]
    except ValueError:
        raise UserError(f"{path}: expected whole numbers (values per attribute)") from None
    if not counts or min(counts) < 1:
        raise UserError(f"{path}: expected one positive count per attribute")
    return counts


def _shopping_schema(folder: Path, counts: list[int], attributes: Sequence[str] | None) -> Schema:
    """Names from --attributes or attributes.json; without them attr0.. with values v0.."""
    sidecar = folder / "attributes.json"
    if sidecar.is_file():
        from .checkpoint import read_json

        spec = read_json(sidecar)
        if not isinstance(spec, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in spec.values()):
            raise UserError(f"{sidecar}: expected {{\"attribute\": [\"value\", ...], ...}}")
        if [len(v) for v in spec.values()] != counts:
            raise UserError(f"{sidecar}: value counts {[len(v) for v in spec.values()]} "
                            f"differ from attr_num.txt {counts}")
        if attributes and list(attributes) != list(spec):
            raise UserError(f"{sidecar}: names {list(spec)} differ from --attributes {list(attributes)}")
        names, values = list(spec), [list(v) for v in spec.values()]
        for name, vals in zip(names, values):
            if len(set(vals)) != len(vals):
                raise UserError(f"{sidecar}: attribute {name!r} repeats a value")
    else:
        if attributes and len(attributes) != len(counts):
            raise UserError(f"--attributes names {len(attributes)} attributes but "
                            f"{folder / 'attr_num.txt'} has {len(counts)}")
        names = list(attributes) if attributes else [f"attr{j}" for j in range(len(counts))]
        values = [[f"v{k}" for k in range(c)] for c in counts]
    _check_attribute_names(names, str(sidecar if sidecar.is_file() else folder / "attr_num.txt"))
    return Schema.from_dict(dict(zip(names, values)))


def read_shopping100k(folder: str | Path, attributes: Sequence[str] | None = None,
                      image_root: str | Path | None = None, check_images: bool = True) -> Source:
    """The split folder of Shopping100k -> records; image paths are relative to `image_root`.

    Public code keeps the split files and the images apart (file_root, img_root); without
    `image_root` the images are looked for beside the split files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected imgs_*.txt, labels_*.txt, attr_num.txt)")
    counts = read_attr_num(folder / "attr_num.txt")
    schema = _shopping_schema(folder, counts, attributes)
    root = Path(image_root) if image_root is not None else folder
    if not root.is_dir():
        raise UserError(f"{root}: no such image folder")
    bounds = np.cumsum([0] + counts)
    width = int(bounds[-1])

    records: list[Record] = []
    seen: dict[str, str] = {}
    for split in ("train", "test"):
        imgs_path, labels_path = folder / f"imgs_{split}.txt", folder / f"labels_{split}.txt"
        imgs, label_lines = _read_lines(imgs_path), _read_lines(labels_path)
        if len(imgs) != len(label_lines):
            raise UserError(f"{labels_path}: {len(label_lines)} lines but {imgs_path.name} has {len(imgs)}")
        for lineno, (rel, line) in enumerate(zip(imgs, label_lines), start=1):
            rel = rel.strip()
            where = f"{imgs_path}:{lineno}"
            if not rel:
                raise UserError(f"{where}: empty image path")
            _check_relative(rel, where)
            if rel in seen:
                raise UserError(f"{where}: {rel} is listed twice (first in {seen[rel]})")
            seen[rel] = where
            tokens = line.split()
            joined = "".join(tokens)
            if len(tokens) != width or len(joined) != width:
                raise UserError(f"{labels_path}:{lineno}: {len(tokens)} values, expected {width} "
                                f"(the sum of attr_num.txt) of 0 or 1")
            bits = np.frombuffer(joined.encode("ascii", "replace"), dtype=np.uint8) - ord("0")
            if (bits > 1).any():
                raise UserError(f"{labels_path}:{lineno}: values must be 0 or 1")
            values: dict[str, str | None] = {}
            for j, attr in enumerate(schema.attributes):
                block = bits[bounds[j]:bounds[j + 1]]
                ones = np.flatnonzero(block)
                if len(ones) > 1:
                    raise UserError(f"{labels_path}:{lineno}: attribute {attr.name!r} has "
                                    f"{len(ones)} values set; a one-hot block has at most one")
                values[attr.name] = attr.values[ones[0]] if len(ones) else None
            records.append(Record(
                id=rel, split=split, attributes=values, path=rel,
                category=values.get(CATEGORY), gender=values.get(GENDER),
            ))
    if check_images:
        _check_images(root, records, folder / "imgs_*.txt")
    return Source("shopping100k", root.resolve(), schema, records)


# ---------------------------------------------------------------------------------------------
# CSV catalogs (and the synthetic renderer's output)
# ---------------------------------------------------------------------------------------------

def _check_relative(rel: str, where: str) -> None:
    """Catalog image paths stay inside the catalog folder: no absolute paths, no `..`."""
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise UserError(f"{where}: image path {rel!r} is absolute; paths are relative to the catalog folder")
    if ".." in re.split(r"[\\/]", rel):
        raise UserError(f"{where}: image path {rel!r} leaves the catalog folder (..)")


def _check_images(root: Path, records: list[Record], where: Path) -> None:
    missing = [r.path for r in records if not (root / r.path).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{where}: image {root / missing[0]} does not exist{more}")


def hash_split(item_id: str, test_percent: int = 10) -> str:
    """A deterministic train/test split by a hash of the id: the same id lands in the same split
    whatever else the catalog holds (our choice where a CSV has no split column)."""
    h = int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big")
    return "test" if h % 100 < test_percent else "train"


def _natural_key(value: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value) if t]


def read_csv_catalog(path: str | Path, attributes: Sequence[str] | None = None,
                     check_images: bool = True) -> Source:
    """A CSV (or a folder holding catalog.csv) of id, path, attributes... -> records.

    The attribute columns are `attributes` when given, else the keys of `schema.json` beside the
    CSV, else every column that is not id/path/split/category/gender. Value order comes from
    schema.json when there is one, else sorted (natural order). Other columns are kept as extras.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "catalog.csv"
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    folder = path.parent
    schema_path = folder / "schema.json"
    spec = None
    if schema_path.is_file():
        from .checkpoint import read_json

        spec = read_json(schema_path)
        if not isinstance(spec, dict) or not spec or not all(
                isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in spec.values()):
            raise UserError(f"{schema_path}: expected {{\"attribute\": [\"value\", ...], ...}}")
        _check_attribute_names(list(spec), str(schema_path))

    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise UserError(f"{path}:{reader.line_num}: {len(header)} columns expected")
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None

    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise UserError(f"{path}: a column name appears twice in the header")
    for required in ("id", "path"):
        if required not in header:
            raise UserError(f"{path}: missing required column {required!r} (header: {', '.join(header)})")
    standard = {"id", "path", "split", CATEGORY, GENDER}
    if attributes:
        names = list(attributes)
    elif spec is not None:
        names = list(spec)
    else:
        names = [h for h in header if h not in standard]
    _check_attribute_names(names, str(path))
    for name in names:
        if name not in header:
            raise UserError(f"{path}: missing attribute column {name!r}")
        if spec is not None and name not in spec:
            raise UserError(f"{schema_path}: has no attribute {name!r}")
    if not names:
        raise UserError(f"{path}: no attribute columns")
    extras = [h for h in header if h not in standard and h not in names]

    def cell(row: dict, key: str) -> str:
        return (row.get(key) or "").strip()

    seen: dict[str, int] = {}
    found: dict[str, set[str]] = {n: set() for n in names}
    for lineno, raw in rows:
        row = {k.strip(): v for k, v in raw.items()}
        for key in ("id", "path"):
            if not cell(row, key):
                raise UserError(f"{path}:{lineno}: empty {key!r}")
        item_id = cell(row, "id")
        if item_id in seen:
            raise UserError(f"{path}:{lineno}: duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = lineno
        _check_relative(cell(row, "path"), f"{path}:{lineno}")
        if "split" in header and cell(row, "split") not in SPLITS:
            raise UserError(f"{path}:{lineno}: split {cell(row, 'split')!r} is not one of {', '.join(SPLITS)}")
        for name in names:
            value = cell(row, name)
            if value:
                if spec is not None and value not in spec[name]:
                    raise UserError(f"{path}:{lineno}: {name} value {value!r} is not in {schema_path.name} "
                                    f"({', '.join(spec[name])})")
                found[name].add(value)
    if not rows:
        raise UserError(f"{path}: no rows")

    if spec is not None:
        schema = Schema.from_dict({n: spec[n] for n in names})
    else:
        empty = [n for n in names if not found[n]]
        if empty:
            raise UserError(f"{path}: attribute column {empty[0]!r} has no values")
        schema = Schema.from_dict({n: sorted(found[n], key=_natural_key) for n in names})

    records = []
    for lineno, raw in rows:
        row = {k.strip(): v for k, v in raw.items()}
        values = {n: (cell(row, n) or None) for n in names}
        item_id = cell(row, "id")
        records.append(Record(
            id=item_id,
            split=cell(row, "split") if "split" in header else hash_split(item_id),
            attributes=values,
            path=cell(row, "path").replace("\\", "/"),
            category=values[CATEGORY] if CATEGORY in names else (cell(row, CATEGORY) or None),
            gender=values[GENDER] if GENDER in names else (cell(row, GENDER) or None),
            extra={k: (row.get(k) if row.get(k) != "" else None) for k in extras},
        ))
    if check_images:
        _check_images(folder, records, path)
    return Source("csv", folder.resolve(), schema, records, extras)


def source_counts(source: Source) -> dict:
    """Counts of a source's records, shaped like `Catalog.counts()` (per split and "all")."""
    order = {s: i for i, s in enumerate(SPLITS)}
    splits = sorted({r.split for r in source.records}, key=lambda s: (order.get(s, len(order)), s))

    def empty() -> dict:
        return {"items": 0,
                "values": {a.name: {v: 0 for v in a.values} for a in source.schema.attributes},
                "missing": {a.name: 0 for a in source.schema.attributes}}

    result = {s: empty() for s in [*splits, "all"]}
    for r in source.records:
        for key in (r.split, "all"):
            result[key]["items"] += 1
            for name, value in r.attributes.items():
                if value is None:
                    result[key]["missing"][name] += 1
                else:
                    result[key]["values"][name][value] += 1
    return result
