"""Analysis of training dynamics without a network: the weight-dynamics (ODE) model of the norms
and effective learning rates of scale-invariant layers during early training.

This package imports only jax and numpy.

Example:
  >>> import jax.numpy as jnp
  >>> import normjax.analysis as nja
  >>> u = nja.discrete_norms(jnp.array([1.0, 1.0]), jnp.array([100.0, 1.0]), lr=0.1, steps=1)
  >>> float(nja.spread(nja.elr_from_norms(u[0], jnp.array([100.0, 1.0]), 0.1)))
  100.0
"""

from normjax.analysis.dynamics import (classic_elr, critical_lr, discrete_norms, discrete_norms_from_grads,
                                       elr_from_norms, elr_map, equilibrium_angular_step, equilibrium_elr,
                                       equilibrium_norm, gradient_flow_elr, gradient_flow_norms, log_spread_std,
                                       ode_norms, predict, random_walk, spread)

from normjax.analysis import dynamics

__all__ = list(dynamics.__all__)
