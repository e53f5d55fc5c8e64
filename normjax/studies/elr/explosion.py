"""Gradient explosion at init: per-layer weight-gradient norms of BN networks over depth.

In a plain (no skip) BN-ReLU stack at initialization the squared weight-gradient norm grows by a
constant factor per layer going from the output toward the input; mean-field theory gives
`π/(π−1) ≈ 1.467` for wide layers and large batches, slightly less at finite width and batch
(docs/science.md#gradient-explosion). Skip connections tame the growth. This module measures

  `G_l = ||∇_{w_l} L||²`

for every weight layer `l` of a freshly initialized model (cross-entropy on real training batches,
BatchNorm in train mode, i.e. with batch statistics), fits the growth factor per layer, and runs
the measurement over a grid of depths, plain against residual.

Conventions:
  * seed `s` initializes the model exactly as a training run with `train.seed=s` does, and its
    batches are the first `batches` batches that run would see (same data order, no augmentation;
    inputs normalized with the dataset's per-channel mean and std);
  * computation in float32 whatever `train.dtype` says, BN statistics over the whole batch;
  * the fit (`fit_growth`) uses the geometric mean over seeds × batches and, by default
    (`fit_mask`), the scale-invariant hidden layers without the boundary ones: the first layer
    (input layer or stem), the last hidden layer (next to the classifier) and shortcut
    projections (which sit beside the main path). The classifier is not scale-invariant and is
    never fitted.

Example:
  >>> from normjax.config import load_config  # doctest: +SKIP
  >>> cfg = load_config("experiments/explode_depth.py", size="smoke", overrides=["model.depth=12"])  # doctest: +SKIP
  >>> res = measure_init_gradients(cfg, seeds=(0,), batches=2)  # doctest: +SKIP
  >>> res["grad_sq"].shape, round(res["factor"], 1)      # [seeds, batches, layers]  # doctest: +SKIP
  ((1, 2, 13), 1.4)

References:
  Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz, "A Mean Field Theory of Batch
  Normalization", 2019 (arXiv:1902.08129).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax.errors import UserError, missing_extra

try:
    from flax import nnx
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.models.structure import LayerInfo, is_projection, main_path
from normjax.studies.elr.arguments import experiment_parser, int_list, positive_int
from normjax.studies.elr.measurement import measurement_for

MEAN_FIELD_FACTOR = math.pi / (math.pi - 1.0)
"""Mean-field growth per layer of the squared weight-gradient norm of a plain BN-ReLU net."""

# Default depth grids of `explode` per model and size (resnet: 6n+2).
DEFAULT_DEPTHS: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {
        "smoke": (4, 8, 16, 32),
        "medium": (10, 20, 40, 80),
        "full": (10, 20, 50, 100),
        "mnist1d": (10, 20, 40, 80),
    },
    "resnet": {
        "smoke": (8, 14, 20),
        "medium": (20, 32, 56),
        "full": (20, 32, 56, 110),
        "mnist1d": (8, 20, 32, 56),
        "fmnist_conv": (20, 56),
    },
    "plain_cnn": {"smoke": (6, 9, 12), "full": (10, 20, 50), "fmnist_conv": (6, 9, 12)},
}

JSON_NAME = "explosion.json"
FIGURE_STEMS = ("explosion_layers", "explosion_factor")


# ---- the fit ---------------------------------------------------------------------------------


def fit_mask(layers: Sequence[LayerInfo]) -> np.ndarray:
    """Which layers `fit_growth` fits by default: the scale-invariant hidden layers minus the boundary.

    Excluded: layers that are not scale-invariant (the classifier), shortcut projections, the
    first layer (input layer or stem: its input is the data, not a normalized activation) and the
    last hidden layer (its gradient comes straight from the classifier).

    Args:
      layers: the model's `layers()`, in depth order.

    Returns:
      A bool array `[len(layers)]`.

    Example:
      >>> from normjax.models import MLP
      >>> fit_mask(MLP(depth=4, width=8, in_features=4, num_classes=2, rngs=nnx.Rngs(0)).layers())
      array([False,  True,  True, False, False])
    """
    main = main_path(layers)
    depths = np.array([l.depth for l in layers])
    if not main.any():
        return main
    lo, hi = depths[main].min(), depths[main].max()
    return main & (depths > lo) & (depths < hi)


def fit_growth(grad_sq: Any, depths: Any, mask: Any) -> tuple[float, np.ndarray]:
    """Growth factor per layer of the squared gradient norm, from the output toward the input.

    With `G_l` the geometric mean of `grad_sq[..., l]` over all leading axes (seeds, batches), a
    least-squares line `log G_l ≈ a + b · depth_l` over the layers in `mask` gives

      `factor = exp(−b)`,

    so `factor > 1` means the squared norm grows toward the input, by `factor` per unit of depth.
    Layers sharing a depth are averaged (in log) into one point.

    Args:
      grad_sq: positive array `[..., L]` of squared gradient norms (e.g. `[seeds, batches, L]`).
      depths: array `[L]` of layer depths (`LayerInfo.depth`).
      mask: bool array `[L]`, the layers to fit (see `fit_mask`); at least two distinct depths.

    Returns:
      `(factor, per_layer_ratios)`: the fitted factor, and for each pair of consecutive fitted
      depths `d < d'` the measured per-unit-depth ratio `(G_d / G_d')^(1/(d'−d))`, in depth order.

    Example:
      >>> g = 1.5 ** -np.arange(6.0)                 # grows by 1.5 per layer toward the input
      >>> round(fit_growth(g, np.arange(6), np.ones(6, bool))[0], 6)
      1.5

    References:
      Yang et al., "A Mean Field Theory of Batch Normalization", 2019 (arXiv:1902.08129).
    """
    g = np.asarray(grad_sq, np.float64)
    depths = np.asarray(depths)
    mask = np.asarray(mask, bool)
    if g.shape[-1] != depths.shape[0] or mask.shape != depths.shape:
        raise ValueError(f"grad_sq {g.shape}, depths {depths.shape} and mask {mask.shape} disagree on the layer count")
    log_g = np.log(g.reshape(-1, g.shape[-1])).mean(0)
    xs = np.unique(depths[mask])
    if xs.size < 2:
        raise ValueError(f"fit_growth needs layers at two or more depths in mask; got depths {xs.tolist()}")
    ys = np.array([log_g[mask & (depths == x)].mean() for x in xs])
    slope = np.polyfit(xs.astype(np.float64), ys, 1)[0]
    ratios = np.exp(-np.diff(ys) / np.diff(xs))
    return float(np.exp(-slope)), ratios


# ---- the measurement -------------------------------------------------------------------------


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name}={value!r} is invalid; allowed: an integer >= 1")
    return int(value)


def measure_init_gradients(
    cfg: dict, *, seeds: Sequence[int] = (0, 1, 2), batches: int = 4, batch_size: int | None = None
) -> dict:
    """Per-layer squared weight-gradient norms `||∇_{w_l} L||²` of a model at initialization.

    For each seed, the model `cfg` describes is initialized as a training run with that seed
    would be, and the gradient of the mean cross-entropy `L` (BatchNorm in train mode) is taken
    on each of the run's first `batches` batches. One jitted function computes all seeds
    (vmapped) and batches.

    Args:
      cfg: a full config (`normjax.config.load_config`); reads `model`, `data` and
        `train.batch_size`.
      seeds: the init seeds (`train.seed` values).
      batches: batches per seed.
      batch_size: examples per batch; `None` takes `train.batch_size`.

    Returns:
      A dict of numpy arrays and plain values: `grad_sq` `[seeds, batches, L]`, `w_sq`
      `[seeds, L]` (`||w_l||²`), `layers` (names), `depths` `[L]`, `scale_invariant` `[L]`,
      `fit_mask` `[L]` (`fit_mask`), `factor` (`fit_growth` over all seeds and batches),
      `factor_per_seed` `[seeds]`, `ratios` (per-layer ratios of `fit_growth`), `factor_base`
      (the same fit of the squared base gradient `c_l² = ||g_l||² ||w_l||²`, which does not
      change with a layer's width through `||w_l||`), and `model`, `depth`, `shortcut` (resnet:
      whether it has shortcuts; mlp: True for the residual MLP, `None` for the plain one; plain_cnn:
      `None`), `seeds`, `batches`, `batch_size`, `dataset`.

    Example:
      >>> from normjax.config import load_config  # doctest: +SKIP
      >>> cfg = load_config("experiments/explode_depth.py", overrides=["model.depth=12"])  # doctest: +SKIP
      >>> res = measure_init_gradients(cfg, seeds=(0, 1), batches=2)  # doctest: +SKIP
      >>> res["grad_sq"].shape  # doctest: +SKIP
      (2, 2, 13)

    References:
      Yang et al., "A Mean Field Theory of Batch Normalization", 2019 (arXiv:1902.08129).
    """
    from normjax.models import has_shortcuts
    from normjax.training.loop import dataset_for

    seeds = tuple(seeds)
    if not seeds:
        raise UserError("seeds is empty; allowed: one or more integer seeds")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise UserError(f"seed {s!r} is invalid; allowed: integers >= 0")
    batches = _check_positive("batches", batches)
    b = _check_positive("batch_size", cfg["train"]["batch_size"] if batch_size is None else batch_size)
    ds = dataset_for(cfg)
    n = int(ds.train_images.shape[0])
    if batches * b > n:
        raise UserError(
            f"batches={batches} x batch_size={b} = {batches * b} exceeds the {n} training examples "
            f"of {ds.name!r}; allowed: batches x batch_size <= {n}"
        )
    m = measurement_for(cfg, ds, b, batches)
    params, rest, key_data = jax.tree.map(lambda *xs: jnp.stack(xs), *[m.init(s) for s in seeds])
    grad_sq, w_sq = jax.device_get(m.grads(params, rest, key_data, ds.train_images, ds.train_labels))
    layers = m.layers
    grad_sq, w_sq = np.asarray(grad_sq, np.float64), np.asarray(w_sq, np.float64)

    depths = np.array([l.depth for l in layers])
    mask = fit_mask(layers)
    factor, ratios = fit_growth(grad_sq, depths, mask)
    name, residual = cfg["model"]["name"], has_shortcuts(cfg["model"])
    return {
        "model": name,
        "depth": int(cfg["model"]["depth"]),
        "shortcut": residual if name == "resnet" or residual else None,  # the plain MLP: None, family "mlp"
        "dataset": ds.name,
        "seeds": list(seeds),
        "batches": batches,
        "batch_size": b,
        "layers": [l.name for l in layers],
        "depths": depths,
        "scale_invariant": np.array([l.scale_invariant for l in layers]),
        "projection": np.array([is_projection(l) for l in layers]),
        "fit_mask": mask,
        "grad_sq": grad_sq,
        "w_sq": w_sq,
        "factor": factor,
        "ratios": ratios,
        "factor_per_seed": np.array([fit_growth(g, depths, mask)[0] for g in grad_sq]),
        "factor_base": fit_growth(grad_sq * w_sq[:, None, :], depths, mask)[0],
    }


# ---- the depth grid --------------------------------------------------------------------------


def _family(model: str, shortcut: bool | None) -> str:
    """Label of a (model, shortcut) family for tables, JSON and legends."""
    if shortcut is None:
        return model
    return f"{model} {'residual' if shortcut else 'plain'}"


_TITLES = {
    "mlp": "BN-ReLU MLP (plain)",
    "mlp residual": "BN-ReLU MLP with shortcuts (residual)",
    "plain_cnn": "plain BN-ReLU CNN",
    "resnet plain": "ResNet without shortcuts (plain)",
    "resnet residual": "ResNet with shortcuts (residual)",
}


def _grid_points(cfg: dict, depths: Sequence[int] | None, shortcuts: Sequence[bool], size: str) -> list[dict]:
    """The validated configs of one experiment's grid (depth × shortcut), checked before any run."""
    from normjax.config import validate

    name = cfg["model"]["name"]
    grid = DEFAULT_DEPTHS.get(name, {}).get(size, ()) if depths is None else tuple(depths)
    if not grid:
        raise UserError(f"no depths given for model.name={name!r}; pass depths (e.g. --depths 4,8,16)")
    points = []
    for depth in grid:
        for shortcut in tuple(shortcuts) if name == "resnet" else (None,):
            c = copy.deepcopy(cfg)
            c["model"]["depth"] = int(depth)
            if shortcut is not None:
                c["model"]["shortcut"] = bool(shortcut)
            validate(c)
            if _fit_depths(c) < 2:
                raise UserError(
                    f"model.depth={depth} is too shallow for model.name={name!r}: the growth fit needs "
                    "hidden layers at 2+ depths between the first and the last (mlp: depth >= 4)"
                )
            points.append(c)
    return points


def _fit_depths(cfg: dict) -> int:
    """Distinct depths among the layers `fit_mask` keeps, from the model's structure alone."""
    from normjax.models import build_model

    shape = (8, 8, 1)  # the layer structure does not depend on the input shape
    layers = nnx.eval_shape(
        lambda: build_model(cfg["model"], num_classes=2, image_shape=shape, rngs=nnx.Rngs(0))
    ).layers()
    mask = fit_mask(layers)
    return int(np.unique(np.array([l.depth for l in layers])[mask]).size)


def _record(res: dict) -> dict:
    """The JSON record of one measurement (per-layer means, the fits)."""
    g = res["grad_sq"]
    return {
        "family": _family(res["model"], res["shortcut"]),
        "model": res["model"],
        "depth": res["depth"],
        "shortcut": res["shortcut"],
        "dataset": res["dataset"],
        "seeds": res["seeds"],
        "batches": res["batches"],
        "batch_size": res["batch_size"],
        "layers": res["layers"],
        "layer_depths": res["depths"].tolist(),
        "scale_invariant": res["scale_invariant"].tolist(),
        "projection": res["projection"].tolist(),
        "fit_mask": res["fit_mask"].tolist(),
        "grad_sq_mean": g.mean((0, 1)).tolist(),
        "grad_sq_geomean": np.exp(np.log(g).mean((0, 1))).tolist(),
        "w_sq_mean": res["w_sq"].mean(0).tolist(),
        "factor": res["factor"],
        "factor_per_seed": res["factor_per_seed"].tolist(),
        "factor_seed_std": float(res["factor_per_seed"].std(ddof=1)) if len(res["seeds"]) > 1 else 0.0,
        "factor_base": res["factor_base"],
        "ratios": res["ratios"].tolist(),
    }


def explode(
    configs: str | os.PathLike | dict | Sequence[dict],
    *,
    depths: Sequence[int] | None = None,
    shortcuts: Sequence[bool] = (False, True),
    seeds: Sequence[int] = (0, 1, 2),
    batches: int = 4,
    batch_size: int | None = None,
    out_dir: str | os.PathLike = "runs/explode",
    size: str = "smoke",
    overrides: Sequence[str] = (),
    log=print,
) -> dict:
    """Measure the gradient explosion at init over a depth grid, plain against residual.

    Each config is measured (`measure_init_gradients`) at every depth of the grid and, for
    `resnet`, with `model.shortcut` set to each of `shortcuts`; other models are measured once
    per depth, an mlp with the config's own `model.shortcut` (true: the residual MLP). Writes
    `OUT/explosion.json` and two figures, each as PNG and PDF: `explosion_layers` (`||∇_{w_l} L||²`
    against layer depth, log scale, one panel per family) and `explosion_factor` (the fitted
    growth factor against network depth, with the mean-field value `π/(π−1)`).

    Args:
      configs: an experiment file (loaded with `size` and `overrides`), a config, or a list of
        configs (as from `normjax.config.load_config`).
      depths: values of `model.depth`; `None` takes `DEFAULT_DEPTHS[model.name][size]`.
      shortcuts: `model.shortcut` values measured for `resnet`.
      seeds: init seeds per point.
      batches: batches per seed.
      batch_size: examples per batch; `None` takes each config's `train.batch_size`.
      out_dir: directory for the JSON and the figures (created).
      size: `smoke` or `full`: the experiment file's size and the default depth grid.
      overrides: `key=value` overrides applied when `configs` is a file.
      log: called with one line per finished point (`None`: silent).

    Returns:
      `{"records": [...], "json": Path, "figures": [Path, ...]}`, with the records as written to
      the JSON (per point: per-layer mean and geometric-mean `grad_sq`, `factor`, its per-seed
      values and std, `factor_base`, `ratios`).

    Example:
      >>> out = explode("experiments/explode_depth.py", depths=(4, 8), seeds=(0,),  # doctest: +SKIP
      ...               out_dir="/tmp/ex", log=None)
      >>> ([(r["depth"], r["factor"] > 1) for r in out["records"]],  # doctest: +SKIP
      ...  [p.name for p in out["figures"]])
      ([(4, True), (8, True)], ['explosion_layers.png', 'explosion_layers.pdf', 'explosion_factor.png', 'explosion_factor.pdf'])

    References:
      Yang et al., "A Mean Field Theory of Batch Normalization", 2019 (arXiv:1902.08129).
    """
    from normjax.config import DEFAULTS, SIZES, merge, parse_override, read_experiment

    if size not in SIZES:
        raise UserError(f"size {size!r} is unknown; allowed: {', '.join(SIZES)}")
    if isinstance(configs, (str, os.PathLike)):
        source = str(configs)
        # As `load_config`, validated per grid point: the file's own depth may not suit an overridden model.
        cfg = merge(DEFAULTS, read_experiment(configs, size))
        for text in overrides:
            cfg = merge(cfg, parse_override(text))
        cfgs = [cfg]
    else:
        source = None
        cfgs = [configs] if isinstance(configs, dict) else list(configs)
    points = [p for cfg in cfgs for p in _grid_points(cfg, depths, shortcuts, size)]

    records = []
    for point in points:
        rec = _record(measure_init_gradients(point, seeds=seeds, batches=batches, batch_size=batch_size))
        records.append(rec)
        if log is not None:
            log(f"  {rec['family']:<16} depth {rec['depth']:>4}: growth {rec['factor']:.3f} per layer")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    meta = {
        "config": source,
        "size": size,
        "overrides": list(overrides),
        "mean_field_factor": MEAN_FIELD_FACTOR,
        "quantity": "grad_sq = ||grad_{w_l} L||^2 at init, cross-entropy, BN in train mode",
        "fit": "factor = exp(-slope) of log(geometric mean of grad_sq over seeds x batches) against layer depth, "
        "over the scale-invariant hidden layers without the first layer, the last hidden layer "
        "and shortcut projections (fit_mask)",
        "records": records,
    }
    json_path.write_text(json.dumps(meta, indent=1))
    figures = plot_layers(records, out) + plot_factors(records, out)
    return {"records": records, "json": json_path, "figures": figures}


# ---- figures ---------------------------------------------------------------------------------


def _new_figure(ncols: int, width: float = 5.0, height: float = 3.9):
    # The object-oriented API with an Agg canvas: no display, and no change to pyplot's backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # reproducible PDF bytes across reruns
    return paths


def _families(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["family"] for r in records))


def _setup(records: list[dict]) -> str:
    r = records[0]
    return (
        f"{r['dataset']}, batch {r['batch_size']}, geometric mean over {len(r['seeds'])} seeds × {r['batches']} batches"
    )


def plot_layers(records: list[dict], out: str | os.PathLike) -> list[Path]:
    """Figure `explosion_layers`: per-layer `||∇_{w_l} L||²` (log) against layer depth.

    One panel per family (plain MLP, plain or residual ResNet, ...), one line per network depth
    over its scale-invariant layers (open markers: boundary layers left out of the fit), the fit
    dashed, shortcut projections as crosses, and the mean-field slope `π/(π−1)` per layer as a
    dotted reference.

    Args:
      records: the records of `explode`.
      out: the directory to write to.

    Returns:
      The PNG and PDF paths.
    """
    from matplotlib import colormaps

    families = _families(records)
    fig = _new_figure(len(families))
    axes = fig.subplots(1, len(families), squeeze=False, sharey=True)[0]
    all_depths = sorted({r["depth"] for r in records})
    cmap = colormaps["viridis"]
    color = {d: cmap(0.85 * i / max(1, len(all_depths) - 1)) for i, d in enumerate(all_depths)}
    for ax, fam in zip(axes, families):
        deepest = None
        for r in sorted((r for r in records if r["family"] == fam), key=lambda r: r["depth"]):
            d = np.array(r["layer_depths"], float)
            g = np.array(r["grad_sq_geomean"])
            proj, fit = np.array(r["projection"]), np.array(r["fit_mask"])
            main = np.array(r["scale_invariant"]) & ~proj
            order = np.argsort(d[main], kind="stable")
            ax.plot(
                d[main][order],
                g[main][order],
                color=color[r["depth"]],
                lw=1.2,
                label=f"depth {r['depth']} (×{r['factor']:.3f}/layer)",
            )
            ax.plot(d[fit], g[fit], "o", ms=3, color=color[r["depth"]])
            ax.plot(d[main & ~fit], g[main & ~fit], "o", ms=4, mfc="none", color=color[r["depth"]])
            ax.plot(d[proj], g[proj], "x", ms=4, color=color[r["depth"]])
            xs = np.array([d[fit].min(), d[fit].max()])
            slope, icpt = np.polyfit(d[fit], np.log(g[fit]), 1)
            ax.plot(xs, np.exp(icpt + slope * xs), "--", lw=0.9, color=color[r["depth"]])
            deepest = (xs, np.exp(icpt + slope * xs[1]))
        if deepest is not None:
            xs, g_end = deepest
            ax.plot(
                xs,
                g_end * MEAN_FIELD_FACTOR ** (xs[1] - xs),
                ":",
                color="black",
                lw=1.2,
                label="mean field: ×π/(π−1) per layer",
            )
        ax.set_yscale("log")
        ax.set_title(_TITLES.get(fam, fam), fontsize=10)
        ax.set_xlabel("layer depth l (0 = first layer; input → output)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(r"squared weight-gradient norm $\|\nabla_{w_l} L\|^2$")
    proj = "; ×: shortcut projections" if any(any(r["projection"]) for r in records) else ""
    fig.suptitle(
        f"Gradient explosion at init\n{_setup(records)}\nfilled markers: fitted layers, open: boundary "
        f"layers, dashed: fit{proj}",
        fontsize=9,
    )
    return _save(fig, Path(out), FIGURE_STEMS[0])


def plot_factors(records: list[dict], out: str | os.PathLike) -> list[Path]:
    """Figure `explosion_factor`: fitted growth factor per layer against network depth.

    One line per family, error bars ±1 std over seeds (each seed fitted on its own), a dashed
    line at the mean-field value `π/(π−1) ≈ 1.467` and a dotted one at 1 (no growth).

    Args:
      records: the records of `explode`.
      out: the directory to write to.

    Returns:
      The PNG and PDF paths.

    References:
      Yang et al., "A Mean Field Theory of Batch Normalization", 2019 (arXiv:1902.08129).
    """
    fig = _new_figure(1, width=6.4, height=4.8)
    ax = fig.subplots()
    for i, fam in enumerate(_families(records)):
        rs = sorted((r for r in records if r["family"] == fam), key=lambda r: r["depth"])
        ax.errorbar(
            [r["depth"] for r in rs],
            [r["factor"] for r in rs],
            yerr=[r["factor_seed_std"] for r in rs],
            marker="o",
            capsize=3,
            color=f"C{i % 10}",
            label=_TITLES.get(fam, fam),
        )
    ax.axhline(
        MEAN_FIELD_FACTOR,
        ls="--",
        color="black",
        lw=1,
        label=f"mean field π/(π−1) ≈ {MEAN_FIELD_FACTOR:.3f} (Yang et al. 2019)",
    )
    ax.axhline(1.0, ls=":", color="gray", lw=1, label="no growth")
    depths = sorted({r["depth"] for r in records})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("network depth (model.depth)")
    ax.set_ylabel(r"growth of $\|\nabla_{w_l} L\|^2$ per layer toward the input")
    ax.set_title(f"Fitted growth factor at init\n{_setup(records)}\nbars: ±1 std over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    return _save(fig, Path(out), FIGURE_STEMS[1])


# ---- command line ----------------------------------------------------------------------------


def explode_main(argv: list[str]) -> int:
    """`normjax explode EXPERIMENT.py`: the gradient explosion at init over depth; prints a table.

    Args:
      argv: the arguments after `explode`.

    Returns:
      The exit code (0); bad input raises `UserError`.

    Example:
      >>> explode_main(["experiments/explode_depth.py", "--depths", "4,8",  # doctest: +SKIP
      ...               "--out", "/tmp/explode"])
      gradient explosion at init: ...
      0
    """
    p = experiment_parser(
        "explode",
        explode_main,
        "experiments/explode_depth.py",
        "4,8,16 (default: by model and size)",
        "runs/<config name>",
    )
    p.add_argument("--batches", default="4", help="batches per seed, default 4")
    args = p.parse_args(argv)
    depths = int_list("--depths", args.depths) if args.depths is not None else None
    seeds = tuple(range(positive_int("--seeds", args.seeds)))
    batches = positive_int("--batches", args.batches)
    out = Path(args.out or os.path.join("runs", Path(args.config).stem))
    print(f"gradient explosion at init: {args.config} ({args.size}), {len(seeds)} seeds x {batches} batches")
    res = explode(
        args.config,
        depths=depths,
        seeds=seeds,
        batches=batches,
        out_dir=out,
        size=args.size,
        overrides=args.overrides,
        log=None,
    )
    print(f"{'model':<10} {'depth':>5} {'shortcut':>8} {'growth/layer':>12} {'± seeds':>8} {'base c²':>8}")
    for r in res["records"]:
        sc = "-" if r["shortcut"] is None else str(r["shortcut"])
        print(
            f"{r['model']:<10} {r['depth']:>5} {sc:>8} {r['factor']:>12.3f} {r['factor_seed_std']:>8.3f} "
            f"{r['factor_base']:>8.3f}"
        )
    print(f"mean field (plain, wide): {MEAN_FIELD_FACTOR:.3f}")
    print(f"json: {res['json'].absolute()}")
    for path in res["figures"]:
        print(f"figure: {path.absolute()}")
    return 0
