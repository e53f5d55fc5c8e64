"""Uniform ELR with the common ELR at the layers' geometric mean (`optim.elr_reference=geometric_mean`)
against the regimes sweep's plain recipe: the same nets, recipe and seeds as `sweep_elr_regimes.py`,
where uniform ELR takes the LR itself as the common relative step (normjax's default).

The geometric-mean reference keeps the LR at its usual scale: every layer gets the relative step
the layers would get on average, so the test asks whether equalizing ELRs helps, not whether a
larger step does. smoke: ResNet-14 on digits, 150 steps, 2 seeds; medium: the BN MLP of
`elr_resnet.py --size medium` (depth 31, width 256) plain vs residual on Fashion-MNIST, 4 epochs,
3 seeds: 6 runs. mnist1d and fmnist_conv: the regimes sweep's conv nets of those sizes (1-D
ResNet-56 on MNIST-1D, ResNet-56 width 8 on Fashion-MNIST), plain vs residual, 3 seeds: 6 runs.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sweep_elr_regimes", Path(__file__).with_name("sweep_elr_regimes.py"))
_regimes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_regimes)

SIZES = ("smoke", "medium", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    sweep = _regimes.get_sweep(size)
    sweep.pop("zip")
    sweep["set"] = sweep["set"] | {"optim.name": "sgd_uniform_elr", "optim.elr_reference": "geometric_mean"}
    return sweep
