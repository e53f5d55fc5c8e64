"""Figures of the ELR study: per-layer effective learning rates and their spread, for a run or a sweep.

The relative ELR of weight layer l is `E_l = η_l ||g_l|| / ||w_l||` (its angular step), the classic
one `η_l / ||w_l||²`; the spread at a step is `max_l E_l / min_l E_l` over the scale-invariant
layers, the quantity tracked by "Spreads in Effective Learning Rates: The Perils of Batch
Normalization During Early Training" (arXiv 2306.00700). Runs log them with `log.metrics=["elr"]`.
Step axes are logarithmic in `step + 1`: the early steps are where spreads form and collapse.
Each figure is saved as PNG and PDF.

Example:
  >>> run_figures("runs/resnet56_plain")          # <run>/figures/elr_heatmap.png, ...  # doctest: +SKIP
  >>> sweep_figures("runs/sweep_elr", hue="lr")   # <sweep>/figures/elr_spread_by_lr.png, ...  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normjax.errors import UserError, missing_extra

# The object-oriented API with an Agg canvas, as in normjax.sweep.plot: no display, no global backend change.
try:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter, MaxNLocator
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.figures import figure, save
from normjax.metrics import SPREAD_LAYERS, mean_log_spread, spread_key
from normjax.models import has_shortcuts
from normjax.sweep.results import (
    STATUSES,
    collect,
    fmt_value,
    group_id,
    load_sweep,
    resolve_key,
    resolve_over,
    setting_label,
    short_names,
    sort_key,
    sweep_name,
    varied_keys,
)
from normjax.training.rundir import RunDir, SweepDir

# Per-layer metrics a run figure can show (all positive, hence log scales); `cos_gw` is signed and left out.
LAYER_KEYS = {
    "elr": r"ELR  $E_l = \eta_l\,\|g_l\|/\|w_l\|$",
    "elr_classic": r"classic ELR  $\eta_l/\|w_l\|^2$",
    "rel_step": r"relative step  $\|\Delta w_l\|/\|w_l\|$",
    "base_grad": r"base gradient  $c_l = \|g_l\|\,\|w_l\|$",
    "w_norm": r"weight norm  $\|w_l\|$",
    "g_norm": r"gradient norm  $\|g_l\|$",
    "layer_lr": r"layer LR  $\eta_l$",
}
SPREAD_LABEL = r"ELR spread  $\mathrm{max}_l\,E_l\,/\,\mathrm{min}_l\,E_l$"
LOG_STD_LABEL = r"$\mathrm{std}_l\, \log_{10} E_l$"
MEAN_SPREAD_LABEL = r"ELR spread $\mathrm{max}_l\,E_l\,/\,\mathrm{min}_l\,E_l$, geometric mean over logged steps"
STEP_LABEL = "step + 1"
NO_ELR = 'set log.metrics=["elr"] (e.g. --set \'log.metrics=["elr"]\') and rerun'
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _float(v: Any) -> float:
    """A logged value as a float: numbers, the strings 'nan'/'inf' the run writer uses; NaN otherwise."""
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------------
# Reading a run


@dataclass
class ElrRun:
    """One run directory, read once: config, summary, layers in depth order and metric rows by step."""

    path: Path
    config: dict
    summary: dict
    layers: list[dict]
    rows: list[dict]
    order: list[int] = field(default_factory=list)  # metric-list index of each layer, in depth order

    @property
    def has_elr(self) -> bool:
        return any("elr_spread" in r or "elr" in r for r in self.rows)

    @property
    def scale_invariant(self) -> np.ndarray:
        return np.array([bool(self.layers[i].get("scale_invariant", True)) for i in self.order])

    def spread_layers(self, layers: str = "all") -> np.ndarray:
        """Bool `[layers]` in depth order: the layers a spread over `layers` ("all" | "main") takes."""
        spread_key(layers)
        if layers == "all":
            return self.scale_invariant
        proj = [self.layers[i].get("projection") for i in self.order]
        if any(p is None for p in proj):
            raise UserError(
                f"{str(self.path)!r}: layers.json does not mark shortcut projections (the run predates "
                "the main-path spread); allowed here: --layers all"
            )
        return self.scale_invariant & ~np.array(proj, bool)

    @property
    def names(self) -> list[str]:
        return [str(self.layers[i].get("name", f"layer {i}")) for i in self.order]

    def steps(self) -> np.ndarray:
        return np.array([_float(r.get("step")) for r in self.rows])

    def scalar(self, key: str) -> np.ndarray:
        return np.array([_float(r.get(key)) for r in self.rows])

    def layer_values(self, key: str) -> np.ndarray:
        """`[rows, layers]` in depth order; NaN where a row lacks the key."""
        out = np.full((len(self.rows), len(self.layers)), np.nan)
        for i, r in enumerate(self.rows):
            v = r.get(key)
            if isinstance(v, list):
                if len(v) != len(self.layers):
                    raise UserError(
                        f"{str(self.path)!r}: step {r.get('step')} logs {len(v)} values of {key!r} "
                        f"but layers.json lists {len(self.layers)} layers; the run directory is inconsistent"
                    )
                out[i] = [_float(x) for x in v]
        return out[:, self.order]

    def title(self) -> str:
        return run_title(self.config, self.summary)


def _read_optional(read: Callable[[], Any], default: Any) -> Any:
    """What `read` returns; `default` when the file is unreadable."""
    try:
        return read()
    except (OSError, ValueError):
        return default


def _read_rows(run: RunDir) -> list[dict]:
    """metrics.jsonl rows by step (the last row of a repeated step wins); a torn line is skipped."""
    by_step: dict[float, dict] = {}
    for row in _read_optional(lambda: list(run.read_metrics()), []):
        if isinstance(row, dict) and math.isfinite(_float(row.get("step"))):
            by_step[_float(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def read_run(rundir: str | os.PathLike) -> ElrRun:
    """Read a run directory's config, summary, layers.json and metrics.jsonl (once).

    Args:
      rundir: a normjax run directory (it has config.json).

    Returns:
      An `ElrRun`; layers are sorted by depth (layers.json's own order breaks ties). Without
      layers.json, the per-layer lists' positions name the layers, all taken as scale-invariant.

    Example:
      >>> run = read_run("runs/resnet56_plain")  # doctest: +SKIP
      >>> run.layer_values("elr").shape   # (logged steps, layers)  # doctest: +SKIP
      (420, 55)
    """
    path = Path(rundir).expanduser().absolute()
    run = RunDir(path)
    if not run.is_run():
        raise UserError(f"{str(rundir)!r} is not a run directory (no config.json); give a normjax run directory")
    rows = _read_rows(run)
    layers = _read_optional(run.read_layers, None)
    if not isinstance(layers, list):
        width = next((len(v) for r in rows for v in [r.get("elr")] if isinstance(v, list)), 0)
        layers = [{"name": f"layer {i}", "depth": i, "scale_invariant": True} for i in range(width)]
    order = sorted(range(len(layers)), key=lambda i: (_float(layers[i].get("depth", i)), i))
    config = _read_optional(run.read_config, {})
    return ElrRun(path, config, _read_optional(run.read_summary, {}) or {}, layers, rows, order)


def run_title(config: dict, summary: dict | None = None) -> str:
    """A figure title naming the run: model-depth, shortcut, data, optimizer, LR, momentum, wd, seed, status.

    Example:
      >>> run_title({"model": {"name": "resnet", "depth": 56, "shortcut": False}, "optim": {"lr": 0.1}})
      'resnet-56, no shortcut, LR 0.1'
      >>> run_title({"model": {"name": "mlp", "depth": 5, "shortcut": True}})
      'mlp-5, shortcut'
    """
    m, o = config.get("model", {}), config.get("optim", {})
    parts = [f"{m.get('name', 'model')}-{fmt_value(m['depth'])}" if "depth" in m else str(m.get("name", "run"))]
    name = m.get("name", "resnet")
    if name == "resnet" and "shortcut" in m or name == "mlp" and has_shortcuts(m):  # the plain MLP: nothing
        parts.append("shortcut" if has_shortcuts(m) else "no shortcut")
    if config.get("data", {}).get("name"):
        parts.append(str(config["data"]["name"]))
    if o.get("name", "sgd") != "sgd":
        parts.append(str(o["name"]))
    for key, label in (("lr", "LR"), ("momentum", "momentum"), ("weight_decay", "wd")):
        if key in o:
            parts.append(f"{label} {fmt_value(o[key])}")
    if o.get("warmup_steps"):
        parts.append(f"warm-up {o['warmup_steps']} steps")
    if "seed" in config.get("train", {}):
        parts.append(f"seed {config['train']['seed']}")
    if (summary or {}).get("status") == "diverged":
        parts.append(f"diverged at step {summary.get('step', '?')}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Shared plotting helpers


def _log10(a: np.ndarray) -> np.ndarray:
    """log10 with NaN for non-finite or non-positive values (no warnings)."""
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a) & (a > 0)
    return np.where(ok, np.log10(np.where(ok, a, 1.0)), np.nan)


def _positive(a: np.ndarray) -> bool:
    return bool(np.any(np.isfinite(a) & (np.asarray(a) > 0)))


def _log_edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around positive increasing centres, halfway in log space."""
    if len(x) == 1:
        return np.array([x[0] / 1.5, x[0] * 1.5])
    lx = np.log(x)
    mid = (lx[1:] + lx[:-1]) / 2
    return np.exp(np.concatenate([[2 * lx[0] - mid[0]], mid, [2 * lx[-1] - mid[-1]]]))


def step_axis(ax) -> None:
    """A log step axis in `step + 1`, labelled and gridded (the ELR figures' and `normjax ode`'s)."""
    ax.set_xscale("log")
    ax.set_xlabel(STEP_LABEL)
    ax.grid(alpha=0.3, which="major")


def _mark_divergence(ax, run: ElrRun) -> None:
    """A red dotted vertical line at the last logged step of a diverged run."""
    if run.summary.get("status") == "diverged" and run.rows:
        ax.axvline(run.steps()[-1] + 1, color="C3", ls=":", lw=1.2, label="diverged")


# ---------------------------------------------------------------------------------------------
# One run


def run_figures(
    rundir: str | os.PathLike, out: str | os.PathLike | None = None, key: str = "elr", layers: str = "all"
) -> list[Path]:
    """Save a run's ELR figures (PNG and PDF): a layer × step heatmap, per-layer lines, the spread.

    Args:
      rundir: a run directory that logged the ELR hook (`log.metrics=["elr"]`).
      out: output directory (default `<rundir>/figures/`).
      key: the per-layer metric of the heatmap and lines, one of `LAYER_KEYS` (default `elr`).
      layers: the spread's layers, `"all"` scale-invariant ones (default) or `"main"` (shortcut
        projections left out; `normjax.metrics.SPREAD_LAYERS`).

    Returns:
      The written paths: `<key>_heatmap`, `<key>_layers` and `elr_spread` (`elr_spread_main` for
      `layers="main"`), each `.png` and `.pdf`.

    Example:
      >>> [p.name for p in run_figures("runs/resnet56_plain")][::2]  # doctest: +SKIP
      ['elr_heatmap.png', 'elr_layers.png', 'elr_spread.png']
    """
    if key not in LAYER_KEYS:
        raise UserError(f"key {key!r} is not a per-layer ELR metric; allowed: {', '.join(LAYER_KEYS)}")
    spread_key(layers)
    run = read_run(rundir)
    if not run.has_elr:
        raise UserError(f"run {str(run.path)!r} logged no ELR metrics (no 'elr' in metrics.jsonl); {NO_ELR}")
    values = run.layer_values(key)
    if not np.isfinite(values).any():
        logged = [k for k in LAYER_KEYS if any(isinstance(r.get(k), list) for r in run.rows)]
        raise UserError(
            f"run {str(run.path)!r} logged no finite {key!r}; logged per-layer metrics: {', '.join(logged) or 'none'}"
        )
    out_dir = Path(out).expanduser() if out is not None else RunDir(run.path).figures
    return (
        _heatmap_figure(run, values, key, out_dir)
        + _layer_lines_figure(run, values, key, out_dir)
        + _spread_figure(run, out_dir, layers)
    )


def _heatmap_figure(run: ElrRun, values: np.ndarray, key: str, out: Path) -> list[Path]:
    """log10(key) as colour over (step, layer); non-scale-invariant layers marked on the y axis."""
    x = run.steps() + 1
    z = _log10(values)
    si = run.scale_invariant
    scale_from = z[:, si] if np.isfinite(z[:, si]).any() else z
    vmin, vmax = (
        (float(np.nanmin(scale_from)), float(np.nanmax(scale_from))) if np.isfinite(scale_from).any() else (0, 1)
    )
    n_layers = len(run.order)
    fig, axes = figure(size=(7.5, 1.8 + min(0.16 * n_layers, 5.0)))
    ax = axes[0, 0]
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(
        _log_edges(x),
        np.arange(n_layers + 1) - 0.5,
        np.ma.masked_invalid(z.T),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax if vmax > vmin else vmin + 1,
        shading="flat",
    )
    mesh.set_rasterized(True)  # layers x steps cells as one image in the PDF, not one vector path each
    fig.colorbar(mesh, ax=ax, extend="both", label=f"log10 {LAYER_KEYS[key]}")
    step_axis(ax)
    ax.grid(False)
    if n_layers <= 40:
        ax.set_yticks(range(n_layers), [n if s else f"{n} (not SI)" for n, s in zip(run.names, si)], fontsize=6)
        for tick, s in zip(ax.get_yticklabels(), si):
            tick.set_color("black" if s else "0.5")
    ax.set_ylabel("layer (input at bottom)")
    ax.set_title(f"{run.title()}\ngray: not logged or non-finite; colour range from scale-invariant layers", fontsize=8)
    return save(fig, out, f"{key}_heatmap")


def _layer_lines_figure(run: ElrRun, values: np.ndarray, key: str, out: Path) -> list[Path]:
    """One line per layer over steps, coloured by depth; non-scale-invariant layers dashed."""
    x = run.steps() + 1
    fig, axes = figure(size=(7.0, 4.4))
    ax = axes[0, 0]
    n_layers = len(run.order)
    norm = Normalize(0, max(n_layers - 1, 1))
    cmap = colormaps["viridis"]
    si = run.scale_invariant
    for j in range(n_layers):
        ax.plot(x, values[:, j], color=cmap(norm(j)), lw=1.0, ls="-" if si[j] else "--")
    if _positive(values):
        ax.set_yscale("log")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer index in depth order (0 = input)")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    _mark_divergence(ax, run)
    handles = {"not scale-invariant": Line2D([], [], color="0.3", ls="--")} if not si.all() else {}
    handles |= dict(zip(*ax.get_legend_handles_labels()[::-1]))  # the divergence line, if any
    if handles:
        ax.legend(list(handles.values()), list(handles), fontsize=8)
    step_axis(ax)
    ax.set_ylabel(LAYER_KEYS[key])
    ax.set_title(run.title(), fontsize=8)
    return save(fig, out, f"{key}_layers")


def _spread_figure(run: ElrRun, out: Path, layers: str = "all") -> list[Path]:
    """Spread (log y) over steps, and std of log10 ELR in a second panel."""
    key = _checked_spread_key(run, layers)
    x, spread, log_std = run.steps() + 1, run.scalar(key), run.scalar(key.replace("spread", "log_std"))
    fig, axes = figure(2, 1, size=(6.4, 5.6), sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot(x, spread, color="C0", lw=1.2)
    top.axhline(1.0, color="0.4", ls=":", lw=1, label="equal ELRs (spread 1)")
    if _positive(spread):
        top.set_yscale("log")
    early_mean, all_mean = run_spreads(run, layers)
    top.set_title(
        f"{run.title()}\nmean log10 spread: early window {early_mean:.2f}, whole run {all_mean:.2f}", fontsize=8
    )
    top.set_ylabel(SPREAD_LABEL + f"\n({LAYERS_LABEL[layers]})")
    bottom.plot(x, log_std, color="C1", lw=1.2)
    bottom.set_ylabel(LOG_STD_LABEL)
    for ax in (top, bottom):
        step_axis(ax)
        _mark_divergence(ax, run)
    top.legend(fontsize=8)
    top.set_xlabel("")
    return save(fig, out, "elr_spread" + ("" if layers == "all" else f"_{layers}"))


LAYERS_LABEL = {"all": "scale-invariant layers", "main": "main-path layers"}


def _checked_spread_key(run: ElrRun, layers: str) -> str:
    """`spread_key(layers)`, after checking the run logged it (runs before the main-path spread did not)."""
    key = spread_key(layers)
    if not any(key in r for r in run.rows):
        raise UserError(
            f"run {str(run.path)!r} logged no {key!r} (it predates the main-path spread); allowed here: --layers all"
        )
    return key


# ---------------------------------------------------------------------------------------------
# A sweep


@dataclass
class _SweepRuns:
    """A sweep's collect() rows, the runs that logged ELR metrics, and the keys the figures use."""

    path: Path
    title: str
    rows: list[dict]
    runs: dict[str, ElrRun]  # run name -> run, only runs with ELR metrics
    over: str | None
    hue: str | None
    panels: list[str]
    short: dict[str, str]
    layers: str = "all"


def hue_colors(values: list[Any]) -> dict[str, Any]:
    """Ordered numbers get a sequential colormap; anything else the categorical cycle."""
    if len(values) > 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        cmap = colormaps["viridis"]
        return {group_id(v): cmap(0.9 * i / (len(values) - 1)) for i, v in enumerate(values)}
    return {group_id(v): f"C{i % 10}" for i, v in enumerate(values)}


def distinct(rows: list[dict], key: str | None) -> list[Any]:
    """The values `rows` take at `key`, each once, in sort order (`[None]` for no key)."""
    if key is None:
        return [None]
    return sorted({group_id(r[key]): r[key] for r in rows}.values(), key=sort_key)


def _load_sweep_runs(sweepdir: str | os.PathLike, hue: str | None, over: str | None, layers: str = "all") -> _SweepRuns:
    path, meta = load_sweep(sweepdir)
    rows = collect(path, over=over) if over else collect(path)
    keys = varied_keys(rows) or list(meta["varied"])
    over_key = resolve_over(over, keys)
    hue_key = resolve_key(hue, keys, "hue") if hue is not None else next((k for k in keys if k != over_key), None)
    if hue_key == over_key:
        over_key = None  # colouring by the seed itself: every run is its own line
    runs, sweep = {}, SweepDir(path)
    for r in rows:
        if r["name"] and sweep.run(r["name"]).is_run():
            run = read_run(path / r["name"])
            if run.has_elr:
                _checked_spread_key(run, layers)
                runs[r["name"]] = run
    if not runs:
        counts = (
            ", ".join(
                f"{sum(r['status'] == s for r in rows)} {s}" for s in STATUSES if any(r["status"] == s for r in rows)
            )
            or "no runs"
        )
        raise UserError(f"no run of {str(path)!r} logged ELR metrics ({counts}); {NO_ELR}")
    panels = [k for k in keys if k not in (over_key, hue_key)]
    return _SweepRuns(path, sweep_name(path, meta), rows, runs, over_key, hue_key, panels, short_names(keys), layers)


def sweep_figures(
    sweepdir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    hue: str | None = None,
    over: str | None = "train.seed",
    layers: str = "all",
) -> list[Path]:
    """Save a sweep's ELR figures (PNG and PDF): spread over steps per setting, accuracy vs mean spread.

    Spread curves are geometric means over `over` (seeds) with a ×/÷ one-std band, one line per
    `hue` value and one panel per combination of the other varied keys. The scatter has one point
    per run: x its mean log10 spread (summary's `elr_log_spread[_early]`, else computed from
    metrics.jsonl), y its test accuracy; diverged runs are hollow markers below the axis' data.

    Args:
      sweepdir: a sweep directory (it has sweep.json) whose runs logged `log.metrics=["elr"]`.
      out: output directory (default `<sweepdir>/figures/`).
      hue: varied key for colours, dotted or by its last component (default: the first varied
        key other than `over`).
      over: key averaged over (default `train.seed`; absent is fine).
      layers: the spread's layers, `"all"` (default) or `"main"` (see `run_figures`).

    Returns:
      The written paths: `elr_spread_by_<hue>` and `accuracy_vs_spread_by_<hue>`, `.png` and `.pdf`
      (with `_main` before `_by` for `layers="main"`).

    Example:
      >>> [p.name for p in sweep_figures("runs/sweep_elr", hue="lr")][::2]  # doctest: +SKIP
      ['elr_spread_by_lr.png', 'accuracy_vs_spread_by_lr.png']
    """
    spread_key(layers)
    s = _load_sweep_runs(sweepdir, hue, over, layers)
    out_dir = Path(out).expanduser() if out is not None else SweepDir(s.path).figures
    suffix = ("" if layers == "all" else f"_{layers}") + (f"_by_{s.short[s.hue]}" if s.hue else "")
    return _sweep_spread_figure(s, out_dir, suffix) + _accuracy_figure(s, out_dir, suffix)


def _geo_mean_curve(
    runs: list[ElrRun], key: str = "elr_spread"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(step+1, geometric mean, lower, upper band) of the spread `key` over runs, on the union of their steps."""
    steps = np.unique(np.concatenate([r.steps() for r in runs]))
    logs = np.full((len(runs), len(steps)), np.nan)
    for i, r in enumerate(runs):
        logs[i, np.searchsorted(steps, r.steps())] = _log10(r.scalar(key))
    n = np.isfinite(logs).sum(axis=0)
    keep = n > 0
    logs, n, steps = logs[:, keep], n[keep], steps[keep]
    mean = np.nansum(logs, axis=0) / n
    var = np.nansum((logs - mean) ** 2, axis=0) / np.maximum(n - 1, 1)
    std = np.where(n > 1, np.sqrt(var), 0.0)
    return steps + 1, 10**mean, 10 ** (mean - std), 10 ** (mean + std)


def _panels(s: _SweepRuns, rows: list[dict]) -> list[tuple[tuple, list[dict]]]:
    groups: dict[str, tuple[tuple, list[dict]]] = {}
    for r in rows:
        combo = tuple(r[k] for k in s.panels)
        groups.setdefault(group_id(combo), (combo, []))[1].append(r)
    return sorted(groups.values(), key=lambda g: tuple(sort_key(v) for v in g[0]))


def _panel_title(s: _SweepRuns, combo: tuple) -> str:
    return setting_label(dict(zip(s.panels, combo)), s.panels, over="")


def _sweep_spread_figure(s: _SweepRuns, out: Path, suffix: str) -> list[Path]:
    """Per panel, one geometric-mean spread curve per hue value; × marks where a run diverged."""
    rows = [r for r in s.rows if r["name"] in s.runs]
    hues = distinct(rows, s.hue)
    colors = hue_colors(hues)
    panels = _panels(s, rows)
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = figure(nrows, ncols, size=(4.8 * ncols + 1.6, 3.6 * nrows), sharex=True, sharey=True)
    for ax, (combo, members) in zip(axes.flat, panels):
        for hv in hues:
            group = [r for r in members if s.hue is None or group_id(r[s.hue]) == group_id(hv)]
            if group:
                _plot_spread_group(
                    ax,
                    [s.runs[r["name"]] for r in group],
                    colors[group_id(hv)],
                    fmt_value(hv) if s.hue else "spread",
                    spread_key(s.layers),
                )
        ax.axhline(1.0, color="0.4", ls=":", lw=1)
        step_axis(ax)
        ax.set_yscale("log")
        if s.panels:
            ax.set_title(_panel_title(s, combo), fontsize=9)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    band = f"geometric mean over {s.short[s.over]}, band ×/÷ 1 geometric std" if s.over else "one run per line"
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{SPREAD_LABEL}\n({band})", fontsize=8)
    handles = {fmt_value(hv) if s.hue else "spread": Line2D([], [], color=colors[group_id(hv)]) for hv in hues}
    handles["run diverged"] = Line2D([], [], color="0.3", marker="x", ls="none")
    fig.legend(
        list(handles.values()), list(handles), title=s.short.get(s.hue, None), loc="outside right center", fontsize=8
    )
    # The gradient ELR: uniform ELR equalizes the step taken, so its runs need not sit at 1 here.
    fig.suptitle(
        f"{s.title}: spread of the gradient ELR $\\eta\\Vert g_l\\Vert/\\Vert w_l\\Vert$ over training "
        f"({LAYERS_LABEL[s.layers]})",
        fontsize=10,
    )
    return save(fig, out, f"elr_spread{suffix}")


def _plot_spread_group(ax, runs: list[ElrRun], color: Any, label: str, key: str = "elr_spread") -> None:
    x, mean, lo, hi = _geo_mean_curve(runs, key)
    ax.plot(x, mean, color=color, lw=1.3, label=label)
    if len(runs) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    for r in runs:
        if r.summary.get("status") == "diverged":
            spread = r.scalar(key)
            ok = np.isfinite(spread) & (spread > 0)
            if ok.any():
                last = np.nonzero(ok)[0][-1]
                ax.plot(r.steps()[last] + 1, spread[last], marker="x", color=color, ms=7, ls="none")


def run_spreads(run: ElrRun, layers: str = "all") -> tuple[float, float]:
    """(early-window, whole-run) mean log10 spread: from summary.json, else from metrics.jsonl."""
    early = run.config.get("log", {}).get("dense_steps")
    key, suffix = spread_key(layers), "" if layers == "all" else f"_{layers}"
    e = _float(run.summary.get(f"elr_log_spread{suffix}_early", math.nan))
    a = _float(run.summary.get(f"elr_log_spread{suffix}", math.nan))
    if not math.isfinite(e):
        e = mean_log_spread(run.rows, early, key)
    if not math.isfinite(a):
        a = mean_log_spread(run.rows, key=key)
    return e, a


def _accuracy_figure(s: _SweepRuns, out: Path, suffix: str) -> list[Path]:
    """Test accuracy against mean log spread (early window | whole run; one panel when the window
    is the whole run); colour = the hue key, marker = the setting of every other varied key (e.g.
    depth, momentum, plain or residual); diverged runs hollow at the bottom."""
    rows = [r for r in s.rows if r["name"] in s.runs]
    colors = hue_colors(distinct(rows, s.hue))
    combos = sorted(
        {group_id(_combo(s, r)): _combo(s, r) for r in rows}.values(), key=lambda c: [sort_key(v) for v in c]
    )
    markers = {group_id(c): MARKERS[i % len(MARKERS)] for i, c in enumerate(combos)}
    done = [r for r in rows if r["status"] == "done" and r["test_accuracy"] is not None]
    diverged = [r for r in rows if r["status"] == "diverged"]
    accs = [r["test_accuracy"] for r in done]
    lo, hi = (min(accs), max(accs)) if accs else (0.0, 1.0)
    floor = lo - 0.12 * max(hi - lo, 0.02)
    spreads = {r["name"]: run_spreads(s.runs[r["name"]], s.layers) for r in done + diverged}
    windows = sorted({str(run.config.get("log", {}).get("dense_steps", "?")) for run in s.runs.values()})
    shown = sum(any(math.isfinite(m) for m in spreads[r["name"]]) for r in done + diverged)
    titles = spread_panels(spreads, windows)
    fig, axes = figure(1, len(titles), size=(5.8 * len(titles), 4.4), sharey=True)
    for col, (ax, window) in enumerate(zip(axes[0], titles)):
        for r in done + diverged:
            m = spreads[r["name"]][col]
            if not math.isfinite(m):
                continue
            c = colors[group_id(r[s.hue]) if s.hue else group_id(None)]
            run_point(ax, m, r["test_accuracy"], floor, markers[group_id(_combo(s, r))], c, r["status"] == "diverged")
        spread_scatter_axis(ax, f"{MEAN_SPREAD_LABEL}\n{window}", lo, floor if diverged else None)
    accuracy_axis(axes[0, 0], lo, hi, floor if diverged else None)
    _scatter_legend(fig, s, rows, colors, combos, markers, not_shown=len(s.rows) - shown)
    fig.suptitle(f"{s.title}:\ntest accuracy vs ELR spread, one point per run", fontsize=9)
    return save(fig, out, f"accuracy_vs_spread{suffix}")


def run_point(
    ax, log_spread: float, accuracy: float | None, floor: float, marker: str, color: Any, diverged: bool
) -> None:
    """One run of an accuracy-vs-spread scatter: filled at its accuracy, or hollow at `floor` if it diverged."""
    ax.plot(
        10**log_spread,
        floor if diverged else accuracy,
        ls="none",
        ms=7,
        marker=marker,
        mfc="none" if diverged else color,
        mec=color,
        alpha=0.85,
    )


def spread_scatter_axis(ax, label: str, lo: float, floor: float | None) -> None:
    """The log spread x axis of an accuracy-vs-spread scatter, and the line above the diverged runs' floor."""
    if floor is not None:
        ax.axhline(floor + 0.5 * (lo - floor), color="0.6", lw=0.8, ls="--")
    ax.set_xscale("log")
    # Spreads of a sweep often span less than a decade: label the minor ticks too (2, 3, ... not 2x10^0).
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))
    ax.set_xlabel(label, fontsize=8)
    ax.grid(alpha=0.3)


def spread_panels(spreads: dict[str, tuple[float, float]], windows: list[str]) -> list[str]:
    """The panels of the accuracy-vs-spread figure: early window and whole run, or one panel when
    the window is the whole run in every run (two identical panels say nothing twice).

    Args:
      spreads: per run, (early-window, whole-run) mean log10 spread (`run_spreads`).
      windows: the runs' dense-window lengths, as text.

    Returns:
      The panel titles, in the order of the `spreads` tuples.

    Example:
      >>> spread_panels({"a": (0.5, 0.5), "b": (1.0, 1.0)}, ["1000"])
      ['whole run (= the logged window)']
      >>> spread_panels({"a": (0.9, 0.5)}, ["100"])
      ['early window (first 100 steps)', 'whole run']
    """
    if all(e == a or not (math.isfinite(e) or math.isfinite(a)) for e, a in spreads.values()):
        return ["whole run (= the logged window)"]
    return [f"early window (first {'/'.join(windows)} steps)", "whole run"]


def _combo(s: _SweepRuns, r: dict) -> tuple:
    """A run's values of the varied keys that neither colour nor averaging shows (its marker)."""
    return tuple(r[k] for k in s.panels)


def accuracy_axis(ax, lo: float, hi: float, floor: float | None) -> None:
    """Accuracy ticks over the done runs' range, plus a `diverged` tick at the floor if there is one."""
    span = max(hi - lo, 0.02)
    cut = lo - 0.06 * span if floor is None else floor + 0.5 * (lo - floor)
    ticks = [float(t) for t in MaxNLocator(6).tick_values(lo, hi) if cut < t <= hi + 1e-9 * span]
    extra = [] if floor is None else [floor]
    ax.set_yticks(ticks + extra, [f"{t:g}" for t in ticks] + ["diverged"] * len(extra))
    ax.set_ylim((lo if floor is None else floor) - 0.06 * span, hi + 0.06 * span)
    ax.set_ylabel("test accuracy")


def encoding_legend(
    hue: str | None, hue_values: list[Any], colors: dict, markers: dict[str, str]
) -> tuple[list, list[str]]:
    """Legend entries of a scatter that encodes one key as colour and the other settings as markers:
    a coloured circle per `hue` value, then a grey marker per setting label in `markers`.

    Returns:
      `(handles, labels)` for `fig.legend`.
    """
    handles, labels = [], []
    if hue:
        for hv in hue_values:
            handles.append(Line2D([], [], ls="none", marker="o", color=colors[group_id(hv)]))
            labels.append(setting_label({hue: hv}, [hue], over=""))
    for label, marker in markers.items():
        handles.append(Line2D([], [], ls="none", marker=marker, color="0.3"))
        labels.append(label)
    return handles, labels


def _scatter_legend(
    fig: Figure, s: _SweepRuns, rows: list[dict], colors: dict, combos: list[tuple], markers: dict, not_shown: int
) -> None:
    by_label = {setting_label(dict(zip(s.panels, c)), s.panels, over=""): markers[group_id(c)] for c in combos}
    handles, labels = encoding_legend(s.hue, distinct(rows, s.hue), colors, by_label if s.panels else {})
    handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3"))
    labels.append("diverged (no test accuracy)")
    if not_shown:
        handles.append(Line2D([], [], ls="none"))
        labels.append(f"not shown: {not_shown} run(s) missing, running,\nfailed or without ELR logs")
    fig.legend(handles, labels, loc="outside right center", fontsize=7)


# ---------------------------------------------------------------------------------------------
# Command line


def elr_plot_main(argv: list[str]) -> int:
    """`normjax elr-plot DIR [--out OUT] [--hue KEY] [--key KEY]`: ELR figures of a run or sweep directory.

    Args:
      argv: the arguments after `elr-plot`.

    Returns:
      0; the written paths are printed one per line. Bad input raises `UserError`.

    Example:
      >>> elr_plot_main(["runs/sweep_elr", "--hue", "lr"])  # doctest: +SKIP
      /.../runs/sweep_elr/figures/elr_spread_by_lr.png
      ...
      0
    """
    p = argparse.ArgumentParser(
        prog="normjax elr-plot", description="ELR figures (PNG and PDF) of a run directory or a sweep directory"
    )
    p.add_argument("dir", help="a run directory (has config.json) or a sweep directory (has sweep.json)")
    p.add_argument("--out", help="output directory (default DIR/figures)")
    p.add_argument("--hue", help="sweep only: varied key for colours (default: the first varied key but the seed)")
    p.add_argument("--over", default="train.seed", help="sweep only: key averaged over (default train.seed)")
    p.add_argument("--key", help=f"run only: per-layer metric to show (default elr); one of {', '.join(LAYER_KEYS)}")
    p.add_argument(
        "--layers",
        default="all",
        help=f"the spread's layers, one of {', '.join(SPREAD_LAYERS)}: all scale-invariant ones (default) "
        "or the main path (shortcut projections left out)",
    )
    args = p.parse_args(argv)
    d = Path(args.dir).expanduser()
    if SweepDir(d).is_sweep():
        if args.key is not None:
            raise UserError(f"--key {args.key!r} applies to a run directory; {args.dir!r} is a sweep directory")
        paths = sweep_figures(d, out=args.out, hue=args.hue, over=args.over, layers=args.layers)
    elif RunDir(d).is_run():
        if args.hue is not None:
            raise UserError(f"--hue {args.hue!r} applies to a sweep directory; {args.dir!r} is a run directory")
        paths = run_figures(d, out=args.out, key=args.key or "elr", layers=args.layers)
    else:
        raise UserError(
            f"{args.dir!r} is neither a run directory (config.json) nor a sweep directory (sweep.json); "
            "give one of those"
        )
    for path in paths:
        print(path)
    return 0
