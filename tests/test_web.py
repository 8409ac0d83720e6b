"""The shopper's page in a real browser: upload a blue top, ask for red, see k red results, and
refine from a result (the next turn starts from that catalog item); choose a feature-space
method and get its results, with no edited picture and the page saying why.

Debian's Chromium driven by Playwright (its own browser download cannot work here) against
`amgan-search serve --methods amgan,adde=RUN` over a small synthetic catalog indexed with the
shipped models, RUN a disentangled embedding trained on it in seconds.
`AMGAN_SEARCH_SCREENSHOT=docs/serve.png` also saves the page after the red query (docs/usage.md's
picture).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
K = 5
SERVER_START_S = 180  # model loading on a loaded 2-core machine


def _browser_or_skip():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")
    return pytest.importorskip("playwright.sync_api",
                               reason="playwright is missing (pip install -e '.[test]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _index(root: Path) -> Path:
    """240 synthetic items at 128 px, imported and indexed with the shipped embedder, and a tiny
    disentangled embedding (`train adde`) trained on them, in `root / "adde"`."""
    from click.testing import CliRunner

    from amgan_search.cli.main import cli

    steps = [["catalog", "synth", root / "catalog", "--n", 240, "--seed", 7, "--size", 128,
              "--workers", 1],
             ["catalog", "import", "--format", "synthetic", root / "catalog", "--db", root / "cat.db",
              "--quiet"],
             ["index", "build", "--db", root / "cat.db", "--out", root / "index", "--workers", 0,
              "--quiet", "--device", "cpu"],
             ["train", "adde", "--db", root / "cat.db", "--out", root / "adde", "--views", 1,
              "--encoder-epochs", 2, "--epochs", 2, "--batch-size", 64, "--threads", 1,
              "--quiet"]]
    for args in steps:
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return root / "index"


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server did not answer /api/health in {SERVER_START_S} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _browser_or_skip()
    root = tmp_path_factory.mktemp("web")
    index = _index(root)
    port = _free_port()
    log = root / "server.log"
    command = [sys.executable, "-m", "amgan_search.cli.main", "serve", "--index", str(index),
               "--methods", f"amgan,adde={root / 'adde'}", "--host", "127.0.0.1", "--port",
               str(port), "--threads", "1", "--no-compile"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(server):
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server)
    yield page
    page.close()
    assert errors == [], errors


def _blue_top(folder: Path) -> Path:
    from amgan_search.images import save_image
    from amgan_search.synthetic import render, sample_scene

    image, _ = render(sample_scene(1001).with_attributes(color="blue", sleeve="short"), 128)
    path = folder / "blue-top.png"
    save_image(path, image)
    return path


def _shown(page) -> list[tuple[str, dict[str, str]]]:
    """(item id, {attribute: value}) of each result card, as the page shows them."""
    cards = []
    for card in page.locator("#results .result").all():
        item = card.locator(".rank").inner_text().split("item ")[1]
        pairs = (a.inner_text().split(" ", 1) for a in card.locator(".attr").all())
        cards.append((item, dict(pairs)))
    return cards


def _loaded_pictures(page, selector: str) -> list[bool]:
    """Whether each picture under `selector` decoded (after all of them finished loading)."""
    page.wait_for_function(f"() => [...document.querySelectorAll({selector!r})].every(i => i.complete)")
    return page.locator(selector).evaluate_all("imgs => imgs.map(i => i.naturalWidth > 0)")


def _screenshot(page) -> None:
    """docs/usage.md's picture, written under a temporary name and renamed into place."""
    target = os.environ.get("AMGAN_SEARCH_SCREENSHOT")
    if not target:
        return
    page.evaluate("document.activeElement.blur()")
    part = Path(f"{target}.part.png")
    page.screenshot(path=str(part), full_page=True)
    os.replace(part, target)


def _search_held(page, press) -> dict:
    """Run one search with the request held back, so the busy state can be checked; its answer."""
    from playwright.sync_api import expect

    held = []
    page.route("**/api/query", lambda route: held.append(route))
    press()
    expect(page.locator("#query")).to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("button", name="Search", exact=True)).to_be_disabled()
    expect(page.get_by_role("status")).to_have_text("Searching…")
    with page.expect_response("**/api/query") as response:
        held[0].continue_()
    page.unroute("**/api/query")
    expect(page.locator("#query")).to_have_attribute("aria-busy", "false")
    assert response.value.ok, response.value.text()
    return response.value.json()


def test_a_bad_upload_is_one_line_of_error_and_no_results(page):
    from playwright.sync_api import expect

    page.locator("#photo").set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"})
    with page.expect_response("**/api/query") as answer:
        page.get_by_role("button", name="Search", exact=True).click()
    assert answer.value.status == 400
    expect(page.get_by_role("alert")).to_have_text(answer.value.json()["error"])
    assert "\n" not in page.get_by_role("alert").inner_text()
    expect(page.locator("#results .result")).to_have_count(0)
    expect(page.get_by_role("button", name="Search", exact=True)).to_be_enabled()


def test_ask_for_red_then_refine_from_a_result(page, tmp_path):
    from playwright.sync_api import expect

    # Turn 1: a blue top, color -> red, k from the keyboard, Enter searches.
    page.get_by_label("color", exact=True).select_option("red")
    page.locator("#photo").set_input_files(_blue_top(tmp_path))
    k_field = page.get_by_label("Number of results")
    k_field.fill(str(K))
    first = _search_held(page, lambda: k_field.press("Enter"))
    assert first["targets"] == {"color": "red"} and first["start"]["item_id"] is None
    expect(page.locator("#results .result")).to_have_count(K)
    shown = _shown(page)
    assert [item for item, _ in shown] == [str(r["id"]) for r in first["results"]]
    assert [attributes["color"] for _, attributes in shown] == ["red"] * K
    for figure in ("#img-photo", "#img-edited", "#img-mask"):
        expect(page.locator(figure)).to_be_visible()
    assert _loaded_pictures(page, "#view figure img, #results img") == [True] * (3 + K)
    _screenshot(page)

    # Turn 2: long sleeves too, clicked on the first result: the query starts from that item.
    page.get_by_label("sleeve", exact=True).select_option("long")
    clicked = shown[0][0]
    with page.expect_request("**/api/query") as sent, page.expect_response("**/api/query") as got:
        page.locator("#results .result").first.click()
    form = sent.value.post_data
    assert 'name="item_id"' in form and 'name="image"' not in form
    second = got.value.json()
    assert str(second["start"]["item_id"]) == clicked
    assert second["targets"] == {"color": "red", "sleeve": "long"}
    expect(page.locator("#turns li")).to_have_count(2)
    expect(page.locator("#turns li").nth(1)).to_contain_text(f"Catalog item {clicked}")
    expect(page.locator("#start")).to_contain_text(f"Catalog item {clicked}")
    refined = _shown(page)
    assert [item for item, _ in refined] == [str(r["id"]) for r in second["results"]]
    assert refined != shown and len(refined) == K

    # Turn 3 from the keyboard: a result takes the focus and Enter refines from it.
    third_start = refined[1][0]
    page.locator("#results .result").nth(1).focus()
    with page.expect_response("**/api/query") as got:
        page.keyboard.press("Enter")
    assert str(got.value.json()["start"]["item_id"]) == third_start
    expect(page.locator("#turns li")).to_have_count(3)
    # An earlier turn can be shown again from the list of turns.
    page.locator("#turns .turn").first.click()
    assert [item for item, _ in _shown(page)] == [item for item, _ in shown]


def test_start_from_a_catalog_item(page, server):
    from playwright.sync_api import expect

    page.get_by_text("or a catalog item").click()
    items = page.locator("#items .item")
    expect(items).to_have_count(12)
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.locator("#page")).to_contain_text("13–24 of 240")
    label = items.first.get_attribute("aria-label")
    item = label.split("item ")[1].split(":")[0]
    items.first.click()
    expect(page.locator("#start")).to_contain_text(f"Catalog item {item}")
    with page.expect_response("**/api/query") as got:
        page.get_by_role("button", name="Search", exact=True).click()
    answer = got.value.json()
    assert str(answer["start"]["item_id"]) == item and answer["edited"] is None
    # Unedited, the item finds itself first.
    expect(page.locator("#results .result").first).to_contain_text(f"item {item}")


def test_choose_a_feature_method_and_get_its_results_without_an_edited_picture(page, tmp_path):
    from playwright.sync_api import expect

    method = page.get_by_label("Method", exact=True)
    expect(method).to_have_value("amgan")  # the server's default, selected
    assert method.locator("option").all_inner_texts() == ["amgan", "adde"]
    method.select_option("adde")
    expect(page.locator("#method-note")).to_contain_text("makes no picture")
    expect(page.locator("#attributes input[name=region]")).to_have_count(0)  # no region to confine
    page.get_by_label("color", exact=True).select_option("red")
    page.locator("#photo").set_input_files(_blue_top(tmp_path))
    page.get_by_label("Number of results").fill(str(K))
    with page.expect_response("**/api/query") as got:
        page.get_by_role("button", name="Search", exact=True).click()
    answer = got.value.json()
    # the server's default is amgan: an answer by adde is the page sending the method chosen
    assert answer["method"] == "adde" and answer["targets"] == {"color": "red"}
    assert answer["edited"] is None and answer["mask"] is None
    expect(page.locator("#results .result")).to_have_count(K)
    assert [item for item, _ in _shown(page)] == [str(r["id"]) for r in answer["results"]]
    # no edit and no mask shown: the page says the method made no picture
    expect(page.locator("#img-edited")).to_be_hidden()
    expect(page.locator("#img-mask")).to_be_hidden()
    expect(page.locator("#no-picture")).to_contain_text("No edited picture: adde searched")
    expect(page.locator("#turns li").first).to_contain_text("by adde")
    # back to the GAN: its edit and mask are shown again
    method.select_option("amgan")
    with page.expect_response("**/api/query") as again:
        page.get_by_role("button", name="Search", exact=True).click()
    assert again.value.json()["method"] == "amgan"
    expect(page.locator("#img-edited")).to_be_visible()
    expect(page.locator("#no-picture")).to_be_hidden()
