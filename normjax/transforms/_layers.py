"""Per-layer reductions over optax trees whose leaves may hold several layers.

normjax stores identical layers stacked along leading axes (for `lax.scan`), so one leaf can hold
many layers. A *layer-axes* spec says, per leaf, how many leading axes index layers: 0 (the
leaf is one layer), 1 (a stack of layers), ... Transforms reduce over the remaining axes, so
every norm is per layer, as optax's `muon` takes `MuonDimensionNumbers` for the same reason.

Trees may contain `optax.MaskedNode` (the leaves `optax.masked` hides from an inner transform);
they are passed through untouched.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
LayerAxes = int | PyTree | Callable[[PyTree], PyTree]
"""An int for every leaf, a pytree of ints matching the params, or a callable params -> that pytree."""


def is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def resolve_layer_axes(layer_axes: LayerAxes, tree: PyTree) -> PyTree:
    """A pytree of ints with `tree`'s structure (MaskedNodes as leaves)."""
    if callable(layer_axes):
        layer_axes = layer_axes(tree)
    if isinstance(layer_axes, int):
        return jax.tree.map(lambda _: layer_axes, tree, is_leaf=is_masked)
    return layer_axes


def tree_map(fn: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
    """`jax.tree.map` that keeps `optax.MaskedNode` leaves of `tree` as they are."""
    return jax.tree.map(lambda x, *r: x if is_masked(x) else fn(x, *r), tree, *rest, is_leaf=is_masked)


def leaves(tree: PyTree) -> list:
    """The array leaves of `tree`, MaskedNodes left out."""
    return [x for x in jax.tree.leaves(tree, is_leaf=is_masked) if not is_masked(x)]


def check_axes(n: Any, x: Any) -> int:
    if not isinstance(n, int) or not 0 <= n <= len(x.shape):
        raise ValueError(
            f"layer_axes entry {n!r} does not fit a leaf of shape {tuple(x.shape)}; "
            f"allowed: an int from 0 to {len(x.shape)}"
        )
    return n


def layer_sq_norm(x: jax.Array, n: int) -> jax.Array:
    """float32 squared norm of each layer of `x` (shape `x.shape[:n]`)."""
    return jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(n, x.ndim)))


def expand(v: jax.Array, x: jax.Array) -> jax.Array:
    """A per-layer value `v` (shape `x.shape[:n]`) broadcastable against `x`."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def layer_norms(tree: PyTree, axes: PyTree) -> PyTree:
    """Per-layer float32 norms of every leaf of `tree` (a tree of arrays of shape `leaf.shape[:n]`)."""
    return tree_map(lambda x, n: jnp.sqrt(layer_sq_norm(x, check_axes(n, x))), tree, axes)


def value(hyperparam: Any, count: jax.Array) -> jax.Array:
    """A hyper-parameter given as a number, an array or a schedule, at step `count`."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def check_number(name: str, value: Any, ok: Callable[[Any], bool], allowed: str) -> None:
    """A one-line ValueError naming `value` and what is `allowed`, where `value` is a number and not `ok`.

    Only Python and NumPy numbers are checked: a schedule, or an array (e.g. a value
    `optax.inject_hyperparams` injects, traced under `jax.jit`), cannot be read at construction.
    """
    if isinstance(value, numbers.Real) and not ok(value):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {allowed}")
