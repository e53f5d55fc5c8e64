"""normjax: training dynamics of deep normalized ReLU networks in JAX/Flax/Optax.

The public API, loaded lazily (PEP 562): `import normjax.transforms` (or `normjax.<name>` of a
transform) does not import flax, orbax, tensorflow-datasets or matplotlib; the training stack is
imported on first use of a name that needs it. With the base install only (`pip install normjax`,
no `train` extra), such a name raises `normjax.errors.MissingExtraError`: one line naming
`pip install 'normjax[train]'`.

Example:
  >>> import normjax
  >>> tx = normjax.scale_by_uniform_elr()          # loads normjax.transforms only
  >>> normjax.__version__
  '0.1.0'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    **{
        name: "normjax.transforms"
        for name in (
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
        )
    },
    **{
        name: "normjax.models" for name in ("MODELS", "build_model", "layer_axes", "prelu_mask", "scale_invariant_mask")
    },
    **{name: "normjax.config" for name in ("DEFAULTS", "load_config")},
    **{name: "normjax.training.loop" for name in ("train", "evaluate_run")},
    **{name: "normjax.training.optim" for name in ("OptimizerSpec", "register_optimizer")},
    **{name: "normjax.metrics" for name in ("StepInfo", "register_metric")},
    "UserError": "normjax.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        try:
            module = importlib.import_module(_EXPORTS[name])
        except ImportError as e:  # a base install: a name that needs the training stack says which extra
            from normjax.errors import missing_extra

            error = missing_extra(e, f"normjax.{name}")
            if error is e:
                raise
            raise error from None
        value = getattr(module, name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'normjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
