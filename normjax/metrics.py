"""In-step metric hooks: functions of (params, grads, updates, optimizer state) computed inside
the jitted train step and logged on the run's cadence (`log.metrics` names them).

A hook returns a dict of arrays; per-layer vectors follow the model's layer order
(`layers.json` in the run directory names the entries). Studies add hooks with `register_metric`.

Example:
  >>> @register_metric("update_norms")
  ... def update_norms(info: StepInfo) -> dict:
  ...     return {"u_norm": jnp.sqrt(per_layer(info.updates, info.layers))}
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normjax.errors import UserError
from normjax.models.structure import LayerInfo, per_layer


class StepInfo(NamedTuple):
    params: Any        # parameters the gradient was taken at (w_t)
    grads: Any         # gradient of the batch loss at w_t
    updates: Any       # the optimizer's update (w_{t+1} = w_t + updates)
    opt_state: Any     # optimizer state after the update
    layers: list[LayerInfo]


METRICS: dict[str, Callable[[StepInfo], dict[str, jax.Array]]] = {}


def register_metric(name: str):
    """Decorator: make a hook available as `log.metrics=[..., name]`."""
    def wrap(fn):
        METRICS[name] = fn
        return fn
    return wrap


@register_metric("layer_norms")
def layer_norms(info: StepInfo) -> dict[str, jax.Array]:
    """Per-layer ||w_l|| and ||g_l|| (kernels), and the global norms big_vision logs."""
    return {
        "w_norm": jnp.sqrt(per_layer(info.params, info.layers)),
        "g_norm": jnp.sqrt(per_layer(info.grads, info.layers)),
        "l2_params": optax.tree.norm(info.params),
        "l2_grads": optax.tree.norm(info.grads),
        "l2_updates": optax.tree.norm(info.updates),
    }


def check_metrics(names: list[str]) -> None:
    for name in names:
        if name not in METRICS:
            raise UserError(f"log.metrics entry {name!r} is unknown; allowed: {', '.join(sorted(METRICS))}")


def compute(names: tuple[str, ...], info: StepInfo) -> dict[str, jax.Array]:
    out: dict[str, jax.Array] = {}
    for name in names:
        out.update(METRICS[name](info))
    return out
