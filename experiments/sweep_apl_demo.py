"""`make demo`, the APL part: a PReLU ResNet-14 on the embedded digits data sparsified to chosen
fractions of nonlinear units by the λ controller, during training and after it (warm-started from
one base network); then accuracy vs APL, the core network, and a folded network. medium: the
residual PReLU MLP of `apl_resnet.py --size medium` on Fashion-MNIST, 6 epochs during / 3 after
training: 9 runs (with the base), about 5 min on 2 CPU cores. mnist1d: the PReLU 1-D ResNet-20 of
`apl_resnet.py --size mnist1d` on MNIST-1D, 30 epochs during / 15 after (a task where nonlinear
units are worth tens of points): 9 runs, a few minutes. fmnist_conv: the PReLU ResNet-20 at width
8 on Fashion-MNIST, 3 epochs during / 1.5 after: 9 runs, about half an hour on 2 CPU cores.
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    epochs = {"smoke": 20.0, "medium": 6.0, "mnist1d": 30.0, "fmnist_conv": 3.0}.get(size, 160.0)
    return {
        "base": "apl_resnet.py",
        "grid": {
            "train.regime": [
                {"name": "during", "train.init_from": "", "train.epochs": epochs},
                {"name": "after", "train.init_from": "pretrain", "train.epochs": epochs / 2},
            ],
            "optim.prelu_target": [0.3, 0.1, 0.03, 0.0],
        },
        "set": {"optim.name": "sgd_prelu_target", "optim.prelu_l1": 0.01, "optim.prelu_gain": 0.1}
        | {"smoke": {"model.depth": 14, "model.width": 8}, "medium": {}, "mnist1d": {}, "fmnist_conv": {}}.get(
            size, {"data.name": "cifar10"}
        ),
        "pretrain": {"optim.prelu_target": 1.0, "train.epochs": epochs},
    }
