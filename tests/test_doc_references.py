"""Every document reference in the repository points at a file and section that exist.

References are written ``docs/<name>.md#<anchor>`` (the anchor optional), where the anchor is the
GitHub slug of a heading of that file; a bare ``docs/<name>.md`` must name an existing file.
Relative Markdown links (``[text](formats.md#datasets)``) in any ``.md`` file are checked the same
way, and a path such as ``egoexo_jax/losses.py`` written in ``docs/`` must exist. The team-internal
notes and the older reference styles ("method doc §4", "pitfall 9") must not appear at all.
"""

from __future__ import annotations

import pathlib
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
THIS_FILE = pathlib.Path(__file__).resolve()
SCAN_DIRS = ("egoexo_jax", "configs", "tests", "benchmarks", "launch", "data", "docs", ".ci")
SCAN_TOP_FILES = ("README.md", "BENCHMARKS.md", "pyproject.toml", "pytest.ini", "requirements.txt")
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".sh",
    ".sbatch",
    ".ipynb",
    ".txt",
    ".toml",
    ".ini",
    ".cfg",
    ".yaml",
    ".yml",
    ".json",
    "",
}
SKIP_DIRS = {"__pycache__", ".venv", ".git", ".ipynb_checkpoints", ".pytest_cache"}
MAX_BYTES = 2_000_000  # data fixtures beyond this are not prose

# docs/<name>.md, optionally #anchor; "../docs/..." (a relative link) resolves the same way.
DOC_REF = re.compile(r"(?<![\w-])docs/([\w.-]+?\.md)(?:#([\w-]+))?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
# Source and documentation files named in docs/*.md must exist (data folders such as
# data/epic100/handobj are places for the user's files, so only files with these suffixes count).
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:egoexo_jax|configs|tests|benchmarks|launch|data)/[\w./-]*"
    r"\.(?:py|md|sh|sbatch|ipynb|ini|toml))\b"
)
# Names of the team's internal notes: never part of the repository's text.
INTERNAL = ("egoexo-method.md", "DESIGN.md", "platform-notes", "../shared", "/work/shared")
# Reference styles that pointed at those notes.
LEGACY = (re.compile(r"§"), re.compile(r"\bmethod doc\b", re.I), re.compile(r"\bpitfalls? \d+", re.I))


def text_files() -> List[pathlib.Path]:
    """The repository's text files that may carry references (this file excluded)."""
    out = [REPO / name for name in SCAN_TOP_FILES if (REPO / name).is_file()]
    for top in SCAN_DIRS:
        root = REPO / top
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(REPO)
            if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
                continue
            if path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size <= MAX_BYTES:
                out.append(path)
    return [p for p in out if p.resolve() != THIS_FILE]


def read(path: pathlib.Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> Tuple[Set[str], List[str]]:
    """``(anchors, duplicated slugs)`` of a Markdown file; headings in code fences are ignored."""
    seen: Dict[str, int] = {}
    found: Set[str] = set()
    duplicates: List[str] = []
    fenced = False
    for line in read(path).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        if slug in seen:
            duplicates.append(slug)
            seen[slug] += 1
            found.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    return found, duplicates


_ANCHOR_CACHE: Dict[pathlib.Path, Set[str]] = {}


def anchors_of(path: pathlib.Path) -> Set[str]:
    if path not in _ANCHOR_CACHE:
        _ANCHOR_CACHE[path] = anchors(path)[0]
    return _ANCHOR_CACHE[path]


def lines_of(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    yield from enumerate(read(path).splitlines(), start=1)


def where(path: pathlib.Path, lineno: int) -> str:
    return f"{path.relative_to(REPO)}:{lineno}"


def check_target(target: pathlib.Path, anchor: str, origin: str) -> List[str]:
    if not target.is_file():
        return [f"{origin}: {target.relative_to(REPO) if target.is_relative_to(REPO) else target} does not exist"]
    if anchor and target.suffix == ".md" and anchor not in anchors_of(target):
        return [f"{origin}: no section #{anchor} in {target.relative_to(REPO)}"]
    return []


def test_docs_exist_and_have_unique_anchors():
    docs = sorted((REPO / "docs").glob("*.md"))
    names = {p.name for p in docs}
    assert {"method.md", "formats.md", "checkpoints.md"} <= names, names
    for path in docs:
        found, duplicates = anchors(path)
        assert found, f"{path.name} has no headings"
        assert not duplicates, f"{path.name}: headings with the same anchor: {duplicates}"


def test_doc_references_resolve():
    files = text_files()
    assert any(p.name == "losses.py" for p in files), "the scan found no package files"
    problems, count = [], 0
    for path in files:
        for lineno, line in lines_of(path):
            for name, anchor in DOC_REF.findall(line):
                count += 1
                problems += check_target(REPO / "docs" / name, anchor, where(path, lineno))
    assert count >= 20, f"only {count} references found: is the pattern still the one in use?"
    assert not problems, "broken document references:\n" + "\n".join(problems)


def test_markdown_links_resolve():
    problems = []
    for path in text_files():
        if path.suffix != ".md":
            continue
        for lineno, line in lines_of(path):
            for link in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("/"):
                    continue  # URLs (http:, mailto:) and absolute paths are not repository links
                file_part, _, anchor = link.partition("#")
                target = (path.parent / file_part).resolve() if file_part else path
                if file_part and not target.is_relative_to(REPO):
                    problems.append(f"{where(path, lineno)}: {link} leaves the repository")
                    continue
                if target.is_dir():
                    continue
                problems += check_target(target, anchor, where(path, lineno))
    assert not problems, "broken Markdown links:\n" + "\n".join(problems)


def test_paths_named_in_docs_exist():
    problems = []
    for path in sorted((REPO / "docs").glob("*.md")):
        for lineno, line in lines_of(path):
            for rel in REPO_PATH.findall(line):
                if not (REPO / rel).exists():
                    problems.append(f"{where(path, lineno)}: {rel} does not exist")
    assert not problems, "docs name paths that are not in the repository:\n" + "\n".join(problems)


def test_no_internal_notes_or_legacy_reference_styles():
    problems = []
    for path in text_files():
        for lineno, line in lines_of(path):
            for name in INTERNAL:
                if name in line:
                    problems.append(f"{where(path, lineno)}: mentions {name!r}")
            for pattern in LEGACY:
                match = pattern.search(line)
                if match:
                    problems.append(
                        f"{where(path, lineno)}: old reference style {match.group(0)!r}; write docs/<file>.md#<anchor>"
                    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "heading,slug",
    [
        ("Interaction-Map targets", "interaction-map-targets"),
        ("PySlowFast `.pyth` files", "pyslowfast-pyth-files"),
        ("Ego-Exo and Ego-Exo*", "ego-exo-and-ego-exo"),
        ("Packing for pods (TFDS ArrayRecord)", "packing-for-pods-tfds-arrayrecord"),
        ("1. Frames", "1-frames"),
    ],
)
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_checker_catches_a_broken_reference(tmp_path):
    """The checks fail on a missing file, a missing section and an internal name."""
    assert check_target(REPO / "docs" / "no-such-file.md", "", "x")
    assert check_target(REPO / "docs" / "method.md", "no-such-section", "x")
    assert not check_target(REPO / "docs" / "method.md", "total-loss", "x")
    line = "see docs/method.md#no-such-section and docs/formats.md"
    assert DOC_REF.findall(line) == [("method.md", "no-such-section"), ("formats.md", "")]
    assert DOC_REF.findall("(../../docs/method.md#model-outputs).") == [("method.md", "model-outputs")]
    assert DOC_REF.findall("mydocs/x.md") == []
