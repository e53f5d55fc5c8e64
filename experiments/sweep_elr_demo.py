"""`make demo`: the ELR study in minutes on 2 CPU cores. A deep plain BN ResNet and its residual
twin on the embedded digits data, per-layer ELRs logged every step (constant LR, no momentum or
weight decay, so the weight-dynamics model applies as stated); then their figures and the model's
prediction next to the measurement. full: ResNet-110 on CIFAR-10, the first 2000 steps.
medium: the BN MLP of `elr_resnet.py --size medium` (depth 31, width 256) plain vs residual on
Fashion-MNIST, the first 1000 steps at LR 0.3: 2 runs, a few minutes on 2 CPU cores.
mnist1d: the 1-D ResNet-32 (width 16) plain vs residual on MNIST-1D, the first 1000 steps at LR
0.3 (conv nets on a task where depth and convolution matter, under a minute a run); fmnist_conv:
ResNet-20 (width 8) plain vs residual on Fashion-MNIST, the first 500 steps at LR 0.3 (the
paper's architecture, narrowed for 2 CPU cores).
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    if size == "full":
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [False, True]},
            "set": {"model.depth": 110, "train.epochs": 0.0, "train.steps": 2000, "log.every": 100},
        }
    if size == "medium":
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [False, True]},
            "set": {"model.depth": 31, "optim.lr": 0.3},
        }
    if size == "mnist1d":
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [False, True]},
            "set": {"model.depth": 32, "optim.lr": 0.3},
        }
    if size == "fmnist_conv":
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [False, True]},
            "set": {"optim.lr": 0.3, "train.steps": 500, "log.dense_steps": 500},
        }
    return {
        "base": "elr_resnet.py",
        "grid": {"model.shortcut": [False, True]},
        "set": {"model.depth": 32, "optim.lr": 0.3},
    }
