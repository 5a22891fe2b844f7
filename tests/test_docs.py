"""The docs stay in step with the code: the module map names every module, script and test file
(and nothing that is gone), and every path or link to a docs file resolves. Fast, no Blender."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OVERVIEW = REPO / "docs" / "dev" / "overview.md"
PACKAGE = REPO / "pix2vertex_addon"

# `docs/...` written anywhere (not part of a longer path such as "/docs/" or "../docs/")
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*")
# markdown links [text](target), target without a scheme or anchor-only
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


def _names_in_overview() -> set[str]:
    return _backticked(OVERVIEW.read_text(encoding="utf-8"))


def _missing_rows(named: set[str]) -> list[str]:
    missing = []
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE).as_posix()
        if rel not in named:
            missing.append(f"pix2vertex_addon/{rel}")
    for folder in ("scripts", "tests"):
        for f in sorted((REPO / folder).iterdir()):
            if f.is_file() and f.suffix in (".py", ".sh") and f"{folder}/{f.name}" not in named:
                missing.append(f"{folder}/{f.name}")
    return missing


def test_overview_names_every_module_script_and_test():
    missing = _missing_rows(_names_in_overview())
    assert not missing, f"docs/dev/overview.md has no row for: {missing}"


def test_overview_rows_name_existing_files():
    stale = []
    for name in _names_in_overview():
        if not re.fullmatch(r"[\w./-]+\.(py|sh)", name):
            continue
        candidates = [REPO / name, PACKAGE / name]
        if not any(p.is_file() for p in candidates):
            stale.append(name)
    assert not stale, f"docs/dev/overview.md names files that do not exist: {sorted(stale)}"


def test_removing_a_row_is_noticed():
    """The check above is not vacuous: without one module's row it reports that module."""
    named = _names_in_overview()
    assert "core/pipeline.py" in named
    assert _missing_rows(named - {"core/pipeline.py"}) == ["pix2vertex_addon/core/pipeline.py"]
    assert _missing_rows(named - {"tests/test_docs.py"}) == ["tests/test_docs.py"]


def _doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _code_files() -> list[Path]:
    files = [PACKAGE / "weights" / "MODEL_CARD.md"]
    for folder in ("pix2vertex_addon", "scripts", "tests"):
        files += [p for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".py", ".sh")]
    return [p for p in files if p.name != "test_docs.py"]


def _broken_references(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    broken = []
    for m in DOCS_PATH.finditer(text):
        ref = m.group(0).rstrip(".,:;")
        if not (REPO / ref).exists():
            broken.append(ref)
    if path.suffix == ".md":
        for m in MD_LINK.finditer(text):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (path.parent / target).exists():
                broken.append(target)
    return broken


def test_doc_paths_and_links_resolve():
    broken = {str(p.relative_to(REPO)): b for p in _doc_files() + _code_files() if (b := _broken_references(p))}
    assert not broken, f"references to missing files: {broken}"


def test_broken_link_is_noticed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [gone](gone.md), docs/reference/nowhere.md and [here](page.md)\n")
    assert _broken_references(page) == ["docs/reference/nowhere.md", "gone.md"]


# Lab-notebook traces that belong in docs/dev/history.md or the changelog, not in current docs.
NOTEBOOK = re.compile(r"/work/|/tmp/|load average|this session|\b\w+(?:st|nd|rd|th) session\b", re.I)
HISTORY = {"docs/CHANGELOG.md", "docs/dev/history.md"}


def _notebook_traces(path: Path) -> list[str]:
    return [m.group(0) for m in NOTEBOOK.finditer(path.read_text(encoding="utf-8"))]


def test_current_docs_hold_no_lab_notebook_traces():
    found = {rel: t for p in _doc_files()
             if (rel := str(p.relative_to(REPO))) not in HISTORY and (t := _notebook_traces(p))}
    assert not found, f"machine paths or session notes in current docs (move them to history): {found}"


def test_lab_notebook_trace_is_noticed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Measured in the fourth session (load average 3) into /tmp/x.\n")
    assert _notebook_traces(page) == ["fourth session", "load average", "/tmp/"]
