"""The tests' helpers, imported by name (`from helpers import ...`; fixtures stay in conftest.py):
the two kinds of equality the tests assert, one helper for each, and `small_config`.

The rule (docs/design.md, "Exact or close"):

* **Bitwise by construction** (`assert_bitwise`): the *same* compiled program on the same inputs
  on one machine gives the same bits: a rerun, an interrupted-and-resumed run against the
  uninterrupted one, a checkpoint round trip, a warm start's copied arrays, and arithmetic that is
  exact in float32 (a value set, a product with 0, 0.5 or 1, integers, uint8 images).
* **Equal up to rounding** (`assert_close`): two *different* programs computing the same math: a
  vmapped group against each run alone, 1 against 8 devices, scanned against unrolled, a jvp's
  primal against the plain forward pass, streamed against in-memory evaluation. XLA:CPU generates
  different code for them on different CPUs (vector width, fusion, reduction order), so an equality
  seen bitwise on one CPU is not a property. They agree to a few float32 ulps of the values'
  scale; each test states its number of ulps and why, and is seen failing on a real bug.

`ulps` here counts float32 machine epsilons (2^-23) relative to a scale: per element its own
magnitude, with a floor of the leaf's largest magnitude (the scale of the terms a reordered sum
rounds at, so that a mean near zero or a cancelling gradient is judged by its inputs' scale).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jax
import numpy as np

from normjax.config import DEFAULTS, merge

EPS32 = float(np.finfo(np.float32).eps)


def _leaves(a: Any, b: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pa, ta = jax.tree_util.tree_flatten_with_path(a)
    pb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb, f"tree structures differ: {ta} != {tb}"
    return [(jax.tree_util.keystr(k), np.asarray(x), np.asarray(y)) for (k, x), (_, y) in zip(pa, pb)]


def ulps_apart(a: Any, b: Any) -> float:
    """The largest distance between two trees of numbers, in float32 ulps of the scale above.

    Equal trees give 0.0; a non-float leaf that differs gives inf.
    """
    worst = 0.0
    for _, x, y in _leaves(a, b):
        if x.shape != y.shape:
            return float("inf")
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(y.dtype, np.floating):
            if not np.array_equal(x, y):
                return float("inf")
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        if not np.array_equal(np.isnan(x), np.isnan(y)) or not np.array_equal(x[np.isinf(x)], y[np.isinf(x)]):
            return float("inf")
        finite = np.isfinite(x) & np.isfinite(y)
        x, y = x[finite], y[finite]
        if x.size == 0:
            continue
        floor = max(np.abs(x).max(), np.abs(y).max())
        if floor == 0.0:
            continue
        scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), floor)
        worst = max(worst, float((np.abs(x - y) / (EPS32 * scale)).max()))
    return worst


def assert_close(a: Any, b: Any, ulps: float, what: str = "") -> None:
    """Asserts two trees (arrays, dicts of metrics, summaries) agree within `ulps` float32 ulps.

    For two different programs computing the same math; the caller says why `ulps` suffices.
    Non-float leaves (steps, counts, statuses) must be equal.
    """
    for path, x, y in _leaves(a, b):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}{path}")
    got = ulps_apart(a, b)
    if log := os.environ.get("NORMJAX_ULPS_LOG"):  # evidence: what each comparison measured, on this CPU
        with open(log, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{what}\t{got:.3f}\t{ulps}\n")
    assert got <= ulps, f"{what}: {got:.1f} float32 ulps apart, allowed {ulps}"


def assert_bitwise(a: Any, b: Any, what: str = "") -> None:
    """Asserts two trees are equal bit for bit (NaNs in the same places): the same program on the
    same inputs, or float32-exact arithmetic."""
    for path, x, y in _leaves(a, b):
        assert x.dtype == y.dtype, f"{what}{path}: dtype {x.dtype} != {y.dtype}"
        np.testing.assert_array_equal(x, y, err_msg=f"{what}{path}")


def close_rows(a: list[dict], b: list[dict], ulps: float, skip: tuple[str, ...] = ("wall_time",)) -> None:
    """Metric rows of two runs: the same keys, equal steps, floats within `ulps`."""
    assert len(a) == len(b), f"{len(a)} rows != {len(b)} rows"
    for x, y in zip(a, b):
        assert x.keys() == y.keys(), f"keys differ: {sorted(x)} != {sorted(y)}"
        keep = [k for k in x if k not in skip]
        assert_close({k: x[k] for k in keep}, {k: y[k] for k in keep}, ulps, what=f"rows, step {x.get('step')}")


def small_config(**sections) -> dict:
    """A seconds-on-CPU config: a small BN MLP on digits unless overridden."""
    base = {
        "model": {"name": "mlp", "depth": 3, "width": 64},
        "data": {"name": "digits"},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "schedule": "constant"},
        "train": {"batch_size": 64, "steps": 40, "steps_per_dispatch": 8, "eval_batch_size": 256},
        "log": {"dense_steps": 10, "every": 5},
        "checkpoint": {"every": 16, "keep": 3},
    }
    for sec, vals in sections.items():
        base.setdefault(sec, {}).update(vals)
    return merge(copy.deepcopy(DEFAULTS), base)
