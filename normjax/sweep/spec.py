"""Sweep specs: a base experiment, a grid (product) and zipped lists over any config keys.

A sweep file under `experiments/` defines `get_sweep(size) -> dict`:

    def get_sweep(size):
        return {
            "base": "resnet_digits.py",                   # experiment file, relative to this one
            "grid": {"model.depth": [8, 20], "train.seed": [0, 1, 2]},   # product
            "zip": {"optim.lr": [0.1, 0.3], "optim.warmup_steps": [0, 50]},  # lists of one length, zipped
            "set": {"train.epochs": 2.0},                 # fixed overrides
            "pretrain": {"optim.prelu_l1": 0.0},          # base runs of `train.init_from="pretrain"` runs
        }

A grid or zip value may be a *bundle*: a dict of settings varied together, labelled by its
`name` (`"data.task": [{"name": "digits", "data.name": "digits"}, {"name": "hard", "data.name":
"synthetic", "data.synthetic.difficulty": 0.8}]`); the label key is then a column, not a config key.

The runs are product(grid) x zip. Runs whose labels differ but whose configs are the same are one
run: the first is trained, the others (`RunSpec.same_as`) are symlinks to its directory, so each
label has its row and nothing is trained twice. A run whose `train.init_from` is `"pretrain"` warm-starts from a
*base run*: its own config with the `pretrain` overrides laid over it (and no warm start). Runs that
share a base config share one base run, trained first into `<sweep>/pretrain/` (e.g. the APL
study's after-training regime: each network trained once, sparsified with many prior strengths).
Every run is validated as `normjax train` validates one, before any run starts: a run whose
optimizer does not read an `optim` key the sweep sets (`optim.prelu_l1` for plain `sgd`) stops
the sweep with one line naming the run. A grid that sets a key for some optimizers only pairs it
with `optim.name` in a bundle (`{"name": "l1", "optim.name": "sgd_prelu_l1", "optim.prelu_l1": 0.1}`).

Each run gets a directory named by its varied values plus a
short hash of its config (its values that differ from the defaults), so changing any value gives
a new run, and a key added to the defaults later renames nothing.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from normjax.config import DEFAULTS, call_file, canonical, load_config, merge, parse_override, validate
from normjax.errors import UserError

SPEC_KEYS = ("base", "grid", "zip", "set", "pretrain")
PRETRAIN = "pretrain"  # train.init_from value: warm-start from this run's base run


class RunSpec(NamedTuple):
    name: str  # directory name inside the sweep workdir
    overrides: dict[str, Any]  # dotted key -> value, the varied values of this run
    config: dict  # the full resolved config
    base: RunSpec | None = None  # the base run (under pretrain/) of a train.init_from="pretrain" run
    same_as: str | None = None  # an earlier run of the sweep with this config under other labels


def _nested(dotted: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Each dotted key's shortest unambiguous name: its last component when no other key shares it.

    Example:
      >>> short_names(["model.depth", "train.seed"])
      {'model.depth': 'depth', 'train.seed': 'seed'}
    """
    keys = list(keys)
    lasts = [k.split(".")[-1] for k in keys]
    return {k: (last if lasts.count(last) == 1 else k) for k, last in zip(keys, lasts)}


def resolve_key(name: str, keys: Iterable[str], what: str) -> str:
    """The dotted key `name` means: an exact key, or a unique last component (`depth` -> `model.depth`).

    Example:
      >>> resolve_key("depth", ["model.depth", "train.seed"], "x")
      'model.depth'
    """
    keys = list(keys)
    if name in keys:
        return name
    matches = [k for k in keys if k.split(".")[-1] == name]
    if len(matches) == 1:
        return matches[0]
    allowed = ", ".join(keys) or "(none: this sweep varies nothing)"
    if matches:
        raise UserError(f"{what} {name!r} is ambiguous (matches {', '.join(matches)}); allowed: {allowed}")
    raise UserError(f"{what} {name!r} is not a varied key of this sweep; allowed: {allowed}")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("/", "_").replace(" ", "")


def config_hash(cfg: dict) -> str:
    """A short hash of a config's values that differ from `DEFAULTS`: a key added to the defaults
    later (with the old behaviour as its default) leaves the names of existing runs as they were,
    and so does a default that became `auto` (`normjax.config.canonical`: a value equal to what
    `auto` resolves to counts as the default).

    Example:
      >>> config_hash(DEFAULTS) == config_hash({})
      True
    """
    return hashlib.sha256(json.dumps(_non_default(canonical(cfg), DEFAULTS), sort_keys=True).encode()).hexdigest()[:8]


def _non_default(cfg: dict, defaults: dict) -> dict:
    out = {}
    for key, value in cfg.items():
        default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        if isinstance(value, dict) and isinstance(default, dict):
            sub = _non_default(value, default)
            if sub:
                out[key] = sub
        elif value != default or type(value) is not type(default):
            out[key] = value
    return out


_ABSENT = object()


def read_sweep(path: str | Path, size: str) -> dict:
    """The dict a sweep file's `get_sweep(size)` returns, checked."""
    path = Path(path)
    sweep = call_file(path, "get_sweep", size, "sweep", "experiments/sweep_depth.py")
    unknown = set(sweep) - set(SPEC_KEYS)
    if unknown or "base" not in sweep:
        raise UserError(
            f"sweep {str(path)!r} has keys {sorted(sweep)}; allowed: {', '.join(SPEC_KEYS)} (base required)"
        )
    zipped = sweep.get("zip", {})
    if len({len(v) for v in zipped.values()}) > 1:
        raise UserError(f"sweep {str(path)!r}: zip lists differ in length ({ {k: len(v) for k, v in zipped.items()} })")
    for key, values in list(sweep.get("grid", {}).items()) + list(zipped.items()):
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"sweep {str(path)!r}: {key} must be a non-empty list of values")
    sweep["base"] = (
        str((path.parent / sweep["base"]).resolve()) if not Path(sweep["base"]).is_absolute() else sweep["base"]
    )
    return sweep


def _bundles(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run's varied values as labels, the dotted config settings they stand for).

    A bundle is a dict value: several settings varied together under one label key (e.g.
    `"data.task": [{"name": "digits", "data.name": "digits"}, {"name": "hard", ...}]`);
    its label is its `name`.
    """
    labels, settings = {}, {}
    for key, value in values.items():
        if isinstance(value, dict):
            if "name" not in value:
                raise UserError(f"sweep value {value!r} of {key!r} is a bundle without a 'name' label")
            labels[key] = value["name"]
            settings.update({k: v for k, v in value.items() if k != "name"})
        else:
            labels[key] = settings[key] = value
    return labels, settings


def _base_run(cfg: dict, sweep: dict, path: str | Path) -> RunSpec | None:
    if cfg["train"]["init_from"] != PRETRAIN:
        return None
    if "pretrain" not in sweep:
        raise UserError(
            f"sweep {str(path)!r}: train.init_from={PRETRAIN!r} needs a 'pretrain' entry "
            "(the overrides that make the base run, e.g. {'optim.prelu_l1': 0.0})"
        )
    base = merge(copy.deepcopy(cfg), _nested(sweep["pretrain"] | {"train.init_from": ""}))
    validate(base)
    return RunSpec(f"base-{config_hash(base)}", {}, base)


def _identity(cfg: dict, base: RunSpec | None) -> dict:
    """What a run's name hashes: its config, a warm start from the sweep's base run named by that
    base run (so that another `pretrain` entry gives other names, not the old runs' results)."""
    if base is None:
        return cfg
    return merge(copy.deepcopy(cfg), {"train": {"init_from": f"{PRETRAIN}/{base.name}"}})


def expand(
    path: str | Path, size: str = "smoke", overrides: list[str] | tuple[str, ...] = ()
) -> tuple[list[RunSpec], list[str]]:
    """The runs of a sweep (in a fixed order) and the dotted keys that vary.

    `overrides` (`key=value`, as `--set`) apply to every run, after the sweep's own `set`; a key
    the sweep varies (in its grid or zip, or inside a bundle) is refused in one line: the grid
    would silently win.

    Example:
      >>> runs, varied = expand("experiments/sweep_depth.py", "smoke")
      >>> len(runs), varied
      (12, ['model.depth', 'model.shortcut', 'train.seed'])
      >>> runs[0].name  # doctest: +ELLIPSIS
      'depth=8-shortcut=true-seed=0-...'
    """
    sweep = read_sweep(path, size)
    base = load_config(sweep["base"], size=size)
    base = merge(base, _nested(sweep.get("set", {})))
    grid, zipped = sweep.get("grid", {}), sweep.get("zip", {})
    _check_overrides_not_varied(overrides, {**grid, **zipped})
    for text in overrides:
        base = merge(base, parse_override(text))
    varied = list(grid) + list(zipped)
    short = short_names(varied)
    n_zip = len(next(iter(zipped.values()))) if zipped else 1
    # Two labels can give one config (a baseline widened to the width it has): trained once.
    runs, first = [], {}
    for z in range(n_zip):
        for combo in itertools.product(*grid.values()):
            values = dict(zip(grid, combo)) | {k: v[z] for k, v in zipped.items()}
            values, settings = _bundles(values)
            cfg = merge(copy.deepcopy(base), _nested(settings))
            try:
                validate(cfg)
            except UserError as e:
                raise UserError(f"sweep run {values}: {e}") from None
            label = "-".join(f"{short[k]}={_fmt(v)}" for k, v in values.items())
            base_run = _base_run(cfg, sweep, path)
            digest = config_hash(_identity(cfg, base_run))
            name = f"{label}-{digest}" if label else digest
            runs.append(RunSpec(name, values, cfg, base_run, first.get(digest)))
            first.setdefault(digest, name)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"sweep {str(path)!r} lists the same run twice; make its grid values distinct")
    return runs, varied


def select(runs: list[RunSpec], varied: list[str], only: list[str] | tuple[str, ...]) -> list[RunSpec]:
    """The runs whose varied values match every `KEY=VALUE` of `only` (a slice of a sweep: one task,
    one regime); `KEY` is a varied key or its label in run names, `VALUE` as run names write it.
    A key the sweep does not vary, or a value no run has, is refused in one line.

    Example:
      >>> runs, varied = expand("experiments/sweep_depth.py", "smoke")
      >>> [r.name.rsplit("-", 1)[0] for r in select(runs, varied, ["depth=8", "seed=0"])]
      ['depth=8-shortcut=true-seed=0', 'depth=8-shortcut=false-seed=0']
    """
    for text in only:
        name, sep, value = text.partition("=")
        if not sep:
            raise UserError(f"--only {text!r}: give KEY=VALUE, e.g. --only task=fashion_mnist")
        key = resolve_key(name, varied, "--only")
        values = list(dict.fromkeys(_fmt(r.overrides[key]) for r in runs))
        if value not in values:
            raise UserError(f"--only {text!r}: no run has {name}={value}; its values: {', '.join(values)}")
        runs = [r for r in runs if _fmt(r.overrides[key]) == value]
    return runs


def _check_overrides_not_varied(overrides: list[str] | tuple[str, ...], lists: dict[str, list]) -> None:
    """One-line UserError for a `--set` key that the sweep's grid or zip varies (directly or in a bundle)."""
    varied: dict[str, list] = {}
    for key, values in lists.items():
        for v in values:
            if isinstance(v, dict):  # a bundle: its settings vary with it
                for k, x in v.items():
                    if k != "name":
                        varied.setdefault(k, []).append(x)
            else:
                varied.setdefault(key, []).append(v)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in varied:
            shown = ", ".join(dict.fromkeys(_fmt(v) for v in varied[key]))
            raise UserError(
                f"--set {text}: the sweep varies {key} (its runs take {shown}); drop the --set, or change the "
                "sweep file's grid"
            )


def merge_manifest(old: dict | None, new: dict) -> dict:
    """The sweep.json of a sweep directory after another `normjax sweep` into it, losing nothing.

    `new` is this invocation's manifest (`spec`, `size`, `overrides`: its `--set` list, `varied`,
    `runs`: `{"name", "overrides"}` per run). The result lists every invocation so far under
    `invocations` (`{"spec", "size", "overrides"}`, each once, in order), every run once (the
    earlier ones first; each run records under `set` the `--set` list of the invocation that
    first listed it, unknown for runs of a manifest written before `set` existed), and the union
    of the varied keys; `spec`, `size` and `overrides` are the latest invocation's. A run name
    carries the hash of the run's whole config, `--set` values included, so a repeated name is
    the same run: it is listed once.

    Args:
      old: the directory's sweep.json, or None when there is none.
      new: this invocation's manifest.

    Returns:
      The merged manifest (a new dict; neither argument is changed).

    Example:
      >>> old = {"spec": "s.py", "size": "smoke", "overrides": [], "varied": ["optim.lr"],
      ...        "runs": [{"name": "lr=0.1-1a2b3c4d", "overrides": {"optim.lr": 0.1}}]}
      >>> new = dict(old, overrides=["train.epochs=5"], runs=[{"name": "lr=0.1-5e6f7a8b", "overrides": {"optim.lr": 0.1}}])
      >>> m = merge_manifest(old, new)
      >>> [r["name"] for r in m["runs"]], [i["overrides"] for i in m["invocations"]]
      (['lr=0.1-1a2b3c4d', 'lr=0.1-5e6f7a8b'], [[], ['train.epochs=5']])
    """
    invocation = {"spec": new.get("spec"), "size": new.get("size"), "overrides": list(new.get("overrides") or [])}
    new_runs = [dict(r, set=list(invocation["overrides"])) for r in new.get("runs") or []]
    if not isinstance(old, dict) or not isinstance(old.get("runs"), list):
        return {**copy.deepcopy(new), "invocations": [invocation], "runs": new_runs}
    invocations = copy.deepcopy(old.get("invocations")) or [
        {"spec": old.get("spec"), "size": old.get("size"), "overrides": list(old.get("overrides") or [])}
    ]
    if invocation not in invocations:
        invocations.append(invocation)
    runs = [copy.deepcopy(r) for r in old["runs"] if isinstance(r, dict)]
    index = {r.get("name"): r for r in runs}
    for r in new_runs:
        if r["name"] in index:
            # The same name is the same config; an old manifest's run learns its --set list.
            index[r["name"]].setdefault("set", r["set"])
        else:
            runs.append(r)
            index[r["name"]] = r
    varied = list(dict.fromkeys(list(old.get("varied") or []) + list(new.get("varied") or [])))
    return {**copy.deepcopy(new), "varied": varied, "invocations": invocations, "runs": runs}


def check_same_size(old: dict | None, size: str, workdir: str) -> None:
    """Refuse a sweep into a directory that holds runs of another size (one line, nothing written).

    A sweep directory holds one size: its tables and figures average and draw every run in it,
    and runs of two sizes (other data, models, lengths) must not be read as one sweep.

    Args:
      old: the directory's sweep.json, or None when there is none.
      size: this invocation's `--size`.
      workdir: the directory, for the message.

    Raises:
      UserError: the directory's runs were made at another size.

    Example:
      >>> check_same_size({"size": "smoke", "runs": []}, "smoke", "runs/demo")
      >>> check_same_size({"size": "smoke", "runs": []}, "medium", "runs/demo")
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: runs/demo holds --size smoke runs; --size medium goes in a directory of its own (e.g. --workdir runs/demo-medium)
    """
    if not isinstance(old, dict):
        return
    sizes = [i.get("size") for i in old.get("invocations") or [old] if isinstance(i, dict) and i.get("size")]
    others = sorted({s for s in sizes if s != size})
    if others:
        raise UserError(
            f"{workdir} holds --size {' and '.join(others)} runs; --size {size} goes in a directory of its own "
            f"(e.g. --workdir {workdir.rstrip('/')}-{size})"
        )
