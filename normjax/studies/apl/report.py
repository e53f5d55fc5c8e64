"""The APL study's numbers, claim by claim, from its sweeps: `normjax apl-report`.

Reads sparsification sweeps (`sweep_apl_targets.py`: grouped by `optim.prelu_target`;
`sweep_apl_sparsity.py`: by `optim.prelu_l1`), their base runs (the unsparsified networks the
after-training runs start from) and the baselines sweep (`sweep_apl_baselines.py`: equal width,
equal parameters, and the linear classifier), and writes `apl_report.json` and figures:

- per task and regime, each sparsity setting's APL, effective width, nonlinear units and test
  accuracy as mean ± std over seeds; the unsparsified accuracy (the base runs) and the floor (the
  linear classifier), and the all-linear networks beside it;
- the collapse: the APL at which accuracy first falls below halfway between the floor and the
  unsparsified accuracy, on the seed-mean curve (interpolated in APL) and per seed; None (and no
  halfway) where the floor is not below the unsparsified accuracy;
- the nonlinear advantage: after − during at each setting (matched count of nonlinear units), with
  the standard error of the difference of two independent means (seeds), and at matched APL (the
  during curve read at the after point's APL);
- the baselines: each sparsified setting against the baselines' seed-mean accuracy interpolated at
  its mean APL (a plain ReLU net's APL is its depth), per kind; outside the baselines' APL range
  the comparison is left out (None);
- when each run's count of nonlinear units reached its final value (`met_step`, and as a
  fraction of the run, `met_fraction`): for a controller run, the step its target was met;
- with `--fold`, the folded network of every run of the first seed: depth, parameters, accuracy
  (`normjax fold`, written under OUT/folded/).

Figures, per sweep (`SWEEP_` + `FIGURES`), titled with the sweep's size, data and seeds:
`collapse` (accuracy vs APL with seed bands, floor, unsparsified and halfway lines), `gap` (after −
during at matched APL, ±2 s.e.; a bar crossing 0 is inconclusive), `core` (effective depth and
width per setting), `vs_baselines`.

Example:
  >>> report(["runs/sweep-apl_targets-medium"], baselines="runs/sweep-apl_baselines-medium", out="runs/apl-report")  # doctest: +SKIP

References:
  Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
  Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

from normjax.errors import UserError
from normjax.figures import figure, save
from normjax.studies.report import difference, fmt, mean_std, sweep_rows, write_report
from normjax.sweep.results import collect, load_sweep, sweep_name
from normjax.training.rundir import RunDir, SweepDir

JSON_NAME = "apl_report.json"
TASK, REGIME, SEED, BASELINE = "data.task", "train.regime", "train.seed", "model.baseline"
SETTINGS = ("optim.prelu_target", "optim.prelu_l1")  # what a sparsification sweep varies
QUANTITIES = ("apl", "effective_width", "nonlinear_units", "test_accuracy", "train_loss", "met_step", "met_fraction")


def met_step(run: RunDir) -> int | None:
    """The first logged step at which the run's count of linear units (`prelu_frozen`) had its final
    value: when a controller run met its target, or a fixed-λ run's architecture stopped changing.
    None without the count in the log.

    Example:
      >>> met_step(RunDir("runs/sweep-apl_targets-mnist1d/task=mnist1d-regime=during-prelu_target=0.1-seed=0-x"))  # doctest: +SKIP
      496
    """
    rows = [(r["step"], r["prelu_frozen"]) for r in run.read_metrics() if "prelu_frozen" in r and "step" in r]
    if not rows:
        return None
    final = rows[-1][1]
    return int(next(step for step, n in rows if n == final))


def collapse_apl(apl: list[float], acc: list[float], half: float) -> float | None:
    """The APL at which accuracy first falls below `half`, walking from the largest APL down.

    Linear in APL between the last point at or above `half` and the first below it; the largest
    APL when already the first point is below; None when no point is below (no collapse seen).

    Example:
      >>> collapse_apl([16.0, 4.0, 2.0, 0.0], [0.9, 0.9, 0.5, 0.5], 0.7)
      3.0
    """
    order = np.argsort(-np.asarray(apl, np.float64), kind="stable")
    x, y = np.asarray(apl, np.float64)[order], np.asarray(acc, np.float64)[order]
    below = np.flatnonzero(y < half)
    if not below.size:
        return None
    i = int(below[0])
    if i == 0:
        return float(x[0])
    t = (y[i - 1] - half) / (y[i - 1] - y[i])
    return float(x[i - 1] + t * (x[i] - x[i - 1]))


def halfway(unsparsified: float | None, floor: float | None) -> float | None:
    """The accuracy halfway between the floor (the linear classifier) and the unsparsified net;
    None without both, or where the floor is not below: then there is no collapse to locate.

    Example:
      >>> halfway(0.9, 0.5), halfway(0.97, 0.98)
      (0.7, None)
    """
    if unsparsified is None or floor is None or not unsparsified > floor:
        return None
    return 0.5 * (unsparsified + floor)


def fill_tasks(sweep: Path, rows: list[dict]) -> list[dict]:
    """Each row's task label (in place): its `data.task` bundle's name, else its dataset's name
    (`data.name` of its config), so a sweep over one dataset is drawn and reported under that name."""
    sweep_dir = SweepDir(sweep)
    for r in rows:
        if r.get(TASK) is None:
            try:
                r[TASK] = str(sweep_dir.run(r["name"]).read_config(as_written=True)["data"]["name"])
            except (OSError, ValueError, KeyError, TypeError):
                r[TASK] = "unknown data"
    return rows


def num_test_examples(sweep: Path, rows: list[dict]) -> int | None:
    """The size of the test set the rows were evaluated on (one image is 1/n of their accuracy),
    None when the runs' configs or data cannot be read."""
    from normjax.training.inputs import input_for

    try:
        return int(input_for(SweepDir(sweep).run(rows[0]["name"]).read_config(as_written=True)).num_test)
    except (OSError, ValueError, KeyError, TypeError, IndexError, UserError):
        return None


def _setting_key(rows: list[dict], sweep: Path) -> str:
    for key in SETTINGS:
        if any(r.get(key) is not None for r in rows):
            return key
    raise UserError(f"{str(sweep)!r} varies none of {', '.join(SETTINGS)}; give a sparsification sweep")


def _base_runs(sweep: Path, rows: list[dict]) -> dict[tuple[str, int], dict]:
    """{(task, seed): base run summary} from the after-training runs' warm starts."""
    out, sweep_dir = {}, SweepDir(sweep)
    for r in rows:
        run = sweep_dir.run(r["name"])
        if not run.is_run():
            continue
        start = run.read_config(as_written=True)["train"]["init_from"]
        if not start:
            continue
        # the path the run was given, else the same base run in this (moved) sweep directory
        found = [d for d in (RunDir(start), sweep_dir.base_run(Path(start).name)) if d.summary_path.is_file()]
        if found:
            s = found[0].read_summary()
            if s.get("status") == "done":
                out[(str(r[TASK]), int(r.get(SEED) or 0))] = s
    return out


def _points(rows: list[dict], key: str) -> list[dict]:
    """Per setting (largest first): each quantity's mean ± std over seeds, and the seeds."""
    by: dict[float, list[dict]] = {}
    for r in rows:
        by.setdefault(float(r[key]), []).append(r)
    return [
        {"setting": v, "seeds": [int(r.get(SEED) or 0) for r in rs]}
        | {q: mean_std([float(r[q]) for r in rs if r.get(q) is not None]) for q in QUANTITIES}
        for v, rs in sorted(by.items(), reverse=True)
    ]


def _stderr2(ms: dict) -> float:
    return (ms["std"] or 0.0) ** 2 / max(ms["n"], 1)


def _gap(after: list[dict], during: list[dict], half: float | None = None) -> list[dict]:
    """after − during per setting both regimes have: the difference of the seed means and its
    standard error (two independent means); and at matched APL, the during curve (seed means
    and their standard errors, linear in APL) read at the after point's mean APL, None outside
    the APLs the during runs reached or between two during points on either side of `half`
    (a straight line across the collapse is no measurement)."""
    d = {p["setting"]: p for p in during}
    ok = [p for p in during if p["apl"]["mean"] is not None and p["test_accuracy"]["mean"] is not None]
    ok.sort(key=lambda p: p["apl"]["mean"])
    xs = np.array([p["apl"]["mean"] for p in ok])
    out = []
    for a in after:
        b = d.get(a["setting"])
        if b is None or a["test_accuracy"]["mean"] is None or b["test_accuracy"]["mean"] is None:
            continue
        row = {
            "setting": a["setting"],
            "gap": a["test_accuracy"]["mean"] - b["test_accuracy"]["mean"],
            "stderr": math.sqrt(_stderr2(a["test_accuracy"]) + _stderr2(b["test_accuracy"])),
            "apl_after": a["apl"]["mean"],
            "apl_during": b["apl"]["mean"],
            "gap_matched_apl": None,
            "stderr_matched_apl": None,
        }
        x = a["apl"]["mean"]
        ys = np.array([p["test_accuracy"]["mean"] for p in ok])
        j = int(np.searchsorted(xs, x)) if x is not None else 0
        across = half is not None and 0 < j < len(xs) and (ys[j - 1] - half) * (ys[j] - half) < 0 and xs[j] != x
        if len(xs) > 1 and x is not None and xs[0] <= x <= xs[-1] and not across:
            acc = np.interp(x, xs, ys)
            se2 = np.interp(x, xs, [_stderr2(p["test_accuracy"]) for p in ok])
            row["gap_matched_apl"] = a["test_accuracy"]["mean"] - float(acc)
            row["stderr_matched_apl"] = math.sqrt(_stderr2(a["test_accuracy"]) + float(se2))
        row["matched_apl"] = difference(row["gap_matched_apl"], row["stderr_matched_apl"])
        out.append(row)
    return out


def baseline_curves(baselines: Path | None) -> dict[str, dict[str, list[dict]]]:
    """{task: {kind: rows}} of the finished baseline runs."""
    if baselines is None:
        return {}
    if not SweepDir(baselines).is_sweep():
        raise UserError(f"--baselines {str(baselines)!r} is not a sweep directory (no sweep.json)")
    out: dict[str, dict[str, list[dict]]] = {}
    for r in fill_tasks(baselines, collect(baselines)):
        if r["status"] == "done" and r.get("test_accuracy") is not None and r.get("apl") is not None:
            out.setdefault(str(r[TASK]), {}).setdefault(str(r[BASELINE]), []).append(r)
    return out


def _by_depth(rows: list[dict]) -> list[dict]:
    """Per depth (shallowest first): APL and test accuracy, mean ± std over seeds."""
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(int(r["model.depth"]), []).append(r)
    return [
        {
            "depth": d,
            "apl": mean_std([float(r["apl"]) for r in rs]),
            "test_accuracy": mean_std([r["test_accuracy"] for r in rs]),
        }
        for d, rs in sorted(by.items())
    ]


def _against_baselines(points: list[dict], kinds: dict[str, list[dict]]) -> list[dict]:
    """Each setting's accuracy minus each baseline kind's, interpolated at the setting's mean APL."""
    out = []
    for p in points:
        row = {"setting": p["setting"], "apl": p["apl"]["mean"], "test_accuracy": p["test_accuracy"]["mean"]}
        for kind, curve in kinds.items():
            xs = np.array([c["apl"]["mean"] for c in curve])
            ys = np.array([c["test_accuracy"]["mean"] for c in curve])
            inside = len(xs) > 1 and p["apl"]["mean"] is not None and xs.min() <= p["apl"]["mean"] <= xs.max()
            base = float(np.interp(p["apl"]["mean"], xs, ys)) if inside else None
            row[kind] = {"accuracy": base, "difference": None if base is None else row["test_accuracy"] - base}
        out.append(row)
    return out


def _fold_runs(sweep: Path, rows: list[dict], out: Path) -> list[dict]:
    """Fold every finished run of the first seed (MLPs fold fully); one record line each."""
    from normjax.studies.apl.fold_checkpoint import fold_run

    seed = min(int(r.get(SEED) or 0) for r in rows)
    records = []
    for r in rows:
        if int(r.get(SEED) or 0) != seed:
            continue
        rec = fold_run(sweep / r["name"], out=out / "folded" / r["name"])
        records.append(
            {
                "run": r["name"],
                TASK: r[TASK],
                REGIME: r.get(REGIME),
                "apl": r["apl"],
                "nonlinear_units": r["nonlinear_units"],
                "original": {k: rec["original"][k] for k in ("depth", "params", "nonlinear_nodes")},
                "folded": {k: rec["folded"][k] for k in ("depth", "params", "nonlinear_nodes")},
                "accuracy": rec["accuracy"],
                "max_rel_deviation": rec["deviation"]["max_rel"],
            }
        )
    return records


def sweep_section(sweep: str | os.PathLike, baselines: dict, fold_out: Path | None = None) -> dict:
    """One sparsification sweep's numbers per task (see the module docstring)."""
    path, every = sweep_rows(sweep)
    rows = fill_tasks(path, [r for r in every if r["status"] == "done" and r.get("apl") is not None])
    if not rows:
        raise UserError(f"{str(sweep)!r} has no finished run that logged the apl hook (log.metrics=['apl'])")
    seeds = len({r.get(SEED) for r in rows})
    title = f"{sweep_name(path, load_sweep(path)[1])}, {seeds} seed{'s' if seeds > 1 else ''}"
    key = _setting_key(rows, path)
    bases = _base_runs(path, rows)
    for r in rows:
        r["met_step"] = met_step(SweepDir(path).run(r["name"]))
        steps = r.get("total_steps") or r.get("step")
        r["met_fraction"] = None if r["met_step"] is None or not steps else (r["met_step"] + 1) / steps
    diverged = [r["name"] for r in every if r["status"] == "diverged"]
    missed = []  # controller runs that ended with more nonlinear units than their target keeps
    if key == "optim.prelu_target":
        for r in rows:
            units = r["nonlinear_units"] / r["nonlinear_fraction"] if r.get("nonlinear_fraction") else None
            if units is not None and r["nonlinear_units"] > round(r[key] * round(units)):
                missed.append(r["name"])
    tasks = {}
    for task in sorted({str(r[TASK]) for r in rows}):
        trs = [r for r in rows if str(r[TASK]) == task]
        base = [s for (t, _), s in sorted(bases.items()) if t == task]
        unsparsified = mean_std([s.get("test_accuracy") for s in base])
        kinds = {k: _by_depth(v) for k, v in baselines.get(task, {}).items()}
        linear = kinds.pop("linear", None)
        floor = mean_std([a for p in linear or [] for a in p["test_accuracy"]["values"]])
        half = halfway(unsparsified["mean"], floor["mean"])
        regimes = {}
        for regime in sorted({str(r.get(REGIME)) for r in trs}):
            rrs = [r for r in trs if str(r.get(REGIME)) == regime]
            points = _points(rrs, key)
            top_apl = mean_std([s.get("apl") for s in base])["mean"]
            entry = {"points": points, "collapse_apl": None, "collapse_apl_per_seed": None}
            if half is not None:
                xs = [top_apl] + [p["apl"]["mean"] for p in points]
                ys = [unsparsified["mean"]] + [p["test_accuracy"]["mean"] for p in points]
                entry["collapse_apl"] = collapse_apl(xs, ys, half)
                per_seed = []
                for seed in sorted({int(r.get(SEED) or 0) for r in rrs}):
                    srs = [r for r in rrs if int(r.get(SEED) or 0) == seed]
                    b = bases.get((task, seed))
                    if b is None:
                        continue
                    per_seed.append(
                        collapse_apl(
                            [b["apl"]] + [float(r["apl"]) for r in srs],
                            [b["test_accuracy"]] + [float(r["test_accuracy"]) for r in srs],
                            half,
                        )
                    )
                entry["collapse_apl_per_seed"] = per_seed
            if kinds:
                entry["vs_baselines"] = _against_baselines(points, kinds)
            regimes[regime] = entry
        out = {
            "unsparsified": unsparsified | {"apl": mean_std([s.get("apl") for s in base])["mean"]},
            "linear_classifier": floor,
            "halfway": half,
            "regimes": regimes,
            "baselines": kinds,
            "test_examples": num_test_examples(path, trs),
        }
        if {"after", "during"} <= set(regimes):
            out["gap"] = _gap(regimes["after"]["points"], regimes["during"]["points"], half)
        if fold_out is not None:
            out["folded"] = _fold_runs(path, trs, fold_out)
        tasks[task] = out
    return {
        "sweep": str(path),
        "title": title,
        "seeds": seeds,
        "setting": key,
        "diverged": diverged,
        "missed_target": missed,
        "tasks": tasks,
    }


def _band(ax, points: list[dict], color: str, label: str, ls: str = "-") -> None:
    """Seed-mean accuracy against seed-mean APL, ±1 std both ways, and a band."""
    xs = np.array([p["apl"]["mean"] for p in points], float)
    ys = np.array([p["test_accuracy"]["mean"] for p in points], float)
    sd = np.array([p["test_accuracy"]["std"] or 0.0 for p in points], float)
    xe = np.array([p["apl"]["std"] or 0.0 for p in points], float)
    ax.errorbar(xs, ys, yerr=sd, xerr=xe, fmt="o", ls=ls, color=color, ms=3.5, capsize=2, label=label)
    ax.fill_between(xs, ys - sd, ys + sd, color=color, alpha=0.15)


def accuracy_label(n: int | None) -> str:
    """The accuracy axis label with what one test image is worth, so a reader can tell a
    difference of a few images from an effect.

    Example:
      >>> accuracy_label(360)
      'test accuracy (one of 360 test images = 0.28 points)'
    """
    return "test accuracy" if not n else f"test accuracy (one of {n} test images = {100 / n:.2g} points)"


def _save_panels(fig, axes, section: dict, xlabel: str, path: Path) -> list[Path]:
    """One accuracy panel per task: titles, axes and the legend; saved as `path`.png/.pdf."""
    for ax, (task, t) in zip(axes[0], section["tasks"].items()):
        ax.set_title(str(task), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(accuracy_label(t.get("test_examples")), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    _suptitle(fig, section)
    return save(fig, path.parent, path.name)


def _suptitle(fig, section: dict) -> None:
    fig.suptitle(section.get("title") or Path(section["sweep"]).name, fontsize=9)


# The report's figures; `normjax apl-plot` writes the same under its own names.
FIGURES = ("collapse", "gap", "core", "vs_baselines")


def figures(section: dict, out: Path, stem: str = "apl", names: dict[str, str] | None = None) -> list[Path]:
    """The report's figures for one sweep section; returns their paths.

    Args:
      section: a `sweep_section`.
      out: the output directory.
      stem: file names are `{stem}_{figure}` (`FIGURES`) ...
      names: ... unless given here ({figure: file stem}).

    Returns:
      The written PNG and PDF paths.
    """
    names = {k: f"{stem}_{k}" for k in FIGURES} | (names or {})
    tasks = section["tasks"]
    n = len(tasks)
    paths: list[Path] = []
    regimes = sorted({g for t in tasks.values() for g in t["regimes"]})
    colors = {g: f"C{i}" for i, g in enumerate(regimes)}

    fig, axes = figure(1, n, size=(4.2 * n, 3.6))
    for ax, t in zip(axes[0], tasks.values()):
        for regime, e in t["regimes"].items():
            _band(ax, e["points"], colors[regime], f"{regime}")
            if e["collapse_apl"] is not None:
                ax.axvline(e["collapse_apl"], color=colors[regime], ls=":", lw=1, label=f"collapse, {regime}")
        for value, label, ls in (
            (t["unsparsified"]["mean"], "unsparsified", "-"),
            (t["linear_classifier"]["mean"], "linear classifier", "--"),
            (t["halfway"], "halfway", ":"),
        ):
            if value is not None:
                ax.axhline(value, color="k", ls=ls, lw=0.9, label=label)
    paths += _save_panels(fig, axes, section, "APL (normalized), mean ± std over seeds", out / names["collapse"])

    gaps = {
        task: [x for x in t["gap"] if x["gap_matched_apl"] is not None] for task, t in tasks.items() if t.get("gap")
    }
    if any(gaps.values()):
        fig, axes = figure(1, 1, size=(5.2, 3.6))
        ax = axes[0][0]
        for i, (task, g) in enumerate(gaps.items()):
            ax.errorbar(
                [x["apl_after"] for x in g],
                [x["gap_matched_apl"] for x in g],
                yerr=[2 * x["stderr_matched_apl"] for x in g],
                fmt="o",
                color=f"C{i}",
                capsize=3,
                label=task,
            )
        ax.axhline(0, color="k", lw=0.8, label="no advantage")
        # symlog spreads APLs from 0 to ~15; its locator gives unreadable ticks when all lie below 1.
        if max(x["apl_after"] for g in gaps.values() for x in g) > 1.0:
            ax.set_xscale("symlog", linthresh=1.0)
        ax.margins(x=0.08)  # the largest APL's bar sat on the frame
        ax.set_xlabel("APL of the after-training runs (normalized)")
        ax.set_ylabel("test accuracy: after − during\nat matched APL (±2 s.e.)")
        ax.set_title(
            "nonlinear advantage at matched APL; bars crossing 0: inconclusive"
            if section.get("seeds", 1) > 1
            else "nonlinear advantage at matched APL; one seed: no error bars, no verdict",
            fontsize=8,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _suptitle(fig, section)
        paths += save(fig, out, names["gap"])

    fig, axes = figure(1, 1, size=(5.2, 3.6))
    ax = axes[0][0]
    for i, (task, t) in enumerate(tasks.items()):
        for regime, e in t["regimes"].items():
            pts = e["points"]
            ax.errorbar(
                [p["apl"]["mean"] for p in pts],
                [p["effective_width"]["mean"] for p in pts],
                xerr=[p["apl"]["std"] or 0.0 for p in pts],
                yerr=[p["effective_width"]["std"] or 0.0 for p in pts],
                fmt="o-" if regime == "after" else "^--",
                color=f"C{i}",
                ms=3.5,
                capsize=2,
                label=f"{task}, {regime}",
            )
    ax.set_xlabel("effective depth (APL)")
    ax.set_ylabel("effective width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    _suptitle(fig, section)
    paths += save(fig, out, names["core"])

    if any(t["baselines"] for t in tasks.values()):
        fig, axes = figure(1, n, size=(4.2 * n, 3.6))
        for ax, t in zip(axes[0], tasks.values()):
            for regime, e in t["regimes"].items():
                _band(ax, e["points"], colors[regime], f"sparsified, {regime}")
            for (kind, curve), (color, ls) in zip(sorted(t["baselines"].items()), (("k", "--"), ("0.45", ":"))):
                _band(ax, curve, color, f"baseline, {kind}", ls)
        paths += _save_panels(fig, axes, section, "APL (a plain net's is its depth)", out / names["vs_baselines"])
    return paths


def report(
    sweeps: list[str | os.PathLike],
    *,
    out: str | os.PathLike,
    baselines: str | os.PathLike | None = None,
    fold: bool = False,
) -> dict:
    """Every claim's numbers from the APL sweeps, into `OUT/apl_report.json`, and the figures.

    Args:
      sweeps: sparsification sweep directories (targets or λ sweeps).
      out: output directory.
      baselines: the baselines sweep directory (equal width, equal params, linear classifier).
      fold: also fold every first-seed run of each sweep (OUT/folded/).

    Returns:
      The report dict (`sweeps`: one section per sweep, `figures`: the written paths).
    """
    if not sweeps:
        raise UserError("give at least one sparsification sweep directory")
    out = Path(out).expanduser()
    base = baseline_curves(None if baselines is None else Path(baselines).expanduser())
    res = {"sweeps": [], "baselines": None if baselines is None else str(baselines)}
    figs: list[Path] = []
    for sweep in sweeps:
        section = sweep_section(sweep, base, out / Path(sweep).name if fold else None)
        res["sweeps"].append(section)
        figs += figures(section, out, Path(sweep).name)
    write_report(out, JSON_NAME, res)
    res["figures"] = figs
    return res


def apl_report_main(argv: list[str]) -> int:
    """`normjax apl-report SWEEP [SWEEP ...] --out DIR [--baselines DIR] [--fold]`.

    Args:
      argv: the arguments after `apl-report`.

    Returns:
      The exit code (0); the headline numbers are printed. Bad input raises `UserError`.
    """
    p = argparse.ArgumentParser(prog="normjax apl-report", description=apl_report_main.__doc__.splitlines()[0])
    p.add_argument(
        "sweeps", nargs="+", help="sparsification sweep directories (sweep_apl_targets.py, sweep_apl_sparsity.py)"
    )
    p.add_argument("--out", required=True, help="output directory for apl_report.json and the figures")
    p.add_argument("--baselines", help="the baselines sweep directory (sweep_apl_baselines.py)")
    p.add_argument("--fold", action="store_true", help="fold every first-seed run (OUT/<sweep>/folded/)")
    args = p.parse_args(argv)
    res = report(args.sweeps, out=args.out, baselines=args.baselines, fold=args.fold)
    for s in res["sweeps"]:
        for task, t in s["tasks"].items():
            print(
                f"{Path(s['sweep']).name} {task}: unsparsified {fmt(t['unsparsified'])}, "
                f"linear classifier {fmt(t['linear_classifier'])}"
            )
            for regime, e in t["regimes"].items():
                c = e["collapse_apl"]
                print(f"  {regime}: collapse at APL {'-' if c is None else f'{c:.2f}'}")
            for g in t.get("gap", []):
                m = g["gap_matched_apl"]
                at_apl = "-" if m is None else f"{m:+.4f} ± {g['stderr_matched_apl']:.4f}"
                print(
                    f"  after - during at {s['setting']}={g['setting']:g}: {g['gap']:+.4f} ± {g['stderr']:.4f}; "
                    f"at the after runs' APL {g['apl_after']:.2f}: {at_apl}"
                )
    print(f"json: {(Path(args.out) / JSON_NAME).absolute()}")
    for path in res["figures"]:
        print(f"figure: {path}")
    return 0
