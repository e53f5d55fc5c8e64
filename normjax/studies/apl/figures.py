"""`normjax apl-plot SWEEPDIR [--baselines SWEEPDIR]`: the APL study's figures (PNG and PDF).

From a sparsity sweep (runs logging the `apl` hook; tasks as a `data.task` bundle, regimes as a
`train.regime` bundle, see `normjax.sweep.spec`) and optionally a sweep of baseline networks, the
figures of `normjax apl-report` (`normjax.studies.apl.report.figures`, one way to draw each) under
these names, each titled with the sweep's size, data and number of seeds, one panel per task
(named by its dataset):

- `accuracy_vs_apl`: test accuracy against the reached (normalized) APL, mean ± std over seeds
  (bars and bands), one colour per regime; the unsparsified network (the base runs), the linear
  classifier and the halfway line where known; the y label says what one test image is worth.
- `advantage_gap`: after − during at matched APL with ±2 s.e. bars (needs both regimes).
- `core_size`: effective width against effective depth (APL) per setting, mean ± std.
- `vs_baselines`: per task, sparsified networks against the baselines at their APL (a plain net's
  is its depth), equal width and equal parameters apart.
- `core_profile`: per task, the fraction of nonlinear channels per layer of each sparsified run
  (colour = its APL; solid after, dashed during): the core network the prior leaves.
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
    from matplotlib.ticker import MaxNLocator
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.figures import figure, save
from normjax.studies.apl.report import REGIME, TASK, baseline_curves, figures, fill_tasks, sweep_section
from normjax.sweep.results import collect, write_csv
from normjax.training.rundir import RunDir, SweepDir

# apl-plot's file names for the report's figures
NAMES = {"collapse": "accuracy_vs_apl", "gap": "advantage_gap", "core": "core_size", "vs_baselines": "vs_baselines"}


def _profile(run: RunDir) -> np.ndarray | None:
    """The last logged per-layer nonlinear fraction of a run, or None."""
    last = run.last_metric("nl_fraction")
    return None if last is None else np.asarray(last, float)


def _core_profile(sweep_dir: SweepDir, rows: list[dict], title: str, out: Path) -> list[Path]:
    """Per task, each run's fraction of nonlinear channels per layer, coloured by its APL."""
    tasks: dict[str, list[dict]] = {}
    for r in rows:
        tasks.setdefault(str(r[TASK]), []).append(r)
    regimes = {str(r.get(REGIME)) for r in rows}
    n = len(tasks)
    fig, axes = figure(1, n, size=(4.2 * n, 3.6), sharey=True)
    cmap = colormaps["viridis"]
    norm = Normalize(0, max(float(r["apl"]) for r in rows) or 1.0)
    for ax, (task, trs) in zip(axes[0], tasks.items()):
        for r in sorted(trs, key=lambda r: r["apl"]):
            frac = _profile(sweep_dir.run(r["name"]))
            if frac is None:
                continue
            ls = "-" if str(r.get(REGIME)) != "during" else "--"
            ax.plot(np.arange(len(frac)), frac, ls, color=cmap(norm(float(r["apl"]))), lw=1.2, alpha=0.85)
        ax.set_title(f"{task} (solid: after, dashed: during)" if len(regimes) > 1 else task, fontsize=9)
        ax.set_xlabel("PReLU layer (depth order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of nonlinear channels")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes[0].tolist(), label="APL of the run")
    fig.suptitle(title, fontsize=9)
    return save(fig, out, "core_profile")


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
    section = sweep_section(sweep, baseline_curves(base_dir))  # one-line errors: no finished run, ...
    out = Path(out) if out else Path(sweep_dir.figures)
    paths = figures(section, out, names=NAMES)
    rows = fill_tasks(
        sweep,
        [
            r
            for r in collect(sweep)
            if r["status"] == "done" and r.get("apl") is not None and r.get("test_accuracy") is not None
        ],
    )
    paths += _core_profile(sweep_dir, rows, section["title"], out)
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
