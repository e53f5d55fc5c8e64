"""Optimizers by name, with sweepable hyper-parameters as traced values in the optimizer state.

Every registered optimizer is wrapped in `optax.inject_hyperparams`, so its numeric
hyper-parameters (LR, momentum, weight decay, transform strengths) live in the state as arrays:
a sweep, or a vmapped group of runs, changes values without recompiling. The LR schedule is a
static *shape* in [0, 1] multiplied by the traced peak `lr`.

Weight decay: coupled (default, as PyTorch SGD) adds `wd * w` to the gradient before momentum;
decoupled applies `w -= lr_t * wd * w` outside the momentum buffer (AdamW-style, scaled by the
scheduled LR `lr_t`).

Example:
  >>> tx = make_optimizer(DEFAULTS["optim"], total_steps=1000, context=ctx)
  >>> opt_state = tx.init(params)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.errors import UserError


class OptimizerContext(NamedTuple):
    """What a transform may need to know about the model (masks over the params tree)."""

    scale_invariant_mask: Any
    prelu_mask: Any
    layers: list


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


def sgd(lr, momentum, weight_decay, *, nesterov: bool, decoupled_wd: bool, schedule, context) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum and coupled or decoupled weight decay (see module doc)."""
    decay = optax.add_decayed_weights(weight_decay)
    return optax.chain(
        *(() if decoupled_wd else (decay,)),
        optax.trace(decay=momentum, nesterov=nesterov),
        *((decay,) if decoupled_wd else ()),
        optax.scale_by_schedule(schedule),
        optax.scale(-lr),
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


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(sgd, ("lr", "momentum", "weight_decay"), ("nesterov", "decoupled_wd")),
}


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
    factory = functools.partial(spec.factory, schedule=schedule_shape(cfg, total_steps), context=context,
                                **{k: cfg[k] for k in spec.static})
    # static_args: the bound callables are not hyper-parameter schedules.
    return optax.inject_hyperparams(factory, static_args=("schedule", "context") + spec.static,
                                    hyperparam_dtype=jnp.float32)(**hyperparams(cfg))


def set_hyperparams(opt_state: Any, values: dict[str, float]) -> Any:
    """`opt_state` with its injected hyper-parameters set to `values` (same shapes and dtypes)."""
    return optax.tree_utils.tree_set(opt_state, **{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def current_lr(opt_state: Any, schedule: Callable, step: jax.Array) -> jax.Array:
    """The LR applied at `step`: traced peak `lr` times the schedule's shape."""
    return optax.tree_utils.tree_get(opt_state, "lr") * schedule(step)
