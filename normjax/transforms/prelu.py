"""The sparsity prior on channel-wise PReLU slopes: push slopes to 1 (a linear unit) and freeze them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.transforms import _layers

MODES = ("proximal", "subgradient")
POWERS = (1.0, 0.5)


class PReLUPriorState(NamedTuple):
    """State of `prelu_sparsity_prior`.

    Attributes:
      count: updates so far (int32); schedules are evaluated at it.
      frozen: per slope, True once it reached the tolerance: it is exactly 1.0 and stays there.
      num_frozen: the number of frozen slopes (int32), i.e. of units made linear.
    """

    count: jax.Array
    frozen: Any
    num_frozen: jax.Array


def soft_threshold(d: jax.Array, t: jax.Array) -> jax.Array:
    r"""Proximal map of :math:`t|d|`: :math:`\mathrm{sign}(d)\max(|d| - t, 0)`.

    Args:
      d: the point (here the new slope minus 1).
      t: the threshold (here :math:`\eta_t \lambda`), >= 0.

    Returns:
      :math:`\arg\min_x \tfrac12 (x-d)^2 + t|x|`, elementwise.

    Example:
      >>> [round(float(x), 6) for x in soft_threshold(jnp.array([-0.5, 0.05, 0.3]), 0.1)]
      [-0.4, 0.0, 0.2]
    """
    return jnp.sign(d) * jnp.maximum(jnp.abs(d) - t, 0.0)


def half_threshold(d: jax.Array, t: jax.Array) -> jax.Array:
    r"""Proximal map of :math:`t|d|^{1/2}`, :math:`\arg\min_x \tfrac12 (x-d)^2 + t|x|^{1/2}`, in closed form.

    Zero for :math:`|d| \le \tfrac{3}{2} t^{2/3}`, else
    :math:`\tfrac23 d\,(1 + \cos(\tfrac{2\pi}{3} - \tfrac23\varphi))` with
    :math:`\varphi = \arccos(\tfrac{t}{4}(|d|/3)^{-3/2})` (Xu et al. 2012, with their
    :math:`\lambda = 2t`).

    Args:
      d: the point (here the new slope minus 1).
      t: the prior's weight (here :math:`\eta_t \lambda`), >= 0.

    Returns:
      The minimizer, elementwise (exactly 0 below the threshold).

    Example:
      >>> [round(float(x), 4) for x in half_threshold(jnp.array([0.5, 2.0]), 0.5)]
      [0.0, 1.8144]

    References:
      Xu, Chang, Xu & Zhang, `L1/2 Regularization: A Thresholding Representation Theory and a
      Fast Solver`, 2012 (IEEE TNNLS 23(7)).
    """
    lam = 2.0 * t
    thresh = 54.0 ** (1.0 / 3.0) / 4.0 * lam ** (2.0 / 3.0)
    big = jnp.abs(d) > thresh
    safe = jnp.where(big, jnp.abs(d), 1.0)
    phi = jnp.arccos(jnp.clip(lam / 8.0 * (safe / 3.0) ** -1.5, -1.0, 1.0))
    return jnp.where(big, 2.0 / 3.0 * d * (1.0 + jnp.cos(2.0 * math.pi / 3.0 - 2.0 / 3.0 * phi)), 0.0)


def _subgradient_step(d_old: jax.Array, d: jax.Array, t: jax.Array, power: float) -> jax.Array:
    """`d` moved by `t` times the prior's sub-gradient at `d_old`; a move across 0 stops at 0."""
    if power == 1.0:
        g = jnp.sign(d_old)
    else:  # d/dx |x|^p = p sign(x) |x|^(p-1), unbounded at 0: the stop at 0 keeps it finite
        g = jnp.where(
            d_old == 0, 0.0, power * jnp.sign(d_old) * jnp.abs(jnp.where(d_old == 0, 1.0, d_old)) ** (power - 1)
        )
    moved = d - t * g
    return jnp.where(jnp.sign(moved) * jnp.sign(d) < 0, 0.0, moved)


def sparsity_step(
    updates: Any,
    params: Any,
    frozen: Any,
    t: jax.Array,
    tolerance: jax.Array,
    *,
    mode: str,
    power: float,
    admit: Callable[[Any, Any, Any], Any] | None = None,
) -> tuple[Any, Any, jax.Array]:
    r"""One step of the prior on the slopes (shared by `prelu_sparsity_prior` and the controller).

    Args:
      updates: the updates after the LR (MaskedNode leaves pass through).
      params: the slopes :math:`\alpha`.
      frozen: per slope, True where it is frozen at 1.0.
      t: the prior's weight this step, :math:`\eta_t \lambda`.
      tolerance: slopes ending within it of 1 freeze.
      mode: `"proximal"` or `"subgradient"`.
      power: 1.0 or 0.5.
      admit: None (every slope that reaches the tolerance freezes), or a callable
        `(newly, params, updates) -> admitted` given the tree of the slopes that would freeze now
        (and this step's `params` and `updates`), returning those allowed to; the others take the
        plain update this step.

    Returns:
      The new updates (frozen slopes land on exactly 1.0), the frozen mask and its count (int32).
    """

    def moved(u, p):  # d = alpha' - 1 after the gradient step and the prior
        d_old = p.astype(jnp.float32) - 1.0
        d = d_old + u.astype(jnp.float32)
        if mode == "proximal":
            return soft_threshold(d, t) if power == 1.0 else half_threshold(d, t)
        return _subgradient_step(d_old, d, t, power)

    def update(u, p, d, frozen):
        new = jnp.where(frozen, 1.0, 1.0 + d).astype(p.dtype)
        # 1 - p is exact for p within a factor 2 of 1 (Sterbenz), so p + update lands on 1.0.
        return (new - p).astype(u.dtype)

    d = _layers.tree_map(moved, updates, params)
    if admit is None:
        frozen = _layers.tree_map(lambda d, f: f | (jnp.abs(d) < tolerance), d, frozen)
    else:
        newly = _layers.tree_map(lambda d, f: ~f & (jnp.abs(d) < tolerance), d, frozen)
        ok = admit(newly, params, updates)
        plain = lambda d, n, a, u, p: jnp.where(n & ~a, p.astype(jnp.float32) - 1.0 + u.astype(jnp.float32), d)
        d = _layers.tree_map(plain, d, newly, ok, updates, params)
        frozen = _layers.tree_map(lambda f, a: f | a, frozen, ok)
    new_updates = _layers.tree_map(update, updates, params, d, frozen)
    num = sum((jnp.sum(f, dtype=jnp.int32) for f in _layers.leaves(frozen)), jnp.zeros((), jnp.int32))
    return new_updates, frozen, num


# What the prior's and the controller's numeric arguments allow: (test, the words for it).
ALLOWED = {
    "strength": (lambda x: x >= 0, "a number >= 0 (the prior's weight; 0 is no prior)"),
    "init_strength": (lambda x: x >= 0, "a number >= 0 (the prior's weight at the first step)"),
    "learning_rate": (lambda x: x >= 0, "a number >= 0 (the chain's LR)"),
    "tolerance": (lambda x: 0 <= x < 1, "a number in [0, 1) (a slope this close to 1 is made linear)"),
    "target": (lambda x: 0 <= x <= 1, "a fraction in [0, 1] (the share of slopes kept nonlinear)"),
    "target_count": (lambda x: x >= 0, "a number >= 0 (the count of slopes kept nonlinear)"),
    "gain": (lambda x: x >= 0, "a number >= 0 (the integral's rate per update)"),
    "min_rate": (lambda x: 0 <= x <= 1, "a number in [0, 1] (the floor on the share left)"),
}


def check_numbers(**values: Any) -> None:
    """A one-line ValueError for an argument given as a number outside what `ALLOWED` says (schedules
    and arrays are not checked: they cannot be read at construction)."""
    for name, value in values.items():
        _layers.check_number(name, value, *ALLOWED[name])


def prelu_sparsity_prior(
    strength: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    *,
    tolerance: optax.ScalarOrSchedule = 0.01,
    mode: str = "proximal",
    power: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""The prior :math:`\lambda \sum_c |1 - \alpha_c|^p` on PReLU slopes, applied after the LR.

    A channel PReLU :math:`\max(0, x) + \alpha_c \min(0, x)` is linear at :math:`\alpha_c = 1`.
    The transform takes the updates *after* the learning rate (so it goes last in a chain, under
    `optax.masked` selecting the slope leaves), forms the new slope
    :math:`\alpha' = \alpha + u`, and moves :math:`d = \alpha' - 1` toward zero by the prior:

    - `mode="proximal"` (default): the proximal step of :math:`\eta_t \lambda |d|^p`: for
      :math:`p = 1` the soft threshold :math:`\mathrm{sign}(d)\max(|d| - \eta_t\lambda, 0)`, for
      :math:`p = 1/2` the closed-form half threshold. Units become *exactly* linear.
    - `mode="subgradient"`: :math:`d \leftarrow d - \eta_t \lambda\, \partial|d_{old}|^p`, taken
      at the old slope; with plain SGD and :math:`p = 1` this equals adding
      :math:`\lambda\,\mathrm{sign}(\alpha - 1)` to the gradient. A step that would carry a slope
      across 1 stops at 1.

    Slopes that end within `tolerance` of 1 are set to exactly 1.0 and frozen there (the state
    remembers them; later gradients do not move them). Weight decay should not reach the slopes:
    coupled decay pulls them toward 0, i.e. toward ReLU, against the prior.

    Args:
      strength: :math:`\lambda \ge 0`, a number or a schedule of the step (e.g. zero until epoch k).
      learning_rate: :math:`\eta_t \ge 0`, the LR of the chain (number or schedule) that scales the prior.
      tolerance: in [0, 1): a slope with :math:`|1 - \alpha| <` tolerance counts as linear and is frozen.
      mode: `"proximal"` or `"subgradient"`.
      power: :math:`p`, 1 (L1) or 0.5 (the square-root form).

    Returns:
      An `optax.GradientTransformationExtraArgs`; its state is a `PReLUPriorState`
      (read the count of linear units with `optax.tree_utils.tree_get(state, "num_frozen")`).

    Raises:
      ValueError: an unknown `mode` or `power`, or an argument given as a number outside what it
        allows (a negative `strength` or `learning_rate`, a `tolerance` outside [0, 1)).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from normjax.transforms import prelu_sparsity_prior
      >>> params = {"slope": jnp.array([0.0, 0.5, 0.98, 1.3]), "w": jnp.ones(3)}
      >>> tx = optax.chain(optax.sgd(0.1),
      ...                  optax.masked(prelu_sparsity_prior(1.0, 0.1), {"slope": True, "w": False}))
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"slope": jnp.zeros(4), "w": jnp.zeros(3)}, state, params)
      >>> [round(float(a), 6) for a in optax.apply_updates(params, updates)["slope"]]  # 0.1 toward 1
      [0.1, 0.6, 1.0, 1.2]
      >>> int(optax.tree_utils.tree_get(state, "num_frozen"))
      1

    References:
      Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
      Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180);
      Parikh & Boyd, `Proximal Algorithms`, 2014 (Foundations and Trends in Optimization 1(3));
      Xu, Chang, Xu & Zhang, `L1/2 Regularization: A Thresholding Representation Theory and a
      Fast Solver`, 2012 (IEEE TNNLS 23(7)).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; allowed: {', '.join(MODES)}")
    if power not in POWERS:
        raise ValueError(f"power={power!r} is not supported; allowed: 1.0 (L1) or 0.5")
    check_numbers(strength=strength, learning_rate=learning_rate, tolerance=tolerance)

    def init_fn(params):
        frozen = _layers.tree_map(lambda p: jnp.zeros_like(p, dtype=bool), params)
        return PReLUPriorState(count=jnp.zeros((), jnp.int32), frozen=frozen, num_frozen=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        c = state.count
        t = jnp.asarray(_layers.value(learning_rate, c), jnp.float32) * _layers.value(strength, c)
        new_updates, frozen, num = sparsity_step(
            updates, params, state.frozen, t, _layers.value(tolerance, c), mode=mode, power=power
        )
        return new_updates, PReLUPriorState(count=optax.safe_increment(c), frozen=frozen, num_frozen=num)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
