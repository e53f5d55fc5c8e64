"""Critical-LR warm-up: the LR never exceeds the one that minimizes the spread of layer ELRs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.transforms import _layers
from normjax.transforms._layers import LayerAxes

PyTree = Any
MaskOrFn = PyTree | Callable[[PyTree], PyTree]


class ScaleByCriticalLRState(NamedTuple):
    """State of `scale_by_critical_lr`.

    Attributes:
      count: updates so far (int32); schedules are evaluated at it.
      applied_lr: the LR :math:`\\eta_t = \\min(\\eta_{target}(t), \\eta_{crit,t})` of the last update.
      critical_lr: :math:`\\eta_{crit,t}` of the last update (`inf` where no layer defines it).
    """

    count: jax.Array
    applied_lr: jax.Array
    critical_lr: jax.Array


def critical_lr(updates: PyTree, params: PyTree, mask: PyTree, layer_axes: PyTree) -> jax.Array:
    """:math:`1/\\sqrt{a_{max} a_{min}}` over the masked layers, :math:`a_l = \\|u_l\\|/\\|w_l\\|`.

    Layers where :math:`a_l` is zero or not finite are left out; `inf` if none is left.

    Args:
      updates: the updates (or gradients) :math:`u`.
      params: the weights :math:`w`.
      mask: a pytree of bools over `params`, True at the scale-invariant kernels.
      layer_axes: a pytree of ints over `params` (see `scale_by_critical_lr`).

    Returns:
      A float32 scalar, the critical LR.

    Example:
      >>> w = {"a": jnp.ones(4), "b": jnp.ones(4)}
      >>> float(critical_lr({"a": jnp.full(4, 0.01), "b": jnp.full(4, 4.0)}, w, {"a": True, "b": True},
      ...                   {"a": 0, "b": 0}))
      5.0
    """
    flat_u, treedef = jax.tree.flatten(updates, is_leaf=_layers.is_masked)
    flat_w, flat_m, flat_n = (treedef.flatten_up_to(t) for t in (params, mask, layer_axes))
    highs, lows = [], []
    for u, w, m, n in zip(flat_u, flat_w, flat_m, flat_n, strict=True):
        if _layers.is_masked(u) or not m:
            continue
        n = _layers.check_axes(n, u)
        a = jnp.sqrt(_layers.layer_sq_norm(u, n) / _layers.layer_sq_norm(w, n))
        ok = jnp.isfinite(a) & (a > 0)
        highs.append(jnp.max(jnp.where(ok, a, -jnp.inf)))
        lows.append(jnp.min(jnp.where(ok, a, jnp.inf)))
    if not highs:
        raise ValueError(
            "scale_invariant_mask selects no leaf: give a mask that is True at the scale-invariant kernels"
        )
    a_max, a_min = jnp.max(jnp.stack(highs)), jnp.min(jnp.stack(lows))
    return jnp.where(jnp.isfinite(a_max) & jnp.isfinite(a_min), jax.lax.rsqrt(a_max * a_min), jnp.inf)


def scale_by_critical_lr(
    learning_rate: optax.ScalarOrSchedule,
    scale_invariant_mask: MaskOrFn,
    *,
    layer_axes: LayerAxes = 0,
    flip_sign: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale updates by the target LR, capped at the critical LR: a warm-up with no length to tune.

    With :math:`a_l = \|u_l\|/\|w_l\|` the ELR per unit LR of each scale-invariant layer (updates
    :math:`u_l` as this transform receives them, weights :math:`w_l`), one SGD step maps a
    layer's ELR :math:`E = \eta a_l` to :math:`E/(1+E^2)`, a map with :math:`f(E) = f(1/E)`; the
    spread of the layers' ELRs after the step is smallest at

    .. math:: \eta_{crit} = 1/\sqrt{a_{max}\, a_{min}}.

    Each step applies :math:`\eta_t = \min(\eta_{target}(t), \eta_{crit,t})` to *every* leaf.
    Early in training of a deep BN network the spread is large and :math:`\eta_{crit}` small;
    as weight norms grow it rises, and the warm-up ends by itself once it passes the target.
    Use it in place of `optax.scale_by_learning_rate` at the end of a chain; after
    `optax.trace`, :math:`a_l` is measured on the momentum buffer (the step actually taken).

    Args:
      learning_rate: the target LR :math:`\eta_{target} \ge 0`, a number or a schedule of the step.
      scale_invariant_mask: a pytree of bools over the params (or a callable params -> it), True
        at the scale-invariant kernels whose ELRs set :math:`\eta_{crit}`.
      layer_axes: per leaf, the leading axes that index stacked layers (see
        `scale_by_uniform_elr`).
      flip_sign: multiply by :math:`-\eta_t` (descent), as `optax.scale_by_learning_rate` does.

    Returns:
      An `optax.GradientTransformationExtraArgs`; its state is a `ScaleByCriticalLRState`
      (read the applied LR with `optax.tree_utils.tree_get(state, "applied_lr")`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from normjax.transforms import scale_by_critical_lr
      >>> params = {"w1": jnp.ones((4, 4)), "w2": jnp.ones((4, 4)), "b": jnp.zeros(4)}
      >>> tx = scale_by_critical_lr(1.0, {"w1": True, "w2": True, "b": False})
      >>> grads = {"w1": jnp.full((4, 4), 0.01), "w2": jnp.full((4, 4), 1.0), "b": jnp.ones(4)}
      >>> _, state = tx.update(grads, tx.init(params), params)   # a = 0.01 and 1
      >>> float(state.critical_lr), float(state.applied_lr)
      (10.0, 1.0)

    References:
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """

    _layers.check_number("learning_rate", learning_rate, lambda x: x >= 0, "a number >= 0 (the target LR)")

    def init_fn(params):
        del params
        return ScaleByCriticalLRState(
            count=jnp.zeros((), jnp.int32),
            applied_lr=jnp.zeros((), jnp.float32),
            critical_lr=jnp.full((), jnp.inf, jnp.float32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        mask = scale_invariant_mask(params) if callable(scale_invariant_mask) else scale_invariant_mask
        axes = _layers.resolve_layer_axes(layer_axes, params)
        crit = critical_lr(updates, params, mask, axes)
        lr = jnp.minimum(jnp.asarray(_layers.value(learning_rate, state.count), jnp.float32), crit)
        step = -lr if flip_sign else lr
        updates = _layers.tree_map(lambda u: (u * step).astype(u.dtype), updates)
        return updates, ScaleByCriticalLRState(
            count=optax.safe_increment(state.count), applied_lr=lr, critical_lr=crit.astype(jnp.float32)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
