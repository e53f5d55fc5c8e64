r"""The studies' optimizers, each one `optax.chain` of optax's transforms and normjax's (as optax writes `lars`).

Each alias is SGD with (Nesterov) momentum, weight decay and a learning rate, plus the transform
of one study at the place its docstring names. Weight decay is coupled (default: `wd * w` added
to the gradient before momentum, as PyTorch's SGD) or decoupled (`w -= lr_t * wd * w`, outside
the momentum buffer). The masks are arguments: a pytree of bools over the params, or a callable
params -> that pytree (`kernel_mask` and `prelu_slope_mask` build them from the params' paths).

The LR of step t is :math:`\eta_t` = `learning_rate(t) * lr_multiplier(t)`: `learning_rate` is a
number or a schedule, and `lr_multiplier` (optional) a schedule's shape kept apart, so that
`optax.inject_hyperparams` can inject a peak `learning_rate` as a number (a sweep over it does not
recompile) while the shape stays a static function (name it in `static_args`). The arguments that
pick the computation rather than a value (`layer_axes`, `power`) default to None, which
`optax.inject_hyperparams` passes through as it is; a number given to one of them there must be
named in `static_args`.

Example:
  >>> import jax.numpy as jnp, optax
  >>> import normjax.transforms as njt
  >>> params = {"conv": {"kernel": jnp.ones((3, 3, 4, 4))}, "head": {"kernel": jnp.ones((4, 2))}}
  >>> tx = optax.inject_hyperparams(njt.sgd_uniform_elr, static_args="lr_multiplier")(
  ...     learning_rate=0.1, momentum=0.9, scale_invariant_mask=njt.kernel_mask(params, exclude=("head",)),
  ...     lr_multiplier=optax.cosine_decay_schedule(1.0, 1000))
  >>> state = tx.init(params)
  >>> sorted(state.hyperparams)
  ['learning_rate', 'momentum', 'weight_decay']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from normjax.transforms import _layers
from normjax.transforms._layers import LayerAxes
from normjax.transforms.controller import prelu_sparsity_controller
from normjax.transforms.elr import scale_by_uniform_elr
from normjax.transforms.prelu import prelu_sparsity_prior
from normjax.transforms.warmup import scale_by_critical_lr

PyTree = Any
MaskOrFn = PyTree | Callable[[PyTree], PyTree] | None
ELR_POSITIONS = ("before_momentum", "after_momentum")


def _weight_decay(weight_decay: optax.ScalarOrSchedule, mask: MaskOrFn, decoupled: bool) -> tuple[tuple, tuple]:
    """The decay step placed before momentum (coupled) or after it (decoupled): `(before, after)`."""
    decay = optax.add_decayed_weights(weight_decay, mask=mask)
    return ((), (decay,)) if decoupled else ((decay,), ())


def _scale_by_lr(learning_rate: optax.ScalarOrSchedule, lr_multiplier: optax.ScalarOrSchedule | None) -> tuple:
    """Multiply by `-learning_rate(t) * lr_multiplier(t)`: the multiplier's step (if any), then the LR's
    (`optax.scale_by_learning_rate`, negated as `-lr`)."""
    if callable(learning_rate):
        lr = optax.scale_by_schedule(lambda count: -learning_rate(count))
    else:
        lr = optax.scale(-learning_rate)
    if lr_multiplier is None:
        return (lr,)
    return (optax.scale_by_schedule(lambda count: _layers.value(lr_multiplier, count)), lr)


def _lr(learning_rate: optax.ScalarOrSchedule, lr_multiplier: optax.ScalarOrSchedule | None) -> optax.ScalarOrSchedule:
    """The chain's LR, `learning_rate(t) * lr_multiplier(t)`, as one number or schedule."""
    if lr_multiplier is None:
        return learning_rate
    return lambda count: _layers.value(learning_rate, count) * _layers.value(lr_multiplier, count)


def _static(name: str, value: Any, default: Any) -> Any:
    """`value` (`default` for None), refused where `optax.inject_hyperparams` made an array of it."""
    if isinstance(value, jax.Array):
        raise ValueError(
            f"{name} is an array ({type(value).__name__}); it picks the computation, not a value: give a Python "
            f"number (under optax.inject_hyperparams, name {name!r} in static_args)"
        )
    return default if value is None else value


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    nesterov: bool = False,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with (Nesterov) momentum and coupled or decoupled weight decay.

    The chain: decay (coupled) → momentum → decay (decoupled) → LR. With gradient :math:`g`,
    weight decay :math:`\lambda`, momentum :math:`\mu` and LR :math:`\eta_t`:

    .. math::
      u = g + \lambda w \;\text{(coupled)}, \quad m \leftarrow \mu m + u, \quad
      \Delta w = -\eta_t\,(m + \lambda w \;\text{(decoupled)}),

    with :math:`u + \mu m` in place of :math:`m` for Nesterov momentum. Weight decay acts on the
    leaves `weight_decay_mask` selects. This is the baseline the other aliases extend.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule of the step.
      momentum: :math:`\mu`, the decay of the momentum buffer (`optax.trace`); 0 is plain SGD.
      weight_decay: :math:`\lambda`, the L2 coefficient.
      nesterov: Nesterov momentum.
      decoupled_weight_decay: apply the decay after momentum (AdamW-style, scaled by
        :math:`\eta_t`) instead of adding it to the gradient.
      weight_decay_mask: the leaves that decay (pytree of bools or callable params -> it); None:
        every leaf.
      lr_multiplier: a factor of `learning_rate` at each step (number or schedule), e.g. a
        warm-up and decay shape in [0, 1]; None: 1.

    Returns:
      An `optax.GradientTransformationExtraArgs`: the `optax.chain` above.

    Example:
      >>> import jax.numpy as jnp
      >>> import normjax.transforms as njt
      >>> params = {"w": jnp.ones(3), "b": jnp.ones(3)}
      >>> tx = njt.sgd(0.1, momentum=0.9, weight_decay=0.5, weight_decay_mask={"w": True, "b": False})
      >>> updates, state = tx.update({"w": jnp.ones(3), "b": jnp.ones(3)}, tx.init(params), params)
      >>> [round(float(updates[k][0]), 6) for k in ("w", "b")]   # -lr * (g + wd * w), decay on w only
      [-0.15, -0.1]

    References:
      Sutskever, Martens, Dahl & Hinton, `On the Importance of Initialization and Momentum in Deep
      Learning`, 2013 (ICML);
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization`, 2019 (arXiv:1711.05101).
    """
    coupled, decoupled = _weight_decay(weight_decay, weight_decay_mask, decoupled_weight_decay)
    return optax.chain(
        *coupled,
        optax.trace(decay=momentum, nesterov=nesterov),
        *decoupled,
        *_scale_by_lr(learning_rate, lr_multiplier),
    )


def sgd_uniform_elr(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    scale_invariant_mask: MaskOrFn,
    definition: str = "relative",
    reference: str = "lr",
    position: str = "after_momentum",
    layer_axes: LayerAxes | None = None,
    end_step: jax.typing.ArrayLike | None = None,
    nesterov: bool = False,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD whose scale-invariant kernels all take the same effective learning rate.

    The chain: decay (coupled) → [uniform ELR] → momentum → [uniform ELR] → decay (decoupled) →
    LR, with `scale_by_uniform_elr` under `optax.masked(scale_invariant_mask)` at one of the two
    places `position` names. There each masked layer's update is multiplied by
    :math:`\bar r / r_l` (:math:`r_l = \|u_l\|/\|w_l\|` for `definition="relative"`), so that with
    `reference="lr"` every such layer moves by :math:`\|\Delta w_l\|/\|w_l\| = \eta_t` (after
    momentum; LARS with trust coefficient 1); the other leaves keep the global LR.
    `"before_momentum"` makes the gradients uniform instead (each layer's buffer then averages
    unit-relative steps).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule of the step (with `reference="lr"`,
        the common ELR).
      momentum: the decay of the momentum buffer.
      weight_decay: the L2 coefficient.
      scale_invariant_mask: True at the kernels that feed a normalization (e.g.
        `kernel_mask(params, exclude=("head",))`), whose ELRs are made uniform.
      definition: `"relative"` or `"classic"` (see `scale_by_uniform_elr`).
      reference: `"lr"` or `"geometric_mean"` (see `scale_by_uniform_elr`).
      position: `"before_momentum"` or `"after_momentum"`.
      layer_axes: per leaf, the leading axes that index stacked layers (see
        `scale_by_uniform_elr`); None: every leaf is one layer.
      end_step: None (uniform ELR for the whole run) or the step from which the chain is plain
        SGD (uniform ELR early in training only; see `scale_by_uniform_elr`).
      nesterov: Nesterov momentum.
      decoupled_weight_decay: decay after momentum instead of on the gradient (see `sgd`).
      weight_decay_mask: the leaves that decay; None: every leaf.
      lr_multiplier: a factor of `learning_rate` at each step; None: 1.

    Returns:
      An `optax.GradientTransformationExtraArgs`: the `optax.chain` above (its
      `ScaleByUniformELRState` holds the per-layer factors and the common ELR).

    Example:
      >>> import jax.numpy as jnp
      >>> import normjax.transforms as njt
      >>> params = {"conv": {"kernel": jnp.ones((3, 3, 4, 4))}, "head": {"kernel": jnp.ones((4, 2))}}
      >>> tx = njt.sgd_uniform_elr(0.01, scale_invariant_mask=njt.kernel_mask(params, exclude=("head",)))
      >>> grads = {"conv": {"kernel": jnp.full((3, 3, 4, 4), 5.0)}, "head": {"kernel": jnp.ones((4, 2))}}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> w, u = params["conv"]["kernel"], updates["conv"]["kernel"]
      >>> round(float(jnp.linalg.norm(u) / jnp.linalg.norm(w)), 6)   # the relative step is the LR
      0.01

    References:
      You, Gitman & Ginsburg, `Large Batch Training of Convolutional Networks`, 2017
      (arXiv:1708.03888);
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    if position not in ELR_POSITIONS:
        raise ValueError(f"position={position!r} is unknown; allowed: {', '.join(ELR_POSITIONS)}")
    elr = optax.masked(
        scale_by_uniform_elr(definition, reference, layer_axes=_static("layer_axes", layer_axes, 0), end_step=end_step),
        scale_invariant_mask,
    )
    before, after = ((elr,), ()) if position == "before_momentum" else ((), (elr,))
    coupled, decoupled = _weight_decay(weight_decay, weight_decay_mask, decoupled_weight_decay)
    return optax.chain(
        *coupled,
        *before,
        optax.trace(decay=momentum, nesterov=nesterov),
        *after,
        *decoupled,
        *_scale_by_lr(learning_rate, lr_multiplier),
    )


def sgd_critical_warmup(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    scale_invariant_mask: MaskOrFn,
    layer_axes: LayerAxes | None = None,
    nesterov: bool = False,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD whose LR never exceeds the critical LR: a warm-up with no length to tune.

    The chain: decay (coupled) → momentum → decay (decoupled) → critical-LR step. The last step,
    `scale_by_critical_lr`, applies :math:`\min(\eta_t, \eta_{crit,t})` to every leaf, with
    :math:`\eta_{crit} = 1/\sqrt{a_{max} a_{min}}` and :math:`a_l = \|u_l\|/\|w_l\|` measured on
    the momentum buffer of the layers `scale_invariant_mask` selects: the LR at which one step
    leaves the smallest spread of their effective LRs. Early in training of a deep normalized
    network it is small; as the weight norms grow it rises past :math:`\eta_t`, and the warm-up
    ends by itself.

    Args:
      learning_rate: the target LR :math:`\eta`, a number or a schedule of the step.
      momentum: the decay of the momentum buffer.
      weight_decay: the L2 coefficient.
      scale_invariant_mask: True at the kernels that feed a normalization, whose ELRs set
        :math:`\eta_{crit}`.
      layer_axes: per leaf, the leading axes that index stacked layers; None: every leaf is one
        layer.
      nesterov: Nesterov momentum.
      decoupled_weight_decay: decay after momentum instead of on the gradient (see `sgd`).
      weight_decay_mask: the leaves that decay; None: every leaf.
      lr_multiplier: a factor of `learning_rate` at each step; None: 1.

    Returns:
      An `optax.GradientTransformationExtraArgs`: the `optax.chain` above (read the LR applied
      with `optax.tree_utils.tree_get(state, "applied_lr")`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = {"w1": jnp.ones((4, 4)), "w2": jnp.ones((4, 4)), "b": jnp.zeros(4)}
      >>> import normjax.transforms as njt
      >>> tx = njt.sgd_critical_warmup(100.0, scale_invariant_mask={"w1": True, "w2": True, "b": False})
      >>> grads = {"w1": jnp.full((4, 4), 0.01), "w2": jnp.full((4, 4), 1.0), "b": jnp.ones(4)}
      >>> _, state = tx.update(grads, tx.init(params), params)   # a = 0.01 and 1: eta_crit = 10
      >>> round(float(optax.tree_utils.tree_get(state, "applied_lr")), 4)
      10.0

    References:
      Mehmeti-Göpel & Wand, `Spreads in Effective Learning Rates: The Perils of Batch
      Normalization During Early Training`, 2023 (arXiv:2306.00700).
    """
    coupled, decoupled = _weight_decay(weight_decay, weight_decay_mask, decoupled_weight_decay)
    return optax.chain(
        *coupled,
        optax.trace(decay=momentum, nesterov=nesterov),
        *decoupled,
        scale_by_critical_lr(
            _lr(learning_rate, lr_multiplier),
            scale_invariant_mask,
            layer_axes=_static("layer_axes", layer_axes, 0),
        ),
    )


def sgd_prelu_l1(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    prelu_mask: MaskOrFn,
    strength: optax.ScalarOrSchedule,
    tolerance: optax.ScalarOrSchedule = 0.01,
    mode: str = "proximal",
    power: float | None = None,
    nesterov: bool = False,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD with the sparsity prior :math:`\lambda \sum_c |1 - \alpha_c|^p` on the PReLU slopes.

    The chain: decay (coupled) → momentum → decay (decoupled) → LR → prior. The prior,
    `prelu_sparsity_prior` under `optax.masked(prelu_mask)`, takes the SGD step of each slope and
    moves :math:`\alpha' - 1` toward 0 by :math:`\eta_t \lambda` (its proximal step, or a
    sub-gradient step); a slope within `tolerance` of 1 is set to exactly 1 (a linear unit) and
    frozen there. Weight decay should not reach the slopes (it pulls them toward 0, i.e. ReLU,
    against the prior): give a `weight_decay_mask` that is False on them, e.g. the negation of
    `prelu_mask`.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule of the step.
      momentum: the decay of the momentum buffer.
      weight_decay: the L2 coefficient.
      prelu_mask: True at the PReLU slopes (e.g. `prelu_slope_mask(params)`).
      strength: :math:`\lambda \ge 0`, a number or a schedule of the step (e.g. zero until
        epoch k).
      tolerance: a slope with :math:`|1 - \alpha| <` tolerance is made linear and frozen.
      mode: `"proximal"` or `"subgradient"` (see `prelu_sparsity_prior`).
      power: :math:`p`, 1 (L1; None) or 0.5 (the square-root form).
      nesterov: Nesterov momentum.
      decoupled_weight_decay: decay after momentum instead of on the gradient (see `sgd`).
      weight_decay_mask: the leaves that decay; None: every leaf, the slopes included.
      lr_multiplier: a factor of `learning_rate` at each step; None: 1.

    Returns:
      An `optax.GradientTransformationExtraArgs`: the `optax.chain` above (read the count of
      linear units with `optax.tree_utils.tree_get(state, "num_frozen")`).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"act": {"slope": jnp.array([0.0, 0.5, 0.98, 1.3])}, "fc": {"kernel": jnp.ones((2, 4))}}
      >>> import normjax.transforms as njt
      >>> slopes = njt.prelu_slope_mask(params)
      >>> tx = njt.sgd_prelu_l1(0.1, 0.9, 1e-4, prelu_mask=slopes, strength=1.0,
      ...                       weight_decay_mask=jax.tree.map(lambda m: not m, slopes))
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(float(a), 6) for a in optax.apply_updates(params, updates)["act"]["slope"]]  # 0.1 toward 1
      [0.1, 0.6, 1.0, 1.2]
      >>> int(optax.tree_utils.tree_get(state, "num_frozen"))
      1

    References:
      Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
      Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180);
      Parikh & Boyd, `Proximal Algorithms`, 2014 (Foundations and Trends in Optimization 1(3)).
    """
    prior = prelu_sparsity_prior(
        strength,
        _lr(learning_rate, lr_multiplier),
        tolerance=tolerance,
        mode=mode,
        power=_static("power", power, 1.0),
    )
    coupled, decoupled = _weight_decay(weight_decay, weight_decay_mask, decoupled_weight_decay)
    return optax.chain(
        *coupled,
        optax.trace(decay=momentum, nesterov=nesterov),
        *decoupled,
        *_scale_by_lr(learning_rate, lr_multiplier),
        optax.masked(prior, prelu_mask),
    )


def sgd_prelu_target(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    prelu_mask: MaskOrFn,
    target: optax.ScalarOrSchedule,
    init_strength: optax.ScalarOrSchedule = 1e-3,
    gain: optax.ScalarOrSchedule = 0.01,
    min_rate: optax.ScalarOrSchedule = 0.0,
    tolerance: optax.ScalarOrSchedule = 0.01,
    mode: str = "proximal",
    power: float | None = None,
    nesterov: bool = False,
    decoupled_weight_decay: bool = False,
    weight_decay_mask: MaskOrFn = None,
    lr_multiplier: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""`sgd_prelu_l1` with the prior's strength steered until a target share of the units is nonlinear.

    The chain: decay (coupled) → momentum → decay (decoupled) → LR → controlled prior. The last
    step, `prelu_sparsity_controller` under `optax.masked(prelu_mask)`, is the prior of
    `sgd_prelu_l1` with a strength :math:`\lambda_t` that starts at `init_strength` and grows
    geometrically (an integral controller on :math:`\log\lambda`) while more than the fraction
    `target` of the slopes are nonlinear; at most the units still to freeze freeze in a step, so
    the count never falls below the target, and once it is reached :math:`\lambda` is 0 and the
    architecture stays fixed. Weight decay should not reach the slopes (see `sgd_prelu_l1`).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule of the step.
      momentum: the decay of the momentum buffer.
      weight_decay: the L2 coefficient.
      prelu_mask: True at the PReLU slopes (e.g. `prelu_slope_mask(params)`).
      target: the fraction in [0, 1] of the slopes kept nonlinear (number or schedule).
      init_strength: :math:`\lambda_0 \ge 0`, the strength at the first step.
      gain: :math:`\ge 0`, the controller's rate per step (see `prelu_sparsity_controller`).
      min_rate: in [0, 1], the floor on the controller's rate while units remain to freeze.
      tolerance: a slope with :math:`|1 - \alpha| <` tolerance is made linear and frozen.
      mode: `"proximal"` or `"subgradient"`.
      power: :math:`p`, 1 (L1; None) or 0.5 (the square-root form).
      nesterov: Nesterov momentum.
      decoupled_weight_decay: decay after momentum instead of on the gradient (see `sgd`).
      weight_decay_mask: the leaves that decay; None: every leaf, the slopes included.
      lr_multiplier: a factor of `learning_rate` at each step; None: 1.

    Returns:
      An `optax.GradientTransformationExtraArgs`: the `optax.chain` above (read
      `optax.tree_utils.tree_get(state, "num_frozen")` and `tree_get(state, "strength")`).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"slope": jnp.linspace(-0.5, 0.5, 10), "w": jnp.ones(3)}
      >>> import normjax.transforms as njt
      >>> tx = njt.sgd_prelu_target(0.1, prelu_mask=njt.prelu_slope_mask(params), target=0.3, init_strength=0.1,
      ...                           gain=0.1)
      >>> state, update = tx.init(params), jax.jit(tx.update)
      >>> for _ in range(100):
      ...     updates, state = update(jax.tree.map(jnp.zeros_like, params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> int(optax.tree_utils.tree_get(state, "num_frozen"))  # 7 of 10 linear, 3 = 0.3 * 10 kept
      7

    References:
      Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
      Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180);
      Åström & Murray, `Feedback Systems: An Introduction for Scientists and Engineers`, 2008
      (Princeton University Press), ch. 10 (integral action and anti-windup).
    """
    prior = prelu_sparsity_controller(
        target,
        _lr(learning_rate, lr_multiplier),
        init_strength=init_strength,
        gain=gain,
        min_rate=min_rate,
        tolerance=tolerance,
        mode=mode,
        power=_static("power", power, 1.0),
    )
    coupled, decoupled = _weight_decay(weight_decay, weight_decay_mask, decoupled_weight_decay)
    return optax.chain(
        *coupled,
        optax.trace(decay=momentum, nesterov=nesterov),
        *decoupled,
        *_scale_by_lr(learning_rate, lr_multiplier),
        optax.masked(prior, prelu_mask),
    )
