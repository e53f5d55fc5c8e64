"""An LR grid x momentum at fixed depth (the ELR study's LR axis).

smoke: a BN-ReLU MLP on digits (vectorizes well on CPU); full: ResNet-56 on CIFAR-10, 3 seeds.
medium: BN-ReLU MLPs of depth 21, width 256, plain vs residual, on Fashion-MNIST, 3 epochs, LRs
0.01-3 x momentum 0/0.9 x 3 seeds (deep enough for the plain net's narrower stable LR range to
show, and 3 seeds to compare accuracies): 72 runs in 2 shape groups, about 35 min on 2 CPU cores.
mnist1d: the 1-D ResNet-20 (width 16), plain vs residual, on MNIST-1D (`mnist1d.py`, 30 epochs),
LRs 0.01-3 x momentum 0/0.9, 2 seeds: 48 runs, the stable LR range of conv nets where depth
matters. fmnist_conv: ResNet-20 at width 8 on Fashion-MNIST, 1 epoch, LRs 0.03/0.3/3 x momentum
0/0.9, plain vs residual, one seed: 12 runs.
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    if size == "medium":
        return {
            "base": "mlp_digits.py",
            "grid": {
                "optim.lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
                "train.seed": [0, 1, 2],
            },
            "set": {"model.depth": 21, "train.epochs": 3.0},
        }
    if size == "mnist1d":
        return {
            "base": "mnist1d.py",
            "grid": {
                "optim.lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
                "train.seed": [0, 1],
            },
            "set": {"train.epochs": 30.0},
        }
    if size == "fmnist_conv":
        return {
            "base": "resnet_fmnist.py",
            "grid": {"optim.lr": [0.03, 0.3, 3.0], "optim.momentum": [0.0, 0.9], "model.shortcut": [True, False]},
            "set": {"train.epochs": 1.0},
        }
    if size == "full":
        return {
            "base": "resnet_cifar10.py",
            "grid": {
                "optim.lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                "optim.momentum": [0.0, 0.9],
                "train.seed": [0, 1, 2],
            },
            "set": {"model.depth": 56},
        }
    return {
        "base": "mlp_digits.py",
        "grid": {"optim.lr": [0.01, 0.1, 1.0], "optim.momentum": [0.0, 0.9], "train.seed": [0, 1]},
        "set": {"train.epochs": 3.0},
    }
