"""The ELR study's numbers, claim by claim, from its sweeps: `normjax elr-report`.

Reads what the study's commands wrote and computes the quantities `docs/reproduction.md` rests
its verdicts on, into one `elr_report.json` and two figures of its own:

- explosion (`normjax explode` JSON): the fitted growth per layer against π/(π−1);
- trajectories sweep (`sweep_elr_trajectories.py`, `log.metrics=["elr"]` from step 0): per run the
  spread at the first and last dense step and its model prediction (equalization), the rank
  correlation of the layers' ELRs before and after the first step (overshoot flips the order:
  negative) and whether the LR exceeded the critical LR at step 0, the model's spread error and the
  base gradients' drift (`normjax.studies.elr.ode`), the mean early spread, and over all runs the rank
  correlation of mean early spread with test accuracy;
- critical-LR measurements (`normjax critical-lr` JSON): measured against predicted critical LR;
- regimes sweep (`sweep_elr_regimes.py`): test accuracy and mean early spread per regime and
  shortcut, mean ± std over seeds, and each regime's difference from plain SGD;
- decisive tests (`sweep_elr_decisive.py`): per arm, train loss and test accuracy (mean ± s.e.),
  the difference from plain SGD with the smallest difference the seeds could detect, and whether
  the critical-LR cap bound (figure `decisive_arms`).

Spreads are over `--layers` (default `all` scale-invariant layers; `main` leaves out shortcut
projections). Figures: `elr_order_flip` (per-layer ELR at step 0 and 1 per LR), `base_drift`
(median base-gradient drift over steps per LR and momentum).

Example:
  >>> report(trajectories="runs/sweep-elr_trajectories-medium", out="runs/elr-report")  # doctest: +SKIP

References:
  Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch Normalization
  During Early Training`, 2023 (arXiv:2306.00700).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from normjax.errors import UserError
from normjax.figures import figure, save
from normjax.metrics import spread_key
from normjax.studies.report import difference, fmt, mean_std, sweep_rows, write_report
from normjax.sweep.results import group_id, load_sweep, sweep_name
from normjax.training.rundir import RunDir, SweepDir

JSON_NAME = "elr_report.json"
DRIFT_YMAX = 3.0  # dex: the base-drift figure's y range
REGIME_KEYS = ("optim.name", "optim.warmup_steps")


def rank_correlation(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 finite pairs.

    Example:
      >>> round(rank_correlation([1, 2, 3, 4], [10, 20, 15, 40]), 6)
      0.8
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for u in np.unique(v):  # ties share their mean rank
            r[v == u] = r[v == u].mean()
        return r

    rx, ry = ranks(x[ok]), ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _read_output(path: str, flag: str, json_name: str, command: str) -> dict:
    """The JSON a study command wrote: `path` is the file or the command's output directory."""
    p = Path(path)
    p = p / json_name if p.is_dir() else p
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"{flag} {str(path)!r}: cannot read {str(p)!r} ({type(e).__name__}); give the output "
            f"directory of `normjax {command}`"
        ) from None


def explosion_section(paths: list[str]) -> dict:
    """Growth factor per family and depth from `normjax explode` JSONs (files or their directories)."""
    from normjax.studies.elr.explosion import JSON_NAME as EXPLODE_JSON
    from normjax.studies.elr.explosion import MEAN_FIELD_FACTOR

    rows, sources = [], []
    for path in paths:
        data = _read_output(path, "--explode", EXPLODE_JSON, "explode")
        rows += [
            {
                "family": r["family"],
                "depth": r["depth"],
                "factor": r["factor"],
                "factor_seed_std": r["factor_seed_std"],
                "factor_base": r.get("factor_base"),
                "dataset": r["dataset"],
                "seeds": len(r.get("seeds", [])),
            }
            for r in data["records"]
        ]
        sources.append({"config": data.get("config"), "size": data.get("size"), "overrides": data.get("overrides")})
    return {"mean_field_factor": MEAN_FIELD_FACTOR, "rows": rows, "sources": sources}


def _first_steps(run) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-layer ELRs at steps 0 and 1 of a run (None when the run did not log both)."""
    steps = run.steps()
    if len(steps) < 2 or steps[0] != 0 or steps[1] != 1:
        return None
    e = run.layer_values("elr")[:2]
    return e[0], e[1]


def trajectories_section(sweep: str | os.PathLike, layers: str = "all") -> tuple[dict, list]:
    """Per-run quantities of the trajectories sweep and the spread-accuracy rank correlation."""
    import jax.numpy as jnp

    from normjax import analysis
    from normjax.studies.elr.figures import read_run
    from normjax.studies.elr.ode import compare_run

    key = spread_key(layers)
    path, rows = sweep_rows(sweep)
    runs, comparisons = [], []
    for row in rows:
        if row["status"] not in ("done", "diverged"):
            continue
        run = read_run(path / row["name"])
        m = run.spread_layers(layers)
        rec = {k: row[k] for k in row if k.startswith(("optim.", "model.", "train."))}
        rec |= {
            "name": row["name"],
            "status": row["status"],
            "test_accuracy": row["test_accuracy"],
            "train_loss": row.get("train_loss"),
        }
        spread = run.scalar(key)
        dense = run.config.get("log", {}).get("dense_steps")
        ok = np.isfinite(spread) & (spread > 0) & (run.steps() < (dense or np.inf))
        rec["log_spread_first"] = float(np.log10(spread[0])) if ok.size and ok[0] else None
        rec["log_spread_last_dense"] = float(np.log10(spread[ok][-1])) if ok.any() else None
        rec["mean_log_spread_early"] = float(np.mean(np.log10(spread[ok]))) if ok.any() else None
        first = _first_steps(run)
        if first is not None and np.isfinite(first[0][m]).all() and np.isfinite(first[1][m]).all():
            e0, e1 = first[0][m], first[1][m]
            a0 = e0 / run.layer_values("layer_lr")[0][m]
            rec["order_correlation"] = rank_correlation(e0, e1)
            rec["critical_lr_step0"] = float(analysis.critical_lr(jnp.asarray(a0)))
            # The model's own time to equalize: the smallest initial ELR sets it (docs/science.md).
            rec["elr_min_step0"] = float(e0.min())
            rec["equalization_steps"] = float(1.0 / (2.0 * e0.min() ** 2))
        try:
            c = compare_run(path / row["name"], layers=layers)
        except UserError:
            c = None
        if c is not None:
            comparisons.append((rec, c))
            rec |= {
                "spread_error_model": c.spread_error["model"],
                "spread_error_replay": c.spread_error["replay"],
                "log_spread_model_last": float(np.log10(c.predicted["model"]["spread"][-1])),
                "base_drift_end": float(c.base_drift[-1]),
                "base_drift_break_step": c.break_step,
                "base_drift_at": {str(t): float(c.base_drift[t]) for t in (1, 10, 100) if t < len(c.base_drift)},
            }
        runs.append(rec)
    done = [r for r in runs if r["status"] == "done" and r.get("mean_log_spread_early") is not None]
    section = {
        "sweep": str(path),
        "layers": layers,
        "runs": runs,
        "spread_accuracy_rank_correlation": rank_correlation(
            [r["mean_log_spread_early"] for r in done], [r["test_accuracy"] for r in done]
        ),
        "spread_accuracy_runs": len(done),
    }
    return section, comparisons


def critical_section(paths: list[str]) -> dict:
    """Measured vs predicted critical LR from `normjax critical-lr` JSONs (files or their directories)."""
    from normjax.studies.elr.critical_lr import JSON_NAME as CRIT_JSON

    rows = []
    for path in paths:
        for r in _read_output(path, "--critical", CRIT_JSON, "critical-lr")["results"]:
            pred, meas = np.asarray(r["crit_predicted"]), np.asarray(r["crit_measured"])
            ratio = np.log10(meas / pred)
            for j, t in enumerate(r["at"]):
                rows.append(
                    {
                        "model": r["model"],
                        "depth": r["depth"],
                        "shortcut": r["shortcut"],
                        "dataset": r["dataset"],
                        "after_steps": t,
                        "scope": r.get("scope", "all"),
                        "warm_lr": r["warm_lr"],
                        "crit_predicted": mean_std(list(pred[:, j])),
                        "crit_measured": mean_std(list(meas[:, j])),
                        "log10_ratio": mean_std(list(ratio[:, j])),
                        "spread_now": mean_std(list(np.asarray(r["spread_now"])[:, j])),
                    }
                )
    return {"rows": rows}


def _regime(optim: dict) -> str:
    """A regime's label: the optimizer, its linear warm-up, and a uniform-ELR reference other than `lr`."""
    label = optim.get("name", "sgd") + (f"+warmup{optim['warmup_steps']}" if optim.get("warmup_steps") else "")
    ref = optim.get("elr_reference", "lr")
    return label + (f"+{ref}" if optim.get("name") == "sgd_uniform_elr" and ref != "lr" else "")


def regimes_section(sweeps: list[str], layers: str = "all") -> list[dict]:
    """Accuracy and mean early spread per (LR, regime, shortcut) over seeds, from one or more regimes
    sweeps; one section per LR, each regime's difference from plain SGD at that LR."""
    from normjax.studies.elr.figures import read_run, run_spreads

    groups: dict[str, dict] = {}
    for sweep in sweeps:
        path, rows = sweep_rows(sweep)
        for row in rows:
            if not SweepDir(path).run(row["name"]).is_run():
                continue
            run = read_run(path / row["name"])
            o, shortcut = run.config.get("optim", {}), bool(run.config["model"].get("shortcut"))
            g = groups.setdefault(
                group_id((o.get("lr"), _regime(o), shortcut)),
                {
                    "lr": o.get("lr"),
                    "regime": _regime(o),
                    "shortcut": shortcut,
                    "acc": [],
                    "train_loss": [],
                    "spread": [],
                    "statuses": [],
                    "sweeps": [],
                    "runs": [],
                },
            )
            g["statuses"].append(row["status"])
            if str(path) not in g["sweeps"]:
                g["sweeps"].append(str(path))
            spread = run_spreads(run, layers)[0]
            if row["status"] == "done":
                g["acc"].append(row["test_accuracy"])
                g["train_loss"].append(row.get("train_loss"))  # trainability, beside test accuracy
                g["spread"].append(spread)
            # each run's point for the figure, diverged ones too (their spread up to divergence)
            g["runs"].append(
                {
                    "name": row["name"],
                    "status": row["status"],
                    "test_accuracy": row.get("test_accuracy") if row["status"] == "done" else None,
                    "mean_log_spread_early": spread if math.isfinite(spread) else None,
                }
            )
    out = [
        {
            "lr": g["lr"],
            "regime": g["regime"],
            "shortcut": g["shortcut"],
            "test_accuracy": mean_std(g["acc"]),
            "train_loss": mean_std(g["train_loss"]),
            "mean_log_spread_early": mean_std(g["spread"]),
            "statuses": g["statuses"],
            "diverged": g["statuses"].count("diverged"),
            "sweeps": g["sweeps"],
            "runs": g["runs"],
        }
        for g in groups.values()
    ]
    for r in out:
        base = next((b for b in out if (b["lr"], b["regime"], b["shortcut"]) == (r["lr"], "sgd", r["shortcut"])), None)
        if base is not None and r["test_accuracy"]["n"] and base["test_accuracy"]["n"]:
            a, b = r["test_accuracy"], base["test_accuracy"]
            se = math.sqrt(sum((x["std"] or 0.0) ** 2 / x["n"] for x in (a, b)))
            r["accuracy_minus_sgd"] = {"diff": a["mean"] - b["mean"], "se": se}
    lrs = sorted({r["lr"] for r in out}, key=lambda v: (v is None, v))
    return [
        {
            "lr": lr,
            "layers": layers,
            "rows": sorted((r for r in out if r["lr"] == lr), key=lambda r: (not r["shortcut"], r["regime"])),
        }
        for lr in lrs
    ]


REGIME_WORDS = {
    "sgd": "SGD",
    "sgd_critical_warmup": "critical-LR warm-up",
    "sgd_uniform_elr": "uniform ELR (common ELR = the LR)",
}


def regime_words(label: str) -> str:
    """A `_regime` label in words, e.g. `sgd+warmup500` -> `SGD + linear warm-up, 500 steps`.

    Example:
      >>> regime_words("sgd_uniform_elr+geometric_mean")
      'uniform ELR (common ELR = the geometric mean)'
    """
    name, *extras = label.split("+")
    words = REGIME_WORDS.get(name, name)
    for e in extras:
        if e.startswith("warmup"):
            words += f" + linear warm-up, {e.removeprefix('warmup')} steps"
        elif name == "sgd_uniform_elr":
            words = f"uniform ELR (common ELR = the {e.replace('_', ' ')})"
        else:
            words += f" + {e}"
    return words


def regimes_figure(sections: list[dict], out: Path, title: str = "") -> list[Path]:
    """`accuracy_vs_spread_regimes`: test accuracy against mean early log spread, one point per run of
    every regimes sweep read, one panel per LR; colour = regime (linear warm-up and each uniform-ELR
    reference their own), marker = plain (circle) or residual (square), diverged runs hollow below
    the axis' data."""
    from matplotlib.lines import Line2D

    from normjax.studies.elr.figures import MEAN_SPREAD_LABEL, accuracy_axis, run_point, spread_scatter_axis

    labels = sorted({r["regime"] for sec in sections for r in sec["rows"]})
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    points = [p for sec in sections for row in sec["rows"] for p in row["runs"]]
    accs = [p["test_accuracy"] for p in points if p["test_accuracy"] is not None]
    lo, hi = (min(accs), max(accs)) if accs else (0.0, 1.0)
    floor = lo - 0.12 * max(hi - lo, 0.02)
    fig, axes = figure(1, len(sections), size=(5.4 * len(sections) + 2.6, 4.4), sharey=True)
    hidden = 0
    for ax, sec in zip(axes[0], sections):
        diverged = False
        for row, p in ((r, p) for r in sec["rows"] for p in r["runs"]):
            if p["mean_log_spread_early"] is None or p["status"] not in ("done", "diverged"):
                hidden += 1
                continue
            hollow = p["status"] == "diverged"
            diverged |= hollow
            run_point(
                ax,
                p["mean_log_spread_early"],
                p["test_accuracy"],
                floor,
                "s" if row["shortcut"] else "o",
                colors[row["regime"]],
                hollow,
            )
        label = f"{MEAN_SPREAD_LABEL}\nearly window; gradient ELR $E_l=\\eta\\Vert g_l\\Vert/\\Vert w_l\\Vert$"
        spread_scatter_axis(ax, label, lo, floor if diverged else None)
        ax.set_title(f"LR {sec['lr']:g}", fontsize=9)
    any_diverged = any(p["status"] == "diverged" and p["mean_log_spread_early"] is not None for p in points)
    accuracy_axis(axes[0, 0], lo, hi, floor if any_diverged else None)
    handles = [Line2D([], [], color=colors[lab], marker="o", ls="none") for lab in labels]
    names = [regime_words(lab) for lab in labels]
    handles += [
        Line2D([], [], color="0.3", marker=m, ls="none", mfc=f) for m, f in (("o", "0.3"), ("s", "0.3"), ("o", "none"))
    ]
    names += ["plain", "residual", "diverged (no test accuracy)"]
    if hidden:
        handles.append(Line2D([], []))
        names.append(f"not shown: {hidden} run(s) unfinished\nor without a finite spread")
    fig.legend(handles, names, loc="outside right center", fontsize=7)
    n = max((len(row["runs"]) for sec in sections for row in sec["rows"]), default=0)
    fig.suptitle(f"{title}: test accuracy vs early ELR spread per regime, up to {n} seeds each", fontsize=9)
    return save(fig, out, "accuracy_vs_spread_regimes")


def order_flip_figure(sweep: str | os.PathLike, out: Path, layers: str = "all", title: str = "") -> list[Path]:
    """`elr_order_flip`: per-layer ELR at step 0 (dashed) and step 1 (solid) against depth, one colour
    per LR, one panel per (depth, shortcut), momentum 0 runs; `title` names the sweep."""
    from matplotlib import colormaps

    from normjax.studies.elr.figures import read_run

    path, rows = sweep_rows(sweep)
    picked = [r for r in rows if r["status"] in ("done", "diverged") and not r.get("optim.momentum")]
    panels = sorted({(r.get("model.depth"), bool(r.get("model.shortcut"))) for r in picked}, key=str)
    if not panels:
        raise UserError(f"{str(path)!r} has no finished run without momentum; the order-flip figure needs one")
    lrs = sorted({r["optim.lr"] for r in picked})
    fig, axes = figure(1, len(panels), size=(4.4 * len(panels), 3.8), sharey=True)
    for ax, (depth, shortcut) in zip(axes[0], panels):
        for i, lr in enumerate(lrs):
            r = next(
                (
                    r
                    for r in picked
                    if (r.get("model.depth"), bool(r.get("model.shortcut")), r["optim.lr"]) == (depth, shortcut, lr)
                ),
                None,
            )
            run = read_run(path / r["name"]) if r else None
            first = _first_steps(run) if run else None
            if first is None:
                continue
            m = run.spread_layers(layers)
            d = np.array([run.layers[j].get("depth", j) for j in run.order], float)[m]
            c = colormaps["plasma"](0.85 * i / max(1, len(lrs) - 1))
            ax.plot(d, first[0][m], ls="--", color=c, lw=1)
            ax.plot(d, first[1][m], color=c, lw=1.4, label=f"LR {lr:g}")
        ax.set_yscale("log")
        ax.set_xlabel("layer depth (input → output)")
        ax.set_title(f"depth {depth}, {'residual' if shortcut else 'plain'}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("ELR E_l  (dashed: step 0, solid: step 1)")
    lead = f"{title}, " if title else ""
    fig.suptitle(f"{lead}momentum 0, one seed per line: one large step flips the ELR order", fontsize=10)
    return save(fig, out, "elr_order_flip")


def base_drift_figure(comparisons: list, out: Path, title: str = "") -> list[Path]:
    """`base_drift`: the median base-gradient drift over the dense window, one line per run, one panel
    per momentum; colour by LR, dashed for residual."""
    from matplotlib import colormaps

    from normjax.studies.elr.ode import BREAK_DEX

    moms = sorted({float(rec.get("optim.momentum") or 0.0) for rec, _ in comparisons})
    lrs = sorted({rec["optim.lr"] for rec, _ in comparisons})
    fig, axes = figure(1, len(moms), size=(5.2 * len(moms), 4.0), sharey=True)
    for ax, mom in zip(axes[0], moms):
        for rec, c in comparisons:
            if float(rec.get("optim.momentum") or 0.0) != mom:
                continue
            color = colormaps["plasma"](0.85 * lrs.index(rec["optim.lr"]) / max(1, len(lrs) - 1))
            ax.plot(
                c.steps + 1,
                c.base_drift,
                color=color,
                ls="--" if rec.get("model.shortcut") else "-",
                lw=0.8 + 0.02 * float(rec.get("model.depth") or 0),
                label=f"LR {rec['optim.lr']:g}, depth {rec.get('model.depth')}, "
                f"{'residual' if rec.get('model.shortcut') else 'plain'}",
            )
        ax.axhline(BREAK_DEX, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(0, DRIFT_YMAX)  # diverging runs leave the axis: their drift is not the point here
        ax.set_xlabel("step + 1")
        ax.set_title(f"momentum {mom:g}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("median_l |log10 c_l(t)/c_l(0)|  (dex)\n(dotted: a factor 2; thicker: deeper)")
    fig.suptitle(f"{title}: how far the base gradients move from step 0 (the model holds them constant)", fontsize=10)
    return save(fig, out, "base_drift")


ARM = "optim.arm"


def _cap_bound(run_dir: Path) -> bool | None:
    """Whether a critical-LR warm-up run's cap bound at a logged step (the LR applied below the
    scheduled one); None for a run without the cap."""
    import jax.numpy as jnp

    from normjax.training.optim import schedule_shape

    run = RunDir(run_dir)
    rows = [r for r in run.read_metrics() if "critical_lr" in r and "lr" in r]
    if not rows:
        return None
    cfg = run.read_config()["optim"]
    total = int(run.read_summary().get("total_steps") or rows[-1]["step"] + 1)
    shape = schedule_shape(cfg, total)
    return any(r["lr"] < cfg["lr"] * float(shape(jnp.asarray(r["step"]))) * (1 - 1e-5) for r in rows)


def decisive_section(sweep: str | os.PathLike, reference: str = "sgd") -> dict:
    """The decisive tests (`sweep_elr_decisive.py`): per arm, final train loss and test accuracy
    (mean ± s.e. over seeds), each arm minus the `reference` arm with the standard error of the
    difference and the smallest difference the seeds could detect (2 s.e.), and, for the critical-LR
    warm-up arms, how many runs' caps bound at a logged step.

    Args:
      sweep: the decisive sweep directory (varies `optim.arm` and `train.seed`).
      reference: the arm the others are compared with.

    Returns:
      `{"sweep", "reference", "arms": {arm: {...}}}`.
    """
    path, rows = sweep_rows(sweep)
    rows = [r for r in rows if r.get(ARM) is not None]
    if not rows:
        raise UserError(f"{str(sweep)!r} varies no {ARM}; give a sweep_elr_decisive.py directory")
    arms: dict[str, dict] = {}
    for arm in sorted({str(r[ARM]) for r in rows}):
        rs = [r for r in rows if str(r[ARM]) == arm]
        done = [r for r in rs if r["status"] == "done"]
        # a diverged run did not train: it counts at chance (10 classes); unfinished runs do not count
        acc = mean_std(
            [
                r.get("test_accuracy") if r["status"] == "done" else 0.1
                for r in rs
                if r["status"] in ("done", "diverged")
            ]
        )
        loss = mean_std([r.get("train_loss") for r in done])
        bound = [_cap_bound(path / r["name"]) for r in done]
        arms[arm] = {
            "runs": len(rs),
            "done": len(done),
            "test_accuracy": acc | {"stderr": _stderr(acc)},
            "train_loss": loss | {"stderr": _stderr(loss)},
            "cap_bound_runs": None if all(b is None for b in bound) else sum(bool(b) for b in bound),
        }
    ref = arms.get(reference)
    for a in arms.values():
        for q in ("test_accuracy", "train_loss"):
            if ref is None or a[q]["mean"] is None or ref[q]["mean"] is None:
                a[f"{q}_vs_{reference}"] = difference(None, None)
                continue
            se = math.hypot(a[q]["stderr"] or 0.0, ref[q]["stderr"] or 0.0)
            a[f"{q}_vs_{reference}"] = difference(a[q]["mean"] - ref[q]["mean"], se)
    return {"sweep": str(path), "title": sweep_name(*load_sweep(path)), "reference": reference, "arms": arms}


def _stderr(ms: dict) -> float | None:
    return None if ms["std"] is None else ms["std"] / math.sqrt(ms["n"])


def arm_words(arm: str) -> str:
    """A decisive-test arm (`sweep_elr_decisive.py`'s `optim.arm` names) in words.

    Example:
      >>> arm_words("uniform_early_before")
      'uniform ELR, early only, before momentum'
      >>> arm_words("critical_warmup_m0_lr3")
      'critical-LR warm-up, momentum 0, LR 3'
    """
    base, _, m0 = arm.partition("_m0_")
    if base.startswith("uniform_"):
        _, span, position = (base.split("_") + ["", ""])[:3]
        words = f"uniform ELR, {'early only' if span == 'early' else 'whole run'}, {position} momentum"
    else:
        words = {
            "sgd": "SGD",
            "sgd_residual": "residual twin (SGD)",
            "linear_warmup": "linear warm-up",
            "critical_warmup": "critical-LR warm-up",
        }.get(base, base)
    return words + (f", momentum 0, LR {m0.removeprefix('lr')}" if m0 else "")


# The page's table order of the arms: the residual twin, the warm-ups, uniform ELR; the momentum-0
# pairs after them, by LR, SGD first.
ARM_ORDER = (
    "sgd",
    "sgd_residual",
    "linear_warmup",
    "critical_warmup",
    "uniform_early_before",
    "uniform_early_after",
    "uniform_whole_before",
    "uniform_whole_after",
)


def _arm_order(arm: str, reference: str) -> tuple:
    base, _, m0 = arm.partition("_m0_")
    rank = ARM_ORDER.index(base) if base in ARM_ORDER else len(ARM_ORDER)
    return arm != reference, bool(m0), m0, rank, arm


def decisive_figure(section: dict, out: Path) -> list[Path]:
    """`decisive_arms`: test accuracy and final train loss (log axis: one exploded run would hide
    the rest) per arm, each seed a grey dot, mean ± 2 s.e. in colour, the reference arm's mean a
    dashed line."""
    from matplotlib.lines import Line2D

    arms = section["arms"]
    ref_name = section["reference"]
    names = sorted(arms, key=lambda a: _arm_order(a, ref_name))
    x = np.arange(len(names))
    fig, axes = figure(1, 2, size=(11.0, 4.8))
    for ax, q, label in zip(axes[0], ("test_accuracy", "train_loss"), ("test accuracy", "final train loss")):
        for i, a in enumerate(names):
            vals = [v for v in arms[a][q].get("values") or [] if v is not None]
            ax.plot(
                i + np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else [i] * len(vals),
                vals,
                ls="none",
                marker=".",
                ms=5,
                color="0.55",
                zorder=1,
            )
        ys = [arms[a][q]["mean"] if arms[a][q]["mean"] is not None else np.nan for a in names]
        es = [2 * (arms[a][q]["stderr"] or 0.0) for a in names]
        ax.errorbar(x + 0.3, ys, yerr=es, fmt="o", ms=5, capsize=3, color="C0", zorder=2)
        ref = arms[ref_name][q]["mean"] if ref_name in arms else None
        if ref is not None:
            ax.axhline(ref, color="k", ls="--", lw=0.8)
        if q == "train_loss":
            ax.set_yscale("log")  # bars whose lower end is below 0 are cut at the axis
        ax.set_xticks(x, [arm_words(a) for a in names], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], ls="none", marker=".", color="0.55"),
        Line2D([], [], marker="o", ms=5, color="C0"),
        Line2D([], [], color="k", ls="--", lw=0.8),
    ]
    labels = ["one seed", "mean ± 2 s.e.", f"{arm_words(ref_name)}: mean (reference)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7)
    n = max(a["runs"] for a in arms.values())
    fig.suptitle(
        f"decisive tests, {section.get('title') or Path(section['sweep']).name}: {n} seeds per arm", fontsize=9
    )
    return save(fig, out, "decisive_arms")


def report(
    *,
    out: str | os.PathLike,
    trajectories: str | None = None,
    regimes: list[str] | None = None,
    explode: list[str] | None = None,
    critical: list[str] | None = None,
    decisive: str | None = None,
    layers: str = "all",
) -> dict:
    """Compute every section whose input is given; write `elr_report.json` and the figures into `out`.

    Args:
      out: the output directory.
      trajectories: the trajectories sweep directory.
      regimes: regimes sweep directories (one per LR, say).
      explode: `normjax explode` output directories (or JSONs).
      critical: `normjax critical-lr` output directories (or JSONs).
      decisive: the decisive tests' sweep directory (`sweep_elr_decisive.py`).
      layers: the spreads' layers, `"all"` or `"main"`.

    Returns:
      The report (as written to JSON), with `figures`: the written paths.
    """
    spread_key(layers)
    if not any((trajectories, regimes, explode, critical, decisive)):
        raise UserError("give at least one of --trajectories, --regimes, --explode, --critical, --decisive")
    out = Path(out)
    res: dict[str, Any] = {"layers": layers}
    figures: list[Path] = []
    if explode:
        res["explosion"] = explosion_section(explode)
    if trajectories:
        res["trajectories"], comparisons = trajectories_section(trajectories, layers)
        title = sweep_name(*load_sweep(trajectories))  # read once for both figures
        figures += order_flip_figure(trajectories, out, layers, title)
        if comparisons:
            figures += base_drift_figure(comparisons, out, title)
    if critical:
        res["critical_lr"] = critical_section(critical)
    if regimes:
        res["regimes"] = regimes_section(regimes, layers)
        titles = dict.fromkeys(sweep_name(*load_sweep(r)) for r in regimes)  # ordered, once each
        figures += regimes_figure(res["regimes"], out, " + ".join(titles))
    if decisive:
        res["decisive"] = decisive_section(decisive)
        figures += decisive_figure(res["decisive"], out)
    write_report(out, JSON_NAME, res)
    res["figures"] = figures
    return res


def elr_report_main(argv: list[str]) -> int:
    """`normjax elr-report --out DIR [--trajectories D] [--regimes D] [--explode D] [--critical D ...] [--decisive D]`.

    Args:
      argv: the arguments after `elr-report`.

    Returns:
      The exit code (0); the report's headline numbers are printed. Bad input raises `UserError`.
    """
    p = argparse.ArgumentParser(prog="normjax elr-report", description=elr_report_main.__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory for elr_report.json and the figures")
    p.add_argument("--trajectories", help="the trajectories sweep directory (sweep_elr_trajectories.py)")
    p.add_argument(
        "--regimes", action="append", default=[], help="a regimes sweep directory (sweep_elr_regimes.py; repeatable)"
    )
    p.add_argument(
        "--explode", action="append", default=[], help="an output directory of `normjax explode` (repeatable)"
    )
    p.add_argument(
        "--critical", action="append", default=[], help="an output directory of `normjax critical-lr` (repeatable)"
    )
    p.add_argument("--decisive", help="the decisive tests' sweep directory (sweep_elr_decisive.py)")
    p.add_argument("--layers", default="all", help="spreads over all scale-invariant layers (default) or main")
    args = p.parse_args(argv)
    res = report(
        out=args.out,
        trajectories=args.trajectories,
        regimes=args.regimes or None,
        explode=args.explode or None,
        critical=args.critical or None,
        decisive=args.decisive,
        layers=args.layers,
    )
    if "explosion" in res:
        for r in res["explosion"]["rows"]:
            print(
                f"explosion {r['family']} depth {r['depth']}: {r['factor']:.3f} ± {r['factor_seed_std']:.3f} per layer "
                f"(mean field {res['explosion']['mean_field_factor']:.3f})"
            )
    if "trajectories" in res:
        t = res["trajectories"]
        print(
            f"trajectories: rank correlation of mean early log spread with test accuracy "
            f"{t['spread_accuracy_rank_correlation']:+.2f} over {t['spread_accuracy_runs']} runs"
        )
    for r in res.get("critical_lr", {}).get("rows", []):
        print(
            f"critical LR {r['model']} {'residual' if r['shortcut'] else 'plain'} depth {r['depth']} after "
            f"{r['after_steps']} steps, step moves {r['scope']}: log10(measured/predicted) {fmt(r['log10_ratio'], 2)}"
        )
    for section in res.get("regimes", []):
        for r in section["rows"]:
            print(
                f"LR {section['lr']:g} regime {r['regime']:<24} {'residual' if r['shortcut'] else 'plain':<8} accuracy "
                f"{fmt(r['test_accuracy'])} ({r['diverged']} diverged), mean early log10 spread "
                f"{fmt(r['mean_log_spread_early'], 2)}"
            )
    print(f"json: {(Path(args.out) / JSON_NAME).absolute()}")
    for path in res["figures"]:
        print(f"figure: {path}")
    return 0
