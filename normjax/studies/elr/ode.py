"""The weight-dynamics model against measurement: `normjax ode RUNDIR|SWEEPDIR` and `normjax ode --simulate`.

For a run that logged the ELR hook (`log.metrics=["elr"]`), the model is given what the paper's
model takes, the measured per-layer base gradients :math:`c_l(0)` and norms :math:`\\|w_l(0)\\|` at
step 0 and the run's LR, momentum and weight decay, and predicts every scale-invariant layer's norm,
relative ELR :math:`E_l = \\eta c_l/\\|w_l\\|^2` and the spread over the run's dense window (the first
`log.dense_steps` steps, logged every step). Two predictions are compared with the measurement:
- `model`: `normjax.analysis.predict` (the discrete SGD map by default, or gradient flow), which
  holds the base gradient constant (the paper's assumption: its error is what the figure shows);
- `replay`: the discrete map fed the *measured* gradient norms of every step
  (`discrete_norms_from_grads`): exact for a scale-invariant layer under SGD without momentum, so
  its error measures how scale-invariant the layers really are (float precision for BN nets).

Errors: per layer the relative error of :math:`\\|w_l\\|` at the window's end and the mean absolute
log10 error of :math:`E_l`; for the spread the mean absolute log10 error over the window. How far the
assumption holds: the base gradients' drift :math:`\\mathrm{median}_l |\\log_{10} c_l(t)/c_l(0)|` per
step, and the first step where it reaches a factor 2 (`BREAK_DEX`).

Example:
  >>> result = compare_run("runs/elr_resnet")  # doctest: +SKIP
  >>> result.spread_error["model"]       # mean |log10 spread_pred - log10 spread_measured|  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normjax.errors import UserError, missing_extra

try:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.figures import figure, save
from normjax.metrics import spread_key
from normjax.studies.elr.figures import MARKERS, distinct, encoding_legend, hue_colors, read_run, step_axis
from normjax.sweep.results import write_csv
from normjax.training.rundir import RunDir, SweepDir

MODELS = ("discrete", "ode")
BREAK_DEX = math.log10(2.0)  # the constant-base-gradient assumption "breaks" once the median c_l is off by 2x


@dataclass
class Comparison:
    """Measured and predicted trajectories of one run's scale-invariant layers over its dense window."""

    path: Path
    title: str
    names: list[str]  # the scale-invariant layers, in depth order
    steps: np.ndarray  # [T]
    measured: dict[str, np.ndarray]  # w_norm, elr [T, L]; spread [T]
    predicted: dict[str, dict]  # "model" / "replay" -> same keys
    norm_error: dict[str, np.ndarray]  # per layer: |w_pred - w| / w at the window's end
    elr_error: dict[str, np.ndarray]  # per layer: mean |log10 E_pred - log10 E|
    spread_error: dict[str, float]  # mean |log10 spread_pred - log10 spread|
    base_drift: np.ndarray  # [T]: median over layers of |log10 c_l(t) / c_l(0)|

    @property
    def break_step(self) -> int | None:
        """The first step whose base-gradient drift reaches `BREAK_DEX` (None: not in the window)."""
        hit = np.nonzero(self.base_drift >= BREAK_DEX)[0]
        return int(self.steps[hit[0]]) if hit.size else None


def _dense_window(steps: np.ndarray, limit: int | None) -> int:
    """Rows 0..n-1 hold steps 0..n-1 (the densely logged start)."""
    n = 0
    while n < len(steps) and steps[n] == n and (limit is None or n < limit):
        n += 1
    return n


def _spread(e: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # a diverged run's zero or NaN ELRs: inf/NaN spreads
        return e.max(-1) / e.min(-1)


def _log_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(np.log10(a) - np.log10(b))


def compare_run(
    rundir: str | os.PathLike, model: str = "discrete", steps: int | None = None, layers: str = "all"
) -> Comparison:
    """The model's prediction and the measured-gradient replay against one run's measurement.

    Args:
      rundir: a run directory that logged the `elr` hook from step 0.
      model: `"discrete"` (the SGD map) or `"ode"` (gradient flow), see `normjax.analysis.predict`.
      steps: compare over at most this many steps (default: the whole dense window).
      layers: the layers compared, `"all"` scale-invariant ones (default) or `"main"` (shortcut
        projections left out).

    Returns:
      A `Comparison`.

    References:
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    import jax.numpy as jnp

    from normjax import analysis

    if model not in MODELS:
        raise UserError(f"--model {model!r} is unknown; allowed: {', '.join(MODELS)}")
    run = read_run(rundir)
    if not run.rows or "g_norm" not in run.rows[0] or "layer_lr" not in run.rows[0]:
        raise UserError(
            f'{str(run.path)!r} logged no per-layer ELR metrics from step 0; train it with --set log.metrics=["elr"]'
        )
    n = _dense_window(run.steps(), steps)
    if n < 2:
        raise UserError(
            f"{str(run.path)!r} has {n} densely logged steps from step 0; need >= 2 (raise log.dense_steps)"
        )
    si = run.spread_layers(layers)
    if not si.any():
        raise UserError(f"{str(run.path)!r} has no scale-invariant layer (no BatchNorm after a weight layer)")
    w = run.layer_values("w_norm")[:n, si]
    g = run.layer_values("g_norm")[:n, si]
    lr_l = run.layer_values("layer_lr")[:n, si]
    o = run.config["optim"]
    beta, lam = float(o["momentum"]), float(o["weight_decay"])
    e = lr_l * g / w
    measured = {"w_norm": w, "elr": e, "spread": _spread(e), "base_grad": g * w}

    pred = analysis.predict(
        jnp.asarray(g[0] * w[0]),
        jnp.asarray(w[0]),
        jnp.asarray(lr_l[0]),
        n - 1,
        momentum=beta,
        weight_decay=lam,
        model=model,
    )
    predicted = {"model": {"w_norm": np.asarray(pred["w_norm"]), "elr": np.asarray(pred["elr"])}}
    u = np.asarray(
        analysis.discrete_norms_from_grads(
            jnp.asarray(w[0] ** 2), jnp.asarray(g[:-1]), jnp.asarray(lr_l[:-1]), weight_decay=lam
        )
    )
    predicted["replay"] = {"w_norm": np.sqrt(u), "elr": lr_l * g / np.sqrt(u)}
    for p in predicted.values():
        p["spread"] = _spread(p["elr"])
    return Comparison(
        path=run.path,
        title=run.title(),
        names=[nm for nm, s in zip(run.names, si) if s],
        steps=run.steps()[:n],
        measured=measured,
        predicted=predicted,
        norm_error={k: np.abs(p["w_norm"][-1] - w[-1]) / w[-1] for k, p in predicted.items()},
        elr_error={k: np.nanmean(_log_err(p["elr"], e), axis=0) for k, p in predicted.items()},
        spread_error={k: float(np.nanmean(_log_err(p["spread"], measured["spread"]))) for k, p in predicted.items()},
        base_drift=np.nanmedian(_log_err(g * w, g[:1] * w[:1]), axis=1),
    )


def _depth_colors(n: int) -> list:
    """One colour per layer, input (dark) to output (light)."""
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


def _depth_colorbar(fig, ax, n: int) -> None:
    """The key to `_depth_colors`: layer index, 0 = input, on integer ticks."""
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, max(1, n - 1)), colormaps["viridis"]), ax=ax, label="layer (0 = input)"
    )
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()


def comparison_figure(c: Comparison, out: Path, model: str) -> list[Path]:
    """Per-layer ELR measured (solid) vs the model (dashed), the spread with the replay, and how far
    the base gradients drift from their step-0 values (the model's assumption)."""
    fig, axes = figure(1, 3, size=(17.0, 4.4))
    ax, bx, cx = axes[0]
    x = c.steps + 1
    for i, color in enumerate(_depth_colors(len(c.names))):
        ax.plot(x, c.measured["elr"][:, i], color=color, lw=1.2)
        ax.plot(x, c.predicted["model"]["elr"][:, i], color=color, lw=1.0, ls="--")
    ax.set_yscale("log")
    ax.set_ylabel("ELR  η‖g_l‖/‖w_l‖  (solid: measured, dashed: model)")
    ax.set_title(f"per-layer ELR, {len(c.names)} scale-invariant layers", fontsize=9)
    _depth_colorbar(fig, ax, len(c.names))
    bx.plot(x, c.measured["spread"], color="k", lw=1.5, label="measured")
    bx.plot(
        x,
        c.predicted["model"]["spread"],
        color="C3",
        ls="--",
        label=f"model ({model}, constant base gradient): err {c.spread_error['model']:.3f} dex",
    )
    bx.plot(
        x,
        c.predicted["replay"]["spread"],
        color="C0",
        ls=":",
        label=f"SGD map on measured gradients: err {c.spread_error['replay']:.2g} dex",
    )
    bx.set_yscale("log")
    bx.set_ylabel("spread  max_l E_l / min_l E_l")
    bx.legend(fontsize=8)
    c_rel = c.measured["base_grad"] / c.measured["base_grad"][:1]
    for i, color in enumerate(_depth_colors(len(c.names))):
        cx.plot(x, c_rel[:, i], color=color, lw=0.9)
    cx.plot(x, 10**c.base_drift, color="k", lw=1.5, label="10^(median_l |log10 c_l(t)/c_l(0)|)")
    for v in (2.0, 0.5):
        cx.axhline(v, color="C3", ls=":", lw=1)
    brk = c.break_step
    cx.set_title(
        "base gradient c_l(t)/c_l(0) (model: 1); dotted: factor 2, "
        + (f"median reaches it at step {brk}" if brk is not None else "median stays inside"),
        fontsize=8,
    )
    cx.set_yscale("log")
    cx.legend(fontsize=8)
    _depth_colorbar(fig, cx, len(c.names))
    for a in (ax, bx, cx):
        step_axis(a)
    fig.suptitle(f"weight-dynamics model vs measurement — {c.title}", fontsize=10)
    return save(fig, out, f"ode_{model}")


def _report_run(c: Comparison) -> str:
    lines = [
        f"{c.path}",
        f"  {len(c.steps)} steps, {len(c.names)} scale-invariant layers",
        f"  {'layer':24s} {'|w| err model':>14s} {'|w| err replay':>15s} {'ELR err model (dex)':>20s}",
    ]
    for i, name in enumerate(c.names):
        lines.append(
            f"  {name[:24]:24s} {c.norm_error['model'][i]:14.2e} {c.norm_error['replay'][i]:15.2e} "
            f"{c.elr_error['model'][i]:20.3f}"
        )
    lines.append(
        f"  spread error (mean |Δlog10|): model {c.spread_error['model']:.3f}, replay {c.spread_error['replay']:.2e}"
    )
    brk = c.break_step
    lines.append(
        f"  base-gradient drift (median |Δlog10 c_l|): {c.base_drift[-1]:.3f} dex at the window's end; "
        + (f"reaches a factor 2 at step {brk}" if brk is not None else "under a factor 2 throughout")
    )
    return "\n".join(lines)


def compare_sweep(
    sweepdir: str | os.PathLike, model: str = "discrete", out: Path | None = None, layers: str = "all"
) -> tuple[list, list[Path]]:
    """`compare_run` on every run of a sweep that logged the ELR hook: a CSV of the errors, one
    figure per run (in its `figures/`), and predicted vs measured mean log10 spread over runs."""
    from normjax.sweep.results import collect, group_id, load_sweep, setting_label, sweep_name

    spread_key(layers)
    path, meta = load_sweep(sweepdir)
    results, paths, skipped = [], [], []
    for row in collect(path):
        run = SweepDir(path).run(row["name"])
        try:
            c = compare_run(run.path, model, layers=layers)
        except UserError as e:
            skipped.append(str(e))  # missing, failed, or no ELR log: the sweep's other runs still count
            continue
        paths += comparison_figure(c, run.figures, model)
        results.append((row, c))
    if not results:
        raise UserError(f"no run of {str(sweepdir)!r} can be compared" + (f" (first: {skipped[0]})" if skipped else ""))
    out = out or SweepDir(path).figures
    out.mkdir(parents=True, exist_ok=True)
    columns = [
        "run",
        *meta["varied"],
        "steps",
        "spread_err_model",
        "spread_err_replay",
        "median_norm_err_model",
        "median_elr_err_model",
        "mean_log_spread_measured",
        "mean_log_spread_model",
        "base_drift_end",
        "base_drift_break_step",
    ]
    write_csv(
        out / f"ode_{model}_errors.csv",
        [
            dict(
                zip(
                    columns,
                    [
                        row["name"],
                        *[row.get(k, "") for k in meta["varied"]],
                        len(c.steps),
                        c.spread_error["model"],
                        c.spread_error["replay"],
                        float(np.median(c.norm_error["model"])),
                        float(np.median(c.elr_error["model"])),
                        float(np.mean(np.log10(c.measured["spread"]))),
                        float(np.mean(np.log10(c.predicted["model"]["spread"]))),
                        float(c.base_drift[-1]),
                        "" if c.break_step is None else c.break_step,
                    ],
                )
            )
            for row, c in results
        ],
        columns,
    )
    paths.append(out / f"ode_{model}_errors.csv")
    fig, axes = figure(1, 1, size=(8.4, 5.0))
    ax = axes[0, 0]
    xs = [float(np.mean(np.log10(c.measured["spread"]))) for _, c in results]
    ys = [float(np.mean(np.log10(c.predicted["model"]["spread"]))) for _, c in results]
    # As the accuracy scatter: colour = LR, marker = the other varied keys' setting (seeds share it).
    rows = [row for row, _ in results]
    keys = [k for k in meta["varied"] if k != "train.seed"]
    hue = "optim.lr" if "optim.lr" in keys else None
    rest = [k for k in keys if k != hue]
    colors = hue_colors(distinct(rows, hue))
    combos = list(dict.fromkeys(setting_label(r, rest) for r in rows))
    markers = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(combos)}
    for r, x, y in zip(rows, xs, ys):
        color = colors[group_id(r[hue] if hue else None)]
        ax.plot(x, y, ls="none", marker=markers[setting_label(r, rest)], ms=6, color=color, alpha=0.85)
    lo, hi = min(xs + ys), max(xs + ys)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls=":")
    handles, labels = encoding_legend(hue, distinct(rows, hue), colors, {c or "runs": m for c, m in markers.items()})
    handles.insert(0, Line2D([], [], color="k", lw=0.8, ls=":"))
    labels.insert(0, "prediction = measurement")
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    ax.set_xlabel("measured mean log10 spread (dense window)")
    ax.set_ylabel(f"predicted mean log10 spread ({model} model)")
    ax.set_title(f"{sweep_name(path, meta)}: one point per run", fontsize=10)
    paths += save(fig, out, f"ode_{model}_spread")
    return results, paths


def _floats(text: str, what: str) -> np.ndarray:
    try:
        vals = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise UserError(f"{what} {text!r} is not a comma-separated list of numbers (e.g. 1,2.5,4)") from None
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise UserError(f"{what} {text!r} must hold finite positive numbers")
    return vals


def simulate(
    c0: np.ndarray,
    w0: np.ndarray,
    lr: float,
    steps: int,
    momentum: float,
    weight_decay: float,
    out: Path,
    seed: int = 0,
    size: int = 4096,
) -> list[Path]:
    """The model alone: discrete map, gradient flow and the random walk (`size` weights per layer)
    from given base gradients and norms; one figure of per-layer ELRs and the spread."""
    import jax
    import jax.numpy as jnp

    from normjax import analysis

    args = dict(momentum=momentum, weight_decay=weight_decay)
    disc = analysis.predict(jnp.asarray(c0), jnp.asarray(w0), lr, steps, model="discrete", **args)
    flow = analysis.predict(jnp.asarray(c0), jnp.asarray(w0), lr, steps, model="ode", **args)
    walk_u = analysis.random_walk(
        jax.random.key(seed), jnp.asarray(w0), (size,) * len(c0), jnp.asarray(c0), lr, steps, num_walks=1, **args
    )[0]
    walk_e = np.asarray(analysis.elr_from_norms(walk_u, jnp.asarray(c0), lr))
    fig, axes = figure(1, 2, size=(12.0, 4.4))
    ax, bx = axes[0]
    x = np.arange(steps + 1) + 1
    for i, color in enumerate(_depth_colors(len(c0))):
        ax.plot(x, disc["elr"][:, i], color=color, lw=1.2)
        ax.plot(x, flow["elr"][:, i], color=color, lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_ylabel("ELR  η c_l/‖w_l‖²  (solid: SGD map, dashed: gradient flow)")
    bx.plot(x, disc["spread"], label="SGD map (random-walk expectation)")
    bx.plot(x, flow["spread"], ls="--", label="gradient flow")
    bx.plot(x, _spread(walk_e), ls=":", label=f"random walk ({size} weights per layer)")
    bx.set_yscale("log")
    bx.set_ylabel("spread  max_l E_l / min_l E_l")
    bx.legend(fontsize=8)
    for a in (ax, bx):
        step_axis(a)
    crit = float(analysis.critical_lr(jnp.asarray(c0 / w0**2)))
    fig.suptitle(
        f"weight-dynamics model: {len(c0)} layers, η={lr:g}, β={momentum:g}, λ={weight_decay:g}; "
        f"critical LR at step 0 = {crit:.3g}",
        fontsize=10,
    )
    return save(fig, out, "ode_simulation")


def ode_main(argv: list[str]) -> int:
    """`normjax ode DIR [--model discrete|ode]` or `normjax ode --simulate [...]`; returns the exit code."""
    p = argparse.ArgumentParser(prog="normjax ode", description=__doc__.splitlines()[0])
    p.add_argument("dir", nargs="?", help='run directory (logged log.metrics=["elr"]) or sweep directory')
    p.add_argument("--model", default="discrete", help="discrete (SGD map) or ode (gradient flow)")
    p.add_argument("--steps", type=int, help="compare at most this many steps (default: the dense window)")
    p.add_argument("--out", type=Path, help="figure directory (default: DIR/figures)")
    p.add_argument(
        "--layers",
        default="all",
        help="layers compared: all (scale-invariant, default) or main (shortcut projections left out)",
    )
    s = p.add_argument_group("--simulate: the model alone")
    s.add_argument("--simulate", action="store_true", help="run the model alone, on the base gradients below")
    s.add_argument("--depth", type=int, default=20, help="layers, when --c0 is not given")
    s.add_argument(
        "--growth",
        type=float,
        default=math.pi / (math.pi - 1),
        help="squared base-gradient growth per layer toward the input (default π/(π−1), BN explosion)",
    )
    s.add_argument("--c0", help="base gradients c_l(0), comma-separated (input layer first)")
    s.add_argument("--w0", help="initial norms ||w_l(0)||, comma-separated (default all 1)")
    s.add_argument("--lr", type=float, default=0.1, help="learning rate η (default 0.1)")
    s.add_argument("--momentum", type=float, default=0.0, help="momentum β (default 0)")
    s.add_argument("--weight-decay", type=float, default=0.0, help="weight decay λ (default 0)")
    s.add_argument("--sim-steps", type=int, default=1000, help="steps to simulate (default 1000)")
    args = p.parse_args(argv)
    if args.model not in MODELS:
        raise UserError(f"--model {args.model!r} is unknown; allowed: {', '.join(MODELS)}")
    if args.simulate:
        return _simulate_cli(args)
    if not args.dir:
        raise UserError("give a run or sweep directory, or --simulate")
    d = Path(args.dir).expanduser()
    if SweepDir(d).is_sweep():
        results, paths = compare_sweep(d, args.model, args.out, args.layers)
        for row, c in results:
            print(
                f"{row['name']}: spread error {c.spread_error['model']:.3f} dex (model), "
                f"{c.spread_error['replay']:.1e} (measured-gradient replay)"
            )
    else:
        c = compare_run(d, args.model, args.steps, args.layers)
        print(_report_run(c))
        paths = comparison_figure(c, args.out or RunDir(c.path).figures, args.model)
    print("\n".join(str(x) for x in paths))
    return 0


def _simulate_cli(args: argparse.Namespace) -> int:
    if args.sim_steps < 1 or args.depth < 1:
        raise UserError(f"--sim-steps {args.sim_steps} and --depth {args.depth} must be >= 1")
    if args.lr <= 0 or not 0 <= args.momentum < 1 or args.weight_decay < 0:
        raise UserError(
            f"--lr {args.lr}, --momentum {args.momentum}, --weight-decay {args.weight_decay}: "
            "need lr > 0, 0 <= momentum < 1, weight decay >= 0"
        )
    if args.c0:
        c0 = _floats(args.c0, "--c0")
    else:  # the explosion at init: c grows by sqrt(growth) per layer toward the input
        c0 = np.sqrt(args.growth) ** np.arange(args.depth - 1, -1, -1.0)
    w0 = _floats(args.w0, "--w0") if args.w0 else np.ones_like(c0)
    if len(w0) != len(c0):
        raise UserError(f"--w0 lists {len(w0)} norms but there are {len(c0)} layers; give one per layer")
    out = args.out or Path("runs") / "ode_simulation"
    for path in simulate(
        c0.astype(np.float32), w0.astype(np.float32), args.lr, args.sim_steps, args.momentum, args.weight_decay, out
    ):
        print(path)
    return 0
