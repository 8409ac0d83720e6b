"""Filters say what they cannot do: a `where` field the catalog does not fill, or a value no item
holds, is a one-line error naming what there is, never a filter that silently matches nothing
(query on the command line, and the server).
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from amgan_search.errors import UserError
from builders import assert_refused, run




# ---------------------------------------------------------------- row 8

def test_where_on_a_field_the_catalog_does_not_fill_names_the_known_ones(world):
    result = run("query", world["image"], "--index", world["index"], "--no-edit",
                 "--where", "gender=female")
    assert_refused(result, "unknown field 'gender'", "valid: id, path, split, color, sleeve")


def test_where_on_a_value_no_item_holds_names_the_values(world):
    result = run("query", world["image"], "--index", world["index"], "--no-edit",
                 "--where", "split=validation")
    assert_refused(result, "no item has split 'validation'", "values: test, train")


def test_where_that_matches_goes_on(world):
    result = run("query", world["image"], "--index", world["index"], "--no-edit", "--json",
                 "--where", "split=test", "--where", "color=red")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["results"]
    assert found and all(r["split"] == "test" and r["attributes"]["color"] == "red"
                         for r in found)


def test_the_searcher_offers_only_fields_the_catalog_fills(world):
    from amgan_search.index.search import Searcher

    searcher = Searcher(world["index"])
    assert searcher.filter_fields() == ["id", "path", "split", "color", "sleeve"]
    with pytest.raises(UserError, match="unknown field 'category'"):
        searcher.allowed({"category": "top"})


def test_the_server_refuses_a_where_field_the_catalog_does_not_fill(world):
    from amgan_search.index.serve.app import create_app, load_service

    service = load_service(world["index"], model=world["gan"], threads=1, compile=False,
                           log=lambda _: None)
    try:
        client = TestClient(create_app(service), raise_server_exceptions=False)
        got = client.post("/api/query", data={"item_id": "item4", "targets": "{}",
                                              "where": json.dumps({"gender": "female"})})
        assert got.status_code == 400, got.text
        assert "unknown field 'gender'" in got.json()["error"]
    finally:
        service.close()
