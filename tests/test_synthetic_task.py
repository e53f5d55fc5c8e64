"""The synthetic generator's tasks (normjax.data.sources): `prototypes` unchanged, `parity` needs nonlinearity.

Measured once (2-core AMD EPYC VM; 8x8x1, 4 classes, difficulty 0.5, 2048 train / 1024 test
examples; the MLP of `_train` for 200 steps) on seeds 0, 1, 2: test accuracy of the ReLU MLP
0.886 / 0.941 / 0.948, of the all-linear twin 0.253 / 0.271 / 0.282, of least squares on the
pixels 0.255 / 0.250 / 0.235 (chance 0.25; on `prototypes` 0.99-1.0). The tests' thresholds leave margin on both sides.
"""

import hashlib

import numpy as np
import pytest

from helpers import small_config
from normjax.data.sources import SYNTHETIC_TASKS, load_dataset
from normjax.errors import UserError
from normjax.training.loop import train

PARITY = {
    "task": "parity",
    "num_classes": 4,
    "image_shape": [8, 8, 1],
    "num_train": 2048,
    "num_test": 1024,
    "difficulty": 0.5,
}


def _digest(ds) -> str:
    h = hashlib.sha256()
    for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# Computed from the generator before `task` existed (commit b7071c1).
BEFORE = [
    ({}, "d1d7e2ff0b5896a6"),
    ({"num_train": 300, "num_test": 100, "image_shape": [8, 8, 1], "difficulty": 0.7}, "ab48e59ece0e1a0b"),
    (
        {"num_train": 50, "num_test": 30, "image_shape": [12, 10, 2], "num_classes": 3, "seed": 5, "difficulty": 0.0},
        "32b9c0750f335dc6",
    ),
    ({"num_train": 2100, "num_test": 20, "image_shape": [8, 8, 3], "difficulty": 1.0, "seed": 2}, "6c9c4f8c8a47a954"),
]


@pytest.mark.parametrize("options,digest", BEFORE)
def test_prototypes_task_is_unchanged_and_the_default(options, digest):
    assert _digest(load_dataset("synthetic", synthetic=options)) == digest
    assert _digest(load_dataset("synthetic", synthetic={**options, "task": "prototypes"})) == digest


def test_parity_is_deterministic_balanced_and_its_own_task():
    ds = load_dataset("synthetic", synthetic=PARITY)
    again = load_dataset("synthetic", synthetic=PARITY)
    assert _digest(ds) == _digest(again)
    assert _digest(load_dataset("synthetic", synthetic={**PARITY, "seed": 1})) != _digest(ds)
    assert not np.array_equal(
        ds.train_images, load_dataset("synthetic", synthetic={**PARITY, "task": "prototypes"}).train_images
    )
    assert ds.train_images.shape == (2048, 8, 8, 1) and ds.train_images.dtype == np.uint8
    assert np.bincount(ds.train_labels).tolist() == [512] * 4
    # separate streams: more train data, the same test set
    bigger = load_dataset("synthetic", synthetic={**PARITY, "num_train": 4096})
    np.testing.assert_array_equal(bigger.test_images, ds.test_images)
    np.testing.assert_array_equal(bigger.test_labels, ds.test_labels)


def _pixels(images):
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def _least_squares_accuracy(ds) -> float:
    """Test accuracy of the least-squares linear classifier (one-hot targets, with a bias) on the pixels."""
    x, xt = _pixels(ds.train_images), _pixels(ds.test_images)
    mu = x.mean(0)
    a = np.c_[x - mu, np.ones(len(x))]
    w = np.linalg.lstsq(a, np.eye(ds.num_classes)[ds.train_labels], rcond=None)[0]
    return float(np.mean(np.argmax(np.c_[xt - mu, np.ones(len(xt))] @ w, 1) == ds.test_labels))


@pytest.mark.parametrize("task,low,high", [("parity", 0.0, 0.30), ("prototypes", 0.9, 1.0)])
def test_linear_least_squares_is_at_chance_on_parity_only(task, low, high):
    ds = load_dataset("synthetic", synthetic={**PARITY, "task": task})
    assert low <= _least_squares_accuracy(ds) <= high  # chance: 0.25
    # why: every class has the same mean image (parity), unlike the prototypes
    x, y = _pixels(ds.train_images), ds.train_labels
    gap = max(np.abs(x[y == k].mean(0) - x.mean(0)).max() for k in range(4)) / x.std(0).mean()
    assert (gap < 0.2) if task == "parity" else (gap > 1.0), gap  # measured: 0.05-0.07 vs 1.8-2.1


def _train(tmp_path, kind: str, seed: int = 0) -> dict:
    """A 3-layer BN MLP (width 64) on the parity task, 200 steps; `linear`: every PReLU slope 1 and frozen."""
    linear = kind == "linear"
    cfg = small_config(
        model={"activation": "prelu", "prelu_init": 1.0} if linear else {"activation": "relu"},
        data={"name": "synthetic", "synthetic": {**PARITY, "seed": seed}},
        # sgd_prelu_l1 freezes slopes that end a step within prelu_tolerance of 1: all of them, at the first step
        optim={"name": "sgd_prelu_l1", "prelu_l1": 1.0} if linear else {},
        train={"steps": 200, "seed": seed, "steps_per_dispatch": 25},
        log={"dense_steps": 0, "every": 1000, "metrics": []},
        checkpoint={"every": 1000},
    )
    summary = train(cfg, tmp_path / kind)
    assert summary["status"] == "done"
    return summary


def test_relu_net_learns_parity_the_linear_net_does_not(tmp_path):
    relu, linear = _train(tmp_path, "relu"), _train(tmp_path, "linear")
    assert relu["test_accuracy"] > 0.8, relu  # measured 0.89-0.95 over seeds 0-2
    assert linear["test_accuracy"] < 0.35, linear  # chance 0.25; measured 0.25-0.28
    assert linear["train_loss"] > 0.95 * np.log(4)  # it fits nothing: cross-entropy of the uniform guess


@pytest.mark.parametrize("task", ["xor", "Parity", 1, None])
def test_bad_task_is_a_one_line_error(task):
    with pytest.raises(UserError) as e:
        load_dataset("synthetic", synthetic={"task": task, "num_train": 8, "num_test": 4})
    msg = str(e.value)
    assert "\n" not in msg and repr(task) in msg and ", ".join(SYNTHETIC_TASKS) in msg, msg
