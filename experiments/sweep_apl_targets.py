"""The APL study by target: the λ controller (`optim.name=sgd_prelu_target`) steers the prior until
a given fraction of the PReLU units is nonlinear, so accuracy is measured at chosen APLs, in both
regimes and over the tasks of `sweep_apl_sparsity.py`.

smoke: ResNet-14 (width 8), digits and synthetic hard at 8x8; full: ResNet-20 on CIFAR-10/100 and
synthetic easy/hard, 2 seeds. medium: the residual PReLU MLP of `apl_resnet.py --size medium` on digits, Fashion-MNIST and
parity (`sweep_apl_sparsity.tasks`), 6 epochs during / 3 after, targets 0.3 to 0 (the APL range
from a mostly linear net to its linear limit), 3 seeds: 90 runs + 9 base runs, about 17 min on 2
CPU cores. mnist1d / fmnist_conv: the conv nets and tasks of `sweep_apl_sparsity.py` at those sizes
(the PReLU 1-D ResNet-20 on MNIST-1D; the PReLU ResNet-20 width 8 on Fashion-MNIST), the medium
targets, 3 seeds: 30 runs + 3 base runs each. `make sweep-apl_targets` draws the APL figures (`normjax apl-plot`).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sweep_apl_sparsity", Path(__file__).with_name("sweep_apl_sparsity.py"))
_sparsity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sparsity)

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")
# The rate floor meets every target in bounded time: without it, a run of the medium sweep stalled
# short of target 0 (the integral's rate vanishes with the share left; `prelu_sparsity_controller`;
# the run's numbers: docs/reproduction.md).
CONTROLLER = {"optim.name": "sgd_prelu_target", "optim.prelu_gain": 0.1, "optim.prelu_min_rate": 0.1}


def get_sweep(size: str) -> dict:
    if size in ("medium", "mnist1d", "fmnist_conv"):
        during, after = _sparsity.EPOCHS[size]
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": _sparsity.tasks(size),
                "train.regime": _sparsity.regimes(during, after),
                "optim.prelu_target": [0.3, 0.1, 0.03, 0.01, 0.0],
                "train.seed": [0, 1, 2],
            },
            "set": CONTROLLER | {"optim.prelu_l1": 0.01},
            "pretrain": {"optim.prelu_target": 1.0, "train.epochs": during},
        }
    if size == "full":
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": _sparsity.tasks(size),
                "train.regime": _sparsity.regimes(160.0, 40.0),
                "optim.prelu_target": [0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.0],
                "train.seed": [0, 1],
            },
            "set": CONTROLLER | {"optim.prelu_l1": 1e-4, "optim.prelu_gain": 0.005},
            "pretrain": {"optim.prelu_target": 1.0, "train.epochs": 160.0},
        }
    return {
        "base": "apl_resnet.py",
        "grid": {
            "data.task": [t for t in _sparsity.tasks(size) if t["name"] != "easy"],
            "train.regime": _sparsity.regimes(20.0, 10.0),
            "optim.prelu_target": [0.3, 0.1, 0.03, 0.01, 0.0],
        },
        "set": CONTROLLER | {"model.depth": 14, "model.width": 8, "optim.prelu_l1": 0.01},
        "pretrain": {"optim.prelu_target": 1.0, "train.epochs": 20.0},
    }
