"""The README (a front door) and the user guide (docs/guide.md): measured numbers only on the results
page (docs/results.md, every table row with machine and date) and in the README's headline table,
whose rows copy the results page's; commands that run as written without an activated venv; the
README's Python quickstarts run as written; links that resolve. Nothing here trains."""

import argparse
import ast
import re
import shlex
import tomllib
from pathlib import Path

from normjax import cli
from normjax.config import load_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "guide.md").read_text()
RESULTS = (ROOT / "docs" / "results.md").read_text()
PAGES = {"README.md": README, "docs/guide.md": GUIDE}  # what a user reads for commands: no measured numbers
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

# What a measured number looks like in prose; settings that read like one are allowed below.
MEASURED = {
    "a percentage": r"\d(?:[\d.,]*\d)?\s?%",
    "a duration": r"\b\d+(?:\.\d+)?\s?(?:ms|s|min|h|seconds?|minutes?|hours?)\b",
    "a ratio": r"\b\d+(?:\.\d+)?x(?!\w)",  # 1.3x, not 8x8
    "an error in dex": r"\b\d+(?:\.\d+)?\s?dex\b",
    "a spread": r"±\s?\d(?!\s?std band)",
    "a small number": r"\b\d+(?:\.\d+)?e-\d+\b",
    "a size": r"\b\d+(?:\.\d+)?\s?(?:KB|MB|GB|KiB|MiB|GiB)\b",
}
SETTINGS = ("90% of the device's", "heartbeat stopped 10 minutes ago")
DATE = r"\b20\d\d-\d\d-\d\d\b"
MACHINE = r"Xeon|EPYC|H100|H200|TPU|GPU|CPU"
README_LINES = 250  # a front door (optax's README is about 150 lines); the rest is in docs/
BASE_INSTALL = ("jax", "optax", "numpy", "normjax.transforms")  # the base install's packages


def section(text: str, heading: str) -> str:
    """The `## heading` section of a page (to the next `## ` heading)."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every Markdown table: the heading or paragraph line right before it, its header, its rows."""
    out = []
    for before, table in re.findall(r"((?:^#+ .*\n\n|^.*\n\n)?)((?:^\|.*\|\n)+)", text, flags=re.M):
        rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table.splitlines()]
        out.append((before, rows[0], rows[2:]))
    return out


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def measured_numbers(prose: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)
    for setting in SETTINGS:
        prose = prose.replace(setting, "")
    return [
        f"{what}: ...{prose[max(0, m.start() - 40) : m.end() + 10]!r}"
        for what, pattern in MEASURED.items()
        for m in re.finditer(pattern, prose)
    ]


def test_measured_numbers_only_on_the_results_page():
    headline = section(README, "Results")
    table_rows = "".join(line + "\n" for line in headline.splitlines() if line.startswith("|"))
    found = {
        "README.md": measured_numbers(README.replace(table_rows, "")),  # all but the headline table's rows
        "docs/guide.md": measured_numbers(GUIDE),
    }
    assert found == {name: [] for name in found}, (
        "measured numbers belong in docs/results.md (each table row with machine and date)"
    )


def test_results_rows_name_machine_and_date():
    for where, text, count in (("docs/results.md", RESULTS, 4), ("README.md", section(README, "Results"), 1)):
        found = tables(text)
        assert len(found) >= count, where
        for before, header, body in found:
            assert body, (where, header)
            if "machine, date" in header:
                col = header.index("machine, date")
                for row in body:
                    assert re.search(DATE, row[col]) and re.search(MACHINE, row[col]), (where, row)
            else:  # a table whose heading names its machine and date
                assert re.search(DATE, before) and re.search(MACHINE, before), (where, before)


def test_the_results_page_keeps_its_tables():
    headings = re.findall(r"^#+ (.*)$", RESULTS, flags=re.M)
    assert [h for h in headings if h.startswith("Sizes")], headings
    ((header, body),) = [(header, body) for before, header, body in tables(RESULTS) if before.startswith("### Sizes")]
    assert header == ["size", "for", "data and models", "machine, date", "wall time here"], header
    assert {row[0] for row in body} >= {
        "`smoke`",
        "`medium`",
        "`mnist1d`",
        "`fmnist_conv`",
        "`gpu`",
        "`full`",
        "`imagenet`",
    }


def numbers(cell: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", cell))


def test_readme_headline_rows_are_rows_of_the_results_page():
    """Each row of the README's headline table names a command of the results page's first table,
    with the same machine and date, and every number in it is in that row (a shortened copy)."""
    (readme_table,) = tables(section(README, "Results"))
    _, header, body = tables(RESULTS)[0]
    by_command = {row[header.index("command")]: dict(zip(header, row)) for row in body}
    _, readme_header, readme_body = readme_table
    assert readme_header[0] == "command" and "machine, date" in readme_header
    for row in readme_body:
        cells = dict(zip(readme_header, row))
        full = by_command.get(cells["command"])
        assert full, f"{cells['command']} is not a row of docs/results.md"
        assert cells["machine, date"] == full["machine, date"], cells
        for key, cell in cells.items():
            assert numbers(cell) <= numbers(full[key]), (cells["command"], key, numbers(cell) - numbers(full[key]))


def bash_commands(text: str) -> list[str]:
    """Every command line of a page's bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(" ".join(words))
    return out


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, flags=re.M))


def parse(argv: list[str]) -> argparse.Namespace:
    """`normjax ARGV` parsed as the CLI would (a study command by its own parser)."""
    if argv[0] in cli.STUDY_COMMANDS:
        return cli.command_parser(argv[0]).parse_args(argv[1:])
    return cli._parser().parse_args(argv)


def test_commands_run_as_written():
    checked = {"make": 0, "normjax": 0, "pip": 0}
    for command in bash_commands(README) + bash_commands(GUIDE):
        words = command.split()
        if words[0] in ("tfds", "gcloud"):  # run on another machine
            continue
        if words[0] == "make":
            target = words[1]
            sweep = re.fullmatch(r"sweep-(\w+)", target)
            assert target in make_targets() or (sweep and (ROOT / f"experiments/sweep_{sweep[1]}.py").is_file()), (
                command
            )
            assert all("=" in w and not w.startswith("[") for w in words[2:]), command  # only VAR=value
            checked["make"] += 1
            continue
        if words[:2] == ["pip", "install"]:  # the install sections: this checkout, with extras it defines
            target = re.fullmatch(r"\.(?:\[([\w,]+)\])?", words[-1])
            assert len(words) == 3 and target, command
            assert set(filter(None, (target[1] or "").split(","))) <= set(EXTRAS), command
            checked["pip"] += 1
            continue
        assert words[0] == ".venv/bin/normjax", f"use .venv/bin/normjax or a make target: {command}"
        args = parse(words[1:])
        if getattr(args, "command", None) == "train":
            cfg = load_config(ROOT / args.config, size=args.size, overrides=args.overrides)
            named = re.fullmatch(r"r(\d+)", Path(args.workdir or "").name)
            if named:  # runs/r20 holds a ResNet-20
                assert cfg["model"]["depth"] == int(named[1]), command
        checked["normjax"] += 1
    assert checked["make"] >= 10 and checked["normjax"] >= 12 and checked["pip"] >= 2, checked


def test_the_readme_gives_the_two_commands_and_both_installs():
    commands = bash_commands(README)
    assert {"make demo", "make test", "pip install .", "pip install .[train]"} <= set(commands), commands
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()  # CI runs exactly the README's command
    assert len(README.splitlines()) <= README_LINES, "the README is a front door: move details to docs/guide.md"


def test_named_files_exist():
    text = README + GUIDE + RESULTS
    paths = set(re.findall(r"\b(?:experiments|benchmarks)/[\w.-]+\.(?:py|json|md)\b", text)) - {
        "experiments/sweep_NAME.py"
    }
    assert paths and [p for p in sorted(paths) if not (ROOT / p).is_file()] == []


def imports(block: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def base_install_only(modules: set[str]) -> bool:
    return all(any(m == p or m.startswith(p + ".") for p in BASE_INSTALL) for m in modules)


def run_block(block: str, where: str) -> dict:
    namespace = {"__name__": f"{where} python block"}
    exec(compile(block, where, "exec"), namespace)  # the documentation's own code
    return namespace


def test_readme_python_blocks_run_as_written():
    """Every Python block of the README runs in a fresh namespace, with the base install's imports
    only (the quickstart promises that `pip install .` is enough)."""
    blocks = code_blocks(README, "python")
    assert blocks
    for i, block in enumerate(blocks):
        assert base_install_only(imports(block)), imports(block)
        run_block(block, f"README.md block {i}")


def test_guide_python_blocks():
    """The guide's blocks that need only the base install run as written; the others (the plug-in
    API of the training stack, with names the reader supplies) at least parse."""
    blocks = code_blocks(GUIDE, "python")
    ran = 0
    for i, block in enumerate(blocks):
        if base_install_only(imports(block)):
            run_block(block, f"docs/guide.md block {i}")
            ran += 1
        else:
            compile(block, f"docs/guide.md block {i}", "exec")
    assert ran >= 2, ran


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (MyST's `myst_heading_anchors` gives the same)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text()
    return {github_slug(h) for h in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", text, flags=re.M)} | set(
        re.findall(r"^\(([A-Za-z0-9_-]+)\)=[ \t]*$", text, flags=re.M)
    )


def test_links_resolve():
    """Every relative link of the README, the guide and the results page names a file that exists,
    and an anchor of a Markdown page that the page has."""
    bad = []
    for where, text in (("README.md", README), ("docs/guide.md", GUIDE), ("docs/results.md", RESULTS)):
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            page = (ROOT / where).parent / path if path else ROOT / where
            if not page.is_file() or (anchor and page.suffix == ".md" and anchor not in anchors(page)):
                bad.append(f"{where}: {target}")
    assert bad == []


def test_the_readme_links_the_guide_and_the_results_and_the_docs_list_them():
    assert "](docs/guide.md" in README and "](docs/results.md" in README
    toctree = re.search(r"```\{toctree\}\n(.*?)```", (ROOT / "docs" / "index.md").read_text(), flags=re.S)[1]
    assert {"guide", "results"} <= set(toctree.split())
