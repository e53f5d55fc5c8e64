"""Optimizers by name, with sweepable hyper-parameters as traced values in the optimizer state.

Every registered optimizer is wrapped in `optax.inject_hyperparams`, so its numeric
hyper-parameters (LR, momentum, weight decay, transform strengths) live in the state as arrays:
a sweep, or a vmapped group of runs, changes values without recompiling. The LR schedule is a
static *shape* in [0, 1] multiplied by the traced peak `lr`.

Weight decay: coupled (default, as PyTorch SGD) adds `wd * w` to the gradient before momentum;
decoupled applies `w -= lr_t * wd * w` outside the momentum buffer (AdamW-style, scaled by the
scheduled LR `lr_t`). `weight_decay_on` picks the leaves it acts on (`decay_mask`): `kernels` (conv
and dense kernels only), `all_but_prelu` (default: everything but PReLU slopes, which decay would
pull toward 0, i.e. ReLU, biasing the sparsity study) or `all`.

Example:
  >>> tx = make_optimizer(DEFAULTS["optim"], total_steps=1000, context=ctx)  # doctest: +SKIP
  >>> opt_state = tx.init(params)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax import transforms
from normjax.errors import UserError
from normjax.models.structure import leaf_mask


class OptimizerContext(NamedTuple):
    """What a transform may need to know about the model: masks over the params tree, the
    per-leaf layer axes (stacked layers) and the layer list."""

    scale_invariant_mask: Any
    prelu_mask: Any
    layers: list
    layer_axes: Any = 0
    total_steps: int = 0  # the run's length (schedules that start a transform part-way)


def schedule_shape(cfg: dict, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """The LR multiplier in [0, 1] at each step: warm-up then constant / step / cosine."""
    warmup, kind = cfg["warmup_steps"], cfg["schedule"]
    decay_steps = max(1, total_steps - warmup)
    bounds = jnp.array([round(m * total_steps) for m in cfg["milestones"]], jnp.int32)

    def shape(count: jax.Array) -> jax.Array:
        t = jnp.maximum(count - warmup, 0)
        if kind == "cosine":
            s = 0.5 * (1 + jnp.cos(math.pi * jnp.minimum(t, decay_steps) / decay_steps))
        elif kind == "step":
            s = cfg["step_factor"] ** jnp.sum(jnp.asarray(count)[..., None] >= bounds, -1)
        else:
            s = jnp.ones_like(t, jnp.float32)
        if warmup > 0:
            s = s * jnp.minimum(1.0, (count + 1) / warmup)
        return s.astype(jnp.float32)

    return shape


WEIGHT_DECAY_ON = ("kernels", "all_but_prelu", "all")


def decay_mask(weight_decay_on: str, context: OptimizerContext) -> Any:
    """The leaves weight decay acts on, as a bool tree over the params (None: every leaf).

    Args:
      weight_decay_on: `kernels` (the conv/dense kernels of `context.layers`, not BN scale/bias,
        biases or PReLU slopes), `all_but_prelu` (every leaf but the PReLU slopes) or `all`.
      context: the model's masks and layers.

    Returns:
      A pytree of bools shaped like the params (for `optax.add_decayed_weights(mask=)`), or None.

    Example:
      >>> decay_mask("all_but_prelu", OptimizerContext({"w": True, "a": False}, {"w": False, "a": True}, []))
      {'a': False, 'w': True}
    """
    if weight_decay_on == "all":
        return None
    if weight_decay_on == "kernels":
        paths = {l.path for l in context.layers}
        return leaf_mask(context.prelu_mask, lambda p, _: p in paths)  # prelu_mask: any tree shaped like the params
    if weight_decay_on == "all_but_prelu":
        return jax.tree.map(lambda m: not m, context.prelu_mask)
    raise ValueError(f"weight_decay_on={weight_decay_on!r}; allowed: {', '.join(WEIGHT_DECAY_ON)}")


def _sgd_chain(
    lr,
    momentum,
    weight_decay,
    *,
    nesterov: bool,
    decoupled_wd: bool,
    weight_decay_on: str,
    schedule,
    context,
    before_momentum=(),
    after_momentum=(),
    scale_by_lr=None,
    after_lr=(),
):
    """decay (coupled) → before_momentum → momentum → after_momentum → decay (decoupled) → LR → after_lr.

    `scale_by_lr` replaces the default LR scaling (`-lr * schedule(t)`); `weight_decay_on` picks
    the leaves that decay (`decay_mask`).
    """
    decay = optax.add_decayed_weights(weight_decay, mask=decay_mask(weight_decay_on, context))
    return optax.chain(
        *(() if decoupled_wd else (decay,)),
        *before_momentum,
        optax.trace(decay=momentum, nesterov=nesterov),
        *after_momentum,
        *((decay,) if decoupled_wd else ()),
        *((optax.scale_by_schedule(schedule), optax.scale(-lr)) if scale_by_lr is None else (scale_by_lr,)),
        *after_lr,
    )


def sgd(
    lr, momentum, weight_decay, *, nesterov: bool, decoupled_wd: bool, weight_decay_on: str, schedule, context
) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and coupled or decoupled weight decay on the leaves
    `weight_decay_on` names (see module doc)."""
    return _sgd_chain(
        lr,
        momentum,
        weight_decay,
        nesterov=nesterov,
        decoupled_wd=decoupled_wd,
        weight_decay_on=weight_decay_on,
        schedule=schedule,
        context=context,
    )


def sgd_uniform_elr(
    lr,
    momentum,
    weight_decay,
    *,
    nesterov: bool,
    decoupled_wd: bool,
    weight_decay_on: str,
    elr_definition: str,
    elr_reference: str,
    elr_position: str,
    schedule,
    context,
) -> optax.GradientTransformation:
    """SGD whose scale-invariant kernels all take the same relative step (`scale_by_uniform_elr`,
    before or after momentum per `elr_position`); other parameters keep the global LR."""
    elr = optax.masked(
        transforms.scale_by_uniform_elr(elr_definition, elr_reference, layer_axes=context.layer_axes),
        context.scale_invariant_mask,
    )
    return _sgd_chain(
        lr,
        momentum,
        weight_decay,
        nesterov=nesterov,
        decoupled_wd=decoupled_wd,
        weight_decay_on=weight_decay_on,
        schedule=schedule,
        context=context,
        **{elr_position: (elr,)},
    )


def sgd_critical_warmup(
    lr, momentum, weight_decay, *, nesterov: bool, decoupled_wd: bool, weight_decay_on: str, schedule, context
) -> optax.GradientTransformation:
    """SGD whose LR each step is `min(lr * schedule(t), η_crit,t)` (`scale_by_critical_lr`)."""
    warm = transforms.scale_by_critical_lr(
        lambda t: lr * schedule(t), context.scale_invariant_mask, layer_axes=context.layer_axes
    )
    return _sgd_chain(
        lr,
        momentum,
        weight_decay,
        nesterov=nesterov,
        decoupled_wd=decoupled_wd,
        weight_decay_on=weight_decay_on,
        schedule=schedule,
        context=context,
        scale_by_lr=warm,
    )


def sgd_prelu_l1(
    lr,
    momentum,
    weight_decay,
    prelu_l1,
    prelu_tolerance,
    prelu_start,
    *,
    nesterov: bool,
    decoupled_wd: bool,
    weight_decay_on: str,
    prelu_mode: str,
    prelu_power: float,
    schedule,
    context,
) -> optax.GradientTransformation:
    """SGD with the sparsity prior `prelu_l1 * Σ|1 − α|^p` on the PReLU slopes
    (`prelu_sparsity_prior`, after the LR), switched on after the fraction `prelu_start` of the
    run's steps (the during-training regime from epoch k); no weight decay on the slopes unless
    `weight_decay_on=all`."""
    start = prelu_start * context.total_steps
    strength = lambda t: jnp.where(t >= start, prelu_l1, 0.0)  # noqa: E731
    prior = transforms.prelu_sparsity_prior(
        strength, lambda t: lr * schedule(t), tolerance=prelu_tolerance, mode=prelu_mode, power=prelu_power
    )
    return _sgd_chain(
        lr,
        momentum,
        weight_decay,
        nesterov=nesterov,
        decoupled_wd=decoupled_wd,
        weight_decay_on=weight_decay_on,
        schedule=schedule,
        context=context,
        after_lr=(optax.masked(prior, context.prelu_mask),),
    )


def sgd_prelu_target(
    lr,
    momentum,
    weight_decay,
    prelu_l1,
    prelu_tolerance,
    prelu_target,
    prelu_gain,
    prelu_min_rate,
    *,
    nesterov: bool,
    decoupled_wd: bool,
    weight_decay_on: str,
    prelu_mode: str,
    prelu_power: float,
    schedule,
    context,
) -> optax.GradientTransformation:
    """`sgd_prelu_l1` with the prior's strength steered (from `prelu_l1`) until the fraction
    `prelu_target` of the PReLU units is nonlinear (`prelu_sparsity_controller`); no weight decay
    on the slopes unless `weight_decay_on=all`."""
    prior = transforms.prelu_sparsity_controller(
        prelu_target,
        lambda t: lr * schedule(t),
        init_strength=prelu_l1,
        gain=prelu_gain,
        min_rate=prelu_min_rate,
        tolerance=prelu_tolerance,
        mode=prelu_mode,
        power=prelu_power,
    )
    return _sgd_chain(
        lr,
        momentum,
        weight_decay,
        nesterov=nesterov,
        decoupled_wd=decoupled_wd,
        weight_decay_on=weight_decay_on,
        schedule=schedule,
        context=context,
        after_lr=(optax.masked(prior, context.prelu_mask),),
    )


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer: `factory(**hyperparams, **static, schedule=, context=)`.

    `hyperparams` name keys of the `optim` config that become traced values; `static` name keys
    that shape the computation (a change recompiles).
    """

    factory: Callable[..., optax.GradientTransformation]
    hyperparams: tuple[str, ...]
    static: tuple[str, ...] = ()


_SGD = ("lr", "momentum", "weight_decay")
_SGD_STATIC = ("nesterov", "decoupled_wd", "weight_decay_on")  # weight_decay_on: the decay mask's shape
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(sgd, _SGD, _SGD_STATIC),
    "sgd_uniform_elr": OptimizerSpec(
        sgd_uniform_elr, _SGD, _SGD_STATIC + ("elr_definition", "elr_reference", "elr_position")
    ),
    "sgd_critical_warmup": OptimizerSpec(sgd_critical_warmup, _SGD, _SGD_STATIC),
    "sgd_prelu_l1": OptimizerSpec(
        sgd_prelu_l1, _SGD + ("prelu_l1", "prelu_tolerance", "prelu_start"), _SGD_STATIC + ("prelu_mode", "prelu_power")
    ),
    "sgd_prelu_target": OptimizerSpec(
        sgd_prelu_target,
        _SGD + ("prelu_l1", "prelu_tolerance", "prelu_target", "prelu_gain", "prelu_min_rate"),
        _SGD_STATIC + ("prelu_mode", "prelu_power"),
    ),
}
# Keys of every `optim` config that shape the LR schedule (static for every optimizer).
SCHEDULE_KEYS = ("schedule", "warmup_steps", "milestones", "step_factor")
ELR_POSITIONS = ("before_momentum", "after_momentum")


def register_optimizer(name: str, spec: OptimizerSpec) -> None:
    """Make `optim.name=<name>` available to every experiment (studies add their transforms here)."""
    OPTIMIZERS[name] = spec


def optimizer_spec(cfg: dict) -> OptimizerSpec:
    if cfg["name"] not in OPTIMIZERS:
        raise UserError(f"optim.name={cfg['name']!r} is unknown; allowed: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[cfg["name"]]


def hyperparams(cfg: dict) -> dict[str, float]:
    """The traced hyper-parameter values of an `optim` config."""
    return {k: float(cfg[k]) for k in optimizer_spec(cfg).hyperparams}


def make_optimizer(cfg: dict, *, total_steps: int, context: OptimizerContext) -> optax.GradientTransformationExtraArgs:
    """The optimizer an `optim` config names, hyper-parameters injected (traced)."""
    spec = optimizer_spec(cfg)
    factory = functools.partial(
        spec.factory, schedule=schedule_shape(cfg, total_steps), context=context, **{k: cfg[k] for k in spec.static}
    )
    # static_args: the bound callables are not hyper-parameter schedules.
    return optax.inject_hyperparams(
        factory, static_args=("schedule", "context") + spec.static, hyperparam_dtype=jnp.float32
    )(**hyperparams(cfg))


def set_hyperparams(opt_state: Any, values: dict[str, float]) -> Any:
    """`opt_state` with its injected hyper-parameters set to `values` (same shapes and dtypes)."""
    return optax.tree_utils.tree_set(opt_state, **{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def current_lr(opt_state: Any, schedule: Callable, step: jax.Array) -> jax.Array:
    """The LR applied at `step`: traced peak `lr` times the schedule's shape."""
    return optax.tree_utils.tree_get(opt_state, "lr") * schedule(step)


# Keys every run reads whatever its optimizer: the name, the schedule's, and the tolerance within
# which a PReLU slope counts as linear (the APL hook and `normjax apl` read it).
READ_BY_ALL = ("name", "prelu_tolerance") + SCHEDULE_KEYS


def readers(key: str) -> list[str]:
    """The registered optimizers that read `optim.<key>` (every one for `READ_BY_ALL`)."""
    return sorted(n for n, s in OPTIMIZERS.items() if key in READ_BY_ALL + s.hyperparams + s.static)


def check_unread_keys(cfg: dict) -> None:
    """One-line UserError when `cfg` sets an `optim` key (a value other than the default) that
    its optimizer does not read: `prelu_l1` with plain `sgd` would train unsparsified, silently."""
    from normjax.config import DEFAULTS

    name = cfg["name"]
    for key, value in cfg.items():
        if key in DEFAULTS["optim"] and value != DEFAULTS["optim"][key] and name not in readers(key):
            raise UserError(
                f"optim.{key}={value!r} is not read by optim.name={name!r}; the optimizers that read it: "
                f"{', '.join(readers(key))} (or leave optim.{key} at its default, "
                f"{DEFAULTS['optim'][key]!r})"
            )


def check_optim_config(cfg: dict, model_cfg: dict) -> None:
    """One-line UserError for `optim` values no optimizer accepts, or that its optimizer ignores."""
    spec = optimizer_spec(cfg)
    choices = {
        "weight_decay_on": WEIGHT_DECAY_ON,
        "elr_definition": transforms.elr.DEFINITIONS,
        "elr_reference": transforms.elr.REFERENCES,
        "elr_position": ELR_POSITIONS,
        "prelu_mode": transforms.prelu.MODES,
    }
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise UserError(f"optim.{key}={cfg[key]!r} is unknown; allowed: {', '.join(allowed)}")
    if cfg["prelu_power"] not in transforms.prelu.POWERS:
        raise UserError(f"optim.prelu_power={cfg['prelu_power']} is not supported; allowed: 1.0 (L1), 0.5")
    if cfg["prelu_l1"] < 0 or not 0 <= cfg["prelu_tolerance"] < 1:
        raise UserError(
            f"optim.prelu_l1={cfg['prelu_l1']}, optim.prelu_tolerance={cfg['prelu_tolerance']}: "
            "need prelu_l1 >= 0 and 0 <= prelu_tolerance < 1"
        )
    if not 0 <= cfg["prelu_target"] <= 1:
        raise UserError(
            f"optim.prelu_target={cfg['prelu_target']} is not a fraction; allowed: 0 to 1 "
            "(the share of PReLU units kept nonlinear)"
        )
    if cfg["prelu_gain"] < 0:
        raise UserError(f"optim.prelu_gain={cfg['prelu_gain']} is negative; allowed: >= 0")
    if not 0 <= cfg["prelu_min_rate"] <= 1:
        raise UserError(f"optim.prelu_min_rate={cfg['prelu_min_rate']} is not allowed; allowed: 0 to 1")
    if not 0 <= cfg["prelu_start"] < 1:
        raise UserError(f"optim.prelu_start={cfg['prelu_start']} is not allowed; give a fraction of training in [0, 1)")
    if spec.factory is sgd_prelu_target and not cfg["prelu_l1"] > 0:
        raise UserError(
            f"optim.prelu_l1={cfg['prelu_l1']} is sgd_prelu_target's initial strength, which it "
            "multiplies; need prelu_l1 > 0 (e.g. 1e-3)"
        )
    if spec.factory in (sgd_prelu_l1, sgd_prelu_target) and model_cfg["activation"] != "prelu":
        raise UserError(
            f"optim.name={cfg['name']!r} acts on PReLU slopes; set model.activation=prelu "
            f"(got {model_cfg['activation']!r})"
        )
    check_unread_keys(cfg)  # after the values' own checks: a bad value is named as such first


def _states(tree: Any, kind: type) -> list:
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, kind)) if isinstance(x, kind)]


def optimizer_metrics(opt_state: Any, scheduled_lr: jax.Array | None) -> dict[str, jax.Array]:
    """What the transforms in an optimizer state tell about the step just taken, for the log.

    `lr`: the LR applied (the critical-LR warm-up's where there is one, else `scheduled_lr`);
    `critical_lr`; `elr_target`: the common effective LR of uniform-ELR layers; `prelu_frozen`:
    the number of PReLU slopes made linear; `prelu_strength`: the strength the sparsity controller
    applied (0 once its target is met).
    """
    out = {} if scheduled_lr is None else {"lr": scheduled_lr}
    for s in _states(opt_state, transforms.ScaleByCriticalLRState):
        out |= {"lr": s.applied_lr, "critical_lr": s.critical_lr}
    for s in _states(opt_state, transforms.ScaleByUniformELRState):
        if "lr" in out:
            out["elr_target"] = out["lr"] * s.common_elr
    for s in _states(opt_state, transforms.PReLUPriorState):
        out["prelu_frozen"] = s.num_frozen
    for s in _states(opt_state, transforms.PReLUControllerState):
        out |= {"prelu_frozen": s.num_frozen, "prelu_strength": s.strength}
    return out
