"""In-step metric hooks: functions of (params, grads, updates, optimizer state) computed inside
the jitted train step, only on the steps the run logs (`log.metrics` names them).

A hook returns a dict of arrays; per-layer vectors follow the model's layer order
(`layers.json` in the run directory names the entries). A hook may also name a `summary`
function of the run's logged rows whose values go into `summary.json` at the end of the run.
Studies add hooks with `register_metric`.

Example:
  >>> from normjax.models.structure import LayerInfo, per_layer
  >>> @register_metric("update_norms")
  ... def update_norms(info: StepInfo) -> dict:
  ...     return {"u_norm": jnp.sqrt(per_layer(info.updates, info.layers))}
  >>> layers = [LayerInfo("fc0", 0, ("fc0", "kernel"), None, True)]
  >>> tree = {"fc0": {"kernel": jnp.full((2, 2), 0.5)}}
  >>> compute(("update_norms",), StepInfo(tree, tree, tree, None, layers))
  {'u_norm': Array([1.], dtype=float32)}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normjax import transforms
from normjax.analysis import apl as apl_lib
from normjax.analysis import graph as graph_lib
from normjax.errors import UserError
from normjax.models.structure import LayerInfo, get_path, main_path, per_layer_sums


class StepInfo(NamedTuple):
    """What a hook sees of one step (w_{t+1} = w_t + updates).

    Attributes:
      params: the parameters the gradient was taken at (w_t), a nested dict.
      grads: the gradient of the batch loss at w_t (no weight-decay term).
      updates: the step taken, w_{t+1} - w_t (zero where the step was held on divergence).
      opt_state: the optimizer state after the update.
      layers: the model's weight layers in depth order (`normjax.models.structure.LayerInfo`).
      lr: the global LR applied at this step (None: the optimizer has none).
      graph: the model's graph of nonlinearities (`normjax.analysis.graph.Graph`).
      prelu_tolerance: the run's `optim.prelu_tolerance` (traced where the optimizer injects it):
        a free PReLU slope within it of 1 counts as linear, the rule of `normjax apl`, `fold` and
        the hard-linearized evaluation.
    """

    params: Any
    grads: Any
    updates: Any
    opt_state: Any
    layers: list[LayerInfo]
    lr: jax.Array | None = None
    graph: Any = None
    prelu_tolerance: jax.Array | float = 0.01


Hook = Callable[[StepInfo], dict[str, jax.Array]]
Summary = Callable[[list[dict], dict], dict[str, float]]
METRICS: dict[str, Hook] = {}
SUMMARIES: dict[str, Summary] = {}


def register_metric(name: str, summary: Summary | None = None):
    """Decorator: make a hook available as `log.metrics=[..., name]`.

    Args:
      name: the name configs use.
      summary: optional `fn(rows, cfg) -> dict` over the run's logged rows (dicts as in
        `metrics.jsonl`), whose values are added to `summary.json` when the run ends.
    """

    def wrap(fn: Hook) -> Hook:
        METRICS[name] = fn
        if summary is not None:
            SUMMARIES[name] = summary
        return fn

    return wrap


@register_metric("layer_norms")
def layer_norms(info: StepInfo) -> dict[str, jax.Array]:
    """Per-layer ||w_l|| and ||g_l|| (kernels), and the global norms big_vision logs."""
    w2, g2, u2 = per_layer_sums(
        (info.params, info.grads, info.updates), info.layers, lambda w, g, u: (w * w, g * g, u * u)
    )
    kernels = {l.path for l in info.layers}  # the global norms add the small non-kernel leaves

    def total(layer_sq: jax.Array, tree: Any) -> jax.Array:
        rest = [
            x
            for p, x in jax.tree_util.tree_leaves_with_path(tree)
            if tuple(str(getattr(k, "key", k)) for k in p) not in kernels
        ]
        return jnp.sqrt(jnp.sum(layer_sq) + sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in rest))

    return {
        "w_norm": jnp.sqrt(w2),
        "g_norm": jnp.sqrt(g2),
        "l2_params": total(w2, info.params),
        "l2_grads": total(g2, info.grads),
        "l2_updates": total(u2, info.updates),
    }


def layer_lr(info: StepInfo) -> jax.Array:
    """The LR applied to each layer at this step, `[len(layers)]`: the global LR times the factor a
    `scale_by_uniform_elr` in the chain gave the layer (1 for layers it does not scale)."""
    lr = jnp.ones((), jnp.float32) if info.lr is None else jnp.asarray(info.lr, jnp.float32)
    factor = jnp.ones(len(info.layers), jnp.float32)
    is_state = lambda x: isinstance(x, transforms.ScaleByUniformELRState)  # noqa: E731
    for s in [x for x in jax.tree.leaves(info.opt_state, is_leaf=is_state) if is_state(x)]:
        entries = []
        for l in info.layers:
            try:
                v = get_path(s.layer_scale, l.path)
            except (KeyError, TypeError):
                v = None
            if v is None or isinstance(v, optax.MaskedNode):
                entries.append(jnp.ones((), jnp.float32))
            else:
                entries.append(v if l.index is None else v[l.index])
        factor = factor * jnp.stack(entries).astype(jnp.float32)
    return lr * factor


def _elr_summary(rows: list[dict], cfg: dict) -> dict[str, float]:
    early = cfg["log"]["dense_steps"]
    out = {}
    for layers in SPREAD_LAYERS:
        key, suffix = spread_key(layers), "" if layers == "all" else f"_{layers}"
        out |= {
            f"elr_log_spread{suffix}_early": mean_log_spread(rows, early, key),
            f"elr_log_spread{suffix}": mean_log_spread(rows, key=key),
        }
    return out


# Which layers a spread is taken over: every scale-invariant layer (the default everywhere), or the
# main path only (shortcut projections left out, which sit beside it with gradients of their own).
SPREAD_LAYERS = ("all", "main")


def spread_key(layers: str) -> str:
    """The `metrics.jsonl` key of the spread over `layers` ("all": `elr_spread`, "main": `elr_spread_main`)."""
    if layers not in SPREAD_LAYERS:
        raise UserError(f"spread layers {layers!r} is unknown; allowed: {', '.join(SPREAD_LAYERS)}")
    return "elr_spread" if layers == "all" else f"elr_spread_{layers}"


def mean_log_spread(rows: Iterable[dict], before_step: int | None = None, key: str = "elr_spread") -> float:
    """Run-level mean of log10 spread over logged rows, skipping non-finite values.

    Args:
      rows: `metrics.jsonl` rows (dicts with `step` and `key`; values may be "nan"/"inf").
      before_step: if given, only rows with `step < before_step` count (the early window).
      key: the spread's key, `elr_spread` (all scale-invariant layers) or `elr_spread_main`.

    Returns:
      The mean of log10 spread, or NaN when no row has a finite positive spread.

    Example:
      >>> mean_log_spread([{"step": 0, "elr_spread": 100.0}, {"step": 1, "elr_spread": 10.0}])
      1.5
    """
    vals = []
    for r in rows:
        v = r.get(key)
        if v is None or (before_step is not None and r["step"] >= before_step):
            continue
        v = float(v)
        if math.isfinite(v) and v > 0:
            vals.append(math.log10(v))
    return float(np.mean(vals)) if vals else float("nan")


@register_metric("elr", summary=_elr_summary)
def elr(info: StepInfo) -> dict[str, jax.Array]:
    r"""Per-layer effective learning rates and what they are made of.

    Per layer (`layers.json` order), with :math:`\eta_l` the LR applied to the layer (`layer_lr`):
    `w_norm` :math:`\|w_l\|`, `g_norm` :math:`\|g_l\|`, `base_grad` :math:`c_l = \|g_l\|\|w_l\|`,
    `layer_lr` :math:`\eta_l`, `elr` (relative/angular definition) :math:`E_l = \eta_l\|g_l\|/\|w_l\|`,
    `elr_classic` :math:`\eta_l/\|w_l\|^2`, `rel_step` :math:`\|\Delta w_l\|/\|w_l\|` (the actual
    step, momentum and weight decay included), `cos_gw` :math:`\cos(g_l, w_l)` (0 for a
    scale-invariant layer). Over the scale-invariant layers: `elr_spread` :math:`\max_l E_l/\min_l E_l`
    and `elr_log_std` :math:`\mathrm{std}_l \log_{10} E_l`; the same over the main path only (shortcut
    projections left out): `elr_spread_main`, `elr_log_std_main` (equal to the first two in a model
    without projections). The run's summary gets the mean of :math:`\log_{10}` spread over the dense
    early window (`elr_log_spread_early`, `elr_log_spread_main_early`) and the whole run
    (`elr_log_spread`, `elr_log_spread_main`). Figures and the model comparison use all layers
    unless told `--layers main`.

    References:
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700);
      van Laarhoven, `L2 Regularization versus Batch and Weight Normalization`, 2017
      (arXiv:1706.05350).
    """
    layers = info.layers
    w2, g2, gw, d2 = per_layer_sums(
        (info.params, info.grads, info.updates), layers, lambda w, g, d: (w * w, g * g, g * w, d * d)
    )
    w, g, lr = jnp.sqrt(w2), jnp.sqrt(g2), layer_lr(info)
    e = lr * g / w
    si = np.array([l.scale_invariant for l in layers])
    out = {
        "w_norm": w,
        "g_norm": g,
        "base_grad": g * w,
        "layer_lr": lr,
        "elr": e,
        "elr_classic": lr / w2,
        "rel_step": jnp.sqrt(d2) / w,
        "cos_gw": gw / (g * w),
    }
    for suffix, mask in (("", si), ("_main", main_path(layers))):
        if mask.any():
            e_m = e[np.nonzero(mask)[0]]
            out |= {f"elr_spread{suffix}": jnp.max(e_m) / jnp.min(e_m), f"elr_log_std{suffix}": jnp.std(jnp.log10(e_m))}
    return out


def _apl_summary(rows: list[dict], cfg: dict) -> dict[str, float]:
    last = rows[-1] if rows else {}
    keys = ("apl", "apl_unnormalized", "nonlinear_units", "nonlinear_fraction", "effective_width")
    return {k: float(last[k]) if k in last else float("nan") for k in keys}


def _frozen(opt_state: Any) -> Any:
    """The `frozen` mask tree of the sparsity prior or controller in `opt_state` (None: neither)."""
    kinds = (transforms.PReLUPriorState, transforms.PReLUControllerState)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds)) if isinstance(x, kinds)]
    return found[0].frozen if found else None


@register_metric("apl", summary=_apl_summary)
def apl(info: StepInfo) -> dict[str, jax.Array]:
    """Nonlinear units and average path length of the slopes after this step (w_{t+1}).

    Per hidden node of the model's graph (`graph.json` in the run directory names them):
    `nl_count`, the number of nonlinear channels, and `nl_fraction`. Under the sparsity prior or
    controller a channel is nonlinear unless the optimizer froze its slope at 1 (a free slope
    within the tolerance of 1 can drift away); otherwise when `|1 - slope| >= optim.prelu_tolerance`
    (`StepInfo.prelu_tolerance`). ReLU channels always count.
    Scalars: `nonlinear_units`, `nonlinear_fraction` (of all hidden channels), `apl` (normalized),
    `apl_unnormalized` and `effective_width` (`normjax.analysis.apl`). The run's summary takes the
    last logged values, so `normjax results` and `normjax plot` can use them as axes.

    References:
      Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
      Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180).
    """
    g = info.graph
    # Only the slopes of w_{t+1} are formed (a few vectors), not the whole parameter tree.
    new = [
        None if a is None else a + u
        for a, u in zip(graph_lib.slopes(g, info.params), graph_lib.slopes(g, info.updates), strict=True)
    ]
    # An optimizer that freezes slopes at 1 says which units are linear: a free slope within the
    # tolerance of 1 (one the controller did not admit, or left once its target was met) still drifts.
    frozen = _frozen(info.opt_state)
    tol = info.prelu_tolerance
    nl = graph_lib.nonlinear_from_slopes(g, new, tol, None if frozen is None else graph_lib.slopes(g, frozen))
    counts = apl_lib.layer_counts(g, nl)
    sizes = jnp.array([g.nodes[i].channels for i in g.hidden()], jnp.float32)
    return {
        "nl_count": counts,
        "nl_fraction": counts / sizes,
        "nonlinear_units": jnp.sum(counts),
        "nonlinear_fraction": jnp.sum(counts) / jnp.sum(sizes),
        "apl": apl_lib.normalized_apl(g, nl),
        "apl_unnormalized": apl_lib.unnormalized_apl(g, nl),
        "effective_width": apl_lib.effective_width(g, nl),
    }


def check_metrics(names: list[str]) -> None:
    for name in names:
        if name not in METRICS:
            raise UserError(f"log.metrics entry {name!r} is unknown; allowed: {', '.join(sorted(METRICS))}")


def compute(names: tuple[str, ...], info: StepInfo) -> dict[str, jax.Array]:
    out: dict[str, jax.Array] = {}
    for name in names:
        out.update(METRICS[name](info))
    return out


def summarize(names: Iterable[str], rows: list[dict], cfg: dict) -> dict[str, float]:
    """The summary values the hooks `names` compute from a run's logged rows."""
    out: dict[str, float] = {}
    for name in names:
        if name in SUMMARIES:
            out.update(SUMMARIES[name](rows, cfg))
    return out
