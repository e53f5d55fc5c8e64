"""Masks over a plain parameter pytree: which leaves a transform acts on, chosen by their paths.

A mask is a pytree of bools with the structure of the params, as `optax.masked` takes, and the
`scale_invariant_mask`, `prelu_mask` and `weight_decay_mask` of the aliases. The helpers read only
the paths of the leaves (nested dicts, as `nnx.to_pure_dict` gives, or any pytree), never a model object,
so they work on concrete arrays and on `jax.ShapeDtypeStruct` leaves alike. A leaf's path is the tuple
of its keys as strings: dict keys, sequence indices, attribute names.

Example:
  >>> import jax.numpy as jnp
  >>> params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4))}, "act": {"slope": jnp.zeros(4)},
  ...           "head": {"kernel": jnp.ones((4, 10)), "bias": jnp.zeros(10)}}
  >>> kernel_mask(params, exclude=("head",))
  {'act': {'slope': False}, 'conv': {'kernel': True}, 'head': {'bias': False, 'kernel': False}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

PyTree = Any


def _key(k: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_keys(path: tuple) -> tuple[str, ...]:
    """A `jax.tree_util` key path as a tuple of strings.

    Example:
      >>> [path_keys(p) for p, _ in jax.tree_util.tree_leaves_with_path({"a": [1, {"b": 2}]})]
      [('a', '0'), ('a', '1', 'b')]
    """
    return tuple(_key(k) for k in path)


def path_mask(params: PyTree, predicate: Callable[[tuple[str, ...], Any], Any]) -> PyTree:
    """A mask over `params`: `predicate(path, leaf)` at each leaf, `path` a tuple of strings.

    Args:
      params: the parameter pytree (arrays or `jax.ShapeDtypeStruct` leaves).
      predicate: called with each leaf's path (`path_keys`) and the leaf; its truth value is the
        mask's entry.

    Returns:
      A pytree of Python bools with the structure of `params`.

    Example:
      >>> path_mask({"a": {"bias": 0.0, "w": 1.0}}, lambda path, _: path[-1] != "bias")
      {'a': {'bias': False, 'w': True}}
    """
    return jax.tree_util.tree_map_with_path(lambda p, x: bool(predicate(path_keys(p), x)), params)


def prelu_slope_mask(params: PyTree, *, name: str = "slope") -> PyTree:
    """True at the PReLU slopes: the leaves whose last key is `name`.

    normjax's `ChannelPReLU` stores its per-channel slopes as `slope`. The mask is what
    `sgd_prelu_l1` and `sgd_prelu_target` take as `prelu_mask`; its negation keeps weight decay off
    the slopes (decay pulls a slope toward 0, i.e. toward ReLU, against the sparsity prior).

    Args:
      params: the parameter pytree.
      name: the key the slopes are stored under.

    Returns:
      A pytree of bools with the structure of `params`.

    Example:
      >>> import jax.numpy as jnp
      >>> prelu_slope_mask({"act": {"slope": jnp.zeros(4)}, "dense": {"kernel": jnp.ones((4, 4))}})
      {'act': {'slope': True}, 'dense': {'kernel': False}}
    """
    return path_mask(params, lambda path, _: path[-1] == name)


def kernel_mask(params: PyTree, *, exclude: Iterable[str], name: str = "kernel") -> PyTree:
    """True at the weight kernels (leaves whose last key is `name`) outside the subtrees `exclude` names.

    A kernel is scale-invariant when its layer's output feeds a normalization (BatchNorm), so the
    loss does not change when it is multiplied by a constant. In a network where every conv and
    dense kernel does but the classifier's, `kernel_mask(params, exclude=(<classifier's key>,))` is
    the mask of scale-invariant kernels that `sgd_uniform_elr` and `sgd_critical_warmup` take. In
    normjax's models the classifier is `head` (`normjax.models.scale_invariant_mask` reads the same
    mask from a model's layers). `exclude` has no default: the classifier's name is the model's.

    Args:
      params: the parameter pytree.
      exclude: keys (e.g. `("head",)`) whose subtrees hold no scale-invariant kernel: a leaf with
        any of them anywhere on its path is False. `()` selects every kernel.
      name: the key kernels are stored under (flax: `kernel`).

    Returns:
      A pytree of bools with the structure of `params`.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"fc": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}, "head": {"kernel": jnp.ones((4, 2))}}
      >>> kernel_mask(params, exclude=("head",))
      {'fc': {'bias': False, 'kernel': True}, 'head': {'kernel': False}}
    """
    if isinstance(exclude, str):
        raise ValueError(f"exclude={exclude!r} is a string; allowed: a tuple of keys, e.g. ({exclude!r},)")
    excluded = frozenset(exclude)
    return path_mask(params, lambda path, _: path[-1] == name and excluded.isdisjoint(path))
