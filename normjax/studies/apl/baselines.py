"""The APL study's baselines of equal parameter count: a model's trainable parameters, and the width
(or width multiplier) at which a shallower network has about as many as a deeper one
(`experiments/sweep_apl_baselines.py`).
"""

from __future__ import annotations

import jax
import numpy as np

from normjax.config import DEFAULTS


def count_params(model_cfg: dict, image_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10) -> int:
    """Trainable parameters of the model a (partial) `model` config builds (no arrays allocated)."""
    from flax import nnx

    from normjax.models import build_model

    cfg = dict(DEFAULTS["model"], **model_cfg)
    model = nnx.eval_shape(lambda: build_model(cfg, num_classes=num_classes, image_shape=image_shape, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def matched_width(
    model_cfg: dict, target_cfg: dict, image_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10
) -> int:
    """The integer `width` at which `model_cfg` has (about) the parameters of `target_cfg` (the
    closest count, found by bisection: the count grows with width); `width_mult` stays as given.

    Example:
      >>> matched_width({"name": "mlp", "depth": 3}, {"name": "mlp", "depth": 21, "width": 128}, (8, 8, 1))
      394
    """
    goal = count_params(target_cfg, image_shape, num_classes)
    count = lambda w: count_params({**model_cfg, "width": w}, image_shape, num_classes)  # noqa: E731
    lo, hi = 1, 2
    while count(hi) < goal:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < goal else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - goal))


def matched_width_mult(
    model_cfg: dict, target_cfg: dict, image_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10
) -> float:
    """The `width_mult` at which `model_cfg` has (about) the parameters of `target_cfg`: the
    widened baselines of equal parameter count (`matched_width` over the integer base widths,
    which the models round `width * width_mult` to anyway).

    Example:
      >>> m = matched_width_mult({"name": "plain_cnn", "depth": 6}, {"name": "resnet", "depth": 20})
      >>> round(m, 2)   # a 6-layer plain CNN must be wider to match ResNet-20
      1.94
    """
    width = dict(DEFAULTS["model"], **model_cfg)["width"]
    scaled = {**model_cfg, "width_mult": 1.0}  # the widths tried are base widths
    return matched_width(scaled, target_cfg, image_shape, num_classes) / width
