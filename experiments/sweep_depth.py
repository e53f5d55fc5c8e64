"""Plain vs residual ResNets over depth, a few seeds (the ELR study's depth axis).

smoke: ResNet-8/14/20 on digits, 3 epochs; full: ResNet-20/32/56/110 on CIFAR-10, 3 seeds.
"""


def get_sweep(size: str) -> dict:
    if size == "full":
        return {
            "base": "resnet_cifar10.py",
            "grid": {"model.depth": [20, 32, 56, 110], "model.shortcut": [True, False], "train.seed": [0, 1, 2]},
        }
    return {
        "base": "resnet_digits.py",
        "grid": {"model.depth": [8, 14, 20], "model.shortcut": [True, False], "train.seed": [0, 1]},
        "set": {"train.epochs": 3.0, "optim.warmup_steps": 0},
    }
