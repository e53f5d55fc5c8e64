"""The APL study by target: the λ controller (`optim.name=sgd_prelu_target`) steers the prior until
a given fraction of the PReLU units is nonlinear, so accuracy is measured at chosen APLs, in both
regimes and over the tasks of `sweep_apl_sparsity.py`. The target falls gradually (`RAMP`: the cubic
schedule of gradual pruning, from every unit nonlinear at 10% of the run to the target at 60%), so
"during" sparsifies a network in training, not at initialization, and both regimes (same length,
same ramp: `sweep_apl_sparsity.regimes`) get the last 40% of their steps with the architecture fixed.

smoke: ResNet-14 (width 8), digits and synthetic hard at 8x8; full: ResNet-20 on CIFAR-10/100 and
synthetic easy/hard, 2 seeds. medium: the residual PReLU MLP of `apl_resnet.py --size medium` on
digits, Fashion-MNIST and parity (`sweep_apl_sparsity.tasks`), 6 epochs per regime, targets 0.3 to 0
(the APL range from a mostly linear net to its linear limit), 3 seeds: 90 runs + 9 base runs.
mnist1d: the PReLU 1-D ResNet-20 on MNIST-1D, the medium targets, 5 seeds (its nonlinear advantage
decides a verdict): 50 runs + 5 base runs. fmnist_conv: the PReLU ResNet-20 width 8 on
Fashion-MNIST, targets 0.3, 0.03 and 0 (`CONV_TARGETS`), 3 seeds: 18 runs + 3 base runs. `make sweep-apl_targets` draws
the APL figures (`normjax apl-plot`).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sweep_apl_sparsity", Path(__file__).with_name("sweep_apl_sparsity.py"))
_sparsity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sparsity)

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")
# The rate floor meets every target in bounded time: without it, a run of the medium sweep stalled
# short of target 0 (the integral's rate vanishes with the share left; `prelu_sparsity_controller`).
# Gain and floor are the pilot's (docs/reproduction.md): a gain of 0.1 raised λ so fast at the ramp's
# onset that every free slope was pushed toward linear and the training in progress was wrecked;
# 0.02 with a floor of 0.1 stalled short of targets 0.01 and 0; with the floor at 1, log λ moves by
# 0.02 a step, up while behind the ramp and down after a step that kept pace.
CONTROLLER = {"optim.name": "sgd_prelu_target", "optim.prelu_gain": 0.02, "optim.prelu_min_rate": 1.0}
# The smoke runs (about 220 steps) are four times shorter than MNIST-1D's: at gain 0.02 λ cannot climb
# from λ0 within their ramp and nothing freezes (every target gave the same net); 0.1 climbs as far,
# in ramp steps, as 0.02 does on MNIST-1D.
SMOKE_GAIN = {"optim.prelu_gain": 0.1}
RAMP = {"optim.prelu_start": 0.1, "optim.prelu_ramp": 0.5}
TARGETS = [0.3, 0.1, 0.03, 0.01, 0.0]
# A run of the 2-D conv size costs minutes on 2 CPU cores: three targets span the same range (its
# ResNet-20 at width 8 has 344 PReLU units, so 0.01 is 3 units, between 0.03 and 0).
CONV_TARGETS = [0.3, 0.03, 0.0]


def get_sweep(size: str) -> dict:
    if size in ("medium", "mnist1d", "fmnist_conv"):
        epochs = _sparsity.EPOCHS[size]
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": _sparsity.tasks(size),
                "train.regime": _sparsity.regimes(epochs),
                "optim.prelu_target": CONV_TARGETS if size == "fmnist_conv" else TARGETS,
                "train.seed": [0, 1, 2, 3, 4] if size == "mnist1d" else [0, 1, 2],
            },
            "set": CONTROLLER | RAMP | {"optim.prelu_l1": 0.01},
            "pretrain": {"optim.prelu_target": 1.0, "train.epochs": epochs},
        }
    if size == "full":
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": _sparsity.tasks(size),
                "train.regime": _sparsity.regimes(160.0),
                "optim.prelu_target": [0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.0],
                "train.seed": [0, 1],
            },
            "set": CONTROLLER | RAMP | {"optim.prelu_l1": 1e-4, "optim.prelu_gain": 0.005},
            "pretrain": {"optim.prelu_target": 1.0, "train.epochs": 160.0},
        }
    return {
        "base": "apl_resnet.py",
        "grid": {
            "data.task": [t for t in _sparsity.tasks(size) if t["name"] != "easy"],
            "train.regime": _sparsity.regimes(20.0),
            "optim.prelu_target": TARGETS,
        },
        "set": CONTROLLER | SMOKE_GAIN | RAMP | {"model.depth": 14, "model.width": 8, "optim.prelu_l1": 0.01},
        "pretrain": {"optim.prelu_target": 1.0, "train.epochs": 20.0},
    }
