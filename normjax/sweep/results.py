"""Results of a sweep directory: one row per run, seed-averaged aggregates, CSVs and a terminal table.

A sweep directory holds `sweep.json` (the runs and the dotted config keys that vary) and one run
directory per run (`summary.json`, `metrics.jsonl`, ...). Only the standard library and numpy are
used, so reading results needs no extra dependency.

Example:
  >>> rows = collect("runs/sweep_depth")  # doctest: +SKIP
  >>> agg = aggregate(rows, over="train.seed")  # doctest: +SKIP
  >>> print(report("runs/sweep_depth"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from normjax.errors import UserError
from normjax.paths import as_path
from normjax.sweep.spec import resolve_key, short_names
from normjax.training.rundir import RunDir, SweepDir

STATUSES = ("done", "diverged", "failed", "missing", "running", "interrupted")
# Final metrics a run row carries (from summary.json, plus `final_batch_loss` from metrics.jsonl).
SUMMARY_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "step", "wall_time")
METRICS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "final_batch_loss", "wall_time", "step")
# Metrics only meaningful once a run has finished; running/failed runs report just step/wall_time.
FINAL_ONLY = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def load_sweep(sweep_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The sweep directory's absolute path and its parsed `sweep.json`.

    Example:
      >>> path, meta = load_sweep("runs/sweep_depth")  # doctest: +SKIP
      >>> meta["varied"]  # doctest: +SKIP
      ['model.depth', 'model.shortcut', 'train.seed']
    """
    sweep = SweepDir(sweep_dir)
    manifest = sweep.manifest_path
    if not sweep.is_sweep():
        raise UserError(
            f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json); give the --workdir of a normjax sweep"
        )
    try:
        meta = sweep.read_manifest()
    except (OSError, ValueError) as e:
        raise UserError(f"{str(manifest)!r} is not readable JSON ({e}); rerun the sweep to rewrite it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("runs"), list):
        raise UserError(f"{str(manifest)!r} has no 'runs' list; give the --workdir of a normjax sweep")
    meta.setdefault("varied", [])
    return sweep.path, meta


def sweep_name(sweep_dir: Path, meta: dict) -> str:
    """The title of the sweep's tables and figures: its spec file's stem (else the directory name),
    its size and the datasets its runs train on, so that none mixes sizes or datasets unsaid.

    A directory of an older version can hold the runs of several sizes (`normjax sweep` now
    refuses that): the title names them all and says they are mixed.

    Example:
      >>> sweep_name(Path("runs/x"), {"spec": "experiments/sweep_lr.py", "size": "smoke", "runs": []})
      'sweep_lr (smoke)'
      >>> sweep_name(Path("runs/x"), {"spec": "s.py", "runs": [],
      ...            "invocations": [{"size": "smoke"}, {"size": "medium"}]})
      's (sizes smoke and medium, mixed)'
    """
    name = Path(meta["spec"]).stem if meta.get("spec") else sweep_dir.name
    invocations = [i for i in meta.get("invocations") or [meta] if isinstance(i, dict)]
    sizes = list(dict.fromkeys(str(i["size"]) for i in invocations if i.get("size")))
    label = f"sizes {' and '.join(sizes)}, mixed" if len(sizes) > 1 else "".join(sizes)
    data = _datasets(sweep_dir, meta)
    if data:
        label += ("; " if label else "") + "data " + ", ".join(data)
    return f"{name} ({label})" if label else name


def _datasets(sweep_dir: Path, meta: dict) -> list[str]:
    """The `data.name` of the sweep's runs (and of their tasks, for a `data.task` bundle), in order."""
    sweep, out = SweepDir(sweep_dir), []
    for r in meta.get("runs") or []:
        try:
            data = sweep.run(r["name"]).read_config(as_written=True).get("data", {})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        if isinstance(data, dict) and data.get("name"):
            out.append(str(data["name"]))
    return list(dict.fromkeys(out))


def fmt_value(v: Any) -> str:
    """A config value as the run names spell it: true/false, floats as %g, lists as JSON."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def sort_key(v: Any) -> tuple:
    """Orders mixed values: numbers numerically, then booleans, then text; missing values last."""
    if v is None:
        return (3, 0, "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (2, 0, fmt_value(v))


def group_id(v: Any) -> str:
    """A hashable, type-exact identity for grouping values: `group_id(True) != group_id(1)`."""
    # JSON text keeps True and 1 apart (they are equal, and hash alike, as dict keys) and makes lists hashable.
    return json.dumps(v, sort_keys=True)


def _number(v: Any) -> int | float | None:
    """A metric value as a number; the run writer stores non-finite floats as the strings 'nan'/'inf'."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _live(run: RunDir) -> bool:
    """Whether a live process holds the run's lock (it is training now)."""
    from normjax.training.lock import RunLock  # only for running runs: results stay light

    return RunLock(run.path).live()


def collect(sweep_dir: str | os.PathLike, over: str | None = "train.seed") -> list[dict]:
    """One row per run listed in sweep.json, in the sweep's order.

    A row has `name`, `status` (done, diverged, failed, running, interrupted (stopped, or its
    summary says running but no live process holds its lock), or missing when the run has no
    summary yet), each varied key's value, the summary's final metrics (`None` when absent),
    `final_batch_loss` (the last logged batch loss), and `error`/`message` for failed/diverged runs.

    Runs of one directory may differ in more than the sweep's varied keys (the sweep run again
    with another `--set`, or another sweep into the same directory): every config key that
    separates runs the varied keys (all but `over`) do not tell apart, and every `--set` key whose
    value differs between runs, becomes a column too (see `separating_keys`), so that such runs
    are never averaged together.

    Args:
      sweep_dir: the sweep directory (holds sweep.json).
      over: the key results are averaged over (dotted or short); it never counts as separating.

    Returns:
      The rows; their dotted keys (`varied_keys`) are the varied keys, then the separating keys.

    Example:
      >>> rows = collect("runs/sweep_depth")  # doctest: +SKIP
      >>> rows[0]["status"], rows[0]["model.depth"], rows[0]["test_accuracy"]  # doctest: +SKIP
      ('done', 8, 0.93)
    """
    path, meta = load_sweep(sweep_dir)
    sweep = SweepDir(path)
    varied = list(meta["varied"])
    rows, configs = [], []
    for run in meta["runs"]:
        name = str(run.get("name", ""))
        overrides = run.get("overrides") or {}
        row: dict[str, Any] = {"name": name, "status": "missing"}
        row.update({k: overrides.get(k) for k in varied})
        row.update({m: None for m in SUMMARY_METRICS})
        row.update(final_batch_loss=None, error=None, message=None)
        run_dir = sweep.run(name)
        try:
            summary = run_dir.read_summary() if name else None
        except (OSError, ValueError):
            summary = None  # summaries are written atomically, so an unreadable one means not started
        if isinstance(summary, dict):
            status = summary.get("status")
            row["status"] = status if status in STATUSES else "failed"
            if row["status"] == "running" and not _live(run_dir):
                row["status"] = "interrupted"  # killed: its summary never got to say so
            for m in SUMMARY_METRICS:
                if m in FINAL_ONLY and row["status"] != "done":
                    continue
                row[m] = _number(summary.get(m))
            if row["status"] == "failed":
                row["error"] = str(summary.get("error") or f"unknown status {status!r} in summary.json")
            if row["status"] in ("diverged", "interrupted"):
                row["message"] = str(summary.get("message", ""))
            row["final_batch_loss"] = _number(run_dir.last_metric("loss"))  # the last logged batch loss
            # Values the run's metric hooks summarized (normjax.metrics.register_metric(summary=...)).
            row.update(
                {
                    k: _number(v)
                    for k, v in summary.items()
                    if k not in row and k not in _NOT_METRICS and _number(v) is not None
                }
            )
        rows.append(row)
        configs.append(_run_config(run_dir) if name else None)
    # A run not started has no config.json yet; its own --set values are known from sweep.json.
    sets = [_set_values(run) for run in meta["runs"]]
    extra = separating_keys(rows, configs, varied, over, _set_keys(meta), sets)
    for row, cfg, part in zip(rows, configs, sets):
        row.update({k: (cfg if cfg is not None else part).get(k) for k in extra})
    return rows


def setting_label(row: dict, varied: Iterable[str], over: str = "train.seed") -> str:
    """A legend label for a run's setting: its varied values but `over`, in words where a key has
    them (`model.shortcut`: plain or residual).

    Example:
      >>> setting_label({"model.shortcut": False, "optim.lr": 0.1, "train.seed": 0},
      ...               ["model.shortcut", "optim.lr", "train.seed"])
      'plain, lr=0.1'
    """
    keys = [k for k in varied if k != over]
    short = short_names(keys)
    words = {"model.shortcut": {True: "residual", False: "plain"}}
    parts = []
    for k in keys:
        v = row.get(k)
        parts.append(words[k][v] if k in words and v in words[k] else f"{short[k]}={fmt_value(v)}")
    return ", ".join(parts)


def flat_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}.

    Example:
      >>> flat_config({"optim": {"lr": 0.1}, "data": {"synthetic": {"seed": 0}}})
      {'optim.lr': 0.1, 'data.synthetic.seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _run_config(run: RunDir) -> dict[str, Any] | None:
    """The run's config as written, flat; a warm start from the sweep's own base run reads `pretrain`."""
    try:
        cfg = run.read_config(as_written=True)
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    flat = flat_config(cfg)
    start = flat.get("train.init_from")
    # The runner points `pretrain` runs at <sweep>/pretrain/base-<hash>, which differs per seed.
    if (
        isinstance(start, str)
        and start
        and Path(start).parent.name == SweepDir.PRETRAIN
        and Path(start).name.startswith("base-")
    ):
        flat["train.init_from"] = "pretrain"
    return flat


def _set_keys(meta: dict) -> set[str]:
    """The dotted keys any recorded invocation of the sweep gave with --set."""
    texts = [t for inv in meta.get("invocations") or [] if isinstance(inv, dict) for t in inv.get("overrides") or []]
    texts += [t for run in meta["runs"] if isinstance(run, dict) for t in run.get("set") or []]
    return {str(t).split("=", 1)[0].strip() for t in texts if "=" in str(t)}


def _set_values(run: Any) -> dict[str, Any]:
    """{dotted key: value} of the --set overrides sweep.json records for a run (empty if none)."""
    from normjax.config import parse_override

    out: dict[str, Any] = {}
    for text in (run.get("set") or []) if isinstance(run, dict) else []:
        try:
            out.update(flat_config(parse_override(str(text))))
        except UserError:
            continue
    return out


def separating_keys(
    rows: list[dict],
    configs: list[dict | None],
    varied: list[str],
    over: str | None,
    set_keys: Iterable[str] = (),
    set_values: list[dict] | None = None,
) -> list[str]:
    """The config keys beyond `varied` by which runs must be grouped apart, sorted.

    A config key whose value differs between runs is one when runs with equal values of the
    varied keys other than `over` differ in it (so averaging over `over` would pool different
    settings), when it was given with --set (`set_keys`), or when it is `over` itself. A key that
    the varied keys determine (e.g. a setting of a bundle label such as `data.task`) adds nothing
    and is left out. A run's values are its config (a key it lacks reads None), else, before it
    has one, the --set values recorded for it (only the keys they give).

    Args:
      rows: `collect` rows (their varied values), one per run.
      configs: each run's flat config, or None when it has none yet.
      varied: the sweep's varied keys.
      over: the key averaged over (dotted or short), or None.
      set_keys: dotted keys that --set overrides gave.
      set_values: per run, the flat --set values sweep.json records for it (used without a config).

    Returns:
      The separating keys.

    Example:
      >>> rows = [{"optim.lr": 0.1}, {"optim.lr": 0.1}]
      >>> separating_keys(rows, [{"optim.lr": 0.1, "train.epochs": 1.0},
      ...                        {"optim.lr": 0.1, "train.epochs": 5.0}], ["optim.lr"], None)
      ['train.epochs']
    """
    set_values = set_values or [{} for _ in rows]
    known = [
        (row, cfg, True) if cfg is not None else (row, part, False) for row, cfg, part in zip(rows, configs, set_values)
    ]

    def values(k: str) -> list[tuple[dict, Any]]:
        return [(row, cfg.get(k)) for row, cfg, full in known if full or k in cfg]

    all_keys = sorted({k for _, cfg, _ in known for k in cfg})
    differing = [k for k in all_keys if k not in varied and len({group_id(v) for _, v in values(k)}) > 1]
    over_key = resolve_over(over, list(varied) + differing)
    by = [k for k in varied if k != over_key]
    set_keys = set(set_keys)
    out = []
    for k in differing:
        seen: dict[str, set[str]] = {}
        for row, v in values(k):
            seen.setdefault(group_id([row.get(b) for b in by]), set()).add(group_id(v))
        if k == over_key or k in set_keys or any(len(vs) > 1 for vs in seen.values()):
            out.append(k)
    return out


_NOT_METRICS = ("status", "total_steps", "epochs", "error", "message")


def hook_metrics(rows: list[dict]) -> list[str]:
    """The summary values of metric hooks that `collect` rows carry (e.g. `elr_log_spread`), sorted."""
    known = {"name", "status", "error", "message", *METRICS}
    return sorted({k for r in rows for k in r if "." not in k and k not in known})


def varied_keys(rows: list[dict]) -> list[str]:
    """The varied config keys of `collect` rows: the dotted column names (metric names have no dot)."""
    return [k for k in rows[0] if "." in k] if rows else []


def resolve_over(over: str | None, keys: list[str]) -> str | None:
    """The key to average over, or None; the default `train.seed` may be absent, any other must resolve."""
    if over is None:
        return None
    try:
        return resolve_key(over, keys, "over")
    except UserError:
        if over == "train.seed":
            return None  # the default: a sweep that varies no seed has nothing to average over
        raise


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(rows: list[dict], over: str | None = "train.seed") -> list[dict]:
    """Rows grouped by the varied keys except `over`, sorted by those keys (numbers numerically).

    Each group gives `<metric>_mean` and `<metric>_std` for every metric (sample std, ddof=1;
    0 for a single run; `None` without any), `n` (done runs, the only ones averaged; a metric a
    done run lacks is averaged over the runs that have it), `runs` (all runs in the group) and
    one count per status. `over=None` keeps every run its own group.

    Example:
      >>> agg = aggregate(collect("runs/sweep_depth"), over="seed")  # doctest: +SKIP
      >>> agg[0]["test_accuracy_mean"], agg[0]["n"], agg[0]["diverged"]  # doctest: +SKIP
      (0.91, 3, 0)
    """
    keys = varied_keys(rows)
    over = resolve_over(over, keys)
    by = [k for k in keys if k != over]
    extra = hook_metrics(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(group_id(row[k]) for k in by), []).append(row)
    out = []
    for members in groups.values():
        g: dict[str, Any] = {k: members[0][k] for k in by}
        done = [r for r in members if r["status"] == "done"]
        g["n"], g["runs"] = len(done), len(members)
        for s in STATUSES:
            g[s] = sum(r["status"] == s for r in members)
        for m in (*METRICS, *extra):
            g[f"{m}_mean"], g[f"{m}_std"] = _mean_std([r.get(m) for r in done if r.get(m) is not None])
        out.append(g)
    out.sort(key=lambda g: tuple(sort_key(g[k]) for k in by))
    return out


def _csv_cell(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)  # full precision, so the CSV round-trips the JSON values
    return fmt_value(v)


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """Write `rows` (dicts; keys outside `columns` ignored) as a CSV with a header, atomically,
    floats at full precision, to a local path or a URL.

    Example:
      >>> write_csv("/tmp/t.csv", [{"a": 1, "b": 0.5}], ["a", "b"])  # doctest: +SKIP
    """
    path = as_path(path)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([_csv_cell(r.get(c)) for c in columns] for r in rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)  # a reader never sees half a CSV


def _pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    # A single run has no spread; say so rather than print a misleading "± 0".
    return f"{mean:.4f} (n=1)" if n < 2 else f"{mean:.4f} ± {std:.4f}"


def status_text(g: dict) -> str:
    """`3/3 done` when every run finished, else the non-zero counts: `2 done, 1 diverged`."""
    if g["done"] == g["runs"]:
        return f"{g['done']}/{g['runs']} done"
    return ", ".join(f"{g[s]} {s}" for s in STATUSES if g[s])


def _table(header: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]


def report(sweep_dir: str | os.PathLike, over: str | None = "train.seed", max_errors: int = 10) -> str:
    """Write `results.csv` (one row per run) and `results_agg.csv` into the sweep directory; return a table.

    The table has one line per group of runs differing only in `over`: the varied keys (and the
    config keys that separate runs beyond them, see `collect`), then test accuracy / test loss /
    train accuracy as `mean ± std` (sample std over done runs), then the status counts; the
    errors of failed runs follow (at most `max_errors`).

    Example:
      >>> print(report("runs/sweep_depth"))  # doctest: +SKIP
      sweep_depth (smoke): 12 runs, mean ± std over train.seed
      depth  shortcut  test_accuracy    ...  runs
      -----  --------  ---------------  ...  --------
          8  false     0.9312 ± 0.0040  ...  3/3 done
    """
    path, meta = load_sweep(sweep_dir)
    sweep = SweepDir(path)
    rows = collect(path, over=over)
    keys = varied_keys(rows) or list(meta["varied"])
    over_key = resolve_over(over, keys)
    agg = aggregate(rows, over=over_key)
    by = [k for k in keys if k != over_key]

    extra = hook_metrics(rows)
    run_cols = ["name", "status", *keys, *SUMMARY_METRICS, "final_batch_loss", *extra, "error", "message"]
    agg_cols = [*by, "n", "runs", *STATUSES] + [f"{m}_{s}" for m in (*METRICS, *extra) for s in ("mean", "std")]
    write_csv(sweep.results_path, rows, run_cols)
    write_csv(sweep.results_agg_path, agg, agg_cols)

    short = short_names(keys)
    shown = ("test_accuracy", "test_loss", "train_accuracy", *extra)
    header = [short[k] for k in by] + [*shown, "runs"]
    body = [
        [fmt_value(g[k]) for k in by] + [_pm(g[f"{m}_mean"], g[f"{m}_std"], g["n"]) for m in shown] + [status_text(g)]
        for g in agg
    ]
    # Numeric key columns read best right-aligned; metric columns stay left-aligned so the means line up.
    right = {i for i, k in enumerate(by) if all(sort_key(g[k])[0] == 0 for g in agg)}
    averaged = f", mean ± std over {over_key}" if over_key else ""
    lines = [f"{sweep_name(path, meta)}: {len(rows)} runs{averaged}"]
    separate = [k for k in keys if k not in meta["varied"] and k != over_key]
    if separate:  # e.g. the sweep run again into this directory with another --set
        lines.append(
            f"runs differ beyond the sweep's varied keys in {', '.join(separate)} (their config.json): grouped apart"
        )
    lines += _table(header, body, right)

    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", f"failed runs ({len(failed)}):"]
        lines += [f"  {r['name']}: {r['error']}" for r in failed[:max_errors]]
        if len(failed) > max_errors:
            lines.append(f"  ... and {len(failed) - max_errors} more (see results.csv)")
    lines += ["", f"wrote {sweep.results_path} and {sweep.results_agg_path}"]
    return "\n".join(lines)
