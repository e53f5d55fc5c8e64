"""Optax gradient transformations for normalized networks: uniform effective learning rates,
critical-LR warm-up, and the sparsity prior on PReLU slopes (fixed strength, or steered to a target
count of nonlinear units); the studies' optimizers built from them as optax aliases (`sgd`,
`sgd_uniform_elr`, `sgd_critical_warmup`, `sgd_prelu_l1`, `sgd_prelu_target`), and masks that
select leaves of a parameter pytree by their paths.

This package imports only jax and optax (the base install, `pip install normjax`), so other
projects can compose the transforms into their own optax chains without normjax's training stack.

Example:
  >>> import jax.numpy as jnp, optax
  >>> import normjax.transforms as njt
  >>> params = {"conv": jnp.ones((3, 3, 8, 8)), "bn_scale": jnp.ones(8)}
  >>> tx = optax.chain(
  ...     optax.trace(decay=0.9),
  ...     optax.masked(njt.scale_by_uniform_elr(), {"conv": True, "bn_scale": False}),
  ...     optax.scale_by_learning_rate(0.01))
  >>> state = tx.init(params)
"""

from normjax.transforms._layers import LayerAxes
from normjax.transforms.alias import sgd, sgd_critical_warmup, sgd_prelu_l1, sgd_prelu_target, sgd_uniform_elr
from normjax.transforms.controller import PReLUControllerState, gradual_target, prelu_sparsity_controller
from normjax.transforms.elr import ScaleByUniformELRState, scale_by_uniform_elr
from normjax.transforms.masks import kernel_mask, path_mask, prelu_slope_mask
from normjax.transforms.prelu import PReLUPriorState, half_threshold, prelu_sparsity_prior, soft_threshold
from normjax.transforms.warmup import ScaleByCriticalLRState, critical_lr, scale_by_critical_lr

__all__ = [
    "LayerAxes",
    "PReLUControllerState",
    "PReLUPriorState",
    "ScaleByCriticalLRState",
    "ScaleByUniformELRState",
    "critical_lr",
    "gradual_target",
    "half_threshold",
    "kernel_mask",
    "path_mask",
    "prelu_slope_mask",
    "prelu_sparsity_controller",
    "prelu_sparsity_prior",
    "scale_by_critical_lr",
    "scale_by_uniform_elr",
    "sgd",
    "sgd_critical_warmup",
    "sgd_prelu_l1",
    "sgd_prelu_target",
    "sgd_uniform_elr",
    "soft_threshold",
]
