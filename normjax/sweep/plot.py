"""Plot a sweep's final metrics: y against one varied key, one line per value of another.

Each point is the mean over the `over` key (seeds) of the runs that finished (`done`), with a
shaded ±1 sample-std band. When the sweep varies further keys, each of their combinations gets
its own panel, so runs that differ in more than x/hue/seed are never silently averaged together.

Example:
  >>> paths = plot_sweep("runs/sweep_depth", x="depth", y="test_accuracy", hue="shortcut")  # doctest: +SKIP
  >>> [p.name for p in paths]  # doctest: +SKIP
  ['test_accuracy_vs_depth_by_shortcut.png', 'test_accuracy_vs_depth_by_shortcut.pdf']
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from normjax.errors import UserError, missing_extra

# The object-oriented API with an Agg canvas: no display, and no change to pyplot's global backend.
try:
    from matplotlib.ticker import NullLocator
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.figures import figure, save
from normjax.sweep.results import (
    STATUSES,
    collect,
    fmt_value,
    group_id,
    hook_metrics,
    load_sweep,
    resolve_key,
    resolve_over,
    short_names,
    sort_key,
    sweep_name,
    varied_keys,
)
from normjax.training.rundir import SweepDir

Y_METRICS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "final_batch_loss", "wall_time")


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_refs(texts: list[str]) -> dict[str, float]:
    """`LABEL=Y` reference lines of `normjax plot --ref`, as `{label: y}`; one-line errors.

    Example:
      >>> parse_refs(["published CNN=0.94"])
      {'published CNN': 0.94}
    """
    out = {}
    for text in texts:
        label, sep, value = text.rpartition("=")
        try:
            y = float(value)
        except ValueError:
            y = math.nan
        if not sep or not label.strip() or not math.isfinite(y):
            raise UserError(f"--ref {text!r} is not LABEL=Y with a finite number Y (e.g. 'published CNN=0.94')")
        out[label.strip()] = y
    return out


def plot_sweep(
    sweep_dir: str | os.PathLike,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    log_x: bool = False,
    over: str | None = "train.seed",
    panel: str | None = None,
    refs: dict[str, float] | None = None,
) -> list[Path]:
    """Save `DIR/plots/<y>_vs_<x>[_by_<hue>].png` and `.pdf`; return their paths.

    `x` and `hue` are varied keys, dotted or by their last component when unambiguous
    (`depth` for `model.depth`); `y` is one of `Y_METRICS` or a value the runs' metric hooks
    summarized (e.g. `apl`, `elr_log_spread`). Non-numeric x values (booleans, strings, bundle
    labels such as models) are placed at evenly spaced categorical positions, as points with
    error bars: no line joins unordered categories. `x` may also be a final metric (e.g. `apl`,
    the reached APL): then every run is a point at its own value, lines join the runs of one
    `hue` value, and panels are only by `panel` (a varied key) if given. `refs` draws labelled
    horizontal reference lines (`{label: y}`, e.g. published accuracies the text compares with).

    Example:
      >>> plot_sweep("runs/sweep_depth", x="depth", y="test_loss", log_x=True)  # doctest: +SKIP
      [PosixPath('.../plots/test_loss_vs_depth.png'), PosixPath('.../plots/test_loss_vs_depth.pdf')]
    """
    path, meta = load_sweep(sweep_dir)
    rows = collect(path, over=over)
    keys = varied_keys(rows) or list(meta["varied"])
    metrics = list(Y_METRICS) + hook_metrics(rows)
    if y not in metrics:
        raise UserError(f"y {y!r} is not a sweep metric; allowed: {', '.join(metrics)}")
    metric_x = x in metrics and x not in keys
    x_key = x if metric_x else resolve_key(x, keys, "x")
    hue_key = resolve_key(hue, keys, "hue") if hue is not None else None
    if hue_key == x_key:
        raise UserError(f"hue {hue!r} is the same key as x; allowed: {', '.join(k for k in keys if k != x_key)}")
    over_key = None if metric_x else resolve_over(over, keys)
    if over_key in (x_key, hue_key):
        over_key = None  # plotting against the seed itself: every run is its own point
    if metric_x:
        panel_keys = [resolve_key(panel, keys, "panel")] if panel else []
    elif panel:
        raise UserError(f"panel {panel!r} applies when x is a metric; with a varied x every other key is a panel")
    else:
        panel_keys = [k for k in keys if k not in (x_key, hue_key, over_key)]

    plotted = [
        r
        for r in rows
        if r["status"] == "done"
        and all(r.get(k) is not None and math.isfinite(r[k]) for k in ((y, x_key) if metric_x else (y,)))
    ]
    if not plotted:
        counts = (
            ", ".join(
                f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES if any(r["status"] == s for r in rows)
            )
            or "no runs"
        )
        raise UserError(f"no done run of {str(path)!r} has a finite {y} ({counts}); nothing to plot")

    x_values = sorted({group_id(r[x_key]): r[x_key] for r in plotted}.values(), key=sort_key)
    numeric_x = all(_is_number(v) for v in x_values)
    if log_x and not (numeric_x and all(v > 0 for v in x_values)):
        shown = ", ".join(fmt_value(v) for v in x_values)
        raise UserError(f"log_x needs positive numeric x values; {x_key} has {shown}")
    # Categorical x: positions 0..k-1 in sorted order, labelled with the values.
    position = {group_id(v): (float(v) if numeric_x else float(i)) for i, v in enumerate(x_values)}

    def values_of(key: str | None) -> list[Any]:
        if key is None:
            return [None]
        return sorted({group_id(r[key]): r[key] for r in plotted}.values(), key=sort_key)

    panels: dict[str, tuple[tuple, list[dict]]] = {}
    for r in plotted:
        combo = tuple(r[k] for k in panel_keys)
        panels.setdefault(group_id(combo), (combo, []))[1].append(r)
    panel_list = sorted(panels.values(), key=lambda p: tuple(sort_key(v) for v in p[0]))
    hues = values_of(hue_key)

    short = short_names(keys) | ({x_key: x_key} if metric_x else {})
    ncols = min(len(panel_list), 3)
    nrows = math.ceil(len(panel_list) / ncols)
    fig, axes = figure(nrows, ncols, size=(5.0 * ncols + (1.6 if hue_key else 0.0), 3.8 * nrows), sharey=True)
    colors = [f"C{i % 10}" for i in range(len(hues))]
    spread = f"mean ± 1 std over {short[over_key]}" if over_key else "one run per point"

    for ax, (combo, members) in zip(axes.flat, panel_list):
        for hv, color in zip(hues, colors):
            points: dict[str, list[float]] = {}
            for r in members:
                if hue_key is None or group_id(r[hue_key]) == group_id(hv):
                    points.setdefault(group_id(r[x_key]), []).append(r[y])
            if not points:
                continue
            xs = sorted(points, key=position.__getitem__)
            px = np.array([position[k] for k in xs])
            stats = np.array([_stats(points[k]) for k in xs])
            mean, std = stats[:, 0], stats[:, 1]
            label = fmt_value(hv) if hue_key else y
            if not numeric_x:  # categories (models, regimes): no line joins unordered values
                ax.errorbar(px, mean, yerr=std, color=color, capsize=4, fmt="o", label=label)
                continue
            ax.plot(px, mean, marker="o", color=color, label=label)
            if len(px) > 1:
                ax.fill_between(px, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
            else:
                ax.errorbar(px, mean, yerr=std, color=color, capsize=4, fmt="none")  # a band of one point is invisible
        if panel_keys:
            ax.set_title(", ".join(f"{short[k]}={fmt_value(v)}" for k, v in zip(panel_keys, combo)), fontsize=9)
        if log_x:
            ax.set_xscale("log")
        if not numeric_x:
            ax.set_xticks(list(range(len(x_values))), [fmt_value(v) for v in x_values])
            ax.set_xlim(-0.5, len(x_values) - 0.5)
        elif len(x_values) <= 12 and not metric_x:
            # Sweeps use few x values: tick exactly those (log axes would show 2x10^1 otherwise).
            ax.set_xticks([float(v) for v in x_values], [fmt_value(v) for v in x_values])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
        for i, (label, value) in enumerate((refs or {}).items()):
            ax.axhline(value, color="0.35", linestyle=(0, (4, 2 + i)), linewidth=1)
            ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="0.3")
    for ax in axes.flat[len(panel_list) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{y} ({spread})")
    if hue_key:
        # Gather from every panel: a hue value may have no finished run in the first one.
        legend: dict[str, Any] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        ordered = [fmt_value(hv) for hv in hues if fmt_value(hv) in legend]
        fig.legend([legend[k] for k in ordered], ordered, title=hue_key, loc="outside right upper")
    fig.suptitle(sweep_name(path, meta))

    stem = f"{y}_vs_{short[x_key]}" + (f"_by_{short[hue_key]}" if hue_key else "")
    return save(fig, SweepDir(path).plots, stem)
