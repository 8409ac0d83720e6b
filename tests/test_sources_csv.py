"""The CSV catalog reader (amgan_search.sources.csv) on catalogs written here, with the bad inputs
a user can hand it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.images import save_image
from amgan_search.sources import hash_split, read_csv_catalog

# ---------------------------------------------------------------------------------------------
# CSV catalogs
# ---------------------------------------------------------------------------------------------

def write_csv_catalog(folder: Path, rows: list[dict], header: list[str] | None = None,
                      images: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = header or list(rows[0])
    lines = [",".join(header)] + [",".join(str(r.get(h, "")) for h in header) for r in rows]
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    if images:
        for r in rows:
            p = r.get("path", "")
            if p and not p.startswith("/") and ".." not in p:
                save_image(folder / p, np.full((5, 7, 3), 100, np.uint8))
    return path


ROWS = [
    {"id": "a", "path": "img/a.png", "color": "red", "sleeve": "long", "category": "tee"},
    {"id": "b", "path": "img/b.png", "color": "blue", "sleeve": "", "category": "top"},
    {"id": "c", "path": "img/c.png", "color": "item10", "sleeve": "short", "category": ""},
    {"id": "d", "path": "img/d.png", "color": "item9", "sleeve": "long", "category": "tee"},
]


def test_csv_catalog_schema_from_values_and_hash_split(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    source = read_csv_catalog(path)
    # Sorted (natural order: item9 before item10); an empty cell is a missing value.
    assert source.schema.to_dict() == {"color": ["blue", "item9", "item10", "red"],
                                       "sleeve": ["long", "short"]}
    by_id = {r.id: r for r in source.records}
    assert by_id["b"].attributes == {"color": "blue", "sleeve": None}
    assert by_id["a"].category == "tee" and by_id["c"].category is None
    assert all(r.split == hash_split(r.id) for r in source.records)
    assert source.root == (tmp_path / "cat").resolve()


def test_hash_split_is_deterministic_and_about_ninety_ten():
    splits = [hash_split(f"item-{i}") for i in range(2000)]
    assert splits == [hash_split(f"item-{i}") for i in range(2000)]
    assert 0.07 < splits.count("test") / 2000 < 0.13


def test_csv_catalog_schema_json_fixes_order_and_values(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", [{**r, "split": "train"} for r in ROWS[:2]])
    (tmp_path / "cat" / "schema.json").write_text(json.dumps(
        {"sleeve": ["short", "long"], "color": ["red", "green", "blue"]}))
    source = read_csv_catalog(path)
    assert source.schema.to_dict() == {"sleeve": ["short", "long"], "color": ["red", "green", "blue"]}
    assert [r.split for r in source.records] == ["train", "train"]
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    with pytest.raises(UserError, match=r"items.csv:4: color value 'item10' is not in schema.json"):
        read_csv_catalog(path)


def test_csv_catalog_attribute_option_keeps_other_columns_as_extras(tmp_path):
    rows = [{**r, "brand": "acme"} for r in ROWS]
    source = read_csv_catalog(write_csv_catalog(tmp_path / "cat", rows), attributes=["color"])
    assert source.schema.names == ["color"]
    assert source.extra_columns == ["sleeve", "brand"]
    assert source.records[0].extra == {"sleeve": "long", "brand": "acme"}


@pytest.mark.parametrize("change, message", [
    (lambda rows, header: (rows, [h for h in header if h != "id"]), "missing required column 'id'"),
    (lambda rows, header: (rows, [h for h in header if h != "path"]), "missing required column 'path'"),
    (lambda rows, header: (rows + [{**rows[0]}], header), r"items.csv:6: duplicate id 'a' \(first on line 2\)"),
    (lambda rows, header: ([{**rows[0], "id": ""}] + rows[1:], header), r"items.csv:2: empty 'id'"),
    (lambda rows, header: ([{**rows[0], "path": ""}] + rows[1:], header), r"items.csv:2: empty 'path'"),
    (lambda rows, header: ([{**rows[0], "path": "/etc/passwd"}] + rows[1:], header), r"items.csv:2: .* is absolute"),
    (lambda rows, header: ([{**rows[0], "path": "img/../../x.png"}] + rows[1:], header),
     r"items.csv:2: .* leaves the catalog folder"),
    (lambda rows, header: ([{**rows[0], "split": "dev"}] + rows[1:], header + ["split"]), r"items.csv:2: split 'dev'"),
])
def test_csv_catalog_bad_input(tmp_path, change, message):
    rows, header = change([dict(r) for r in ROWS], list(ROWS[0]))
    if "split" in header:
        rows = [{"split": "train", **r} for r in rows]
    path = write_csv_catalog(tmp_path / "cat", rows, header=header)
    with pytest.raises(UserError, match=message):
        read_csv_catalog(path)


def test_csv_catalog_missing_image_and_other_file_problems(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    (tmp_path / "cat" / "img" / "c.png").unlink()
    with pytest.raises(UserError, match=r"items.csv:4: image .*c.png does not exist"):  # its row
        read_csv_catalog(path)
    path.write_text("id,path,color\na,img/a.png,red,extra\n")
    with pytest.raises(UserError, match=r"items.csv:2: 3 columns expected"):
        read_csv_catalog(path)
    path.write_text("id,path\na,img/a.png\n")
    with pytest.raises(UserError, match="no attribute columns"):
        read_csv_catalog(path)
    path.write_text("id,path,color\n")
    with pytest.raises(UserError, match="items.csv: no rows"):
        read_csv_catalog(path)
    with pytest.raises(UserError, match="catalog.csv: no such file"):
        read_csv_catalog(tmp_path / "cat")
