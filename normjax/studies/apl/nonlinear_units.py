"""`normjax apl RUNDIR|SWEEPDIR`: nonlinear units, average path length and the core network of a
run's latest checkpoint (read-only), from the model's graph (`normjax.analysis.apl`).

The tolerance check here (`check_tolerance`) is also `normjax fold`'s.

Example:
  >>> report = run_apl("runs/apl_resnet")  # doctest: +SKIP
  >>> report["apl"], report["nonlinear_units"], report["profile"][:3]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax

from normjax.analysis import apl as apl_lib
from normjax.analysis import graph as graph_lib
from normjax.errors import UserError


def check_tolerance(tolerance: float | None) -> float | None:
    """A `--tolerance` value checked (None: use the run's `optim.prelu_tolerance`), as the config
    checks `optim.prelu_tolerance`: a unit is linear when `|1 - slope| < tolerance`."""
    if tolerance is not None and not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise UserError(f"--tolerance {tolerance} is not allowed; give 0 <= tolerance < 1")
    return tolerance


def run_apl(rundir: str | Path, tolerance: float | None = None) -> dict:
    """APL quantities of a run's latest checkpoint.

    Args:
      rundir: a run directory with a checkpoint.
      tolerance: a PReLU channel is nonlinear when `|1 - slope| >= tolerance`; default the run's
        `optim.prelu_tolerance`.

    Returns:
      `normjax.analysis.apl.summary` plus `step`, `tolerance` and `run`.
    """
    from normjax.training.loop import read_run

    check_tolerance(tolerance)
    cfg, _, program, step, items = read_run(rundir)
    tol = cfg["optim"]["prelu_tolerance"] if tolerance is None else tolerance
    params = jax.device_get(items["params"])
    return {
        "run": str(rundir),
        "step": step,
        "tolerance": tol,
        **apl_lib.summary(program.graph, graph_lib.linearize(program.graph, params, tol), tol),
    }


def format_report(r: dict) -> str:
    """A terminal table: the totals, then one line per layer (count / channels, a bar)."""
    lines = [
        f"{r['run']} (step {r['step']}, tolerance {r['tolerance']:g})",
        f"  APL (normalized) {r['apl']:.3f}   unnormalized {r['apl_unnormalized']:.3f}   "
        f"nonlinear units {r['nonlinear_units']}/{r['units']} ({100 * r['nonlinear_fraction']:.1f}%)   "
        f"effective width {r['effective_width']:.2f}   nonlinear layers {r['nonlinear_layers']}/{len(r['layers'])}",
    ]
    width = max(len(n) for n in r["layers"])
    for name, count, channels, frac in zip(r["layers"], r["counts"], r["channels"], r["profile"], strict=True):
        lines.append(f"  {name:<{width}}  {f'{count:4d}/{channels}':<9} {'#' * round(20 * frac)}")
    return "\n".join(lines)


def run_dirs(path: Path) -> list[Path]:
    """A run directory itself, or the run directories of a sweep directory (sweep.json order)."""
    from normjax.training.rundir import SweepDir

    sweep = SweepDir(path)
    if sweep.is_sweep():
        from normjax.sweep.results import load_sweep

        _, meta = load_sweep(path)
        return [path / r["name"] for r in meta["runs"] if sweep.run(r["name"]).checkpoints.is_dir()]
    return [path]


def apl_main(argv: list[str]) -> int:
    """`normjax apl DIR [--tolerance T] [--json]`; returns the exit code."""
    p = argparse.ArgumentParser(prog="normjax apl", description=__doc__.splitlines()[0])
    p.add_argument("dir", help="run directory, or a sweep directory (every run with a checkpoint)")
    p.add_argument(
        "--tolerance", type=float, help="linear when |1 - slope| < T (default: the run's optim.prelu_tolerance)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    args = p.parse_args(argv)
    path = Path(args.dir).expanduser()
    if not path.is_dir():
        raise UserError(f"{args.dir!r} is not a directory; give a run or sweep directory")
    dirs = run_dirs(path)
    if not dirs:
        raise UserError(f"{args.dir!r} is a sweep directory without trained runs")
    for d in dirs:
        r = run_apl(d, args.tolerance)
        print(json.dumps(r) if args.json else format_report(r))
    return 0
