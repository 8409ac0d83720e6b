"""Every interval the README and the docs/ pages quote is one their files hold, rounded once:
printed by a result file (or a card's 4-decimal figure to 3 decimals), or recomputed from the
records by the `experiments/paired.py` command a table row or a sentence names. The prose rounds
nothing from raw values itself (a bound rounded again in a sentence is refused)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
# The pages that quote figures (what a reader reads), and the files whose tables they quote: the
# result files and the shipped models' cards. A page is never its own source.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [*(ROOT / "docs" / "results").rglob("*.md"),
           *(ROOT / "amgan_search" / "models").glob("*/*.md")]
# An estimate and its interval as the tables print them: 0.741 [0.723, 0.757], +0.054 [...]
INTERVAL = re.compile(r"([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")
# A row of a page's table of paired.py: | A | B | part: edits | est [low, high] |
PAIRED_ROW = re.compile(r"^\s*\| (\S+) \| (\S+) \| ([a-z, ]+): (\d+) \| (" + INTERVAL.pattern
                        + r") \|")
# Sentences that quote `paired.py A B ...` outside its tables: the command as the sentence names
# it -> the differences it quotes, in order, as (A, B, part).
PAIRED_SENTENCES = {
    "paired.py supervised-1700 amgan-8500": [
        ("supervised-1700", "amgan-8500", "sleeve, shorter"),
        ("supervised-1700", "amgan-8500", "color")],
    "paired.py amgan-rerun-3000 amgan-3000": [
        ("amgan-rerun-3000", "amgan-3000", "color"), ("amgan-rerun-3000", "amgan-3000", "sleeve")],
    "paired.py no-attention-loss-2500 amgan-2500 no-attention-loss-3000 amgan-3000 "
    "no-attention-loss-3500 amgan-3500": [
        (f"no-attention-loss-{step}", f"amgan-{step}", "sleeve, shorter")
        for step in (2500, 3000, 3500)],
    "paired.py amgan-alphabin30-4500 amgan-4500 amgan-alphabin30-5000 amgan-5000": [
        (f"amgan-alphabin30-{step}", f"amgan-{step}", part)
        for part in ("sleeve", "sleeve, shorter", "color") for step in (4500, 5000)],
}


def _pages() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in PAGES)


def _paired(a: str, b: str, part: str) -> tuple[int, str]:
    """(edits, "est [low, high]") as `paired.py A B` prints the part."""
    sys.path.insert(0, str(EXPERIMENTS))  # the scripts import each other
    try:
        import paired
    finally:
        sys.path.remove(str(EXPERIMENTS))
    return paired.difference(paired.edits(a), paired.edits(b), part)


def _paired_rows() -> list[tuple]:
    return [m.groups()[:5] for line in _pages().splitlines() if (m := PAIRED_ROW.match(line))]


def _sentence(command: str) -> list[str]:
    """The intervals of the sentence that names `command`, in order."""
    text = " ".join(_pages().split())
    at = text.index(f"`{command}`")
    start, end = text.rfind(". ", 0, at), text.find(". ", at)
    return [m.group(0) for m in INTERVAL.finditer(text[start:end])]


def _rounded(m: re.Match) -> str:
    return "{} [{}, {}]".format(*(f"{float(v):.3f}" for v in m.groups()))


def test_every_interval_a_page_quotes_has_a_source():
    held = set()
    for path in SOURCES:
        for m in INTERVAL.finditer(path.read_text(encoding="utf-8")):
            held.add(m.group(0))
            if len(m.group(1).split(".")[1]) == 4:  # a card's 4 decimals, quoted with 3
                held.add(_rounded(m))
    held |= {row[4] for row in _paired_rows()}  # recomputed by the test below
    held |= {q for command in PAIRED_SENTENCES for q in _sentence(command)}  # and this one
    unsourced = [m.group(0) for m in INTERVAL.finditer(_pages()) if m.group(0) not in held]
    assert unsourced == [], f"intervals that no file or paired.py command gives: {unsourced}"


def test_a_bound_rounded_again_is_refused(tmp_path, monkeypatch):
    """The issue's case: a file's 0.741 [0.723, 0.757] quoted as [0.723, 0.758]."""
    source, page = tmp_path / "result.md", tmp_path / "page.md"
    source.write_text("| amgan | 0.741 [0.723, 0.757] |\n")
    page.write_text("colour truth 0.741 [0.723, 0.758] at 5,000\n")
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", [source])
    monkeypatch.setattr(sys.modules[__name__], "PAGES", [page])
    monkeypatch.setattr(sys.modules[__name__], "PAIRED_SENTENCES", {})
    with pytest.raises(AssertionError, match=r"0\.758"):
        test_every_interval_a_page_quotes_has_a_source()


@pytest.mark.parametrize("a, b, part, n, quoted", _paired_rows())
def test_a_paired_row_recomputes_from_its_records(a, b, part, n, quoted):
    assert _paired(a, b, part) == (int(n), quoted)


@pytest.mark.parametrize("command", sorted(PAIRED_SENTENCES))
def test_a_sentence_quoting_paired_py_recomputes_from_its_records(command):
    expected = [_paired(a, b, part)[1] for a, b, part in PAIRED_SENTENCES[command]]
    assert _sentence(command)[:len(expected)] == expected
