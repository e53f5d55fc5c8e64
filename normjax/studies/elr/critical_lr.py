"""The critical LR measured on a real network: `normjax critical-lr EXPERIMENT.py`.

The ELR study states that one SGD step widens the spread of the ELRs beyond a critical LR that
depends only on the current ELRs; under the constant-base-gradient model that LR is
`1/sqrt(a_max a_min)` with `a_l = ||g_l|| / ||w_l||` (docs/science.md#critical-lr). This measures
it: at a state `w` of a real network (at init, or after some plain SGD steps), for each LR `η` of a
grid it takes one SGD step `w' = w − η g` on the run's next batch, takes the gradient `g'` at `w'`
on the batch after, and forms the post-step spread `max_l a'_l / min_l a'_l` over the main-path
scale-invariant layers (shortcut projections left out). The measured critical LR is the grid LR of
the smallest post-step spread; the predicted one is `1/sqrt(a_max a_min)` at `w`. The model's own
post-step spread (`a_l / (1 + η² a_l²)`: the base gradients held constant) is computed beside it.

Example:
  >>> res = measure(load_config("experiments/elr_resnet.py", size="smoke"), seeds=(0,))  # doctest: +SKIP
  >>> res["crit_measured"] / res["crit_predicted"]   # [seeds, states]  # doctest: +SKIP

References:
  Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch Normalization
  During Early Training`, 2023 (arXiv:2306.00700).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normjax.errors import UserError
from normjax.figures import figure, save
from normjax.models.structure import main_path, scale_invariant_mask
from normjax.studies.elr.arguments import experiment_parser, int_list, positive_int
from normjax.studies.elr.measurement import measurement_for

JSON_NAME = "critical_lr.json"
SCOPES = ("all", "scale_invariant")
FIGURE_STEM = "critical_lr"
DEFAULT_LRS = tuple(float(x) for x in np.logspace(-3, 3, 97))  # 16 points a decade


def _grid(lrs: Sequence[float]) -> np.ndarray:
    g = np.asarray(lrs, np.float64)
    if g.ndim != 1 or g.size < 3 or not np.all(np.isfinite(g)) or np.any(g <= 0) or np.any(np.diff(g) <= 0):
        raise UserError(f"the LR grid {list(lrs)[:6]} is invalid; allowed: 3 or more increasing positive LRs")
    return g


def measure(
    cfg: dict,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    at: Sequence[int] = (0,),
    warm_lr: float | None = None,
    lrs: Sequence[float] = DEFAULT_LRS,
    scope: str = "all",
) -> dict:
    """Post-step spread against LR at states of a real network; measured and predicted critical LRs.

    Args:
      cfg: a full config (`normjax.config.load_config`); reads `model`, `data`, `train.batch_size`
        and (for `warm_lr=None`) `optim.lr`.
      seeds: init seeds (`train.seed` values).
      at: the states: after this many plain SGD steps (no momentum, no weight decay) at `warm_lr` on
        the run's first batches; 0 is the initialization.
      warm_lr: the LR of those steps (default `optim.lr`).
      lrs: the LR grid of the one measured step, increasing.
      scope: which parameters that step moves: `"all"` (as training does: BN scales and biases and
        the classifier too) or `"scale_invariant"` (only the kernels the derivation is about; the
        rest held, so that only their own step changes the gradients).

    Returns:
      A dict of numpy arrays and plain values: `lrs` `[K]`, `at`, `seeds`, `layers` (the main-path
      names), `a` `[S, T, L]` (`||g_l||/||w_l||` at each state), `spread_now` `[S, T]` (its
      max/min), `spread_measured` and `spread_model` `[S, T, K]` (post-step spreads),
      `crit_predicted` `[S, T]` (`1/sqrt(a_max a_min)`), `crit_measured` and `crit_model` `[S, T]`
      (grid LRs of the smallest measured / model post-step spread), and the setting (`model`,
      `depth`, `shortcut`, `dataset`, `batch_size`, `warm_lr`, `scope`).
    """
    from normjax.models import has_shortcuts, per_layer
    from normjax.training.loop import dataset_for

    grid = _grid(lrs)
    if scope not in SCOPES:
        raise UserError(f"--scope {scope!r} is unknown; allowed: {', '.join(SCOPES)}")
    at = tuple(int(t) for t in at)
    if not at or any(t < 0 for t in at) or list(at) != sorted(set(at)):
        raise UserError(f"--at {list(at)} is invalid; allowed: increasing step counts >= 0 (e.g. 0,10,100)")
    warm_lr = float(cfg["optim"]["lr"] if warm_lr is None else warm_lr)
    if not math.isfinite(warm_lr) or warm_lr <= 0:
        raise UserError(f"--warm-lr {warm_lr} is invalid; allowed: a finite LR > 0")
    ds = dataset_for(cfg)
    b = int(cfg["train"]["batch_size"])
    batches = at[-1] + 2
    if batches * b > ds.train_images.shape[0]:
        raise UserError(
            f"--at {at[-1]} needs {batches} batches of {b}, more than the {ds.train_images.shape[0]} "
            f"training examples of {ds.name!r}; allowed: fewer steps or a smaller train.batch_size"
        )
    m = measurement_for(cfg, ds, b, batches)
    main = main_path(m.layers)
    if main.sum() < 2:
        raise UserError(
            f"model {cfg['model']['name']!r} has {int(main.sum())} main-path scale-invariant layers; "
            "the spread needs two or more"
        )
    idx = np.nonzero(main)[0]
    rates = lambda g, w: jnp.sqrt(per_layer(g, m.layers)[idx] / per_layer(w, m.layers)[idx])  # noqa: E731
    grad = jax.grad(m.loss)

    @jax.jit
    def sgd(p, rest, x, y):
        return jax.tree.map(lambda w, g: w - warm_lr * g, p, grad(p, rest, x, y))

    @jax.jit
    def one_step_spreads(p, rest, x, y, x_next, y_next, etas):
        g = grad(p, rest, x, y)
        a = rates(g, p)

        def after(eta):
            p2 = jax.tree.map(lambda w, d, on: w - eta * d if on else w, p, g, moved)
            a2 = rates(grad(p2, rest, x_next, y_next), p2)
            return a2.max() / a2.min()

        model = lambda eta: (lambda f: f.max() / f.min())(a / (1 + (eta * a) ** 2))  # noqa: E731
        return a, jax.lax.map(after, etas), jax.vmap(model)(etas)

    moved = None  # the leaves the measured step moves, set from the first seed's params (traced once)
    etas = jnp.asarray(grid, jnp.float32)
    a_all, measured, modelled = [], [], []
    for seed in seeds:
        params, rest, key_data = m.init(int(seed))
        if moved is None:
            moved = jax.tree.map(lambda _: True, params) if scope == "all" else scale_invariant_mask(params, m.layers)
        order = np.asarray(m.order(jnp.asarray(key_data), ds.train_images.shape[0]))
        batch = lambda i: (m.inputs(ds.train_images, order[i]), ds.train_labels[order[i]])  # noqa: E731
        p, done, rows = params, 0, []
        for t in at:
            for i in range(done, t):
                p = sgd(p, rest, *batch(i))
            done = t
            rows.append(jax.device_get(one_step_spreads(p, rest, *batch(t), *batch(t + 1), etas)))
        a_all.append([r[0] for r in rows])
        measured.append([r[1] for r in rows])
        modelled.append([r[2] for r in rows])
    a = np.asarray(a_all, np.float64)
    spread_measured, spread_model = np.asarray(measured, np.float64), np.asarray(modelled, np.float64)
    pick = lambda s: grid[np.nanargmin(np.where(np.isfinite(s), s, np.nan), axis=-1)]  # noqa: E731
    return {
        "model": cfg["model"]["name"],
        "depth": int(cfg["model"]["depth"]),
        "shortcut": has_shortcuts(cfg["model"]),
        "dataset": ds.name,
        "batch_size": b,
        "warm_lr": warm_lr,
        "scope": scope,
        "seeds": [int(s) for s in seeds],
        "at": list(at),
        "layers": [m.layers[i].name for i in idx],
        "lrs": grid,
        "a": a,
        "spread_now": a.max(-1) / a.min(-1),
        "spread_measured": spread_measured,
        "spread_model": spread_model,
        "crit_predicted": 1.0 / np.sqrt(a.max(-1) * a.min(-1)),
        "crit_measured": pick(spread_measured),
        "crit_model": pick(spread_model),
    }


def _jsonable(res: dict) -> dict:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in res.items()}


def plot(results: list[dict], out: Path) -> list[Path]:
    """Figure `critical_lr`: post-step spread against LR (measured solid, model dashed), one panel per
    setting, one colour per state; the predicted critical LR dotted, the measured one as a marker."""
    from matplotlib import colormaps

    fig, axes = figure(1, len(results), size=(4.6 * len(results), 4.0), sharey=True)
    axes = axes[0]
    for ax, r in zip(axes, results):
        lrs = np.asarray(r["lrs"])
        for j, t in enumerate(r["at"]):
            c = colormaps["viridis"](0.85 * j / max(1, len(r["at"]) - 1))
            meas = np.exp(np.nanmean(np.log(np.asarray(r["spread_measured"])[:, j]), axis=0))
            ax.plot(lrs, meas, color=c, lw=1.3, label=f"after {t} steps")
            ax.plot(lrs, np.exp(np.mean(np.log(np.asarray(r["spread_model"])[:, j]), axis=0)), color=c, lw=0.9, ls="--")
            crit = np.exp(np.mean(np.log(np.asarray(r["crit_predicted"])[:, j])))
            ax.axvline(crit, color=c, ls=":", lw=1)
            best = np.exp(np.mean(np.log(np.asarray(r["crit_measured"])[:, j])))
            ax.plot(best, np.interp(np.log(best), np.log(lrs), meas), "v", color=c, ms=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LR η of the one step")
        kind = "residual" if r["shortcut"] else "plain"
        ax.set_title(f"{r['model']} {kind}, depth {r['depth']}, {r['dataset']}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("post-step spread max_l a'_l / min_l a'_l\n(main-path layers; geometric mean over seeds)")
    fig.suptitle(
        "Critical LR: solid measured, dashed model (constant base gradient)\n"
        "dotted: predicted 1/sqrt(a_max a_min); ▼: measured minimum",
        fontsize=9,
    )
    return save(fig, out, FIGURE_STEM)


def critical_lr_main(argv: list[str]) -> int:
    """`normjax critical-lr EXPERIMENT.py`: the post-step spread against LR, measured critical LR vs predicted.

    Args:
      argv: the arguments after `critical-lr`.

    Returns:
      The exit code (0); bad input raises `UserError`.

    Example:
      >>> critical_lr_main(["experiments/elr_resnet.py", "--size", "medium", "--set",  # doctest: +SKIP
      ...                   "model.shortcut=false", "--at", "0,10,100", "--out", "/tmp/crit"])
      0
    """
    from normjax.config import load_config

    p = experiment_parser(
        "critical-lr",
        critical_lr_main,
        "experiments/elr_resnet.py",
        "21,41 (default: the config's)",
        "runs/critical_lr-<config name>",
    )
    p.add_argument("--at", default="0", help="states: plain SGD steps before the measured step, e.g. 0,10,100")
    p.add_argument("--warm-lr", type=float, help="LR of those steps (default the config's optim.lr)")
    p.add_argument(
        "--scope",
        default="all",
        help="parameters the measured step moves: all (default, as in training) "
        "or scale_invariant (only the normalized kernels)",
    )
    args = p.parse_args(argv)
    seeds = tuple(range(positive_int("--seeds", args.seeds)))
    try:
        at = tuple(int(v) for v in args.at.split(","))
    except ValueError:
        raise UserError(
            f"--at {args.at!r} is invalid; allowed: comma-separated step counts >= 0 (e.g. 0,10,100)"
        ) from None
    cfg = load_config(args.config, size=args.size, overrides=args.overrides)
    depths = int_list("--depths", args.depths) if args.depths else (int(cfg["model"]["depth"]),)
    out = Path(args.out or os.path.join("runs", f"critical_lr-{Path(args.config).stem}"))
    results = []
    for depth in depths:
        c = load_config(args.config, size=args.size, overrides=[*args.overrides, f"model.depth={depth}"])
        res = measure(c, seeds=seeds, at=at, warm_lr=args.warm_lr, scope=args.scope)
        results.append(_jsonable(res))
        kind = "residual" if res["shortcut"] else "plain"
        for j, t in enumerate(res["at"]):
            ratio = res["crit_measured"][:, j] / res["crit_predicted"][:, j]
            print(
                f"{res['model']} {kind} depth {depth}, after {t} steps: predicted {np.mean(res['crit_predicted'][:, j]):.3g}, "
                f"measured {np.mean(res['crit_measured'][:, j]):.3g} (log10 ratio {np.mean(np.log10(ratio)):+.2f} "
                f"± {np.std(np.log10(ratio)):.2f} over {len(seeds)} seeds), spread now {np.mean(res['spread_now'][:, j]):.3g}"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(
        json.dumps(
            {"config": args.config, "size": args.size, "overrides": args.overrides, "results": results}, indent=1
        )
    )
    print(f"json: {(out / JSON_NAME).absolute()}")
    for path in plot(results, out):
        print(f"figure: {path.absolute()}")
    return 0
