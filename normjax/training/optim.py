"""Optimizers by name, with sweepable hyper-parameters as traced values in the optimizer state.

The optimizers are the aliases of `normjax.transforms` (`sgd`, `sgd_uniform_elr`, ...); a registry
entry binds the `optim` config's keys and a model's masks (`OptimizerContext`) to one of them.
Every registered optimizer is wrapped in `optax.inject_hyperparams`, so its numeric
hyper-parameters (LR, momentum, weight decay, transform strengths) live in the state as arrays:
a sweep, or a vmapped group of runs, changes values without recompiling. The LR schedule is a
static *shape* in [0, 1] (the aliases' `lr_multiplier`) multiplied by the traced peak `lr`.

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
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax import transforms
from normjax.errors import UserError


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
        # prelu_mask: any tree shaped like the params
        return transforms.path_mask(context.prelu_mask, lambda p, _: p in paths)
    if weight_decay_on == "all_but_prelu":
        return jax.tree.map(lambda m: not m, context.prelu_mask)
    raise ValueError(f"weight_decay_on={weight_decay_on!r}; allowed: {', '.join(WEIGHT_DECAY_ON)}")


# ---- the registry: each optimizer binds `optim` keys and the model's masks to an alias ----------
def _sgd_args(o: dict, schedule: Callable, context: OptimizerContext) -> dict:
    """The arguments every alias takes, from the `optim` keys of SGD (`_SGD`, `_SGD_STATIC`)."""
    return dict(
        learning_rate=o["lr"],
        momentum=o["momentum"],
        weight_decay=o["weight_decay"],
        nesterov=o["nesterov"],
        decoupled_weight_decay=o["decoupled_wd"],
        weight_decay_mask=decay_mask(o["weight_decay_on"], context),
        lr_multiplier=schedule,
    )


def _sgd(o, schedule, context):
    return transforms.sgd(**_sgd_args(o, schedule, context))


def _sgd_uniform_elr(o, schedule, context):
    return transforms.sgd_uniform_elr(
        **_sgd_args(o, schedule, context),
        scale_invariant_mask=context.scale_invariant_mask,
        layer_axes=context.layer_axes,
        definition=o["elr_definition"],
        reference=o["elr_reference"],
        position=o["elr_position"],
        # then plain SGD; 1.0: never stops, also past the run's planned end (a resumed, longer run)
        end_step=jnp.where(o["elr_until"] < 1.0, o["elr_until"] * context.total_steps, jnp.inf),
    )


def _sgd_critical_warmup(o, schedule, context):
    return transforms.sgd_critical_warmup(
        **_sgd_args(o, schedule, context),
        scale_invariant_mask=context.scale_invariant_mask,
        layer_axes=context.layer_axes,
    )


def _sgd_prelu_l1(o, schedule, context):
    start = o["prelu_start"] * context.total_steps  # the prior from the fraction prelu_start of the run on
    return transforms.sgd_prelu_l1(
        **_sgd_args(o, schedule, context),
        prelu_mask=context.prelu_mask,
        strength=lambda t: jnp.where(t >= start, o["prelu_l1"], 0.0),
        tolerance=o["prelu_tolerance"],
        mode=o["prelu_mode"],
        power=o["prelu_power"],
    )


def _sgd_prelu_target(o, schedule, context):
    # The target ramps down from prelu_start over prelu_ramp_steps, or the fraction prelu_ramp of the run.
    ramp = jnp.where(o["prelu_ramp_steps"] > 0, o["prelu_ramp_steps"], o["prelu_ramp"] * context.total_steps)
    return transforms.sgd_prelu_target(
        **_sgd_args(o, schedule, context),
        prelu_mask=context.prelu_mask,
        target=transforms.gradual_target(o["prelu_target"], o["prelu_start"] * context.total_steps, ramp),
        init_strength=o["prelu_l1"],
        gain=o["prelu_gain"],
        min_rate=o["prelu_min_rate"],
        tolerance=o["prelu_tolerance"],
        mode=o["prelu_mode"],
        power=o["prelu_power"],
    )


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer: `factory(**hyperparams, **static, schedule=, context=)`.

    `hyperparams` name keys of the `optim` config that become traced values; `static` name keys
    that shape the computation (a change recompiles). `optax.inject_hyperparams` reads the names
    from the factory's signature.
    """

    factory: Callable[..., optax.GradientTransformation]
    hyperparams: tuple[str, ...]
    static: tuple[str, ...] = ()


def _bind(alias_call: Callable, hyperparams: tuple[str, ...], static: tuple[str, ...]) -> OptimizerSpec:
    """An `OptimizerSpec` whose factory calls `alias_call(values, schedule, context)`, `values` the
    `optim` keys `hyperparams` and `static` by name (its signature names them, for
    `optax.inject_hyperparams`)."""

    def factory(*, schedule, context, **values):
        return alias_call(values, schedule, context)

    names = (*hyperparams, *static, "schedule", "context")
    factory.__signature__ = inspect.Signature([inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in names])
    factory.__name__ = factory.__qualname__ = alias_call.__name__.lstrip("_")
    return OptimizerSpec(factory, hyperparams, static)


_SGD = ("lr", "momentum", "weight_decay")
_SGD_STATIC = ("nesterov", "decoupled_wd", "weight_decay_on")  # weight_decay_on: the decay mask's shape
_PRELU_STATIC = _SGD_STATIC + ("prelu_mode", "prelu_power")
_PRELU_L1 = _bind(_sgd_prelu_l1, _SGD + ("prelu_l1", "prelu_tolerance", "prelu_start"), _PRELU_STATIC)
_PRELU_TARGET = _bind(
    _sgd_prelu_target,
    _SGD
    + ("prelu_l1", "prelu_tolerance", "prelu_target", "prelu_gain", "prelu_min_rate")
    + ("prelu_start", "prelu_ramp", "prelu_ramp_steps"),
    _PRELU_STATIC,
)
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": _bind(_sgd, _SGD, _SGD_STATIC),
    "sgd_uniform_elr": _bind(
        _sgd_uniform_elr, _SGD + ("elr_until",), _SGD_STATIC + ("elr_definition", "elr_reference", "elr_position")
    ),
    "sgd_critical_warmup": _bind(_sgd_critical_warmup, _SGD, _SGD_STATIC),
    "sgd_prelu_l1": _PRELU_L1,
    "sgd_prelu_target": _PRELU_TARGET,
}


# Keys of every `optim` config that shape the LR schedule (static for every optimizer).
SCHEDULE_KEYS = ("schedule", "warmup_steps", "milestones", "step_factor")
ELR_POSITIONS = transforms.alias.ELR_POSITIONS


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


def check_unread_keys(cfg: dict, defaults: dict) -> None:
    """One-line UserError when `cfg` sets an `optim` key (a value other than its default in
    `defaults`, the `optim` section of `normjax.config.DEFAULTS`) that its optimizer does not read:
    `prelu_l1` with plain `sgd` would train unsparsified, silently."""
    name = cfg["name"]
    for key, value in cfg.items():
        if key in defaults and value != defaults[key] and name not in readers(key):
            raise UserError(
                f"optim.{key}={value!r} is not read by optim.name={name!r}; the optimizers that read it: "
                f"{', '.join(readers(key))} (or leave optim.{key} at its default, {defaults[key]!r})"
            )


def check_optim_config(cfg: dict, model_cfg: dict, defaults: dict) -> None:
    """One-line UserError for `optim` values no optimizer accepts, or that its optimizer ignores
    (`defaults`: the `optim` section of `normjax.config.DEFAULTS`, passed in: the config module
    calls this check, and this module imports nothing of it)."""
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
    if not 0 < cfg["elr_until"] <= 1:
        raise UserError(
            f"optim.elr_until={cfg['elr_until']} is not allowed; give the fraction of the run in (0, 1] "
            "for which uniform ELR acts (1: the whole run)"
        )
    if not 0 <= cfg["prelu_ramp"] <= 1 - cfg["prelu_start"]:
        raise UserError(
            f"optim.prelu_ramp={cfg['prelu_ramp']} with optim.prelu_start={cfg['prelu_start']}: the ramp "
            "must end within the run; allowed: 0 <= prelu_ramp <= 1 - prelu_start"
        )
    if cfg["prelu_ramp_steps"] < 0 or cfg["prelu_ramp_steps"] > 0 and cfg["prelu_ramp"] > 0:
        raise UserError(
            f"optim.prelu_ramp_steps={cfg['prelu_ramp_steps']}, optim.prelu_ramp={cfg['prelu_ramp']}: give "
            "the ramp in steps (an integer >= 0) or as a fraction of the run, not both"
        )
    if spec is _PRELU_TARGET and not cfg["prelu_l1"] > 0:
        raise UserError(
            f"optim.prelu_l1={cfg['prelu_l1']} is sgd_prelu_target's initial strength, which it "
            "multiplies; need prelu_l1 > 0 (e.g. 1e-3)"
        )
    if (spec is _PRELU_L1 or spec is _PRELU_TARGET) and model_cfg["activation"] != "prelu":
        raise UserError(
            f"optim.name={cfg['name']!r} acts on PReLU slopes; set model.activation=prelu "
            f"(got {model_cfg['activation']!r})"
        )
    check_unread_keys(cfg, defaults)  # after the values' own checks: a bad value is named as such first


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
