"""Analysis without training: the weight-dynamics (ODE) model of the ELR study (`dynamics`), the
model graph of nonlinearities (`graph`), average path length and core networks (`apl`), and
folding linear units away (`fold`).

This package imports only jax and numpy (nothing from training).

Example:
  >>> import jax.numpy as jnp
  >>> import normjax.analysis as nja
  >>> u = nja.discrete_norms(jnp.array([1.0, 1.0]), jnp.array([100.0, 1.0]), lr=0.1, steps=1)
  >>> float(nja.spread(nja.elr_from_norms(u[0], jnp.array([100.0, 1.0]), 0.1)))
  100.0
"""

from normjax.analysis import apl, dynamics, fold, graph
from normjax.analysis.apl import core_profile, effective_width, normalized_apl, path_counts, unnormalized_apl
from normjax.analysis.dynamics import (
    classic_elr,
    critical_lr,
    discrete_norms,
    discrete_norms_from_grads,
    elr_from_norms,
    elr_map,
    equilibrium_angular_step,
    equilibrium_elr,
    equilibrium_norm,
    gradient_flow_elr,
    gradient_flow_norms,
    log_spread_std,
    ode_norms,
    predict,
    random_walk,
    spread,
)
from normjax.analysis.fold import apply_folded, load_folded, save_folded
from normjax.analysis.fold import fold as fold_network
from normjax.analysis.graph import Edge, Graph, Node, Op, linearize, nonlinear

__all__ = list(dynamics.__all__) + [
    "Edge",
    "Graph",
    "Node",
    "Op",
    "apply_folded",
    "core_profile",
    "effective_width",
    "fold_network",
    "linearize",
    "load_folded",
    "nonlinear",
    "normalized_apl",
    "path_counts",
    "save_folded",
    "unnormalized_apl",
]
