"""Gradient explosion at init over depth, CIFAR ResNet v1 with and without shortcuts: the plain
net's squared gradient norm grows per layer toward the input, the residual net's much less.

  normjax explode experiments/explode_resnet.py [--size full] [--depths 8,14,20] [--out DIR]

smoke: width 16 on the offline digits data, batch 128, depths 8/14/20; full: CIFAR-10, batch 128,
depths 20/32/56/110; medium: Fashion-MNIST, batch 128, depths 20/32/56 (a few minutes on 2 CPU
cores). mnist1d: the 1-D ResNets (1x3 convs) on MNIST-1D, depths 8-56, where depth is measured
against a task that needs it; fmnist_conv: width 8 on Fashion-MNIST, depths 20/56 (the conv
sizes the studies train on 2 CPU cores). Nothing is trained.
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_config(size: str) -> dict:
    names = {"full": "cifar10", "medium": "fashion_mnist", "mnist1d": "mnist1d", "fmnist_conv": "fashion_mnist"}
    width = 8 if size == "fmnist_conv" else 16
    return {
        "model": {"name": "resnet", "depth": 20, "width": width},
        "data": {"name": names.get(size, "digits")},
        "train": {"batch_size": 128},
    }
