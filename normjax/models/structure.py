"""What a model tells the rest of normjax about itself: its layers in depth order, and masks.

Parameters travel through training as a plain nested dict (`nnx.to_pure_dict`), so a
path is a tuple of string keys. Layers stored stacked for `lax.scan` share one kernel leaf; their
`index` selects the slice along axis 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


class LayerInfo(NamedTuple):
    """One weight layer (conv or dense kernel) in the model's depth order.

    `scale_invariant` is True when the kernel feeds straight into a BatchNorm, so that
    `L(c w) = L(w)` (science.md §1); `depth` is the layer's index along the longest path
    (a projection shortcut shares the depth of the conv it runs beside).
    """

    name: str
    depth: int
    path: tuple[str, ...]
    index: int | None
    scale_invariant: bool


def get_path(tree: PyTree, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def leaf_mask(params: PyTree, predicate) -> PyTree:
    """Bool tree over `params`: `predicate(path_tuple, leaf)` for each leaf (usable with optax.masked)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(predicate(_path_keys(p), x)), params)


def scale_invariant_mask(params: PyTree, layers: list[LayerInfo]) -> PyTree:
    """True at every kernel that feeds a normalization (a stacked leaf is all-or-nothing)."""
    paths = {l.path for l in layers if l.scale_invariant}
    return leaf_mask(params, lambda p, _: p in paths)


def prelu_mask(params: PyTree) -> PyTree:
    """True at every channel-PReLU slope leaf."""
    return leaf_mask(params, lambda p, _: p[-1] == "slope")


def layer_axes(params: PyTree) -> PyTree:
    """Per leaf, how many leading axes index layers: 1 under a `Stack`'s stacked layers, else 0.

    The spec `normjax.transforms` takes (`layer_axes=`) so that per-layer norms see each stacked
    layer on its own. Leaves `optax.masked` hides (`optax.MaskedNode`) are kept as they are.

    Example:
      >>> layer_axes({"hidden": {"first": {"k": jnp.ones(3)}, "rest": {"k": jnp.ones((2, 3))}}})
      {'hidden': {'first': {'k': 0}, 'rest': {'k': 1}}}
    """
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x if isinstance(x, optax.MaskedNode) else int("rest" in _path_keys(p)), params,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def per_layer(tree: PyTree, layers: list[LayerInfo], reduce=lambda x, axes: jnp.sum(jnp.square(x), axes)) -> jax.Array:
    """Vector `[len(layers)]` of `reduce` over each layer's kernel, in depth order.

    Each distinct leaf is reduced once (a stacked leaf over all but axis 0), then the entries are
    gathered into layer order, so the cost does not grow with a Python loop over depth.
    """
    paths = sorted({l.path for l in layers})
    pieces, offset, where = [], 0, {}
    for path in paths:
        leaf = get_path(tree, path).astype(jnp.float32)
        stacked = any(l.index is not None for l in layers if l.path == path)
        r = reduce(leaf, tuple(range(1, leaf.ndim))) if stacked else reduce(leaf, None)[None]
        pieces.append(r.reshape(-1))
        where[path] = offset
        offset += r.size
    flat = jnp.concatenate(pieces)
    order = np.array([where[l.path] + (l.index or 0) for l in layers])
    return flat[order]
