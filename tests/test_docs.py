"""The documentation's pointers resolve: relative links and anchors in README.md and docs/, and `make` targets.

A page or section that moves leaves links behind; these tests name each one that no longer leads anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MAKE_TARGET = re.compile(r"\bmake ([a-z][\w-]*)")
MAKEFILE_RULE = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces → ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown page, repeated headings numbered as GitHub does (``x``, ``x-1``)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or anchor in that file, does not exist."""
    text = page.read_text()
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: — not checked here
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {shown(dest)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {shown(dest)}")
    return broken


def test_slug_follows_github() -> None:
    assert slug("Re-keying events (`STREAMREC_REPARTITION`)") == "re-keying-events-streamrec_repartition"
    assert slug("Setting up: `make demo` and `make test`") == "setting-up-make-demo-and-make-test"
    assert anchors("# A\n## B\n## B\n```\n# not a heading\n```\n") == {"a", "b", "b-1"}


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-section) [self](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) [bad self](#nope) `[code](missing.md)`\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "other.md#nope", "#nope"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_make_targets_quoted_in_the_docs_exist() -> None:
    targets = set(MAKEFILE_RULE.findall((ROOT / "Makefile").read_text()))
    quoted: dict[str, set[str]] = {}
    for page in PAGES:
        text = page.read_text()
        code = "\n".join(m.group(0) for m in FENCE.finditer(text))
        code += "\n" + "\n".join(CODE_SPAN.findall(text))
        for target in MAKE_TARGET.findall(code):
            quoted.setdefault(target, set()).add(page.name)
    assert {"demo", "test"} <= set(quoted), "the README's quick start quotes `make demo` and `make test`"
    missing = {t: sorted(pages) for t, pages in quoted.items() if t not in targets}
    assert missing == {}, f"quoted in the docs but not a target of the Makefile: {missing}"


POINTER = re.compile(r"""(README|docs/[\w-]+\.md)`*(?:,|'s)\s+["']([A-Za-z][^"']*)["']""")
"""A pointer from code to a section: ``(docs/performance.md, "Where the memory goes")``, ``(README, 'Commands')``."""
FILE_POINTER = re.compile(r"\bdocs/[\w-]+\.md\b")
SOURCES = [*sorted((ROOT / "streamrec").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")), ROOT / "Makefile"]


def headings(page: Path) -> set[str]:
    """A page's headings as written, lower case, without backticks."""
    return {h.replace("`", "").lower() for h in HEADING.findall(FENCE.sub("", page.read_text()))}


def broken_pointers(text: str) -> list[str]:
    """The docs files and sections that ``text`` points to and that do not exist."""
    broken = [f"{m}: no such file" for m in FILE_POINTER.findall(text) if not (ROOT / m).exists()]
    for page, section in POINTER.findall(text):
        path = ROOT / ("README.md" if page == "README" else page)
        if path.exists() and " ".join(section.split()).lower() not in headings(path):
            broken.append(f'{page}, "{section}": no such heading')
    return broken


def test_a_broken_pointer_is_reported() -> None:
    text = """(docs/performance.md, "Where the memory goes") (README, 'Publishing from
        other clients') (docs/gone.md) (``docs/evaluation.md``, "No such section")"""
    assert broken_pointers(text) == [
        "docs/gone.md: no such file",
        'docs/evaluation.md, "No such section": no such heading',
    ]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pointers_from_code_to_docs_resolve(source: Path) -> None:
    assert broken_pointers(source.read_text()) == []
