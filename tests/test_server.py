"""`amgan-search serve`: every endpoint, clean refusals that leave it serving, batches that answer
as single queries do, and `query --server` against a live server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from amgan_search.cli.main import cli
from amgan_search.images import load_image
from amgan_search.index.serve.batch_query import Job, edit_many, run_jobs
from amgan_search.index.serve.batching import MicroBatcher
from amgan_search.index.serve.app import create_app, load_service
from amgan_search.index.serve.service import MAX_UPLOAD_BYTES


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from builders import tiny_world

    world = tiny_world(tmp_path_factory.mktemp("serve"))
    root, gan = world["root"], world["gan"]
    web = root / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>search</title>")
    (web / "style.css").write_text("body { margin: 0 }")
    # fp32 on any CPU: the batch tests compare bit for bit (bf16 rounds per batch shape)
    service = load_service(root / "index", model=gan, threads=1, compile=False, precision="fp32",
                           log=lambda _: None)
    yield {"root": root, "index": root / "index", "gan": gan, "service": service,
           "image": root / "catalog" / "img" / "4.png", "web": web,
           "client": TestClient(create_app(service, web_dir=web), raise_server_exceptions=False)}
    service.close()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def picture(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def post_query(client, image_path=None, **fields):
    files = {"image": ("q.png", image_path.read_bytes(), "image/png")} if image_path else None
    data = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in fields.items()}
    return client.post("/api/query", data=data, files=files)


# ---------------------------------------------------------------- the endpoints

def test_health_and_schema_describe_the_loaded_index(setup):
    c = setup["client"]
    assert c.get("/api/health").json() == {"status": "ok", "items": 24, "methods": ["gan"],
                                           "default_method": "gan", "compiled": False,
                                           "device": "cpu"}
    schema = c.get("/api/schema").json()
    assert schema["attributes"] == {"color": ["red", "green", "blue"], "sleeve": ["long", "short"]}
    # a GAN folder is a method named after the folder; "sleeves" needs sleeve=sleeveless, which
    # this schema lacks, so the GAN offers no named region
    assert schema["methods"] == [{"name": "gan", "kind": "editor", "edits_pixels": True,
                                  "attributes": ["color", "sleeve"], "regions": []}]
    assert schema["default_method"] == "gan"
    assert schema["filters"] == {"split": ["test", "train"]} and schema["k_max"] == 100
    assert "/api/query" in c.get("/openapi.json").json()["paths"]
    assert c.get("/docs").status_code == 200


def test_items_page_and_item_images_by_id(setup):
    c = setup["client"]
    page = c.get("/api/items", params={"offset": 4, "limit": 3}).json()
    assert page["total"] == 24 and [i["id"] for i in page["items"]] == ["item4", "item5", "item6"]
    assert page["items"][0] == {"id": "item4", "attributes": {"color": "green", "sleeve": "short"},
                                "image_url": "/api/items/item4/image"}
    got = c.get("/api/items/item4/image")
    assert got.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(got.content))), load_image(setup["image"]))


@pytest.mark.parametrize("item", ["nope", "img/4.png", "..%2F..%2Fcatalog.db", "catalog/img/4.png"])
def test_item_images_are_found_by_id_only(setup, item):
    got = setup["client"].get(f"/api/items/{item}/image")
    assert got.status_code == 404 and "unknown item id" in got.json()["error"]


def test_query_upload_answers_as_the_local_query(setup):
    from amgan_search.index.retrieve import Retriever

    got = post_query(setup["client"], setup["image"], targets={"color": "blue"}, k=4,
                     where={"sleeve": "long"})
    assert got.status_code == 200, got.text
    body = got.json()
    local = Retriever(setup["index"], model=setup["gan"], device="cpu", precision="fp32").query(
        load_image(setup["image"]), {"color": "blue"}, k=4, where={"sleeve": "long"})
    assert body["targets"] == {"color": "blue"} and body["start"] == {"item_id": None}
    assert body["method"] == "gan"
    # the local results less their paths: a server names no file of its own to a client
    assert [{k: v for k, v in r.items() if k != "image_url"} for r in body["results"]] == [
        {k: v for k, v in r.as_dict().items() if k != "path"} for r in local.results]
    assert all(r["image_url"] == f"/api/items/{r['id']}/image" for r in body["results"])
    assert np.array_equal(picture(body["edited"]), local.edited)
    assert np.array_equal(picture(body["mask"]), local.mask)
    assert np.array_equal(picture(body["image"]), load_image(setup["image"]))
    assert set(body["timing_ms"]) == {"edit", "embed", "search", "total"}


def test_query_from_a_catalog_item_unedited_finds_the_item_first(setup):
    body = post_query(setup["client"], item_id="item4", targets={}, k=3).json()
    assert body["start"] == {"item_id": "item4"} and body["edited"] is None and body["mask"] is None
    assert body["results"][0]["id"] == "item4"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_edit_alone_returns_the_retrievers_edit(setup):
    from amgan_search.index.retrieve import Retriever

    files = {"image": ("q.png", setup["image"].read_bytes(), "image/png")}
    body = setup["client"].post("/api/edit", data={"targets": '{"sleeve": "long"}'}, files=files).json()
    edited, mask = Retriever(setup["index"], model=setup["gan"], device="cpu",
                             precision="fp32").edit(
        load_image(setup["image"]), {"sleeve": "long"})
    assert body["targets"] == {"sleeve": "long"} and body["method"] == "gan"
    assert np.array_equal(picture(body["edited"]), edited) and np.array_equal(picture(body["mask"]), mask)


def test_web_page_and_static_files_and_404_without_a_page(setup, tmp_path):
    c = setup["client"]
    assert c.get("/").text.startswith("<!doctype html>")
    assert c.get("/static/style.css").text == "body { margin: 0 }"
    bare = TestClient(create_app(setup["service"], web_dir=tmp_path / "none"))
    got = bare.get("/")
    assert got.status_code == 404 and "index.html" in got.json()["error"]


# ---------------------------------------------------------------- refusals

def huge_header_png(width=8_000, height=6_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (over the loader's pixel limit)."""
    data = png(np.zeros((2, 2, 3), dtype=np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


BAD = {
    "oversized": (413, "limit", {"image": ("big.png", b"\0" * (MAX_UPLOAD_BYTES + 1))}, {}),
    "corrupt": (400, "not an image", {"image": ("bad.png", b"this is no picture")}, {}),
    "empty": (400, "empty file", {"image": ("e.png", b"")}, {}),
    "over the pixel limit": (400, "pixel limit", {"image": ("h.png", huge_header_png())}, {}),
    "unknown value": (400, "valid: red, green, blue", None, {"targets": '{"color": "teal"}'}),
    "unknown attribute": (400, "valid: color, sleeve", None, {"targets": '{"fabric": "silk"}'}),
    "unknown item id": (404, "unknown item id", None, {"item_id": "nope"}),
    "k zero": (400, "k: Input should be greater than or equal to 1", None, {"k": "0"}),
    "k too large": (400, "k: Input should be less than or equal to 100", None, {"k": "101"}),
    "k not a number": (400, "k:", None, {"k": "ten"}),
    "bad JSON": (400, "targets: not valid JSON", None, {"targets": '{"color": '}),
    "JSON not an object": (400, "targets: expected a JSON object", None, {"targets": '["red"]'}),
    "unknown where field": (400, "where: unknown field 'brand'", None, {"where": '{"brand": "x"}'}),
    "unknown where value": (400, "valid: test, train", None, {"where": '{"split": "dev"}'}),
    "region without target": (400, "only_region needs a target", None, {"only_region": "sleeves"}),
    "unknown region": (400, "unknown region 'elbows'", None,
                       {"only_region": "elbows", "targets": '{"color": "red"}'}),
    "no start": (400, "give an image", None, {"targets": "{}"}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_one_line_json_and_the_server_keeps_serving(setup, case):
    status, words, files, data = BAD[case]
    c = setup["client"]
    if files is None and "item_id" not in data and case != "no start":
        files = {"image": ("q.png", setup["image"].read_bytes())}
    got = c.post("/api/query", data=data, files=files)
    assert got.status_code == status, got.text
    body = got.json()
    assert list(body) == ["error"] and words in body["error"]
    assert "\n" not in body["error"] and "Traceback" not in got.text
    good = post_query(c, setup["image"], targets={"color": "red"}, k=2)
    assert good.status_code == 200 and len(good.json()["results"]) == 2


def test_both_an_image_and_an_item_is_refused(setup):
    got = post_query(setup["client"], setup["image"], item_id="item4")
    assert got.status_code == 400 and "not both" in got.json()["error"]


def test_oversized_streamed_body_without_length_is_refused(setup):
    def chunks():
        for _ in range(11):
            yield b"\0" * (1024 * 1024)

    got = setup["client"].post("/api/query", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=x"})
    assert got.status_code == 413 and "limit" in got.json()["error"]


def test_a_fault_in_the_models_is_a_500_line_and_the_next_query_works(setup, monkeypatch):
    batcher = setup["service"].batcher

    def broken(jobs):
        raise RuntimeError("boom")

    monkeypatch.setattr(batcher, "run", broken)
    got = post_query(setup["client"], setup["image"], targets={"color": "red"})
    assert got.status_code == 500 and got.json() == {
        "error": "internal error (RuntimeError); see the server's log"}
    monkeypatch.undo()
    assert post_query(setup["client"], setup["image"], targets={"color": "red"}).status_code == 200


def test_the_openapi_page_declares_every_answer_and_bound(setup):
    spec = setup["client"].get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    params = {p["name"]: p["schema"] for p in paths["/api/items"]["get"]["parameters"]}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 200
    assert params["offset"]["minimum"] == 0
    form = paths["/api/query"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    k = schemas[form["$ref"].split("/")[-1]]["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 100, 10)
    answers = {"/api/health": "Health", "/api/schema": "SchemaAnswer", "/api/items": "Items",
               "/api/query": "QueryAnswer", "/api/edit": "EditAnswer"}
    for path, name in answers.items():
        (route,) = paths[path].values()
        ok = route["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/" + name)
        assert route["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorAnswer")
    assert {"rank", "id", "score", "attributes", "image_url"} <= set(schemas["Result"]["properties"])


def test_bad_items_page_and_unknown_route(setup):
    c = setup["client"]
    assert c.get("/api/items", params={"limit": 0}).json()["error"] == (
        "limit: Input should be greater than or equal to 1")
    assert "less than or equal to 200" in c.get("/api/items", params={"limit": 201}).json()["error"]
    assert "offset:" in c.get("/api/items", params={"offset": -1}).json()["error"]
    assert c.get("/api/items", params={"offset": "x"}).status_code == 400
    assert c.get("/api/nothing").json() == {"error": "Not Found"}


# ---------------------------------------------------------------- batching

def jobs_of(image_a, image_b, method="gan"):
    """Queries that edit different attributes, in different orders, regions, sizes, none."""
    return [Job(image_a, {"color": "blue"}, k=5, method=method),
            Job(image_b, {"sleeve": "long"}, k=5, method=method),
            Job(image_a, {"color": "red", "sleeve": "short"}, k=3, where={"split": "train"},
                method=method),
            Job(image_b, {}, k=5, method=method),
            Job(image_a, {"color": "green"}, "sleeve=short", k=5, method=method),
            Job(image_b[:20], {"sleeve": "short", "color": "blue"}, "color=red", k=4,
                method=method)]


def test_batched_edits_are_bitwise_the_single_edits(setup):
    m = setup["service"].retriever.manipulator
    a, b = load_image(setup["image"]), load_image(setup["root"] / "catalog" / "img" / "9.png")
    jobs = [j for j in jobs_of(a, b) if j.targets]
    batched = edit_many(m, [j.image for j in jobs], [j.targets for j in jobs],
                        [j.only_region for j in jobs])
    for job, (edited, mask) in zip(jobs, batched):
        alone, alone_mask = setup["service"].retriever.edit(job.image, job.targets, job.only_region)
        assert np.array_equal(edited, alone) and np.array_equal(mask, alone_mask)


def assert_answered_alike(got, want) -> None:
    """A batch's outcome of a job against the query alone (`QueryResult`): the same method,
    targets, results and pictures."""
    assert got.method == want.method and got.targets == want.targets
    assert [h.id for h in got.results] == [h.id for h in want.results]
    # the embedder's batched forward may change the last float bits (see batch_query)
    assert [h.score for h in got.results] == pytest.approx([h.score for h in want.results],
                                                           abs=1e-5)
    assert (got.edited is None) == (want.edited is None)
    if got.edited is not None:
        assert np.array_equal(got.edited, want.edited) and np.array_equal(got.mask, want.mask)


def test_a_batch_answers_each_query_as_the_retriever_does_alone(setup):
    r = setup["service"].retriever
    a, b = load_image(setup["image"]), load_image(setup["root"] / "catalog" / "img" / "9.png")
    jobs = jobs_of(a, b)
    for job, got in zip(jobs, run_jobs({"gan": r}, jobs)):
        want = r.query(job.image, job.targets, k=job.k, where=job.where, only_region=job.only_region)
        assert got.batch == len(jobs) and got.method == "gan"
        assert_answered_alike(got, want)


def test_concurrent_jobs_run_as_one_batch_and_a_bad_job_fails_alone():
    sizes, first_running, release = [], threading.Event(), threading.Event()

    def run(jobs):
        sizes.append(len(jobs))
        if len(sizes) == 1:
            first_running.set()
            release.wait(5)
        if "bad" in jobs:
            raise ValueError("bad job")
        return [j * 2 for j in jobs]

    batcher = MicroBatcher(run, wait_s=0.001, max_batch=8)
    try:
        first = batcher.submit(1)
        assert first_running.wait(5)
        queued = [batcher.submit(i) for i in (2, "bad", 3, 4)]  # arrive while the models are busy
        release.set()
        assert first.result(5) == 2
        with pytest.raises(ValueError, match="bad job"):
            queued[1].result(5)
        assert [f.result(5) for f in (queued[0], queued[2], queued[3])] == [4, 6, 8]
        assert sizes[:2] == [1, 4]  # then each of the failed batch's jobs alone
        assert batcher.submit(5).result(5) == 10
    finally:
        batcher.close()


def test_two_workers_run_two_batches_at_once():
    both = threading.Barrier(2, timeout=5)  # each batch waits for the other to be running

    def run(jobs):
        both.wait()
        return [j + 1 for j in jobs]

    batcher = MicroBatcher(run, wait_s=0, max_batch=1, workers=2)
    try:
        futures = [batcher.submit(i) for i in (1, 2)]
        assert [f.result(10) for f in futures] == [2, 3]
    finally:
        batcher.close()


def test_concurrent_http_queries_share_batches(setup, monkeypatch):
    service = setup["service"]
    before_batches, before_jobs = service.batcher.batches, service.batcher.jobs
    run = service.batcher.run

    def busy(jobs):  # models as slow as real ones: the other requests arrive meanwhile
        time.sleep(0.3)
        return run(jobs)

    monkeypatch.setattr(service.batcher, "run", busy)
    results = []

    def client():
        got = post_query(setup["client"], setup["image"], targets={"color": "blue"}, k=3)
        results.append(got.status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 6
    assert service.batcher.jobs - before_jobs == 6
    assert service.batcher.batches - before_batches < 6  # some of them ran together


# ---------------------------------------------------------------- query --server

@contextmanager
def over_http(service):
    """A loaded service served by uvicorn on 127.0.0.1, a free port, in a thread: its URL;
    stopped (and the service closed) at the end."""
    import uvicorn

    from amgan_search.index.serve.app import listen_socket

    sock = listen_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        service.close()


@pytest.fixture(scope="module")
def live(setup):
    """What `amgan-search serve` runs (default precision, as a local query), over HTTP."""
    with over_http(load_service(setup["index"], model=setup["gan"], threads=1, compile=False,
                                max_batch=4, log=lambda _: None)) as url:
        yield url


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("output", [["--json"], []])
def test_query_server_prints_what_the_local_query_prints(setup, live, output):
    common = [setup["image"], "--color", "blue", "-k", 4, "--where", "sleeve=long", *output]
    remote = invoke("query", *common, "--server", live)
    local = invoke("query", *common, "--index", setup["index"], "--model", setup["gan"],
                   "--device", "cpu")
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output + local.output
    # The same but for each result's path: remotely the URL of its image (a server names none
    # of its files to a client).
    if output:
        got, want = json.loads(remote.output), json.loads(local.output)
        for r in want["results"]:
            r["path"] = f"{live}/api/items/{r['id']}/image"
        assert got == want
        return
    remote_rows = [line.split() for line in remote.output.splitlines()]
    local_rows = [line.split() for line in local.output.splitlines()]
    assert remote_rows[:2] == local_rows[:2] and len(remote_rows) == len(local_rows) == 6
    for got, want in zip(remote_rows[2:], local_rows[2:]):
        assert got[:-1] == want[:-1] and got[-1] == f"{live}/api/items/{got[1]}/image"


def test_query_server_writes_the_edit_and_contact_sheet(setup, live, tmp_path):
    got = invoke("query", setup["image"], "--color", "blue", "-k", 3, "--server", live, "--json",
                 "--out", tmp_path)
    assert got.exit_code == 0, got.output
    edited = json.loads(got.output)["edited"]
    assert load_image(edited).shape == (32, 32, 3) and (tmp_path / "contact.png").is_file()
    (tmp_path / "mask.png").write_text("the user's notes")  # not a PNG: never written over
    refused = invoke("query", setup["image"], "--color", "blue", "--server", live, "--out", tmp_path)
    assert refused.exit_code == 2 and "mask.png: exists and is not a PNG image" in refused.output
    assert (tmp_path / "mask.png").read_text() == "the user's notes"


def test_query_server_errors_are_one_line_exit_2(setup, live):
    got = CliRunner().invoke(cli, ["query", str(setup["image"]), "--set", "color=teal",
                                   "--server", live])
    assert got.exit_code == 2 and "valid: red, green, blue" in got.output
    assert len(got.output.strip().splitlines()) == 1
    gone = CliRunner().invoke(cli, ["query", str(setup["image"]), "--server", "http://127.0.0.1:9"])
    assert gone.exit_code == 2 and "cannot reach the server" in gone.output
    local = CliRunner().invoke(cli, ["query", str(setup["image"]), "--server", live, "--model", "x"])
    assert local.exit_code == 2 and "are the server's" in local.output


def test_query_server_path_imports_no_torch(setup, live):
    import subprocess
    import sys

    code = ("import sys; from amgan_search.cli.main import cli\n"
            f"cli.main(['query', {str(setup['image'])!r}, '--server', {live!r}, '--json'], "
            "standalone_mode=False)\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH"


def test_a_large_photo_is_answered_with_previews(setup, tmp_path):
    from amgan_search.images import save_image

    big = np.full((1500, 2000, 3), 230, dtype=np.uint8)
    big[300:1200, 600:1400] = (200, 30, 30)
    save_image(tmp_path / "big.png", big)
    body = post_query(setup["client"], tmp_path / "big.png", targets={"color": "blue"}, k=2).json()
    assert picture(body["image"]).shape == (384, 512, 3) and picture(body["edited"]).shape == (384, 512, 3)
    assert picture(body["mask"]).shape == (384, 512) and len(body["results"]) == 2


@pytest.mark.slow
def test_load_test_runs_tiny_with_no_failures_and_bad_requests_refused():
    from perf.serve_load import run

    rows = {r["measure"]: r for r in run(tiny=True, queries=2, clients=(1, 4))}
    assert rows["1 clients: failed requests"]["value"] == 0
    assert rows["4 clients: failed requests"]["value"] == 0
    assert rows["throughput 4 vs 1 clients"]["ratio"] > 0
    good = rows["bad phase: good queries answered"]
    bad = rows["bad phase: bad requests refused (413/400)"]
    assert good["value"] == good["baseline_value"] == 8 and bad["value"] == bad["baseline_value"] == 2
    assert rows["server healthy at the end"]["value"] == 1


def test_serve_refuses_a_missing_index_and_a_taken_port_in_one_line(tmp_path):
    import socket

    missing = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none"), "--port", "0"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert missing.output.strip().splitlines()[-1].endswith("none: no such index directory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path), "--port", str(port)])
    assert busy.exit_code == 2 and f"127.0.0.1:{port}: cannot listen" in busy.output
