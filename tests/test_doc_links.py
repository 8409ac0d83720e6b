"""Every relative link of README.md and docs/*.md leads to a file of the repository, and a link's
#anchor to a heading of the page it names (as GitHub makes anchors), so moving a section between
pages cannot leave a reader at a dead link."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.*)$")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to -."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _outside_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    return {anchor(m.group(1)) for line in _outside_code(page.read_text(encoding="utf-8"))
            if (m := HEADING.match(line))}


def links(page: Path) -> list[str]:
    return [target for line in _outside_code(page.read_text(encoding="utf-8"))
            for target in LINK.findall(line) if not re.match(r"[a-z]+:", target)]


def broken(page: Path) -> list[str]:
    """The page's relative links that lead nowhere."""
    bad = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(target)
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_a_dead_link_and_a_dead_anchor_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The `serve` command\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#the-serve-command) [gone](missing.md) [no heading]"
                    "(other.md#nowhere) [here](#a-title)\n\n# A title\n\n```\n[code](x.md)\n```\n")
    assert broken(page) == ["missing.md", "other.md#nowhere"]


def test_the_readme_points_at_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    assert "docs/README.md" in readme
    unlisted = [p.name for p in PAGES[1:] if p.name != "README.md" and f"({p.name}" not in index]
    assert unlisted == [], f"docs pages docs/README.md does not list: {unlisted}"
