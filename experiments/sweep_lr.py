"""An LR grid x momentum at fixed depth (the ELR study's LR axis).

smoke: a BN-ReLU MLP on digits (vectorizes well on CPU); full: ResNet-56 on CIFAR-10, 3 seeds.
medium: BN-ReLU MLPs of depth 21, width 256, plain vs residual, on Fashion-MNIST, 3 epochs, LRs
0.01-3 x momentum 0/0.9 x 3 seeds (deep enough for the plain net's narrower stable LR range to
show, and 3 seeds to compare accuracies): 72 runs in 2 shape groups, about 35 min on 2 CPU cores.
"""

SIZES = ("smoke", "medium", "full")


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
