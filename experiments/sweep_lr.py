"""An LR grid x momentum at fixed depth (the ELR study's LR axis).

smoke: a BN-ReLU MLP on digits (vectorizes well on CPU); full: ResNet-56 on CIFAR-10, 3 seeds.
"""


def get_sweep(size: str) -> dict:
    if size == "full":
        return {
            "base": "resnet_cifar10.py",
            "grid": {"optim.lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "optim.momentum": [0.0, 0.9],
                     "train.seed": [0, 1, 2]},
            "set": {"model.depth": 56},
        }
    return {
        "base": "mlp_digits.py",
        "grid": {"optim.lr": [0.01, 0.1, 1.0], "optim.momentum": [0.0, 0.9], "train.seed": [0, 1]},
        "set": {"train.epochs": 3.0},
    }
