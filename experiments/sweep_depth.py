"""Plain vs residual ResNets over depth, a few seeds (the ELR study's depth axis).

smoke: ResNet-8/14/20 on digits, 3 epochs; full: ResNet-20/32/56/110 on CIFAR-10, 3 seeds.
medium: BN-ReLU MLPs (width 256) of depth 11/21/31/41, plain vs residual, on Fashion-MNIST, 4
epochs, 3 seeds: the plain net degrades with depth where its residual twin does not; 24 runs in 8
shape groups, about 20 min on 2 CPU cores.
mnist1d: 1-D ResNets of depth 8/20/32/56 (width 16), plain vs residual, on MNIST-1D with the
recipe of `mnist1d.py --size mnist1d` (30 epochs), 3 seeds: 24 runs, where depth can matter.
fmnist_conv: ResNet-20/56 at width 8, plain vs residual, on Fashion-MNIST (`resnet_fmnist.py`, 3 epochs), 3 seeds: 12
runs, the paper's plain-vs-residual depth comparison in conv nets on 2 CPU cores (hours).
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    if size == "medium":
        return {
            "base": "mlp_digits.py",
            "grid": {"model.depth": [11, 21, 31, 41], "model.shortcut": [True, False], "train.seed": [0, 1, 2]},
        }
    if size == "mnist1d":
        return {
            "base": "mnist1d.py",
            "grid": {"model.depth": [8, 20, 32, 56], "model.shortcut": [True, False], "train.seed": [0, 1, 2]},
        }
    if size == "fmnist_conv":
        return {
            "base": "resnet_fmnist.py",
            "grid": {"model.depth": [20, 56], "model.shortcut": [True, False], "train.seed": [0, 1, 2]},
        }
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
