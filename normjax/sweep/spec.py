"""Sweep specs: a base experiment, a grid (product) and zipped lists over any config keys.

A sweep file under `experiments/` defines `get_sweep(size) -> dict`:

    def get_sweep(size):
        return {
            "base": "resnet_digits.py",                   # experiment file, relative to this one
            "grid": {"model.depth": [8, 20], "train.seed": [0, 1, 2]},   # product
            "zip": {"optim.lr": [0.1, 0.3], "optim.warmup_steps": [0, 50]},  # lists of one length, zipped
            "set": {"train.epochs": 2.0},                 # fixed overrides
        }

The runs are product(grid) x zip. Each run gets a directory named by its varied values plus a
short hash of its whole config, so renaming nothing and changing any value gives a new run.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, NamedTuple

from normjax.config import call_file, load_config, merge, parse_override, validate
from normjax.errors import UserError

SPEC_KEYS = ("base", "grid", "zip", "set")


class RunSpec(NamedTuple):
    name: str                   # directory name inside the sweep workdir
    overrides: dict[str, Any]   # dotted key -> value, the varied values of this run
    config: dict                # the full resolved config


def _nested(dotted: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("/", "_").replace(" ", "")


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]


def read_sweep(path: str | Path, size: str) -> dict:
    """The dict a sweep file's `get_sweep(size)` returns, checked."""
    path = Path(path)
    sweep = call_file(path, "get_sweep", size, "sweep", "experiments/sweep_depth.py")
    unknown = set(sweep) - set(SPEC_KEYS)
    if unknown or "base" not in sweep:
        raise UserError(f"sweep {str(path)!r} has keys {sorted(sweep)}; allowed: {', '.join(SPEC_KEYS)} (base required)")
    zipped = sweep.get("zip", {})
    if len({len(v) for v in zipped.values()}) > 1:
        raise UserError(f"sweep {str(path)!r}: zip lists differ in length ({ {k: len(v) for k, v in zipped.items()} })")
    for key, values in list(sweep.get("grid", {}).items()) + list(zipped.items()):
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"sweep {str(path)!r}: {key} must be a non-empty list of values")
    sweep["base"] = str((path.parent / sweep["base"]).resolve()) if not Path(sweep["base"]).is_absolute() else sweep["base"]
    return sweep


def expand(path: str | Path, size: str = "smoke", overrides: list[str] | tuple[str, ...] = ()) -> tuple[list[RunSpec], list[str]]:
    """The runs of a sweep (in a fixed order) and the dotted keys that vary.

    `overrides` (`key=value`, as `--set`) apply to every run, after the sweep's own `set`.

    Example:
      >>> runs, varied = expand("experiments/sweep_depth.py", "smoke")
      >>> runs[0].name
      'depth=8-shortcut=true-seed=0-3f2a9c1e'
    """
    sweep = read_sweep(path, size)
    base = load_config(sweep["base"], size=size)
    base = merge(base, _nested(sweep.get("set", {})))
    for text in overrides:
        base = merge(base, parse_override(text))
    grid, zipped = sweep.get("grid", {}), sweep.get("zip", {})
    varied = list(grid) + list(zipped)
    lasts = [k.split(".")[-1] for k in varied]
    short = {k: (k.split(".")[-1] if lasts.count(k.split(".")[-1]) == 1 else k) for k in varied}
    n_zip = len(next(iter(zipped.values()))) if zipped else 1
    runs = []
    for z in range(n_zip):
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo)) | {k: v[z] for k, v in zipped.items()}
            cfg = merge(copy.deepcopy(base), _nested(values))
            try:
                validate(cfg)
            except UserError as e:
                raise UserError(f"sweep run {values}: {e}") from None
            label = "-".join(f"{short[k]}={_fmt(v)}" for k, v in values.items())
            runs.append(RunSpec(f"{label}-{config_hash(cfg)}" if label else config_hash(cfg), values, cfg))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"sweep {str(path)!r} lists the same run twice; make its grid values distinct")
    return runs, varied
