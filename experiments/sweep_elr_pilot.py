"""The pilot of `sweep_elr_decisive.py`: plain nets and their residual twins at LR 0.1, 0.3 and 1
(momentum 0.9, weight decay 5e-4, cosine), one seed: 6 runs a size. The decisive sweep takes an LR
at which plain SGD fails and the residual twin trains.

medium: the decisive sweep's plain depth-41 BN MLP (width 256) on Fashion-MNIST, 4 epochs.
mnist1d: the 1-D ResNet-56 (width 16) of `sweep_elr_regimes.py --size mnist1d` on MNIST-1D, 30
epochs (minutes a run on 2 CPU cores). fmnist_conv: the ResNet-56 at width 8 on Fashion-MNIST, 2
epochs (the candidate conv setting of the decisive tests; tens of minutes a run on 2 CPU cores).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sweep_elr_decisive", Path(__file__).with_name("sweep_elr_decisive.py"))
_decisive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_decisive)

SIZES = ("medium", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    grid = {"optim.lr": [0.1, 0.3, 1.0], "model.shortcut": [False, True]}
    if size == "medium":
        return {
            "base": "elr_resnet.py",
            "grid": grid,
            "set": _decisive.RECIPE
            | {"model.depth": 41, "train.epochs": 4.0, "log.every": 100, "checkpoint.every": 2000},
        }
    epochs = 30.0 if size == "mnist1d" else 2.0
    return {
        "base": "elr_resnet.py",
        "grid": grid,
        "set": _decisive.RECIPE
        | {"model.depth": 56, "train.epochs": epochs, "log.every": 50, "checkpoint.every": 1000},
    }
