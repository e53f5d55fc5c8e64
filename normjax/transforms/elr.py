"""Uniform effective learning rates: every layer takes the same relative step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.transforms import _layers
from normjax.transforms._layers import LayerAxes

DEFINITIONS = ("relative", "classic")
REFERENCES = ("lr", "geometric_mean")


class ScaleByUniformELRState(NamedTuple):
    """State of `scale_by_uniform_elr`.

    Attributes:
      layer_scale: per leaf, the factor each layer's update was multiplied by at the last update
        (shape `leaf.shape[:layer_axes]`; ones at init). The layer's LR is the chain's LR times it.
      common_elr: the effective LR every layer got per unit of the chain's LR (1 with
        `reference="lr"`, the layers' geometric mean with `reference="geometric_mean"`).
      count: updates so far (int32); `end_step` is compared with it.
    """

    layer_scale: Any
    common_elr: jax.Array
    count: jax.Array


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown; allowed: {', '.join(allowed)}")


def scale_by_uniform_elr(
    definition: str = "relative",
    reference: str = "lr",
    layer_axes: LayerAxes = 0,
    end_step: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale each layer's update so that every layer gets the same effective learning rate.

    For a scale-invariant layer (its output feeds a normalization) the effective learning rate
    (ELR) per unit of the chain's LR, `r_l`, is by definition

    - `"relative"` (default, the relative update or angular step): :math:`r_l = \|u_l\|/\|w_l\|`;
    - `"classic"`: :math:`r_l = 1/\|w_l\|^2`,

    where :math:`u_l` is the update this transform receives and :math:`w_l` the layer's weights.
    Each layer's update is multiplied by :math:`s_l = \bar r / r_l`, so that after the chain's LR
    :math:`\eta` every layer's ELR is :math:`\eta \bar r`: with `reference="lr"`,
    :math:`\bar r = 1` and the chain's LR *is* the common ELR :math:`E^*` (for `"relative"`, the
    relative step :math:`\|\Delta w_l\|/\|w_l\| = \eta`, i.e. LARS with trust coefficient 1 and no
    weight-decay term); with `reference="geometric_mean"`, :math:`\bar r` is the geometric mean of
    the layers' :math:`r_l`, so the chain's LR keeps its usual meaning. Layers whose
    :math:`r_l` is zero or not finite (a zero weight or update) keep :math:`s_l = 1`.

    With `end_step`, the layers are equalized only early in training: from update `end_step` on
    the updates pass through unchanged (the chain is then plain SGD), the scheduling scheme the
    ELR paper describes for early training.

    Only scale-invariant kernels should be rescaled: wrap the transform in `optax.masked`.
    Its position in the chain decides what is made uniform: before `optax.trace` the gradients
    (each layer's momentum buffer then averages unit-relative steps), after it the steps taken.

    Args:
      definition: `"relative"` or `"classic"`, the ELR made uniform (see above).
      reference: `"lr"` (the chain's LR is the common ELR) or `"geometric_mean"`.
      layer_axes: per leaf, the number of leading axes that index layers stored stacked (0:
        the leaf is one layer); an int for all leaves, a pytree of ints matching the params, or a
        callable params -> that pytree (`normjax.models.layer_axes` gives it for normjax models).
      end_step: None (equalize at every update), or the update count from which the transform is
        the identity (a number or a traced value: a sweep's hyper-parameter; 0: never equalize).

    Returns:
      An `optax.GradientTransformationExtraArgs`; its state is a `ScaleByUniformELRState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from normjax.transforms import scale_by_uniform_elr
      >>> params = {"w": jnp.ones((2, 4, 4)), "b": jnp.zeros(4)}   # w: 2 stacked layers
      >>> tx = optax.chain(optax.masked(scale_by_uniform_elr(layer_axes=1), {"w": True, "b": False}),
      ...                  optax.trace(0.9), optax.scale(-0.01))
      >>> grads = {"w": jnp.stack([jnp.full((4, 4), 1.0), jnp.full((4, 4), 3.0)]), "b": jnp.ones(4)}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(jnp.linalg.norm(u) / 4), 6) for u in updates["w"]]   # ||Δw_l|| / ||w_l||
      [0.01, 0.01]

    References:
      You, Gitman & Ginsburg, `Large Batch Training of Convolutional Networks`, 2017
      (arXiv:1708.03888);
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    _check("definition", definition, DEFINITIONS)
    _check("reference", reference, REFERENCES)

    def init_fn(params):
        axes = _layers.resolve_layer_axes(layer_axes, params)
        # Reduce zeros as the update does, so shapes and sharding types match update's output.
        scale = _layers.tree_map(
            lambda p, n: jnp.ones_like(_layers.layer_sq_norm(jnp.zeros_like(p), _layers.check_axes(n, p))), params, axes
        )
        return ScaleByUniformELRState(
            layer_scale=scale, common_elr=jnp.ones((), jnp.float32), count=jnp.zeros((), jnp.int32)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        axes = _layers.resolve_layer_axes(layer_axes, params)
        w = _layers.layer_norms(params, axes)
        if definition == "relative":
            rate = _layers.tree_map(lambda u, wn: u / wn, _layers.layer_norms(updates, axes), w)
        else:
            rate = _layers.tree_map(lambda wn: 1.0 / jnp.square(wn), w)
        ok = _layers.tree_map(lambda r: jnp.isfinite(r) & (r > 0), rate)
        if reference == "geometric_mean":
            logs = [
                jnp.sum(jnp.where(k, jnp.log(jnp.where(k, r, 1.0)), 0.0))
                for r, k in zip(_layers.leaves(rate), _layers.leaves(ok), strict=True)
            ]
            count = sum(jnp.sum(k) for k in _layers.leaves(ok))
            common = jnp.where(count > 0, jnp.exp(sum(logs) / jnp.maximum(count, 1)), 1.0)
        else:
            common = jnp.ones((), jnp.float32)
        if end_step is not None:  # after end_step: factors of 1, the identity
            active = state.count < jnp.asarray(end_step)
            ok = _layers.tree_map(lambda k: k & active, ok)
            common = jnp.where(active, common, 1.0)
        scale = _layers.tree_map(lambda r, k: jnp.where(k, common / jnp.where(k, r, 1.0), 1.0), rate, ok)
        updates = _layers.tree_map(lambda u, s: (u * _layers.expand(s, u)).astype(u.dtype), updates, scale)
        return updates, ScaleByUniformELRState(
            layer_scale=scale, common_elr=common.astype(jnp.float32), count=optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
