"""A catalog that changes under an index is noticed: the index records what it was built from (the
catalog DB's checksum, each image file's size and modification time) and says in one line that it
is stale when they change; a damaged DB behind an index is named as such, by the command line and
by the server, never shown as thumbnails that are "unreadable".
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from amgan_search import db_checksum
from amgan_search.errors import UserError
from amgan_search.images import load_image
from builders import assert_refused, make_classifier, run



def flip_byte(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))



def copy_world(world, tmp_path) -> dict:
    """The world's catalog, DB and index copied, the index pointing at the copied DB."""
    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder

    root = tmp_path / "w"
    shutil.copytree(world["root"] / "catalog", root / "catalog")
    shutil.copy2(world["db"], root / "catalog.db")
    db = root / "catalog.db"
    with closing(sqlite3.connect(db)) as conn, conn:  # the copy's images are the copied ones
        conn.execute("UPDATE metadata SET value = ? WHERE key = 'root'", [str(root / "catalog")])
    db_checksum.seal(db)
    build_index(db, root / "index", load_embedder(world["cam"], device="cpu"), workers=0,
                progress=False)
    return {**world, "root": root, "db": db, "index": root / "index",
            "image": root / "catalog" / "img" / "4.png"}


# ---------------------------------------------------------------- row 5: the images rendered again

@pytest.mark.slow
def test_a_catalog_rendered_again_under_its_index_is_named_stale(tmp_path):
    from amgan_search.catalog import import_catalog
    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder
    from amgan_search.synthetic import write_catalog

    catalog = tmp_path / "C"
    write_catalog(catalog, 24, seed=1, size=32, progress=False, workers=1)
    import_catalog("synthetic", catalog, tmp_path / "c.db", progress=False)
    cam = make_classifier(tmp_path / "cam")
    build_index(tmp_path / "c.db", tmp_path / "I", load_embedder(cam, device="cpu"), workers=0,
                progress=False)
    photo = tmp_path / "photo.png"
    shutil.copy2(catalog / "images" / "000003.png", photo)
    args = ("query", photo, "--index", tmp_path / "I", "--no-edit", "--json", "-k", 24)
    assert run(*args).exit_code == 0
    # the same names, other pictures: every result's attributes would be another image's
    write_catalog(catalog, 24, seed=2, size=32, progress=False, workers=1, overwrite=True)
    assert_refused(run(*args), "stale", "changed since the index was built", "index build")


def test_a_catalog_image_edited_or_removed_under_its_index_is_named(world, tmp_path):
    from amgan_search.index.retrieve import Retriever
    from amgan_search.index.search import Searcher

    w = copy_world(world, tmp_path)
    searcher = Searcher(w["index"])
    rows = searcher.search(searcher.embeddings()[:1].astype("float32"), 24)[0]
    searcher.check_fresh(rows)  # nothing changed yet
    image = w["root"] / "catalog" / "img" / "7.png"
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(UserError, match="7.png changed since the index was built"):
        searcher.check_fresh(rows)
    image.unlink()
    with pytest.raises(UserError, match="7.png is gone since the index was built"):
        Retriever(w["index"], searcher=searcher, device="cpu").query(load_image(w["image"]), k=24,
                                                                      edit=False)


def test_index_add_keeps_what_the_old_rows_were_built_from(world, tmp_path):
    from amgan_search.index.build import add_items
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.index_dir import read_identities

    w = copy_world(world, tmp_path)
    before = read_identities(w["index"])
    image = w["root"] / "catalog" / "img" / "2.png"
    image.write_bytes(image.read_bytes() + b"\0")
    assert add_items(w["index"], w["db"], load_embedder(w["cam"], device="cpu"), workers=0,
                     progress=False) == 0
    assert (read_identities(w["index"]) == before).all()  # an add blesses no changed image


# ---------------------------------------------------------------- the DB behind the index

def test_a_db_imported_again_under_its_index_is_named_stale(world, tmp_path):
    from amgan_search.catalog import import_catalog

    w = copy_world(world, tmp_path)
    import_catalog("csv", w["root"] / "catalog", w["db"], progress=False)  # another checksum
    assert_refused(run("query", w["image"], "--index", w["index"], "--no-edit"),
                   "stale", "catalog DB", "changed since the index was built")


# ---------------------------------------------------------------- row 6: a damaged DB

def test_a_damaged_db_behind_an_index_is_named_by_query(world, tmp_path):
    w = copy_world(world, tmp_path)
    flip_byte(w["db"])
    result = run("query", w["image"], "--index", w["index"], "--color", "red", "--model", w["gan"],
                 "--device", "cpu", "--out", tmp_path / "O")
    assert_refused(result, str(w["db"]), "damaged catalog DB")
    assert not (tmp_path / "O" / "contact.png").exists()


@pytest.mark.slow
def test_a_db_damaged_while_serving_is_named_by_the_server_without_its_path(world, tmp_path):
    from amgan_search.index.serve.app import create_app, load_service

    w = copy_world(world, tmp_path)
    service = load_service(w["index"], model=w["gan"], threads=1, compile=False,
                           log=lambda _: None)
    try:
        client = TestClient(create_app(service), raise_server_exceptions=False)
        flip_byte(w["db"])  # after the server checked it at start
        got = client.get("/api/items/item5/image")
        assert got.status_code == 503, got.text
        message = got.json()["error"]
        assert "catalog.db: damaged catalog DB" in message
        assert str(w["root"]) not in message and "cannot be read" not in message
    finally:
        service.close()


# ---------------------------------------------------------------- row 10: catalog info

def test_catalog_info_names_a_db_whose_unchecked_value_was_edited(world, tmp_path):
    db = tmp_path / "old.db"
    shutil.copy2(world["db"], db)
    with open(db, "r+b") as f:  # as a DB written before the checksum existed
        f.seek(60)
        f.write(bytes(4))
        f.seek(68)
        f.write(bytes(4))
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE items SET color = 'purplish' WHERE id = 'item3'")
    assert_refused(run("catalog", "info", "--db", db), str(db), "damaged catalog DB",
                   "'purplish'")
    assert_refused(run("catalog", "info", "--db", db, "--json"), "damaged catalog DB")


def test_an_index_records_what_it_was_built_from(world):
    from amgan_search.index.index_dir import load_info, read_identities

    info = load_info(world["index"])
    assert info["db_checksum"] == db_checksum.stored(world["db"]).hex()
    identities = read_identities(world["index"])
    st = os.stat(world["root"] / "catalog" / "img" / "0.png")
    assert identities.shape == (24, 2) and tuple(identities[0]) == (st.st_size, st.st_mtime_ns)
    assert json.loads((world["index"] / "index.json").read_text())["db_checksum"]
