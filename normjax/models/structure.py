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

from normjax.transforms.masks import path_keys, path_mask, prelu_slope_mask

PyTree = Any


class LayerInfo(NamedTuple):
    """One weight layer (conv or dense kernel) in the model's depth order.

    `scale_invariant` is True when the kernel feeds straight into a BatchNorm, so that
    `L(c w) = L(w)` (docs/science.md#scale-invariance); `depth` is the layer's index along the longest path
    (a projection shortcut shares the depth of the conv it runs beside).
    """

    name: str
    depth: int
    path: tuple[str, ...]
    index: int | None
    scale_invariant: bool


def is_projection(layer: LayerInfo) -> bool:
    """Whether `layer` is a shortcut projection (a 1x1 conv beside a residual block's main path).

    Example:
      >>> is_projection(LayerInfo("s2.b0.proj", 7, ("stage2", "first", "proj_conv", "kernel"), None, True))
      True
    """
    return "proj_conv" in layer.path


def main_path(layers: list[LayerInfo]) -> np.ndarray:
    """Bool `[len(layers)]`: the scale-invariant layers on the main path (shortcut projections left out).

    Example:
      >>> main_path([LayerInfo("c", 0, ("c", "kernel"), None, True),
      ...            LayerInfo("p", 0, ("proj_conv", "kernel"), None, True),
      ...            LayerInfo("head", 1, ("head", "kernel"), None, False)])
      array([ True, False, False])
    """
    return np.array([l.scale_invariant and not is_projection(l) for l in layers], bool)


def get_path(tree: PyTree, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


# The path helpers live with the transforms (base install, no flax): `leaf_mask` is `path_mask`.
leaf_mask = path_mask


def scale_invariant_mask(params: PyTree, layers: list[LayerInfo]) -> PyTree:
    """True at every kernel that feeds a normalization (a stacked leaf is all-or-nothing)."""
    paths = {l.path for l in layers if l.scale_invariant}
    return leaf_mask(params, lambda p, _: p in paths)


def prelu_mask(params: PyTree) -> PyTree:
    """True at every channel-PReLU slope leaf (`normjax.transforms.prelu_slope_mask`)."""
    return prelu_slope_mask(params)


def layer_axes(params: PyTree) -> PyTree:
    """Per leaf, how many leading axes index layers: 1 under a `Stack`'s stacked layers, else 0.

    The spec `normjax.transforms` takes (`layer_axes=`) so that per-layer norms see each stacked
    layer on its own. Leaves `optax.masked` hides (`optax.MaskedNode`) are kept as they are.

    Example:
      >>> layer_axes({"hidden": {"first": {"k": jnp.ones(3)}, "rest": {"k": jnp.ones((2, 3))}}})
      {'hidden': {'first': {'k': 0}, 'rest': {'k': 1}}}
    """
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x if isinstance(x, optax.MaskedNode) else int("rest" in path_keys(p)),
        params,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )


def per_layer_sums(trees: tuple, layers: list[LayerInfo], terms) -> tuple[jax.Array, ...]:
    """Per-layer sums of elementwise terms of several trees, in depth order: one pass per leaf.

    `terms(*leaves)` gets the float32 leaves of `trees` at one kernel path and returns a tuple of
    elementwise arrays of that shape; the result holds, per term, a vector `[len(layers)]` of its
    sums over each layer. All terms of a leaf are reduced together (an XLA variadic reduce over
    the last axis, then a sum over the rest), so the leaf is read once however many terms there
    are; a stacked leaf is reduced per layer along axis 0.

    Example:
      >>> layers = [LayerInfo("fc0", 0, ("fc0", "kernel"), None, True),   # one layer in a leaf
      ...           LayerInfo("fc1", 1, ("rest", "kernel"), 0, True),     # two stacked in one leaf
      ...           LayerInfo("fc2", 2, ("rest", "kernel"), 1, True)]
      >>> params = {"fc0": {"kernel": jnp.ones((4, 3))}, "rest": {"kernel": jnp.ones((2, 3, 3))}}
      >>> grads = jax.tree.map(lambda w: 2 * w, params)
      >>> w2, gw = per_layer_sums((params, grads), layers, lambda w, g: (w * w, g * w))
      >>> w2.tolist(), gw.tolist()
      ([12.0, 9.0, 9.0], [24.0, 18.0, 18.0])
    """
    paths = sorted({l.path for l in layers})
    pieces: list[tuple[jax.Array, ...]] = []
    offset, where = 0, {}
    for path in paths:
        leaves = [get_path(t, path).astype(jnp.float32) for t in trees]
        stacked = any(l.index is not None for l in layers if l.path == path)
        shape = leaves[0].shape
        lead = shape[0] if stacked else 1
        rows = [x.reshape(lead, -1, shape[-1] if len(shape) > int(stacked) else 1) for x in leaves]
        out = terms(*rows)
        zeros = tuple(jnp.zeros((), jnp.float32) for _ in out)
        sums = jax.lax.reduce(tuple(out), zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), (2,))
        pieces.append(tuple(jnp.sum(x, 1) for x in sums))  # [lead] per term
        where[path] = offset
        offset += lead
    order = np.array([where[l.path] + (l.index or 0) for l in layers])
    return tuple(jnp.concatenate([p[i] for p in pieces])[order] for i in range(len(pieces[0])))


def per_layer(tree: PyTree, layers: list[LayerInfo]) -> jax.Array:
    """Vector `[len(layers)]` of each layer's squared kernel norm, in depth order (`per_layer_sums`)."""
    return per_layer_sums((tree,), layers, lambda x: (x * x,))[0]
