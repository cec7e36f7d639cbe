"""Every relative link in README.md and docs/*.md points at a file (and heading) of this repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed."""
    lines, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', '-N' for repeats."""
    seen: dict[str, int] = {}
    out = set()
    lines, in_code = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    for line in lines:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


def test_pages_exist():
    names = {p.name for p in PAGES}
    for name in ("README.md", "troubleshooting.md", "performance.md"):
        assert name in names, name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif not dest.resolve().is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


SOURCES = [p for d in ("sgm_lightning", "scripts", "tests", "configs") for p in sorted((ROOT / d).rglob("*"))
           if p.suffix in (".py", ".sh", ".yaml") and p.is_file()]
MD_REF = re.compile(r"(?<![\w./-])((?:docs/)?[\w./-]*?[\w-]+\.md)\b")


def _doc_named(ref: str) -> Path | None:
    """The page a code comment means by ``ref``: a path from the root, else a page of that name
    (case-insensitive, so ``DESIGN.md`` is docs/design.md) at the root or anywhere under docs/."""
    if (ROOT / ref).is_file():
        return ROOT / ref
    name = Path(ref).name.lower()
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        if page.name.lower() == name:
            return page
    return None


def test_docstring_references_resolve_inside_the_repository():
    """theory.md / design.md / docs/... named in code, scripts, tests and configs exist here, and
    the theory.md labels they cite (E1..E7, E4b, sec. 2b, sec. 5) are in docs/theory.md."""
    theory = (ROOT / "docs" / "theory.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^#{2,3} (\d+[a-z]?)\.", theory, flags=re.M))
    broken = []
    for src in SOURCES:
        if src == Path(__file__).resolve() or "fixtures" in src.parts:
            continue
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{src.relative_to(ROOT)}:{n}"
            for ref in MD_REF.findall(line):
                if _doc_named(ref) is None:
                    broken.append(f"{where}: {ref}")
            if "theory.md" not in line:
                continue
            for label in re.findall(r"\bE\d[ab]?\b", line):
                if not re.search(rf"\b{label}\b", theory):
                    broken.append(f"{where}: theory.md {label}")
            for sec in re.findall(r"\b[Ss]ec\. (\d+[a-z]?)", line):
                if sec not in sections:
                    broken.append(f"{where}: theory.md sec. {sec}")
    assert not broken, broken


def test_the_link_parser_sees_links():
    # a guard against a regex that silently matches nothing
    assert any(_links(p) for p in PAGES)
    assert "the-digits-yardstick-scriptseval_digitspy" in _anchors(ROOT / "docs" / "evaluation.md")
