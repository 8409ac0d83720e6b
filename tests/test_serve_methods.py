"""`serve` answers each request by the method it names (a GAN that edits pixels, a disentangled
embedding moved by its memory, prototype arithmetic, the photo as it is, the hybrid of a GAN and
the embedding), as the local query by that method answers; the methods offered and the default
described; bad method choices refused in one line; `query --server --method`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_adde import run, world  # noqa: F401 - the tiny trained ADDE model, a tiny GAN, an index
from test_server import assert_answered_alike, over_http, picture, post_query

from amgan_search.errors import UserError
from amgan_search.images import load_image
from amgan_search.index.serve.app import create_app, load_service

NAMES = ("gan", "mine", "prototype", "real", "h")


@pytest.fixture(scope="module")
def served(world):  # noqa: F811 - the fixture imported above
    spec = {"gan": f"gan={world['gan']}", "mine": f"mine={world['adde']}",
            "prototype": "prototype", "real": "real", "h": f"h={world['gan']}+{world['adde']}"}
    # fp32 on any CPU: batched and single answers compared to the last bits
    service = load_service(world["index"], methods=",".join(spec.values()), threads=1,
                           compile=False, precision="fp32", max_batch=4, log=lambda _: None)
    yield {**world, "spec": spec, "service": service,
           "image": world["root"] / "catalog" / "img" / "4.png",
           "client": TestClient(create_app(service), raise_server_exceptions=False)}
    service.close()


def local(served, name: str):
    from amgan_search.index.retrieve import Retriever

    return Retriever(served["index"], method=served["spec"][name], device="cpu",
                     precision="fp32", progress=False)


# the first test served pays for the module's world: an ADDE run trained, two indexes built
@pytest.mark.parametrize("name", [pytest.param(NAMES[0], marks=pytest.mark.slow), *NAMES[1:]])
def test_each_method_offered_answers_as_the_local_query_by_that_method(served, name):
    got = post_query(served["client"], served["image"], method=name, targets={"color": "blue"},
                     k=4)
    assert got.status_code == 200, got.text
    body = got.json()
    want = local(served, name).query(load_image(served["image"]), {"color": "blue"}, k=4)
    assert body["method"] == name == want.method and body["targets"] == want.targets
    assert [r["id"] for r in body["results"]] == [h.id for h in want.results]
    assert [r["score"] for r in body["results"]] == pytest.approx(
        [h.score for h in want.results], abs=1e-5)
    if want.edited is None:  # a method that moves vectors (or none): no picture sent
        assert body["edited"] is None and body["mask"] is None
    else:
        assert np.array_equal(picture(body["edited"]), want.edited)
        assert np.array_equal(picture(body["mask"]), want.mask)


def test_the_schema_and_health_describe_the_methods_offered_and_the_default(served):
    c = served["client"]
    schema = c.get("/api/schema").json()
    assert schema["default_method"] == "gan"
    methods = {m["name"]: m for m in schema["methods"]}
    assert list(methods) == list(NAMES)
    kinds = {"gan": "editor", "mine": "feature", "prototype": "prototype", "real": "real",
             "h": "hybrid"}
    assert {n: m["kind"] for n, m in methods.items()} == kinds
    assert [n for n, m in methods.items() if m["edits_pixels"]] == ["gan", "h"]
    assert all(m["attributes"] == ["color", "sleeve"] for m in methods.values())
    assert all(m["regions"] == [] for m in methods.values())
    health = c.get("/api/health").json()
    assert health["methods"] == list(NAMES) and health["default_method"] == "gan"
    # the OpenAPI page declares the field and its bound
    spec = c.get("/openapi.json").json()
    form = spec["paths"]["/api/query"]["post"]["requestBody"]["content"]["multipart/form-data"]
    field = spec["components"]["schemas"][form["schema"]["$ref"].split("/")[-1]]["properties"]
    assert field["method"]["anyOf"][0]["maxLength"] == 200
    assert "method" in spec["components"]["schemas"]["QueryAnswer"]["required"]


def test_a_request_naming_no_method_gets_the_servers_default(served):
    from amgan_search.index.serve.service import Service

    other = Service(served["service"].retrievers, default="mine")
    try:
        body = post_query(TestClient(create_app(other)), served["image"],
                          targets={"color": "red"}, k=2).json()
        assert body["method"] == "mine" and body["edited"] is None
    finally:
        other.close()
    assert post_query(served["client"], served["image"], k=2).json()["method"] == "gan"


BAD = {
    "unknown method": (400, "unknown method 'nope'; valid: gan, mine, prototype, real, h",
                       {"method": "nope"}, "/api/query"),
    "method name over the bound": (400, "method: String should have at most 200 characters",
                                   {"method": "x" * 201}, "/api/query"),
    "an edit alone by a method without pixels": (
        400, "the method 'mine' edits no pixels: it has no picture to show",
        {"method": "mine", "targets": '{"color": "red"}'}, "/api/edit"),
    "a region by a method without pixels": (
        400, "only_region: the method 'prototype' edits no pixels",
        {"method": "prototype", "targets": '{"color": "red"}', "only_region": "color=red"},
        "/api/query"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_method_choice_is_one_line_and_the_server_keeps_serving(served, case):
    status, words, data, path = BAD[case]
    c = served["client"]
    files = {"image": ("q.png", served["image"].read_bytes())}
    got = c.post(path, data=data, files=files)
    assert got.status_code == status, got.text
    assert list(got.json()) == ["error"] and words in got.json()["error"]
    assert "\n" not in got.json()["error"]
    good = post_query(c, served["image"], method="mine", targets={"color": "red"}, k=2)
    assert good.status_code == 200 and good.json()["method"] == "mine"


def test_a_method_is_refused_an_attribute_it_does_not_edit(served, monkeypatch):
    # as a model of fewer attributes than the index would be (Method.editable reads its config)
    monkeypatch.setitem(served["service"].editable, "mine", ["color"])
    got = post_query(served["client"], served["image"], method="mine", targets={"sleeve": "long"})
    assert got.status_code == 400
    assert got.json()["error"] == "the method 'mine' cannot edit sleeve; it edits color"


def test_a_batch_mixing_methods_answers_each_job_as_its_method_alone(served):
    from amgan_search.index.serve.batch_query import Job, run_jobs

    retrievers = served["service"].retrievers
    a = load_image(served["image"])
    b = load_image(served["root"] / "catalog" / "img" / "9.png")
    asked = [(name, targets) for targets in ({"color": "blue"}, {"sleeve": "short"},
                                             {"color": "red", "sleeve": "long"}, {})
             for name in NAMES]
    jobs = [Job(a if i % 2 else b, targets, k=3 + i % 3, method=name)
            for i, (name, targets) in enumerate(asked)]
    for job, got in zip(jobs, run_jobs(retrievers, jobs)):
        assert got.method == job.method and got.batch == len(jobs)
        assert_answered_alike(got, retrievers[job.method].query(job.image, job.targets, k=job.k))


def test_methods_share_the_index_its_embedder_and_a_gan_and_compile_each_network_once(served):
    from amgan_search.index.serve.app import _compile_steps

    r = served["service"].retrievers
    assert all(r[n].searcher is r["gan"].searcher for n in NAMES)
    assert r["h"].manipulator is r["gan"].manipulator
    assert r["prototype"].space.embedder is r["real"].space.embedder is r["gan"].space.embedder
    assert r["mine"].space.searcher.dir != r["gan"].searcher.dir  # its own encoder's index
    steps = _compile_steps(r, (1,))
    assert [label for label, _, _ in steps] == [
        "the classifier reading the photo (gan)", "the generator (gan)", "the embedder (gan)",
        "the embedder (mine)", "the embedder (h)"]
    assert len({id(path) for _, path, _ in steps}) == len(steps)


@pytest.mark.slow
def test_query_server_with_a_method_prints_what_the_local_query_by_it_prints(served, tmp_path):
    from builders import run as cli

    service = load_service(served["index"], methods=",".join(served["spec"].values()), threads=1,
                           compile=False, max_batch=4, log=lambda _: None)
    common = [served["image"], "--color", "blue", "-k", 4]
    with over_http(service) as url:
        for name in ("mine", "h", "prototype"):
            for output in (["--json"], []):
                remote = cli("query", *common, *output, "--server", url, "--method", name)
                near = cli("query", *common, *output, "--index", served["index"], "--method",
                           served["spec"][name], "--device", "cpu")
                assert remote.exit_code == 0 and near.exit_code == 0, remote.output + near.output
                if output:
                    got, want = json.loads(remote.output), json.loads(near.output)
                    assert got["method"] == name
                    for r in want["results"]:
                        r["path"] = f"{url}/api/items/{r['id']}/image"
                    assert got == want
                else:  # the same table but for the paths, remotely the images' URLs
                    rows = [line.split()[:-1] for line in remote.output.splitlines()]
                    assert rows == [line.split()[:-1] for line in near.output.splitlines()]
        unknown = cli("query", served["image"], "--color", "blue", "--server", url, "--method",
                      "nope")
    assert unknown.exit_code == 2 and "unknown method 'nope'; valid: gan, mine" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


def test_serve_refuses_a_bad_method_choice_in_one_line(served):
    from builders import assert_refused, run as cli

    index = served["index"]
    assert_refused(cli("serve", "--index", index, "--port", 0, "--methods", "nonsense"),
                   "unknown method 'nonsense'")
    assert_refused(cli("serve", "--index", index, "--port", 0, "--methods", "real,prototype",
                       "--default", "amgan"),
                   "the default method 'amgan' is not one of those offered: real, prototype")
    assert_refused(cli("serve", "--index", index, "--port", 0, "--methods", "real", "--model",
                       served["gan"]), "--methods and --model")
    assert_refused(cli("serve", "--index", index, "--port", 0, "--methods", "oracle"),
                   "the oracle draws a catalog item's scene again")


def test_the_help_of_serve_and_query_names_the_default_method():
    from builders import run as cli

    from amgan_search.index.methods import DEFAULT

    for command in ("serve", "query"):
        text = " ".join(cli(command, "--help").output.split())
        assert f"[default: {DEFAULT}]" in text


def test_the_client_refuses_an_answer_that_names_no_method():
    from amgan_search.index.serve.client import check_answer

    with pytest.raises(UserError, match="not an amgan-search answer .no method named."):
        check_answer({"targets": {}, "results": []}, "http://127.0.0.1:1")
    assert check_answer({"method": "adde", "targets": {}, "results": []}, "x")["method"] == "adde"


@pytest.mark.slow
def test_the_latency_benchmarks_time_a_method_beside_amgan_in_the_same_run():
    from perf.query_latency import run as in_process
    from perf.serve_load import run as through_the_server

    rows = {r["measure"]: r for r in in_process(tiny=True, repeats=1, queries=1,
                                                 method="prototype")}
    whole = rows["prototype (fp32): whole query p50"]
    assert whole["baseline"] == "fp32 whole query p50 (speed-up)" and whole["ratio"] > 0
    assert "prototype (fp32): manipulate p50" in rows and "prototype (fp32): edit p50" not in rows
    rows = {r["measure"]: r for r in through_the_server(tiny=True, queries=1, clients=(1,),
                                                         method="prototype")}
    p50 = rows["prototype: 1 clients: p50 latency"]
    assert p50["baseline"] == "amgan p50 at 1 (speed-up)" and p50["ratio"] > 0
    assert rows["prototype: 1 clients: failed requests"]["value"] == 0
    assert rows["1 clients: failed requests"]["value"] == 0
