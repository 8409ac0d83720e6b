"""DeepFashion-Synthesis (FashionGAN's release): `G2.h5` images, `language_original.mat` labels,
`ind.mat` train/test rows; each catalog item is row i of G2.h5 (`G2.h5#i`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import Schema
from amgan_search.sources import Record, Source

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


# ---------------------------------------------------------------------------------------------
# The labels: language_original.mat and ind.mat
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


def _mat_labels(mat: dict, key: str, base: int, n_values: int, path: Path) -> np.ndarray:
    """A `base`-based label column -> 0-based int64, every value checked to lie in range."""
    # The stored dtype differs between writers (uint8, double): cast, then check the range.
    raw = _mat_column(mat, key, path)
    values = raw.astype(np.int64)
    if not np.array_equal(values, raw) or values.min(initial=base) < base \
            or values.max(initial=base) >= base + n_values:
        raise UserError(f"{path}: {key} holds values outside {base}..{base + n_values - 1}")
    return values - base


def _mat_strings(mat: dict, key: str, n: int, path: Path) -> list[str]:
    """A cell column of strings (nameList, engJ); "" for every row when the file lacks it."""
    return [_mat_string(c) for c in _mat_column(mat, key, path)] if key in mat else [""] * n


def _read_split(ind: dict, ind_path: Path, n: int) -> np.ndarray:
    """ind.mat's train_ind / test_ind (1-based rows) -> "train"/"test" per row, each row in one."""
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
    return split


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
    color = _mat_labels(lang, "color_", 1, len(DFS_COLORS), lang_path)
    sleeve = _mat_labels(lang, "sleeve_", 1, len(DFS_SLEEVES), lang_path)
    category = _mat_labels(lang, "cate_new", 1, len(DFS_CATEGORIES), lang_path)
    gender = _mat_labels(lang, "gender_", 0, len(DFS_GENDERS), lang_path)
    n = len(color)
    if not (len(sleeve) == len(category) == len(gender) == n):
        raise UserError(f"{lang_path}: color_, sleeve_, cate_new and gender_ differ in length")
    names = _mat_strings(lang, "nameList", n, lang_path)
    sentences = _mat_strings(lang, "engJ", n, lang_path)
    if len(names) != n or len(sentences) != n:
        raise UserError(f"{lang_path}: nameList/engJ do not have {n} rows")
    return DfsLabels(color, sleeve, category, gender, _read_split(ind, ind_path, n), names, sentences)


# ---------------------------------------------------------------------------------------------
# The images: G2.h5
# ---------------------------------------------------------------------------------------------

def _open_g2(path: Path):
    """Open G2.h5 read-only as an h5py.File, checking that it holds 'ih' and 'ih_mean'."""
    import h5py

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
    if "ih" not in f or "ih_mean" not in f:
        found = sorted(f)
        f.close()
        raise UserError(f"{path}: expected datasets 'ih' and 'ih_mean', found {found}")
    return f


def check_g2(path: str | Path, n_rows: int | None = None) -> tuple[int, int]:
    """Check G2.h5's keys and shapes (and its row count against the labels); return (H, W)."""
    path = Path(path)
    with _open_g2(path) as f:
        try:
            ih, mean = f["ih"], f["ih_mean"]
            shape, mean_shape = ih.shape, mean.shape
        except OSError as exc:
            raise UserError(f"{path}: not a readable HDF5 file ({exc})") from None
    if len(shape) != 4 or shape[1] != 3:
        raise UserError(f"{path}: 'ih' has shape {shape}, expected (N, 3, W, H)")
    if tuple(mean_shape) != tuple(shape[1:]):
        raise UserError(f"{path}: 'ih_mean' has shape {mean_shape}, expected {shape[1:]}")
    if n_rows is not None and shape[0] != n_rows:
        raise UserError(f"{path}: {shape[0]} images but the labels have {n_rows} rows")
    return int(shape[3]), int(shape[2])


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


# G2.h5 files opened by this process, keyed by (pid, path), with their mean image: an h5py handle
# must not cross a fork, so each DataLoader worker opens its own on first use and keeps it.
_H5_FILES: dict[tuple[int, str], tuple[object, np.ndarray]] = {}


def read_g2_image(path: str | Path, row: int) -> np.ndarray:
    """Row `row` of the G2.h5 at `path` as uint8 HxWx3; the file stays open in this process."""
    path = Path(path)
    key = (os.getpid(), str(path))
    entry = _H5_FILES.get(key)
    if entry is None:
        f = _open_g2(path)
        entry = (f, np.asarray(f["ih_mean"], dtype=np.float32))
        _H5_FILES[key] = entry
    f, mean = entry
    n = f["ih"].shape[0]
    if row >= n:
        raise UserError(f"{path}: row {row} out of range ({n} images)")
    return read_g2_row(f, row, mean)


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------

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
