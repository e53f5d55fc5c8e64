"""`make demo`, the APL part: a PReLU ResNet-14 on the embedded digits data sparsified to chosen
fractions of nonlinear units by the λ controller, during training and after it (warm-started from
one base network), with the study's protocol (`sweep_apl_targets.py`: the target falls gradually
over the run; `sweep_apl_sparsity.regimes`: "after" continues the base with no warm-up, as long as
"during"); then accuracy vs APL, the core network, and a folded network. medium: the residual
PReLU MLP of `apl_resnet.py --size medium` on Fashion-MNIST, 6 epochs per regime: 9 runs (with the
base). mnist1d: the PReLU 1-D ResNet-20 of `apl_resnet.py --size mnist1d` on MNIST-1D, 30 epochs per
regime (a task where nonlinear units are worth tens of points): 9 runs. fmnist_conv: the PReLU
ResNet-20 at width 8 on Fashion-MNIST, 3 epochs per regime: 9 runs (about an hour on 2 CPU cores).
"""

import importlib.util
from pathlib import Path


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sparsity, _targets = _sibling("sweep_apl_sparsity"), _sibling("sweep_apl_targets")
SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    epochs = {"smoke": 20.0, "medium": 6.0, "mnist1d": 30.0, "fmnist_conv": 3.0}.get(size, 160.0)
    return {
        "base": "apl_resnet.py",
        "grid": {"train.regime": _sparsity.regimes(epochs), "optim.prelu_target": [0.3, 0.1, 0.03, 0.0]},
        "set": _targets.CONTROLLER
        | _targets.RAMP
        | {"optim.prelu_l1": 0.01}
        | {
            "smoke": {"model.depth": 14, "model.width": 8} | _targets.SMOKE_GAIN,
            "medium": {},
            "mnist1d": {},
            "fmnist_conv": {},
        }.get(size, {"data.name": "cifar10"}),
        "pretrain": {"optim.prelu_target": 1.0, "train.epochs": epochs},
    }
