"""The science is documented in the repository itself (docs/science.md): no tracked file points to a
file outside the repository for it, and every section a file cites as docs/science.md#<anchor>
exists. Anchors are the page's MyST targets, `(name)=` on the line before a heading."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCIENCE = ROOT / "docs" / "science.md"

# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("shared" + "/science.md", "../" + "shared", "steering" + " repo")
# A citation of the page without its path (e.g. "science.md §1") points nowhere from most files;
# only pages under docs/ may link it relatively.
BARE = re.compile(r"(?<![\w/.-])science\.md")
CITED = re.compile(r"docs/science\.md#([A-Za-z0-9_-]+)")
RELATIVE = re.compile(r"(?<![\w/.-])science\.md#([A-Za-z0-9_-]+)")
TARGET = re.compile(r"^\(([A-Za-z0-9_-]+)\)=[ \t]*$", re.M)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.M)


def text_files() -> dict[str, str]:
    """Every file git tracks that exists in the working tree and is text (UTF-8, no NUL byte)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = {}
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def targets(page: str) -> list[str]:
    return TARGET.findall(page)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (and MyST's `myst_heading_anchors`)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def where(files: dict[str, str], pattern: re.Pattern) -> list[tuple[str, int, str]]:
    return [
        (name, text.count("\n", 0, m.start()) + 1, m.group(0))
        for name, text in files.items()
        for m in pattern.finditer(text)
    ]


def test_no_file_refers_outside_the_repository():
    files = text_files()
    found = [
        f"{name}:{text.count(chr(10), 0, text.index(s)) + 1}: {s!r}"
        for name, text in files.items()
        for s in OUTSIDE
        if s in text
    ]
    assert found == [], "the science lives in docs/science.md; cite it as docs/science.md#<anchor>"


def test_science_is_cited_with_its_path():
    bare = [
        f"{name}:{line}"
        for name, line, _ in where(text_files(), BARE)
        if not name.startswith("docs/") and name != "tests/test_docs_refs.py"
    ]  # this file names the page
    assert bare == [], "cite the science page as docs/science.md#<anchor>, not by a bare file name or § number"


def test_cited_anchors_exist():
    page = SCIENCE.read_text()
    known = set(targets(page))
    files = text_files()
    cited = where(files, CITED) + [c for c in where(files, RELATIVE) if c[0].startswith("docs/")]
    local = [
        ("docs/science.md", page.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(r"\]\(#([A-Za-z0-9_-]+)\)", page)
    ]
    missing = [f"{name}:{line}: {text}" for name, line, text in cited + local if text.rsplit("#", 1)[-1] not in known]
    assert missing == [], f"anchors not in docs/science.md (its targets: {sorted(known)})"


def test_science_targets_are_unique_and_match_their_headings():
    """Each `(name)=` target stands right before a heading whose GitHub anchor is `name`, so that a
    link docs/science.md#<name> works on GitHub as in the Sphinx build."""
    page = SCIENCE.read_text()
    names = targets(page)
    assert names and len(names) == len(set(names))
    lines = page.splitlines()
    for i, line in enumerate(lines):
        m = TARGET.match(line)
        if m:
            heading = HEADING.match(lines[i + 1]) if i + 1 < len(lines) else None
            assert heading, f"docs/science.md:{i + 1}: target {m.group(1)!r} is not followed by a heading"
            assert github_slug(heading.group(2)) == m.group(1), (m.group(1), heading.group(2))


def test_copy_figures_copies_the_apl_sweeps_the_report_read(tmp_path):
    # `make apl SIZE=fmnist_conv` runs no λ sweep: its files are not asked for.
    spec = importlib.util.spec_from_file_location("copy_figures", ROOT / "docs" / "copy_figures.py")
    copy_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy_figures)
    report = tmp_path / "apl-report-x"
    report.mkdir()
    (report / "apl_report.json").write_text(json.dumps({"sweeps": [{"sweep": str(tmp_path / "sweep-apl_targets-x")}]}))
    files = copy_figures.apl_files("x", tmp_path)
    assert "targets_collapse.png" in files and files["targets_core_profile.png"] == (
        "sweep-apl_targets-x",
        "core_profile.png",
    )
    assert not [n for n in files if n.startswith("sparsity_")]
    (report / "apl_report.json").write_text(
        json.dumps({"sweeps": [{"sweep": f"{tmp_path}/sweep-apl_{k}-x"} for k in ("targets", "sparsity")]})
    )
    assert {n.split("_")[0] for n in copy_figures.apl_files("x", tmp_path)} >= {"targets", "sparsity", "baselines"}
