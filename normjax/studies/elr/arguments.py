"""The command line `normjax explode` and `normjax critical-lr` share: an experiment file, its size,
`--set`, `--depths`, `--seeds` (a count) and `--out`, and the checks of their integer arguments."""

from __future__ import annotations

import argparse

from normjax.errors import UserError


def int_list(flag: str, text: str) -> tuple[int, ...]:
    """`--depths`-style text `"4,8,16"` as positive integers; a one-line `UserError` naming `flag` else.

    Example:
      >>> int_list("--depths", "4,8,16")
      (4, 8, 16)
    """
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise UserError(f"{flag} {text!r} is invalid; allowed: comma-separated positive integers (e.g. 4,8,16)")
    return values


def positive_int(flag: str, text: str) -> int:
    """`--seeds`-style text as an integer >= 1; a one-line `UserError` naming `flag` else."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{flag} {text!r} is invalid; allowed: an integer >= 1")
    return value


def experiment_parser(command: str, main, example: str, depths: str, out: str) -> argparse.ArgumentParser:
    """The arguments the init-gradient commands share: an experiment file, its size, `--set`,
    `--depths`, `--seeds` (a count) and `--out`."""
    p = argparse.ArgumentParser(prog=f"normjax {command}", description=main.__doc__.splitlines()[0])
    p.add_argument("config", help=f"experiment file, e.g. {example}")
    p.add_argument("--size", default="smoke", help="the experiment's size (default smoke)")
    p.add_argument("--depths", help=f"values of model.depth, e.g. {depths}")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.width=512 (repeatable)",
    )
    p.add_argument("--out", help=f"output directory (default {out})")
    p.add_argument("--seeds", default="3", help="number of init seeds (0, 1, ...), default 3")
    return p
