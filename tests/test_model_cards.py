"""The weights policy of docs/models.md: each shipped model's card agrees with its files, its
ledger row names the weights in the tree, a replacement is no worse on its card's measures, and
no weights are committed outside the shipped models' folders."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from amgan_search.registry import SHIPPED, SHIPPED_DIR
from builders import ROOT, tracked

MODELS_MD = ROOT / "docs" / "models.md"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx")


def ledger() -> dict[str, list[dict]]:
    """docs/models.md's ledger: per model, its rows oldest first, each {sha, measures: {name:
    (direction, value text)}}."""
    rows: dict[str, list[dict]] = {}
    text = MODELS_MD.read_text()
    table = text[text.index("## Ledger"):text.index("## What a clone")]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        measures = {}
        for part in cells[3].split(";"):
            name, direction, value = re.fullmatch(r"\s*(.+?) ([↑↓]) (-?[\d.]+)\s*", part).groups()
            measures[name] = (direction, value)
        rows.setdefault(cells[0].strip("`"), []).append({"sha": cells[1].strip("`"),
                                                         "measures": measures})
    return rows


def card(name: str) -> str:
    return " ".join((SHIPPED_DIR / name / "MODEL_CARD.md").read_text().split())


def config(name: str) -> dict:
    return json.loads((SHIPPED_DIR / name / "config.json").read_text())


def weights_sha(name: str) -> str:
    sums = dict(line.split()[::-1] for line in (SHIPPED_DIR / name / "SHA256SUMS").read_text().splitlines())
    return sums["model.safetensors"]


def test_every_shipped_model_has_a_ledger_row_for_the_weights_in_the_tree():
    rows = ledger()
    assert set(rows) == set(SHIPPED)
    for name in SHIPPED:
        assert weights_sha(name).startswith(rows[name][-1]["sha"]), name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_ledger_figures_stand_in_the_card(name):
    text = card(name)
    for measure, (_, value) in ledger()[name][-1]["measures"].items():
        assert re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", text), (name, measure, value)


def test_a_replacement_is_no_worse_on_any_measure_the_rows_before_it_name():
    for name, rows in ledger().items():
        for old, new in zip(rows, rows[1:]):
            for measure, (direction, value) in new["measures"].items():
                if measure in old["measures"]:
                    before = float(old["measures"][measure][1])
                    assert (float(value) >= before if direction == "↑" else float(value) <= before), (
                        f"{name}: {measure} {value} is worse than {before} of the model it replaces")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_card_states_the_size_of_the_weights(name):
    size = (SHIPPED_DIR / name / "model.safetensors").stat().st_size
    assert f"Stored in fp16 ({round(size / 1e6)} MB)" in card(name)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_cards_training_command_is_the_one_the_config_records(name):
    """Each flag of the card's `amgan-search train ...` line has the value of the run the model's
    config.json records (a retrained model with a stale card fails here)."""
    cfg = config(name)
    recorded = cfg.get("train_config") or cfg.get("train")
    (line,) = [ln for ln in (SHIPPED_DIR / name / "MODEL_CARD.md").read_text().splitlines()
               if ln.startswith("amgan-search train ") and " export " not in ln]
    words = shlex.split(line)[3:]
    flags = {w[2:].replace("-", "_"): v for w, v in zip(words, words[1:]) if w.startswith("--")}
    assert flags, line
    for flag, value in flags.items():
        assert flag in recorded, (name, flag)
        assert str(recorded[flag]) == value, (name, flag, recorded[flag], value)


@pytest.mark.parametrize("name", ["classifier-cam", "classifier-eval"])
def test_a_classifier_cards_training_accuracy_is_the_one_its_config_records(name):
    accuracy = config(name)["metrics"]["test"]["accuracy"]
    row = f"accuracy, seed-0 catalog, test split (1,000) | {accuracy['color']:.3f} | {accuracy['sleeve']:.3f} |"
    assert row in card(name)


def test_no_weights_are_committed_outside_the_shipped_models():
    shipped = {SHIPPED_DIR / name / "model.safetensors" for name in SHIPPED}
    weights = {path for path in tracked(".") if path.name.endswith(WEIGHT_SUFFIXES)}
    assert weights == shipped, sorted(str(p.relative_to(ROOT)) for p in weights ^ shipped)
