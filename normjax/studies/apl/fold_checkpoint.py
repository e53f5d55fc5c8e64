"""Fold a trained run's linear units away: `normjax fold RUNDIR [--tolerance T] [--spatial] [--out DIR]`.

Reads the run's latest checkpoint (read-only: the run may still be training), hard-linearizes its
PReLU slopes (`graph.linearize`: slopes within the tolerance of 1 become exactly 1), folds the
network (`normjax.analysis.fold`: BN into the layers, fully linear nodes composed away), and
evaluates the original and the folded network on the run's test split, BN in eval mode and the
inputs normalized as the run's program does. Reports depth, parameters and FLOPs before and after,
the accuracies (trained, hard-linearized, folded) and the largest logit deviation of the folded
network from the hard-linearized original: float rounding in the default exact mode, the border
effect of composed spatial convs with `--spatial`.

Writes into DIR (default RUNDIR/folded): `fold.json` (the report), `folded.json` and `folded.npz`
(the folded network; `normjax.analysis.fold.load_folded(DIR)` reads it back).

Example:
  >>> record = fold_run("runs/mlp_prelu")            # doctest: +SKIP
  >>> record["original"]["depth"], record["folded"]["depth"], record["deviation"]["max_abs"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from normjax.errors import UserError

JSON_NAME = "fold.json"


def _load(rundir: Path):
    """Config, dataset, program, step, params, batch stats and graph of a run's latest checkpoint."""
    from normjax.training.loop import read_run

    cfg, inp, program, step, items = read_run(rundir)
    return cfg, inp, program, step, items["params"], items["batch_stats"], program.graph


def _batched(fn, images: np.ndarray, batch: int) -> np.ndarray:
    """`fn` over `images` in batches of `batch` (the last padded, so one shape compiles)."""
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch]
        n = x.shape[0]
        if n < batch:
            x = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)])
        out.append(np.asarray(fn(x))[:n])
    return np.concatenate(out)


def fold_run(
    rundir: str | os.PathLike,
    *,
    tolerance: float | None = None,
    spatial: bool = False,
    out: str | os.PathLike | None = None,
) -> dict:
    """Fold a run's latest checkpoint, evaluate both networks, write the report and the folded net.

    Args:
      rundir: a run directory (`config.json` and `checkpoints/`).
      tolerance: slopes with `|1 - slope| < tolerance` are linear (default: the run's
        `optim.prelu_tolerance`).
      spatial: also compose spatial convs (exact in the interior only; the deviation is reported).
      out: output directory (default RUNDIR/folded).

    Returns:
      The record written to `fold.json`: `original` and `folded` stats (`analysis.fold.stats`),
      `accuracy` (trained / linearized / folded), `deviation` (`max_abs`, `max_rel` = max_abs over
      the largest |logit|, both against the hard-linearized original; `max_abs_vs_trained`),
      `eliminated` and `pass_through` node names, `step`, `tolerance`, `spatial`, `paths`.

    References:
      Mehmeti-Göpel & Disselhoff, 2022 (arXiv:2211.17180).
    """
    import jax

    from normjax.analysis.fold import apply_folded, fold, save_folded, stats
    from normjax.analysis.graph import linearize
    from normjax.data import preprocess
    from normjax.studies.apl.nonlinear_units import check_tolerance
    from normjax.training.rundir import write_json

    check_tolerance(tolerance)
    rundir = Path(rundir).expanduser().absolute()
    cfg, inp, program, step, params, batch_stats, graph = _load(rundir)
    tol = float(cfg["optim"]["prelu_tolerance"] if tolerance is None else tolerance)
    params = jax.device_get(params)
    batch_stats = jax.device_get(batch_stats)
    linear_params = linearize(graph, params, tol)
    shape = tuple(int(s) for s in program.data.image_shape)
    try:
        folded = fold(graph, linear_params, batch_stats, spatial=spatial, input_shape=shape)
    except ValueError as e:
        raise UserError(f"cannot fold {str(rundir)!r}: {e}") from None

    original = jax.jit(lambda p, s, x: program.apply(p, s, program.preprocess(x, None), train=False)[0])
    folded_fn = jax.jit(lambda f, x: apply_folded(f, preprocess(x, None, mean=program.data.mean, std=program.data.std)))
    images, labels = inp.sample("test")  # streamed: the first SAMPLE_LIMIT records
    labels = np.asarray(labels)
    batch = max(1, min(int(cfg["train"]["eval_batch_size"]), images.shape[0]))
    trained = _batched(lambda x: original(params, batch_stats, x), images, batch)
    linear = _batched(lambda x: original(linear_params, batch_stats, x), images, batch)
    small = _batched(lambda x: folded_fn(folded, x), images, batch)
    dev = float(np.max(np.abs(small - linear)))
    acc = lambda z: float(np.mean(z.argmax(-1) == labels))  # noqa: E731
    kept = [n for n in folded.nodes[1:-1] if n.act == "linear"]
    out_dir = Path(out).expanduser() if out is not None else rundir / "folded"
    record = {
        "rundir": str(rundir),
        "step": int(step),
        "tolerance": tol,
        "spatial": bool(spatial),
        "input_shape": list(shape),
        "test_examples": int(images.shape[0]),
        "original": stats(graph, input_shape=shape, params=linear_params),
        "folded": stats(folded, input_shape=shape),
        "accuracy": {"trained": acc(trained), "linearized": acc(linear), "folded": acc(small)},
        "deviation": {
            "max_abs": dev,
            "max_rel": dev / max(float(np.max(np.abs(linear))), 1e-30),
            "max_abs_vs_trained": float(np.max(np.abs(small - trained))),
        },
        "eliminated": list(folded.eliminated),
        "pass_through": [n.name for n in kept],
    }
    try:
        paths = save_folded(folded, out_dir)
        record["paths"] = [str(p) for p in [out_dir / JSON_NAME, *paths]]
        write_json(out_dir / JSON_NAME, record)
    except OSError as e:
        raise UserError(f"--out {str(out_dir)!r} is not writable ({e.strerror or e}); give a writable --out") from None
    return record


def report(record: dict) -> str:
    """The record of `fold_run` as a small table."""
    o, f = record["original"], record["folded"]
    mode = "spatial (interior-exact)" if record["spatial"] else "exact"
    lines = [
        f"{record['rundir']}: step {record['step']}, tolerance {record['tolerance']:g}, {mode} folding",
        f"  {'':18s} {'original':>12s} {'folded':>12s} {'ratio':>7s}",
    ]
    for key, name in (
        ("depth", "depth"),
        ("params", "parameters"),
        ("flops", "FLOPs / example"),
        ("nonlinear_nodes", "nonlinear nodes"),
        ("hidden_nodes", "hidden nodes"),
    ):
        ratio = f"{f[key] / o[key]:7.3f}" if o[key] else f"{'-':>7s}"
        lines.append(f"  {name:18s} {o[key]:12,d} {f[key]:12,d} {ratio}")
    a, d = record["accuracy"], record["deviation"]
    lines.append(
        f"  test accuracy: trained {a['trained']:.4f}, hard-linearized {a['linearized']:.4f}, "
        f"folded {a['folded']:.4f} ({record['test_examples']} examples)"
    )
    lines.append(
        f"  max |Δlogits| folded vs hard-linearized: {d['max_abs']:.3g} (relative {d['max_rel']:.3g}); "
        f"vs trained: {d['max_abs_vs_trained']:.3g}"
    )
    lines.append(
        f"  eliminated: {', '.join(record['eliminated']) or '-'}; "
        f"linear pass-through: {', '.join(record['pass_through']) or '-'}"
    )
    return "\n".join(lines)


def fold_main(argv: list[str]) -> int:
    """`normjax fold RUNDIR [--tolerance T] [--spatial] [--out DIR]`: fold a run's linear units away.

    Args:
      argv: the arguments after `fold`.

    Returns:
      The exit code (0); bad input raises `UserError`.
    """
    p = argparse.ArgumentParser(prog="normjax fold", description=fold_main.__doc__.splitlines()[0])
    p.add_argument("rundir", help="run directory (config.json and checkpoints/)")
    p.add_argument(
        "--tolerance",
        type=float,
        help="slopes with |1 - slope| < T are made exactly linear (default: the run's optim.prelu_tolerance)",
    )
    p.add_argument(
        "--spatial",
        action="store_true",
        help="also compose two spatial convs into one (exact in the interior only; deviation reported)",
    )
    p.add_argument("--out", help="output directory (default RUNDIR/folded)")
    args = p.parse_args(argv)
    record = fold_run(args.rundir, tolerance=args.tolerance, spatial=args.spatial, out=args.out)
    print(report(record))
    for path in record["paths"]:
        print(path)
    return 0
