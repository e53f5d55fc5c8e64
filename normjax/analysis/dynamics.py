r"""The weight-dynamics model of early training: norms and effective learning rates (ELRs) of the
scale-invariant layers of a normalized network, predicted without the network.

Per scale-invariant layer :math:`l` (a kernel followed by BatchNorm: :math:`L(s w_l) = L(w_l)` for
:math:`s > 0`, hence :math:`\langle g_l, w_l\rangle = 0`), with

- :math:`u_l = \|w_l\|^2` the squared weight norm (every function here works on :math:`u`, not on
  :math:`\|w_l\|`, unless its name or docstring says otherwise),
- :math:`c_l = \|g_l\|\,\|w_l\|` the *base gradient* (the gradient norm at unit weight norm), held
  constant: the "constant base gradient" assumption of the early phase,
- :math:`E_l = \eta\|g_l\|/\|w_l\| = \eta c_l / u_l` the relative (angular) ELR, and
  :math:`\eta/\|w_l\|^2` the classic ELR,

SGD with LR :math:`\eta`, heavy-ball momentum :math:`\beta` (PyTorch convention
:math:`m \leftarrow \beta m + g + \lambda w,\ w \leftarrow w - \eta m`) and coupled weight decay
:math:`\lambda` moves the norms by

.. math:: u_{t+1} = (1-\eta\lambda)^2 u_t + \eta^2 c^2 / u_t \qquad (\beta = 0),

i.e. :math:`E_{t+1} = E_t/((1-\eta\lambda)^2 + E_t^2)`, the same map for every layer. Its continuum
limit (gradient flow) is solvable in closed form; all ELRs then equalize as :math:`(2t)^{-1/2}`.
SGD is an explicit solver with step 1 of a stiff system (relaxation rates :math:`E_l^2`), and
:math:`f(E) = E/(1+E^2) = f(1/E)`: a layer with :math:`E \gg 1` overshoots.

**Momentum** has no closed recursion in the norm alone. This module uses the *random-walk
(expectation) model*: each gradient is a fresh random direction orthogonal to :math:`w`, so it is
uncorrelated with the momentum buffer. Then the three scalars :math:`u = \|w\|^2`,
:math:`p = \langle w, m\rangle`, :math:`q = \|m\|^2` obey a closed recursion (`discrete_norms`), exact
for :math:`\beta = 0` and, for :math:`\beta > 0`, the expectation of `random_walk` up to the
:math:`O(1/\sqrt{\text{layer size}})` fluctuations of :math:`u`. Its slow (small-:math:`E`) limit
is plain SGD at the effective LR :math:`\eta/(1-\beta)`, which the gradient-flow functions use.
Real gradients are correlated from step to step, which this model ignores.

Shapes: per-layer arrays are ``[L]``; hyper-parameters are scalars or broadcast against ``[L]``;
trajectories carry a leading time axis ``[T+1, L]``; reductions over layers (`spread`, ...) use
the last axis. Every function is pure `jax.numpy`, jit-able and vmappable over layers and
hyper-parameters; the number of steps and the layer sizes of `random_walk` are static. Results
take the floating dtype of the inputs (float32 by default, float64 under ``jax_enable_x64`` with
float64 inputs).

Example:
  >>> import jax.numpy as jnp
  >>> from normjax.analysis import predict
  >>> out = predict(c0=jnp.array([100.0, 1.0]), w0_norm=jnp.array([1.0, 1.0]), lr=0.1, steps=3)
  >>> out["elr"].shape, out["spread"].shape
  ((4, 2), (4,))

References:
  A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
  Normalization During Early Training`, 2023 (arXiv:2306.00700).
  S. Arora, Z. Li, K. Lyu, `Theoretical Analysis of Auto Rate-Tuning by Batch Normalization`,
  2019 (arXiv:1812.03981).
  T. van Laarhoven, `L2 Regularization versus Batch and Weight Normalization`, 2017
  (arXiv:1706.05350).
  R. Wan, Z. Zhu, X. Zhang, J. Sun, `Spherical Motion Dynamics`, 2021 (arXiv:2006.08419).
  A. Kosson, B. Messmer, M. Jaggi, `Rotational Equilibrium`, 2024 (arXiv:2305.17212).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.Array | np.ndarray | float | int

__all__ = [
    "classic_elr",
    "critical_lr",
    "discrete_norms",
    "discrete_norms_from_grads",
    "elr_from_norms",
    "elr_map",
    "equilibrium_angular_step",
    "equilibrium_elr",
    "equilibrium_norm",
    "gradient_flow_elr",
    "gradient_flow_norms",
    "log_spread_std",
    "ode_norms",
    "predict",
    "random_walk",
    "spread",
]


def _jit(fn):
    """`jax.jit` behind a plain function (keeps the signature and docstring for tools and doctests)."""
    jitted = jax.jit(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return jitted(*args, **kwargs)

    return wrapper


def _dtype(*xs: Any) -> Any:
    """The floating dtype of the inputs (weak Python scalars do not promote); float by default."""
    dt = jnp.result_type(*xs)
    return dt if jnp.issubdtype(dt, jnp.inexact) else jnp.result_type(float)


def _arrays(*xs: Any) -> tuple[jax.Array, ...]:
    dt = _dtype(*xs)
    return tuple(jnp.asarray(x, dt) for x in xs)


def _check_steps(steps: int) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative Python int (static), got {steps!r}")
    return int(steps)


# --------------------------------------------------------------------------------------------
# ELR definitions and the one-step map
# --------------------------------------------------------------------------------------------


@_jit
def elr_from_norms(u: ArrayLike, c: ArrayLike, lr: ArrayLike) -> jax.Array:
    r"""The relative (angular) ELR :math:`E = \eta c / u = \eta\|g\|/\|w\|` from squared norms.

    Args:
      u: squared weight norms :math:`\|w_l\|^2`, e.g. ``[L]`` or ``[T+1, L]``.
      c: base gradients :math:`c_l = \|g_l\|\|w_l\|`, broadcast against `u`.
      lr: the LR :math:`\eta`, broadcast against `u`.

    Returns:
      :math:`E`, shaped like the broadcast of the inputs.

    Example:
      >>> float(elr_from_norms(4.0, 2.0, 0.5))
      0.25
    """
    u, c, lr = _arrays(u, c, lr)
    return lr * c / u


@_jit
def classic_elr(u: ArrayLike, lr: ArrayLike) -> jax.Array:
    r"""The classic ELR :math:`\eta / \|w\|^2 = \eta / u` (van Laarhoven 2017; Arora et al. 2019).

    Args:
      u: squared weight norms :math:`\|w_l\|^2`.
      lr: the LR :math:`\eta`, broadcast against `u`.

    Returns:
      :math:`\eta / u`.

    Example:
      >>> float(classic_elr(4.0, 0.5))
      0.125

    References:
      T. van Laarhoven, `L2 Regularization versus Batch and Weight Normalization`, 2017
      (arXiv:1706.05350).
      S. Arora, Z. Li, K. Lyu, `Theoretical Analysis of Auto Rate-Tuning by Batch Normalization`,
      2019 (arXiv:1812.03981).
    """
    u, lr = _arrays(u, lr)
    return lr / u


@_jit
def elr_map(E: ArrayLike, lr: ArrayLike = 1.0, weight_decay: ArrayLike = 0.0) -> jax.Array:
    r"""One SGD step of the relative ELR: :math:`E \mapsto E / ((1-\eta\lambda)^2 + E^2)`.

    Without weight decay this is :math:`f(E) = E/(1+E^2)`, with :math:`f(E) = f(1/E)` and its
    maximum :math:`1/2` at :math:`E = 1`: a layer with :math:`E \gg 1` lands at :math:`\approx 1/E`.
    It follows from :math:`u_{t+1} = (1-\eta\lambda)^2 u_t + \eta^2 c^2/u_t` at constant :math:`c`.

    Args:
      E: ELRs :math:`E_t`, any shape.
      lr: the LR :math:`\eta`; enters only through :math:`\eta\lambda` (irrelevant without decay).
      weight_decay: coupled weight decay :math:`\lambda`.

    Returns:
      :math:`E_{t+1}`, shaped like the broadcast of the inputs.

    Example:
      >>> round(float(elr_map(2.0)), 6), round(float(elr_map(0.5)), 6)
      (0.4, 0.4)

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    E, lr, weight_decay = _arrays(E, lr, weight_decay)
    return E / ((1 - lr * weight_decay) ** 2 + E * E)


# --------------------------------------------------------------------------------------------
# Discrete maps
# --------------------------------------------------------------------------------------------


def discrete_norms(
    u0: ArrayLike,
    c: ArrayLike,
    lr: ArrayLike,
    steps: int,
    momentum: ArrayLike = 0.0,
    weight_decay: ArrayLike = 0.0,
    *,
    return_angular_step: bool = False,
):
    r"""Squared norms under the discrete SGD map at constant base gradient, ``[steps+1, L]``.

    Without momentum (exact for a scale-invariant layer whose gradient norm is :math:`c/\|w\|`):

    .. math:: u_{t+1} = (1-\eta\lambda)^2 u_t + \eta^2 c^2 / u_t,

    i.e. :math:`u_{t+1} = u_t(1 + E_t^2)` without weight decay. With momentum :math:`\beta`
    (:math:`m \leftarrow \beta m + g + \lambda w`, :math:`w \leftarrow w - \eta m`, :math:`m_0 = 0`)
    it iterates the random-walk (expectation) model: gradients are fresh random directions
    orthogonal to :math:`w`, so :math:`\mathbb{E}\langle m, g\rangle = 0`, and
    :math:`p = \langle w, m\rangle`, :math:`q = \|m\|^2` close the recursion

    .. math::
       q_{t+1} &= \beta^2 q_t + c^2/u_t + \lambda^2 u_t + 2\beta\lambda p_t, \\
       u_{t+1} &= u_t - 2\eta(\beta p_t + \lambda u_t) + \eta^2 q_{t+1}, \\
       p_{t+1} &= \beta p_t + \lambda u_t - \eta q_{t+1}.

    It is the expectation of `random_walk` up to :math:`\mathbb{E}[1/u] \ne 1/\mathbb{E}[u]`
    (relative error :math:`O(1/\sqrt{\text{size}})`); for :math:`\beta = 0` it is the map above
    exactly. For small ELRs it tracks plain SGD at :math:`\eta/(1-\beta)` (`ode_norms`), and with
    weight decay it settles at `equilibrium_norm` with angular step `equilibrium_angular_step`.

    Args:
      u0: initial squared norms :math:`\|w_l(0)\|^2`, ``[L]``.
      c: base gradients :math:`c_l`, broadcast against `u0`.
      lr: the LR :math:`\eta`, scalar or broadcast against `u0`.
      steps: the number of SGD steps :math:`T` (a static Python int).
      momentum: heavy-ball momentum :math:`\beta`.
      weight_decay: coupled weight decay :math:`\lambda`.
      return_angular_step: also return the model's angular step
        :math:`\|w_{t+1} - w_t\|/\|w_t\| = \eta\sqrt{q_{t+1}/u_t}`, ``[steps, L]``.

    Returns:
      :math:`u_t`, ``[steps+1, L]`` (row 0 is `u0`); with `return_angular_step`, the pair
      ``(u, angular_step)``.

    Example:
      >>> import jax.numpy as jnp
      >>> discrete_norms(jnp.array([1.0]), jnp.array([10.0]), lr=0.1, steps=2)[:, 0].tolist()
      [1.0, 2.0, 2.5]

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
      R. Wan, Z. Zhu, X. Zhang, J. Sun, `Spherical Motion Dynamics`, 2021 (arXiv:2006.08419).
    """
    return _discrete_norms(u0, c, lr, momentum, weight_decay, _check_steps(steps), bool(return_angular_step))


@functools.partial(jax.jit, static_argnums=(5, 6))
def _discrete_norms(u0, c, lr, momentum, weight_decay, steps, return_angular_step):
    u0, c, lr, beta, lam = _arrays(u0, c, lr, momentum, weight_decay)
    shape = jnp.broadcast_shapes(u0.shape, c.shape, lr.shape, beta.shape, lam.shape)
    u0 = jnp.broadcast_to(u0, shape)
    zeros = jnp.zeros(shape, u0.dtype)
    shrink = (1 - lr * lam) ** 2

    def step(state, _):
        u, p, q = state
        q1 = beta * beta * q + c * c / u + lam * lam * u + 2 * beta * lam * p
        # (1-ηλ)²u + η²c²/u, plus the momentum terms (exactly 0 at β = 0)
        u1 = shrink * u + (lr * c) ** 2 / u + lr * beta * (lr * (beta * q + 2 * lam * p) - 2 * p)
        p1 = beta * p + lam * u - lr * q1
        ang = lr * jnp.sqrt(q1 / u)
        return (u1, p1, q1), (u1, ang)

    _, (us, angs) = jax.lax.scan(step, (u0, zeros, zeros), None, length=steps)
    us = jnp.concatenate([u0[None], us], axis=0)
    return (us, angs) if return_angular_step else us


def discrete_norms_from_grads(
    u0: ArrayLike, g_norms: ArrayLike, lr: ArrayLike, weight_decay: ArrayLike = 0.0
) -> jax.Array:
    r"""Squared norms under the SGD map fed measured gradient norms, ``[T+1, L]``.

    .. math:: u_{t+1} = (1-\eta_t\lambda)^2 u_t + \eta_t^2 \|g_t\|^2

    (no momentum). Exact for scale-invariant layers (gradient orthogonal to the weight): fed a
    real run's :math:`\|w_l(0)\|^2`, measured :math:`\|g_{l,t}\|` and applied LRs, it reproduces
    the run's measured norms to float precision. Computes in the inputs' dtype.

    Args:
      u0: initial squared norms :math:`\|w_l(0)\|^2`, ``[L]``.
      g_norms: measured gradient norms :math:`\|g_{l,t}\|` (not squared), ``[T, L]``.
      lr: the applied LR: a scalar, ``[T]`` (per step) or ``[T, L]`` (per step and layer).
      weight_decay: coupled weight decay :math:`\lambda`, scalar or ``[L]``.

    Returns:
      :math:`u_t`, ``[T+1, L]`` (row 0 is `u0`).

    Example:
      >>> import jax.numpy as jnp
      >>> discrete_norms_from_grads(jnp.array([1.0]), jnp.array([[10.0], [5.0]]),
      ...                           jnp.array([0.1, 0.2]))[:, 0].tolist()
      [1.0, 2.0, 3.0]
    """
    return _discrete_norms_from_grads(u0, g_norms, lr, weight_decay)


@jax.jit
def _discrete_norms_from_grads(u0, g_norms, lr, weight_decay):
    u0, g, lr, lam = _arrays(u0, g_norms, lr, weight_decay)
    if g.ndim != 2:
        raise ValueError(f"g_norms must be [T, L], got shape {g.shape}")
    if lr.ndim == 1:
        lr = lr[:, None]
    elif lr.ndim not in (0, 2):
        raise ValueError(f"lr must be a scalar, [T] or [T, L], got shape {lr.shape}")
    lr = jnp.broadcast_to(lr, g.shape)
    u0 = jnp.broadcast_to(u0, g.shape[1:])

    def step(u, x):
        lr_t, g_t = x
        u1 = (1 - lr_t * lam) ** 2 * u + (lr_t * g_t) ** 2
        return u1, u1

    _, us = jax.lax.scan(step, u0, (lr, g))
    return jnp.concatenate([u0[None], us], axis=0)


# --------------------------------------------------------------------------------------------
# Gradient flow (continuum limit), closed form
# --------------------------------------------------------------------------------------------


def _relax(k: jax.Array, t: jax.Array) -> jax.Array:
    """(1 - exp(-k t)) / k, and t at k = 0 (stable for small k)."""
    pos = k > 0
    ks = jnp.where(pos, k, 1)
    return jnp.where(pos, -jnp.expm1(-ks * t) / ks, t)


@_jit
def gradient_flow_norms(
    u0: ArrayLike, c: ArrayLike, lr: ArrayLike, t: ArrayLike, momentum: ArrayLike = 0.0, weight_decay: ArrayLike = 0.0
) -> jax.Array:
    r"""Squared norms :math:`u(t)` of the continuum limit of SGD, in closed form.

    The discrete map :math:`u_{t+1} - u_t = -2\eta\lambda u_t + \eta^2\lambda^2 u_t + \eta^2c^2/u_t`
    with the second-order :math:`\eta^2\lambda^2` term dropped is the ODE
    :math:`\dot u = -2\eta_e\lambda u + \eta_e^2 c^2/u`, where momentum enters as the effective LR
    :math:`\eta_e = \eta/(1-\beta)` (the slow limit of `discrete_norms`: each gradient eventually
    moves :math:`w` by :math:`\eta_e g`, and orthogonal moves add in squared norm). It is linear in
    :math:`u^2`: :math:`\tfrac{d}{dt}u^2 = -4\eta_e\lambda u^2 + 2\eta_e^2c^2`, so with
    :math:`k = 4\eta_e\lambda`

    .. math:: u(t)^2 = u_0^2 e^{-kt} + 2\eta_e^2 c^2\,\frac{1-e^{-kt}}{k}
              = u_\infty^2 + (u_0^2 - u_\infty^2)e^{-kt}, \quad u_\infty^2 = \frac{\eta_e c^2}{2\lambda},

    and :math:`u(t)^2 = u_0^2 + 2\eta_e^2 c^2 t` without weight decay. Time is in steps.

    Args:
      u0: initial squared norms, ``[L]``.
      c: base gradients :math:`c_l`, broadcast against `u0`.
      lr: the LR :math:`\eta`.
      t: time in steps; broadcast against `u0` (e.g. ``t[:, None]`` for a ``[T, L]`` result).
      momentum: heavy-ball momentum :math:`\beta`.
      weight_decay: coupled weight decay :math:`\lambda \ge 0`.

    Returns:
      :math:`u(t)`, the broadcast shape of the inputs.

    Example:
      >>> float(gradient_flow_norms(1.0, 10.0, 0.1, 1.5))
      2.0

    References:
      S. Arora, Z. Li, K. Lyu, `Theoretical Analysis of Auto Rate-Tuning by Batch Normalization`,
      2019 (arXiv:1812.03981).
      T. van Laarhoven, `L2 Regularization versus Batch and Weight Normalization`, 2017
      (arXiv:1706.05350).
    """
    u0, c, lr, t, beta, lam = _arrays(u0, c, lr, t, momentum, weight_decay)
    lr_e = lr / (1 - beta)
    k = 4 * lr_e * lam
    return jnp.sqrt(u0 * u0 * jnp.exp(-k * t) + 2 * (lr_e * c) ** 2 * _relax(k, t))


@_jit
def gradient_flow_elr(
    E0: ArrayLike, t: ArrayLike, momentum: ArrayLike = 0.0, lr: ArrayLike = 1.0, weight_decay: ArrayLike = 0.0
) -> jax.Array:
    r"""The relative ELR under gradient flow: :math:`E(t) = (E_0^{-2} + 2t)^{-1/2} \to (2t)^{-1/2}`.

    Every layer tends to the same :math:`(2t)^{-1/2}`, so ELR ratios tend to 1; the layer with the
    smallest :math:`E_0` equalizes last, after :math:`\sim 1/(2E_0^2)` steps. It is
    :math:`\eta c/u(t)` of `gradient_flow_norms`; in general, with :math:`k = 4\eta\lambda/(1-\beta)`,

    .. math:: E(t)^{-2} = E_0^{-2} e^{-kt} + \frac{2}{(1-\beta)^2}\,\frac{1-e^{-kt}}{k}.

    Args:
      E0: initial ELRs :math:`E_l(0)`, ``[L]``.
      t: time in steps, broadcast against `E0`.
      momentum: heavy-ball momentum :math:`\beta` (effective LR :math:`\eta/(1-\beta)`).
      lr: the LR :math:`\eta`; enters only through :math:`\eta\lambda` (irrelevant without decay).
      weight_decay: coupled weight decay :math:`\lambda`.

    Returns:
      :math:`E(t)`, the broadcast shape of the inputs.

    Example:
      >>> float(gradient_flow_elr(1.0, 4.0))
      0.3333333432674408

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    E0, t, beta, lr, lam = _arrays(E0, t, momentum, lr, weight_decay)
    k = 4 * lr * lam / (1 - beta)
    return jax.lax.rsqrt(jnp.exp(-k * t) / (E0 * E0) + 2 / (1 - beta) ** 2 * _relax(k, t))


def ode_norms(
    u0: ArrayLike, c: ArrayLike, lr: ArrayLike, steps: int, momentum: ArrayLike = 0.0, weight_decay: ArrayLike = 0.0
) -> jax.Array:
    r"""`gradient_flow_norms` at :math:`t = 0, 1, \dots, T`: the ODE prediction, ``[steps+1, L]``.

    The ODE is solvable, so this evaluates the closed form; no numerical solver is involved. It
    matches `discrete_norms` while all :math:`E_l \ll 1` and departs from it for :math:`E_l \gtrsim 1`,
    where SGD (an explicit step-1 solver of a stiff system) overshoots.

    Args:
      u0: initial squared norms, ``[L]``.
      c: base gradients :math:`c_l`, broadcast against `u0`.
      lr: the LR :math:`\eta`.
      steps: the number of steps :math:`T` (a static Python int).
      momentum: heavy-ball momentum :math:`\beta` (effective LR :math:`\eta/(1-\beta)`).
      weight_decay: coupled weight decay :math:`\lambda`.

    Returns:
      :math:`u(t)`, ``[steps+1, L]``.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(u), 4) for u in ode_norms(jnp.array([1.0]), jnp.array([10.0]), 0.1, steps=3)[:, 0]]
      [1.0, 1.7321, 2.2361, 2.6458]
    """
    return _ode_norms(u0, c, lr, momentum, weight_decay, _check_steps(steps))


@functools.partial(jax.jit, static_argnums=(5,))
def _ode_norms(u0, c, lr, momentum, weight_decay, steps):
    u0, c, lr, beta, lam = _arrays(u0, c, lr, momentum, weight_decay)
    shape = jnp.broadcast_shapes(u0.shape, c.shape, lr.shape, beta.shape, lam.shape)
    t = jnp.arange(steps + 1, dtype=u0.dtype).reshape((steps + 1,) + (1,) * len(shape))
    return gradient_flow_norms(u0, c, lr, t, beta, lam)


# --------------------------------------------------------------------------------------------
# Random-walk simulation
# --------------------------------------------------------------------------------------------


def random_walk(
    key: jax.Array,
    w0_norm: ArrayLike | None,
    sizes: Sequence[int],
    c: ArrayLike,
    lr: ArrayLike,
    steps: int,
    momentum: ArrayLike = 0.0,
    weight_decay: ArrayLike = 0.0,
    *,
    num_walks: int | None = None,
    fan_in: Sequence[int] | None = None,
    return_angular_step: bool = False,
):
    r"""Squared norms of the random-walk simulation ("Algorithm 1 Random Walk"), ``[steps+1, L]``.

    Per layer :math:`l` a random Gaussian vector :math:`w_l` of `sizes[l]` entries, scaled to
    `w0_norm[l]` (or at He-init scale :math:`\mathcal{N}(0, 2/\text{fan\_in})`). Each step draws
    a Gaussian direction, projects it orthogonal to :math:`w_l` and scales it to
    :math:`\|g_l\| = c_l/\|w_l\|` (constant base gradient), then applies SGD with heavy-ball
    momentum and coupled weight decay (PyTorch convention):

    .. math:: g \leftarrow g + \lambda w,\quad m \leftarrow \beta m + g,\quad w \leftarrow w - \eta m.

    Without momentum every step changes :math:`u` exactly as `discrete_norms` (per walk, up to
    float rounding); with momentum `discrete_norms` is its expectation for large layers. Layers
    are padded to the largest size with a mask, so all layers run in one `jax.lax.scan`; memory is
    ``num_walks * L * max(sizes)`` floats.

    Args:
      key: a PRNG key.
      w0_norm: initial weight norms :math:`\|w_l(0)\|` (not squared), ``[L]``; None for He init
        (then `fan_in` is required).
      sizes: number of entries of each layer's weight, a static tuple of ints (each at least 2).
      c: base gradients :math:`c_l`, scalar or ``[L]``.
      lr: the LR :math:`\eta`, scalar or ``[L]``.
      steps: the number of SGD steps :math:`T` (a static Python int).
      momentum: heavy-ball momentum :math:`\beta`, scalar or ``[L]``.
      weight_decay: coupled weight decay :math:`\lambda`, scalar or ``[L]``.
      num_walks: if given, that many independent walks, stacked in front.
      fan_in: per-layer fan-in for He init when `w0_norm` is None.
      return_angular_step: also return :math:`\|w_{t+1} - w_t\|/\|w_t\|`, ``[steps, L]``.

    Returns:
      :math:`u_t`, ``[steps+1, L]`` (``[num_walks, steps+1, L]`` with `num_walks`); with
      `return_angular_step`, the pair ``(u, angular_step)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> u = random_walk(jax.random.key(0), jnp.array([1.0, 1.0]), (64, 576), jnp.array([10.0, 1.0]),
      ...                 lr=0.1, steps=5, momentum=0.9, num_walks=8)
      >>> u.shape
      (8, 6, 2)

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    steps = _check_steps(steps)
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 2:
        raise ValueError(f"sizes must be a non-empty tuple of ints >= 2, got {sizes!r}")
    if w0_norm is None:
        if fan_in is None or len(fan_in) != len(sizes):
            raise ValueError("random_walk needs w0_norm, or fan_in (one per layer) for He init")
        # He init N(0, 2 / fan_in), kept as drawn; traced, so both inits share one compilation
        init_std, rescale = np.sqrt(2.0 / np.asarray(fan_in, np.float64)), False
        w0_norm = np.ones(len(sizes), _dtype(c, lr, momentum, weight_decay))
    else:
        init_std, rescale = np.ones(len(sizes), np.float64), True
    return _random_walk(
        key,
        w0_norm,
        init_std,
        rescale,
        c,
        lr,
        momentum,
        weight_decay,
        sizes,
        steps,
        None if num_walks is None else int(num_walks),
        bool(return_angular_step),
    )


@functools.partial(jax.jit, static_argnums=(8, 9, 10, 11))
def _random_walk(
    key, w0_norm, init_std, rescale, c, lr, momentum, weight_decay, sizes, steps, num_walks, return_angular_step
):
    n_layers, width = len(sizes), max(sizes)
    hp = _arrays(c, lr, momentum, weight_decay, w0_norm)
    dt = hp[0].dtype
    c, lr, beta, lam, w0 = (jnp.broadcast_to(x, (n_layers,))[:, None] for x in hp)
    init_std = jnp.broadcast_to(jnp.asarray(init_std, dt), (n_layers,))[:, None]
    mask = jnp.asarray(np.arange(width)[None, :] < np.asarray(sizes)[:, None], dt)

    def sq(x):
        return jnp.sum(x * x, axis=-1, keepdims=True)

    # independent walks are a leading axis of one draw (cheaper to compile than a vmap over keys)
    shape = (n_layers, width) if num_walks is None else (num_walks, n_layers, width)
    k_init, k_steps = jax.random.split(key)
    w = jax.random.normal(k_init, shape, dt) * mask
    w = jnp.where(rescale, w * (w0 * jax.lax.rsqrt(sq(w))), w * init_std)

    def step(state, t):
        w, m = state
        u = sq(w)
        z = jax.random.normal(jax.random.fold_in(k_steps, t), shape, dt) * mask
        g = z - (jnp.sum(z * w, axis=-1, keepdims=True) / u) * w
        g = g * (c * jax.lax.rsqrt(u * sq(g)))  # ||g|| = c / ||w||
        m = beta * m + g + lam * w
        w1 = w - lr * m
        ang = lr * jnp.sqrt(sq(m) / u)
        return (w1, m), (sq(w1)[..., 0], ang[..., 0])

    _, (us, angs) = jax.lax.scan(step, (w, jnp.zeros_like(w)), jnp.arange(steps))
    us = jnp.concatenate([sq(w)[None, ..., 0], us], axis=0)
    if num_walks is not None:  # time second: [num_walks, T+1, L]
        us, angs = jnp.moveaxis(us, 0, 1), jnp.moveaxis(angs, 0, 1)
    return (us, angs) if return_angular_step else us


# --------------------------------------------------------------------------------------------
# Spreads and the critical LR
# --------------------------------------------------------------------------------------------


def _mask(x: jax.Array, mask: ArrayLike | None) -> jax.Array:
    return jnp.ones(x.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)


@_jit
def critical_lr(a: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    r"""The LR minimizing the post-step spread of ELRs: :math:`\eta_{crit} = 1/\sqrt{a_{max}a_{min}}`.

    With :math:`a_l = \|g_l\|/\|w_l\|` the ELR per unit LR, one step maps :math:`E_l = \eta a_l` to
    :math:`f(E_l) = E_l/(1+E_l^2)`; as :math:`f(E) = f(1/E)`, the extreme layers land on the same
    ELR, and the spread :math:`\max_l f / \min_l f` is smallest, at :math:`\eta_{crit}`.
    Layers where :math:`a_l` is zero or not finite are left out; `inf` if none is left.

    Args:
      a: :math:`a_l`, ``[..., L]`` (reduced over the last axis).
      mask: optional bools broadcast against `a`, True at the layers to use.

    Returns:
      :math:`\eta_{crit}`, shaped ``a.shape[:-1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> float(critical_lr(jnp.array([0.01, 1.0, 4.0])))
      5.0

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    (a,) = _arrays(a)
    ok = _mask(a, mask) & jnp.isfinite(a) & (a > 0)
    hi = jnp.max(jnp.where(ok, a, -jnp.inf), axis=-1)
    lo = jnp.min(jnp.where(ok, a, jnp.inf), axis=-1)
    return jnp.where(jnp.any(ok, axis=-1), jax.lax.rsqrt(jnp.where(jnp.any(ok, axis=-1), hi * lo, 1)), jnp.inf)


@_jit
def spread(E: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    r"""The spread of ELRs, :math:`\max_l E_l / \min_l E_l` over the (masked) layers.

    Args:
      E: ELRs, ``[..., L]`` (reduced over the last axis).
      mask: optional bools broadcast against `E`, True at the layers to use.

    Returns:
      The spread, shaped ``E.shape[:-1]`` (1 for equal ELRs).

    Example:
      >>> import jax.numpy as jnp
      >>> float(spread(jnp.array([1.0, 10.0, 100.0]), mask=jnp.array([True, True, False])))
      10.0
    """
    (E,) = _arrays(E)
    m = _mask(E, mask)
    return jnp.max(jnp.where(m, E, -jnp.inf), axis=-1) / jnp.min(jnp.where(m, E, jnp.inf), axis=-1)


@_jit
def log_spread_std(E: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    r"""The standard deviation (population, ddof 0) of :math:`\log_{10} E_l` over the (masked) layers.

    Args:
      E: ELRs, ``[..., L]`` (reduced over the last axis).
      mask: optional bools broadcast against `E`, True at the layers to use.

    Returns:
      :math:`\operatorname{std}_l \log_{10} E_l`, shaped ``E.shape[:-1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(log_spread_std(jnp.array([1.0, 100.0]))), 6)
      1.0
    """
    (E,) = _arrays(E)
    m = _mask(E, mask)
    x = jnp.where(m, jnp.log10(jnp.where(m, E, 1)), 0)
    n = jnp.sum(m, axis=-1, keepdims=True)
    mean = jnp.sum(x, axis=-1, keepdims=True) / n
    return jnp.sqrt(jnp.sum(jnp.where(m, (x - mean) ** 2, 0), axis=-1) / n[..., 0])


# --------------------------------------------------------------------------------------------
# Equilibrium with weight decay
# --------------------------------------------------------------------------------------------


@_jit
def equilibrium_angular_step(lr: ArrayLike, weight_decay: ArrayLike, momentum: ArrayLike = 0.0) -> jax.Array:
    r"""The equilibrium angular step :math:`\|\Delta w\|/\|w\| = \sqrt{2\eta\lambda/(1+\beta)}`.

    At equilibrium the norm is constant, so :math:`\|\Delta w\|^2 = -2\langle w, \Delta w\rangle`;
    for the model of `discrete_norms` this gives the formula exactly (independent of :math:`c`).

    Args:
      lr: the LR :math:`\eta`.
      weight_decay: coupled weight decay :math:`\lambda`.
      momentum: heavy-ball momentum :math:`\beta`.

    Returns:
      The angular step per step, the broadcast shape of the inputs.

    Example:
      >>> round(float(equilibrium_angular_step(0.1, 5e-4, momentum=0.9)), 6)
      0.007255

    References:
      R. Wan, Z. Zhu, X. Zhang, J. Sun, `Spherical Motion Dynamics`, 2021 (arXiv:2006.08419).
      A. Kosson, B. Messmer, M. Jaggi, `Rotational Equilibrium`, 2024 (arXiv:2305.17212).
    """
    lr, lam, beta = _arrays(lr, weight_decay, momentum)
    return jnp.sqrt(2 * lr * lam / (1 + beta))


@_jit
def equilibrium_norm(c: ArrayLike, lr: ArrayLike, weight_decay: ArrayLike, momentum: ArrayLike = 0.0) -> jax.Array:
    r"""The equilibrium weight norm :math:`\|w_\infty\|` (not squared) of `discrete_norms`.

    The fixed point of the model of `discrete_norms` is

    .. math:: u_\infty^2 = \|w_\infty\|^4 = \frac{\eta c^2 (1+\beta)}{\lambda(1-\beta)(2(1+\beta) - \eta\lambda)},

    i.e. :math:`\eta c^2/(\lambda(2-\eta\lambda))` without momentum, and to first order in
    :math:`\eta\lambda` the gradient-flow value :math:`\eta c^2/(2\lambda(1-\beta))`.

    Args:
      c: base gradients :math:`c_l`.
      lr: the LR :math:`\eta`.
      weight_decay: coupled weight decay :math:`\lambda > 0`.
      momentum: heavy-ball momentum :math:`\beta`.

    Returns:
      :math:`\|w_\infty\| = u_\infty^{1/2}`, the broadcast shape of the inputs.

    Example:
      >>> round(float(equilibrium_norm(1.0, 0.1, 5e-4)), 4), round(float(equilibrium_norm(1.0, 0.1, 5e-4, 0.9)), 4)
      (3.1623, 5.6234)

    References:
      T. van Laarhoven, `L2 Regularization versus Batch and Weight Normalization`, 2017
      (arXiv:1706.05350).
      R. Wan, Z. Zhu, X. Zhang, J. Sun, `Spherical Motion Dynamics`, 2021 (arXiv:2006.08419).
    """
    c, lr, lam, beta = _arrays(c, lr, weight_decay, momentum)
    u2 = lr * c * c * (1 + beta) / (lam * (1 - beta) * (2 * (1 + beta) - lr * lam))
    return jnp.sqrt(jnp.sqrt(u2))


@_jit
def equilibrium_elr(lr: ArrayLike, weight_decay: ArrayLike, momentum: ArrayLike = 0.0) -> jax.Array:
    r"""The equilibrium relative ELR :math:`\eta c/u_\infty` of `discrete_norms` (same for every layer).

    .. math:: E_\infty^2 = \eta\lambda(1-\beta)\,\frac{2(1+\beta) - \eta\lambda}{1+\beta},

    i.e. :math:`\eta\lambda(2-\eta\lambda)` without momentum (see `equilibrium_norm`).

    Args:
      lr: the LR :math:`\eta`.
      weight_decay: coupled weight decay :math:`\lambda`.
      momentum: heavy-ball momentum :math:`\beta`.

    Returns:
      :math:`E_\infty`, the broadcast shape of the inputs.

    Example:
      >>> round(float(equilibrium_elr(0.5, 0.5)), 6)
      0.661438

    References:
      R. Wan, Z. Zhu, X. Zhang, J. Sun, `Spherical Motion Dynamics`, 2021 (arXiv:2006.08419).
    """
    lr, lam, beta = _arrays(lr, weight_decay, momentum)
    return jnp.sqrt(lr * lam * (1 - beta) * (2 * (1 + beta) - lr * lam) / (1 + beta))


# --------------------------------------------------------------------------------------------
# Convenience
# --------------------------------------------------------------------------------------------


def predict(
    c0: ArrayLike,
    w0_norm: ArrayLike,
    lr: ArrayLike,
    steps: int,
    momentum: ArrayLike = 0.0,
    weight_decay: ArrayLike = 0.0,
    model: str = "discrete",
    mask: ArrayLike | None = None,
) -> dict:
    r"""Predicted per-layer norms, ELRs and spreads from measured :math:`c_l(0)` and :math:`\|w_l(0)\|`.

    Holds the base gradient at :math:`c_l(0)` and runs `discrete_norms` (``model="discrete"``) or
    `ode_norms` (``model="ode"``), then derives both ELRs and the spread.

    Args:
      c0: base gradients :math:`c_l(0) = \|g_l(0)\|\|w_l(0)\|`, ``[L]``.
      w0_norm: initial weight norms :math:`\|w_l(0)\|` (not squared), ``[L]``.
      lr: the LR :math:`\eta`.
      steps: the number of steps :math:`T` (a static Python int).
      momentum: heavy-ball momentum :math:`\beta`.
      weight_decay: coupled weight decay :math:`\lambda`.
      model: ``"discrete"`` (the SGD map; the random-walk expectation model with momentum) or
        ``"ode"`` (gradient flow at the effective LR :math:`\eta/(1-\beta)`).
      mask: optional bools ``[L]``, the layers the spreads run over (default all).

    Returns:
      A dict: ``norms`` the squared norms :math:`u_t = \|w_{l,t}\|^2` ``[T+1, L]``, ``w_norm`` their
      square roots :math:`\|w_{l,t}\|` ``[T+1, L]``, ``elr`` the relative ELR :math:`\eta c_l/u_t`
      ``[T+1, L]``, ``elr_classic`` :math:`\eta/u_t` ``[T+1, L]``, ``spread`` ``[T+1]`` and
      ``log_spread_std`` ``[T+1]`` of ``elr``.

    Example:
      >>> import jax.numpy as jnp
      >>> out = predict(jnp.array([100.0, 1.0]), jnp.array([1.0, 1.0]), lr=0.1, steps=1)
      >>> out["elr"][:, 0].tolist(), out["spread"].tolist()
      ([10.0, 0.09900990128517151], [100.0, 1.0])

    References:
      A. Mehmeti-Göpel, M. Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    if model not in ("discrete", "ode"):
        raise ValueError(f"model must be 'discrete' or 'ode', got {model!r}")
    return _predict(c0, w0_norm, lr, momentum, weight_decay, mask, _check_steps(steps), model)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _predict(c0, w0_norm, lr, momentum, weight_decay, mask, steps, model):
    c0, w0, lr, beta, lam = _arrays(c0, w0_norm, lr, momentum, weight_decay)
    if model == "discrete":
        u = discrete_norms(w0 * w0, c0, lr, steps, beta, lam)
    elif model == "ode":
        u = ode_norms(w0 * w0, c0, lr, steps, beta, lam)
    elr = elr_from_norms(u, c0, lr)
    return {
        "norms": u,
        "w_norm": jnp.sqrt(u),
        "elr": elr,
        "elr_classic": classic_elr(u, lr),
        "spread": spread(elr, mask),
        "log_spread_std": log_spread_std(elr, mask),
    }
