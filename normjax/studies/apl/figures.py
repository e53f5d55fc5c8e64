"""`normjax apl-plot SWEEPDIR [--baselines SWEEPDIR]`: the APL study's figures (PNG and PDF).

From a sparsity sweep (runs logging the `apl` hook; tasks as a `data.task` bundle, regimes as a
`train.regime` bundle, see `normjax.sweep.spec`) and optionally a sweep of baseline networks:

- `accuracy_vs_apl`: test accuracy against the reached (normalized) APL, one panel per task, one
  colour per regime; baselines drawn at their APL (a plain net of depth d has APL d), equal width
  and equal parameters apart. Slow decay, then collapse: where a regime's curve falls.
- `core_profile`: per task, the fraction of nonlinear channels per layer of each sparsified run
  (colour = its APL): the core network the prior leaves.
- `core_size`: effective width against effective depth (APL) of every run, colour = task.
- `advantage_gap`: per task, accuracy of the after-training regime minus the during-training
  regime at matched APL (linear interpolation over the APL range both cover), against APL.
- `vs_baselines`: per task, sparsified networks against the baselines of matching depth.
- `apl_table.csv`: per run: task, regime, APL, effective width, nonlinear units, accuracy.

Example:
  >>> paths = apl_figures("runs/sweep-apl_sparsity-smoke", baselines="runs/sweep-apl_baselines-smoke")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from normjax.errors import UserError, missing_extra

try:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.figures import figure, save
from normjax.sweep.results import collect, write_csv
from normjax.training.rundir import RunDir, SweepDir

TASK, REGIME, BASELINE = "data.task", "train.regime", "model.baseline"


def _done(rows: list[dict]) -> list[dict]:
    return [
        r for r in rows if r["status"] == "done" and r.get("apl") is not None and r.get("test_accuracy") is not None
    ]


def _groups(rows: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(str(r.get(key) if r.get(key) is not None else "all"), []).append(r)
    return out


def curve(rows: list[dict], x: str = "apl", y: str = "test_accuracy") -> tuple[np.ndarray, np.ndarray]:
    """`y` against `x`, sorted by x, runs at the same x (seeds) averaged."""
    pts: dict[float, list[float]] = {}
    for r in rows:
        pts.setdefault(round(float(r[x]), 6), []).append(float(r[y]))
    xs = np.array(sorted(pts))
    return xs, np.array([np.mean(pts[v]) for v in xs])


def advantage_gap(after: list[dict], during: list[dict], points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy(after) − accuracy(during) at matched APL, on `points` APLs of the shared range.

    Args:
      after, during: `collect` rows (with `apl` and `test_accuracy`) of each regime.
      points: grid size over the APL interval both regimes cover.

    Returns:
      `(apl_grid, gap)`; empty arrays when the regimes' APL ranges do not overlap.

    Example:
      >>> a = [{"apl": 1.0, "test_accuracy": 0.9}, {"apl": 3.0, "test_accuracy": 0.9}]
      >>> d = [{"apl": 1.0, "test_accuracy": 0.5}, {"apl": 3.0, "test_accuracy": 0.9}]
      >>> [round(float(v), 2) for v in advantage_gap(a, d, 3)[1]]
      [0.4, 0.2, 0.0]
    """
    xa, ya = curve(after)
    xd, yd = curve(during)
    if len(xa) < 2 or len(xd) < 2:
        return np.array([]), np.array([])
    lo, hi = max(xa[0], xd[0]), min(xa[-1], xd[-1])
    if hi <= lo:
        return np.array([]), np.array([])
    grid = np.linspace(lo, hi, points)
    return grid, np.interp(grid, xa, ya) - np.interp(grid, xd, yd)


def _baseline_rows(baselines: Path | None) -> list[dict]:
    if baselines is None:
        return []
    rows = [r for r in collect(baselines) if r["status"] == "done" and r.get("test_accuracy") is not None]
    for r in rows:  # a plain ReLU net's APL is its depth when the hook was not logged
        if r.get("apl") is None:
            r["apl"] = float(SweepDir(baselines).run(r["name"]).read_config()["model"]["depth"])
    return rows


def _profile(run: RunDir) -> tuple[list[str], np.ndarray] | None:
    """Layer names and the last logged per-layer nonlinear fraction of a run, or None."""
    graph = run.read_graph()
    last = run.last_metric("nl_fraction")
    if graph is None or last is None:
        return None
    return graph.names(), np.asarray(last, float)


def _baselines(ax, task: str, rows: list[dict], xlabel: str) -> None:
    """Baseline curves (one line style per kind: equal width, equal parameters), title and axes."""
    for (kind, brs), ls in zip(sorted(_groups(rows, BASELINE).items()), ("--", ":", "-.")):
        xs, ys = curve(brs)
        ax.plot(xs, ys, "s" + ls, color="k", label=f"baseline, {kind}", ms=3, alpha=0.7)
    ax.set_title(f"task: {task}")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _save_panels(fig, axes, out: Path, stem: str) -> list[Path]:
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7)
    return save(fig, out, stem)


def apl_figures(sweep: str | Path, baselines: str | Path | None = None, out: str | Path | None = None) -> list[Path]:
    """Write the APL study's figures and table for a sweep directory; returns their paths.

    Args:
      sweep: a sparsity sweep directory (runs that logged the `apl` hook).
      baselines: optional sweep directory of baseline networks (`model.baseline` bundle).
      out: output directory (default `SWEEP/figures`).

    Returns:
      The written files (PNG and PDF per figure, and `apl_table.csv`).
    """
    sweep = Path(sweep).expanduser()
    sweep_dir = SweepDir(sweep)
    if not sweep_dir.is_sweep():
        raise UserError(f"{str(sweep)!r} is not a sweep directory (no sweep.json)")
    base_dir = None if baselines is None else Path(baselines).expanduser()
    if base_dir is not None and not SweepDir(base_dir).is_sweep():
        raise UserError(f"--baselines {str(base_dir)!r} is not a sweep directory (no sweep.json)")
    rows = _done(collect(sweep))
    if not rows:
        raise UserError(f"{str(sweep)!r} has no finished run that logged the apl hook (log.metrics=['apl'])")
    out = Path(out) if out else Path(sweep_dir.figures)
    base_rows = _baseline_rows(base_dir)
    tasks = _groups(rows, TASK)
    base_tasks = _groups(base_rows, TASK)
    regimes = sorted({str(r.get(REGIME) or "all") for r in rows})
    colors = {g: f"C{i}" for i, g in enumerate(regimes)}
    paths: list[Path] = []
    n = len(tasks)

    # accuracy vs APL, one panel per task (own accuracy range each: tasks differ in difficulty)
    fig, axes = figure(1, n, size=(4.2 * n, 3.6))
    for ax, (task, trs) in zip(axes[0], tasks.items()):
        for regime, rrs in _groups(trs, REGIME).items():
            xs, ys = curve(rrs)
            ax.plot(xs, ys, "o-", color=colors[regime], label=f"sparsified, {regime}", ms=4)
        _baselines(ax, task, base_tasks.get(task, []), "APL (normalized)")
    paths += _save_panels(fig, axes, out, "accuracy_vs_apl")

    # core-network profile per task
    fig, axes = figure(1, n, size=(4.2 * n, 3.6), sharey=True)
    cmap = colormaps["viridis"]
    norm = Normalize(0, max(float(r["apl"]) for r in rows) or 1.0)
    for ax, (task, trs) in zip(axes[0], tasks.items()):
        for r in sorted(trs, key=lambda r: r["apl"]):
            prof = _profile(sweep_dir.run(r["name"]))
            if prof is None:
                continue
            names, frac = prof
            ls = "-" if str(r.get(REGIME)) != "during" else "--"
            ax.plot(np.arange(len(frac)), frac, ls, color=cmap(norm(float(r["apl"]))), lw=1.2, alpha=0.85)
        ax.set_title(
            f"task: {task} (solid: after, dashed: during)" if len(regimes) > 1 else f"task: {task}", fontsize=9
        )
        ax.set_xlabel("layer (depth order)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of nonlinear channels")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes[0].tolist(), label="APL")
    paths += save(fig, out, "core_profile")

    # effective depth and width of the core network, per task
    fig, axes = figure(1, 1, size=(5.0, 3.6))
    ax = axes[0][0]
    for i, (task, trs) in enumerate(tasks.items()):
        for regime, rrs in _groups(trs, REGIME).items():
            ax.scatter(
                [r["apl"] for r in rrs],
                [r.get("effective_width") or 0.0 for r in rrs],
                s=14,
                color=f"C{i}",
                marker="o" if regime != "during" else "^",
                label=f"{task}, {regime}",
            )
    ax.set_xlabel("effective depth (APL)")
    ax.set_ylabel("effective width\n(nonlinear channels per kept layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncols=2)
    paths += save(fig, out, "core_size")

    # advantage gap per task
    if {"after", "during"} <= set(regimes):
        fig, axes = figure(1, 2, size=(9.0, 3.6))
        names, means = [], []
        for i, (task, trs) in enumerate(tasks.items()):
            by = _groups(trs, REGIME)
            grid, gap = advantage_gap(by.get("after", []), by.get("during", []))
            if len(grid):
                axes[0][0].plot(grid, gap, color=f"C{i}", label=task)
                names.append(task)
                means.append(float(np.mean(gap)))
        axes[0][0].axhline(0, color="k", lw=0.8)
        axes[0][0].set_xlabel("APL (normalized)")
        axes[0][0].set_ylabel("accuracy: after − during")
        axes[0][0].legend(fontsize=8)
        axes[0][0].grid(alpha=0.3)
        axes[0][1].bar(names, means, color=[f"C{i}" for i in range(len(names))])
        axes[0][1].axhline(0, color="k", lw=0.8)
        axes[0][1].set_ylabel("mean gap over the shared APL range")
        axes[0][1].set_title("nonlinear advantage of after-training sparsification", fontsize=9)
        paths += save(fig, out, "advantage_gap")

    # sparsified vs baselines
    if base_rows:
        fig, axes = figure(1, n, size=(4.2 * n, 3.6))
        for ax, (task, trs) in zip(axes[0], tasks.items()):
            ax.scatter(
                [r["apl"] for r in trs], [r["test_accuracy"] for r in trs], s=12, color="C0", label="sparsified (all)"
            )
            _baselines(ax, task, base_tasks.get(task, []), "APL = depth for the baselines")
        paths += _save_panels(fig, axes, out, "vs_baselines")

    table = out / "apl_table.csv"
    fields = [
        "name",
        TASK,
        REGIME,
        "apl",
        "apl_unnormalized",
        "effective_width",
        "nonlinear_units",
        "nonlinear_fraction",
        "test_accuracy",
        "train_accuracy",
    ]
    write_csv(table, sorted(rows, key=lambda r: (str(r.get(TASK)), str(r.get(REGIME)), r["apl"])), fields)
    return paths + [table]


def apl_plot_main(argv: list[str]) -> int:
    """`normjax apl-plot SWEEPDIR [--baselines DIR] [--out DIR]`; returns the exit code."""
    p = argparse.ArgumentParser(prog="normjax apl-plot", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="sparsity sweep directory (runs logged log.metrics=['apl'])")
    p.add_argument("--baselines", help="sweep directory of the baseline networks")
    p.add_argument("--out", help="figure directory (default SWEEP/figures)")
    args = p.parse_args(argv)
    for path in apl_figures(args.sweep, args.baselines, args.out):
        print(path)
    return 0
