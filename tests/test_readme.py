"""The README: measured numbers only in its Results section (with machine and date), and commands
that run as written without an activated venv. Nothing here trains."""

import argparse
import re
import shlex
import tomllib
from pathlib import Path

from normjax import cli
from normjax.config import load_config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
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
SETTINGS = ("60% of device memory", "heartbeat stopped 10 minutes ago")
DATE = r"\b20\d\d-\d\d-\d\d\b"
MACHINE = r"Xeon|EPYC|H100|H200|TPU|GPU|CPU"


def results_section() -> tuple[int, int]:
    start = README.index("\n## Results\n")
    return start, README.index("\n## ", start + 1)


def test_measured_numbers_only_in_the_results_section():
    start, end = results_section()
    prose = re.sub(r"```.*?```", "", README[:start] + README[end:], flags=re.S)
    for setting in SETTINGS:
        prose = prose.replace(setting, "")
    found = [
        f"{what}: ...{prose[max(0, m.start() - 40) : m.end() + 10]!r}"
        for what, pattern in MEASURED.items()
        for m in re.finditer(pattern, prose)
    ]
    assert found == [], "measured numbers belong in the README's Results table (with machine and date)"


def test_results_rows_name_machine_and_date():
    start, end = results_section()
    section = README[start:end]
    tables = re.findall(r"((?:^#+ .*\n\n|^.*\n\n)?)((?:^\|.*\|\n)+)", section, flags=re.M)
    assert len(tables) >= 2
    for before, table in tables:
        rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table.splitlines()]
        header, body = rows[0], rows[2:]
        assert body, table
        if "machine, date" in header:
            col = header.index("machine, date")
            for row in body:
                assert re.search(DATE, row[col]) and re.search(MACHINE, row[col]), row
        else:  # a table whose heading names its machine and date
            assert re.search(DATE, before) and re.search(MACHINE, before), before


def bash_commands() -> list[str]:
    """Every command line of the README's bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(" ".join(words))
    return out


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, flags=re.M))


def parse(argv: list[str], monkeypatch=None) -> argparse.Namespace:
    """`normjax ARGV` parsed as the CLI would (a study command by its own parser)."""
    if argv[0] in cli.STUDY_COMMANDS:
        return cli.command_parser(argv[0]).parse_args(argv[1:])
    return cli._parser().parse_args(argv)


def test_commands_run_as_written(monkeypatch):
    commands = bash_commands()
    checked = {"make": 0, "normjax": 0, "pip": 0}
    for command in commands:
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
        if words[:2] == ["pip", "install"]:  # the install section: this checkout, with extras it defines
            target = re.fullmatch(r"\.(?:\[([\w,]+)\])?", words[-1])
            assert len(words) == 3 and target, command
            assert set(filter(None, (target[1] or "").split(","))) <= set(EXTRAS), command
            checked["pip"] += 1
            continue
        assert words[0] == ".venv/bin/normjax", f"use .venv/bin/normjax or a make target: {command}"
        args = parse(words[1:], monkeypatch)
        if getattr(args, "command", None) == "train":
            cfg = load_config(ROOT / args.config, size=args.size, overrides=args.overrides)
            named = re.fullmatch(r"r(\d+)", Path(args.workdir or "").name)
            if named:  # runs/r20 holds a ResNet-20
                assert cfg["model"]["depth"] == int(named[1]), command
        checked["normjax"] += 1
    assert checked["make"] >= 10 and checked["normjax"] >= 12 and checked["pip"] == 2, checked


def test_named_files_exist():
    paths = set(re.findall(r"\b(?:experiments|benchmarks)/[\w.-]+\.(?:py|json|md)\b", README)) - {
        "experiments/sweep_NAME.py"
    }
    assert paths and [p for p in sorted(paths) if not (ROOT / p).is_file()] == []
