import copy

import pytest

from normjax.config import DEFAULTS, merge


@pytest.fixture
def model_cfg():
    def make(**kw):
        return merge(DEFAULTS["model"], kw)
    return make


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
