"""A controller for the PReLU sparsity prior: adapt its strength until a target number of units is nonlinear."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.transforms import _layers
from normjax.transforms.prelu import MODES, POWERS, check_numbers, sparsity_step


class PReLUControllerState(NamedTuple):
    r"""State of `prelu_sparsity_controller`.

    Attributes:
      count: updates so far (int32); schedules are evaluated at it.
      strength: the prior's strength :math:`\lambda` applied at the last update (float32; 0 at
        init and once the target is reached).
      log_scale: the controller's integral, :math:`\log(\lambda / \lambda_0)` (float32; 0 at
        init). Held, not reset, while the target is met.
      frozen: per slope, True once it was made linear: it is exactly 1.0 and stays there.
      num_frozen: the number of frozen slopes (int32), i.e. of units made linear.
      num_units: the number of slopes the transform sees (int32, fixed by the params' shapes).
    """

    count: jax.Array
    strength: jax.Array
    log_scale: jax.Array
    frozen: Any
    num_frozen: jax.Array
    num_units: jax.Array


def gradual_target(
    final: optax.ScalarOrSchedule, begin_step: jax.typing.ArrayLike, ramp_steps: jax.typing.ArrayLike
) -> optax.Schedule:
    r"""Gradual pruning's cubic schedule for the share of units kept nonlinear.

    .. math:: k_t = k_f + (1 - k_f)\,(1 - \pi_t)^3, \qquad
       \pi_t = \mathrm{clip}\big((t - t_0) / T, 0, 1\big),

    from every unit nonlinear (:math:`k = 1`) at :math:`t_0` = `begin_step` to :math:`k_f` =
    `final` at :math:`t_0 + T` (`ramp_steps`; :math:`T = 0`: :math:`k_f` from :math:`t_0` on).
    The share falls fastest at first, while many units are close to linear, and slowest at the
    end, where the units left are the ones the loss holds away from linear (Zhu & Gupta's
    argument for pruning weights, here for linearizing units). Given as `target` to
    `prelu_sparsity_controller`, it spreads the sparsification over a span of training the
    user chooses, instead of the controller's own pace (which meets a fixed target within tens
    of steps). All three values may be traced (a sweep's hyper-parameters).

    Args:
      final: :math:`k_f \in [0, 1]`, the share kept at the end of the ramp (number or schedule).
      begin_step: :math:`t_0 \ge 0`, the step the ramp starts at.
      ramp_steps: :math:`T \ge 0`, its length in steps.

    Returns:
      An `optax.Schedule` of the step count.

    Example:
      >>> sched = gradual_target(0.1, begin_step=10, ramp_steps=100)
      >>> [round(float(sched(t)), 4) for t in (0, 10, 35, 60, 110, 500)]
      [1.0, 1.0, 0.4797, 0.2125, 0.1, 0.1]

    References:
      Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning for model
      compression`, 2017 (arXiv:1710.01878).
    """

    def schedule(count):
        k_f = jnp.asarray(_layers.value(final, count), jnp.float32)
        ramp = jnp.asarray(ramp_steps, jnp.float32)
        t = jnp.asarray(count, jnp.float32) - jnp.asarray(begin_step, jnp.float32)
        progress = jnp.where(ramp > 0, jnp.clip(t / jnp.maximum(ramp, 1.0), 0.0, 1.0), (t >= 0).astype(jnp.float32))
        return k_f + (1.0 - k_f) * (1.0 - progress) ** 3

    return schedule


def _admit_closest(budget: jax.Array):
    """An `admit` for `sparsity_step`: of the slopes that would freeze, at most `budget`, those that
    were closest to 1 before the step.

    Ranked by :math:`|\alpha - 1|` before the step, then by :math:`|\alpha + u - 1|` after the plain
    update. Several slopes can land exactly on 1 in one proximal step; ranking by where they
    landed would leave the choice to leaf and index order. Slopes tied on both keys at the
    budget's edge all wait a step (their plain updates then differ), so which units freeze
    depends on the slopes' values alone, never on their order in the tree.
    """

    def admit(newly, params, updates):
        flat, treedef = jax.tree.flatten(newly, is_leaf=_layers.is_masked)
        p_flat = jax.tree.leaves(params, is_leaf=_layers.is_masked)
        u_flat = jax.tree.leaves(updates, is_leaf=_layers.is_masked)
        real = [i for i, x in enumerate(flat) if not _layers.is_masked(x)]
        if not real:
            return newly
        cand = jnp.concatenate([flat[i].ravel() for i in real])

        def key(f):
            return jnp.concatenate([jnp.where(flat[i], f(i), jnp.inf).ravel() for i in real])

        before = key(lambda i: jnp.abs(p_flat[i].astype(jnp.float32) - 1.0))
        plain = key(lambda i: jnp.abs(p_flat[i].astype(jnp.float32) - 1.0 + u_flat[i].astype(jnp.float32)))
        order = jnp.lexsort((plain, before))  # by `before`, then `plain`
        b, q = before[order], plain[order]
        n = cand.size
        last = jnp.concatenate([(b[1:] != b[:-1]) | (q[1:] != q[:-1]), jnp.ones(1, bool)])  # ends a tie group
        group_end = jax.lax.cummin(jnp.where(last, jnp.arange(n), n), reverse=True)
        ok = jnp.zeros(n, bool).at[order].set((group_end < budget) & jnp.isfinite(b)) & cand
        out, start = list(flat), 0
        for i in real:
            out[i] = ok[start : start + flat[i].size].reshape(flat[i].shape)
            start += flat[i].size
        return jax.tree.unflatten(treedef, out)

    return admit


def prelu_sparsity_controller(
    target: optax.ScalarOrSchedule | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    *,
    target_count: optax.ScalarOrSchedule | None = None,
    init_strength: optax.ScalarOrSchedule = 1e-3,
    gain: optax.ScalarOrSchedule = 0.01,
    min_rate: optax.ScalarOrSchedule = 0.0,
    tolerance: optax.ScalarOrSchedule = 0.01,
    mode: str = "proximal",
    power: float = 1.0,
    max_strength: float = 1e3,
) -> optax.GradientTransformationExtraArgs:
    r"""The PReLU sparsity prior with its strength :math:`\lambda` steered to a target count of nonlinear units.

    The prior is `prelu_sparsity_prior`'s, step for step (same proximal or sub-gradient move of
    :math:`d = \alpha' - 1` toward 0, same freezing at exactly 1.0 within `tolerance`); only its
    strength is not given but adapted each update, so that of the :math:`n` slopes the transform
    sees, :math:`m^* = \mathrm{round}(\text{target} \cdot n)` (or `target_count`; rounded to the
    nearest integer, clipped to [0, n]) stay nonlinear.
    Let :math:`k_t` be the number frozen, :math:`K = n - m^*` the number to freeze,
    :math:`r_t = \max(K - k_t, 0)` the number still to freeze and
    :math:`e_t = r_t / \max(K, 1) \in [0, 1]` the share of the work left. Each update:

    1. applies :math:`\lambda_t = \min(\lambda_0 e^{s_t}, \lambda_{max})` while :math:`r_t > 0`,
       else :math:`\lambda_t = 0` (`init_strength` is :math:`\lambda_0`);
    2. freezes at most :math:`r_t` slopes: if more reach the tolerance in the same step, those
       that were closest to 1 before the step freeze and the others take the plain update (no
       prior) this step (slopes tied at the budget's edge all wait: the choice never depends on
       the order of leaves or indices);
    3. integrates in :math:`\log\lambda`: :math:`s_{t+1} = s_t + \text{gain}\cdot\max(e_{t+1}, \rho)`
       while units remain to freeze after the step, and
       :math:`s_{t+1} = s_t - \text{gain}\cdot\rho` after a step that met its need
       (:math:`\rho` is `min_rate`; only while :math:`\lambda_t > 0`; capped so
       :math:`\lambda_0 e^{s} \le \lambda_{max}`).

    Why this law. Frozen units never come back, so the count can only fall and the target must be
    approached from above, without overshoot. The scale of a useful :math:`\lambda` is unknown
    (it is set by the gradients holding the slopes away from 1, and spans decades), so the
    controller acts on :math:`\log\lambda`: a multiplicative integral controller that raises
    :math:`\lambda` geometrically while units remain to be linearized and slows down in proportion
    to the share left, so units freeze one by one in the order the prior ranks them (weakest pull
    away from linear first) rather than in a burst. It never lowers :math:`\lambda` to undo an
    overshoot, since an overshoot cannot be undone; instead the budget of step 2 makes the target
    a hard floor (at most :math:`r_t` freeze, so :math:`n - k_t \ge m^*` always), and once it is
    reached :math:`\lambda` falls to 0: nothing pushes the remaining slopes toward 1 any more, and
    none freezes, so training goes on with the architecture fixed. The integral is held while the
    target is met (and while :math:`\lambda_0 = 0`, e.g. a schedule that starts the prior at epoch
    k, so it does not wind up), so a lower target set later resumes from the same level.

    The integral acts on the count after the step, which lags :math:`\lambda` by the time slopes
    take to travel to 1; a smaller `gain` grows :math:`\lambda` more slowly and ranks the units
    more faithfully, a larger one reaches the target sooner; near the target the integral slows
    with the share left, so the last units take longest. With :math:`\rho = 0` the rate vanishes
    with the share left: the last few units, those the loss holds hardest away from linear, can
    stall short of the target for the rest of the run (seen in the APL study's medium targets
    sweep: docs/reproduction.md has the numbers). A rate floor
    :math:`\rho > 0` keeps :math:`\lambda` growing by at least :math:`e^{\text{gain}\,\rho}` per
    update while units remain, and lowers it by as much after each update that freezes all it
    needed: tracking a falling target (below), :math:`\lambda` settles where the next units just
    keep pace, instead of staying at the level its first burst reached, which pushes every free
    slope toward 1 by :math:`\eta_t\lambda` a step. The floor also meets a fixed target in bounded
    time (at :math:`\lambda_{max}` any slope is thresholded onto 1); the budget still admits the
    units closest to 1 first. With `gain=0` and a target that allows
    every unit to freeze, this is `prelu_sparsity_prior` with strength :math:`\lambda_0`, bitwise
    (jitted, the square-root form may differ by an ulp where XLA fuses it differently).

    With a fixed `target`, the controller's own pace sets when the target is met: with a rate
    floor, within tens of steps, i.e. at initialization in a run of thousands. To sparsify
    *during* training, give `target` as a schedule that falls over a chosen span, e.g.
    `gradual_target` (the cubic schedule of gradual pruning): the controller then tracks it
    unit by unit, and the target is met at the span's end.

    Nothing is read from the hyper-parameters at init: under `optax.inject_hyperparams`, values
    set in the state after init (target, gain, :math:`\lambda_0`) act from the next update, and
    changing them does not recompile. A higher target later does not unfreeze units.

    Args:
      target: the fraction in [0, 1] of the slopes to keep nonlinear (number or schedule, e.g.
        `gradual_target`); give it or `target_count`, not both.
      learning_rate: :math:`\eta_t`, the LR of the chain (number or schedule) that scales the prior.
      target_count: the number of slopes to keep nonlinear, instead of `target`.
      init_strength: :math:`\lambda_0 \ge 0`, the strength at the first step; a schedule multiplies
        in (e.g. zero until epoch k). :math:`\lambda_0 = 0` never pushes.
      gain: :math:`\ge 0`, the rate of the integral per update at :math:`e = 1`
        (:math:`\lambda` grows by a factor :math:`e^{\text{gain}}` per update while no unit is
        linear yet).
      min_rate: :math:`\rho \in [0, 1]`, the floor on the share :math:`e` in the integral while
        units remain to freeze (0: none, the law above).
      tolerance: in [0, 1): a slope with :math:`|1 - \alpha| <` tolerance counts as linear and is
        frozen.
      mode: `"proximal"` or `"subgradient"`, as in `prelu_sparsity_prior`.
      power: :math:`p`, 1 (L1) or 0.5 (the square-root form).
      max_strength: :math:`\lambda_{max}`, a cap on :math:`\lambda` (and on the integral's wind-up).

    Returns:
      An `optax.GradientTransformationExtraArgs`; its state is a `PReLUControllerState` (read it
      with `optax.tree_utils.tree_get(state, "num_frozen")` and `tree_get(state, "strength")`).

    Raises:
      ValueError: an unknown `mode` or `power`, not exactly one of `target` and `target_count`, no
        `learning_rate`, or an argument given as a number outside what it allows (`target` outside
        [0, 1], a negative `target_count`, `learning_rate`, `init_strength` or `gain`, `min_rate`
        outside [0, 1], `tolerance` outside [0, 1), `max_strength` <= 0).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from normjax.transforms import prelu_sparsity_controller
      >>> params = {"slope": jnp.linspace(-0.5, 0.5, 10), "w": jnp.ones(3)}
      >>> tx = optax.chain(optax.sgd(0.1), optax.masked(
      ...     prelu_sparsity_controller(0.3, 0.1, init_strength=0.1, gain=0.1), {"slope": True, "w": False}))
      >>> state, update = tx.init(params), jax.jit(tx.update)
      >>> for _ in range(100):
      ...     updates, state = update({"slope": jnp.zeros(10), "w": jnp.zeros(3)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> int(optax.tree_utils.tree_get(state, "num_frozen"))  # 7 of 10 linear, 3 = 0.3 * 10 kept
      7
      >>> float(optax.tree_utils.tree_get(state, "strength"))  # target met: the prior is off
      0.0
      >>> [round(float(a), 2) for a in params["slope"]]  # the 7 closest to 1 went first
      [0.69, 0.8, 0.91, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]

    References:
      Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
      Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180);
      Åström & Murray, `Feedback Systems: An Introduction for Scientists and Engineers`, 2008
      (Princeton University Press), ch. 10 (integral action and anti-windup);
      Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning for model
      compression`, 2017 (arXiv:1710.01878) (the gradual schedule).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; allowed: {', '.join(MODES)}")
    if power not in POWERS:
        raise ValueError(f"power={power!r} is not supported; allowed: 1.0 (L1) or 0.5")
    if (target is None) == (target_count is None):
        raise ValueError("give exactly one of target (a fraction of the slopes) and target_count (a number)")
    if learning_rate is None:
        raise ValueError("learning_rate is required: the LR of the chain, which scales the prior")
    if not max_strength > 0:
        raise ValueError(f"max_strength={max_strength!r} must be > 0")
    check_numbers(
        target=target,
        target_count=target_count,
        learning_rate=learning_rate,
        init_strength=init_strength,
        gain=gain,
        min_rate=min_rate,
        tolerance=tolerance,
    )

    def init_fn(params):
        frozen = _layers.tree_map(lambda p: jnp.zeros_like(p, dtype=bool), params)
        n = sum(math.prod(p.shape) for p in _layers.leaves(params))
        zero = jnp.zeros((), jnp.float32)
        return PReLUControllerState(
            count=jnp.zeros((), jnp.int32),
            strength=zero,
            log_scale=zero,
            frozen=frozen,
            num_frozen=jnp.zeros((), jnp.int32),
            num_units=jnp.asarray(n, jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        c, n = state.count, state.num_units
        nf = n.astype(jnp.float32)
        keep = _layers.value(target, c) * nf if target_count is None else _layers.value(target_count, c)
        keep = jnp.clip(jnp.round(jnp.asarray(keep, jnp.float32)), 0.0, nf).astype(jnp.int32)
        to_freeze = n - keep
        left = jnp.maximum(to_freeze - state.num_frozen, 0)

        base = jnp.asarray(_layers.value(init_strength, c), jnp.float32)
        cap = jnp.float32(max_strength)
        lam = jnp.where(left > 0, jnp.minimum(base * jnp.exp(state.log_scale), cap), 0.0)
        t = jnp.asarray(_layers.value(learning_rate, c), jnp.float32) * lam
        new_updates, frozen, num = sparsity_step(
            updates,
            params,
            state.frozen,
            t,
            _layers.value(tolerance, c),
            mode=mode,
            power=power,
            admit=_admit_closest(left),
        )

        share_left = jnp.maximum(to_freeze - num, 0).astype(jnp.float32) / jnp.maximum(to_freeze, 1).astype(jnp.float32)
        floor = jnp.asarray(_layers.value(min_rate, c), jnp.float32)
        # Behind after the step: up by at least the floor; a step that met its need: down by it.
        rate = jnp.where(share_left > 0, jnp.maximum(share_left, floor), -floor)
        s = state.log_scale + jnp.asarray(_layers.value(gain, c), jnp.float32) * rate
        s = jnp.minimum(s, jnp.log(cap) - jnp.log(base))  # anti-windup: lambda_0 e^s <= lambda_max
        s = jnp.where(lam > 0, s, state.log_scale).astype(jnp.float32)
        return new_updates, PReLUControllerState(
            count=optax.safe_increment(c),
            strength=lam.astype(jnp.float32),
            log_scale=s,
            frozen=frozen,
            num_frozen=num,
            num_units=n,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
