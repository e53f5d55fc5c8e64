"""Gradient explosion at init over depth, CIFAR ResNet v1 with and without shortcuts: the plain
net's squared gradient norm grows per layer toward the input, the residual net's much less.

  normjax explode experiments/explode_resnet.py [--size full] [--depths 8,14,20] [--out DIR]

smoke: width 16 on the offline digits data, batch 128, depths 8/14/20; full: CIFAR-10, batch 128,
depths 20/32/56/110; medium: Fashion-MNIST, batch 128, depths 20/32/56 (a few minutes on 2 CPU
cores). Nothing is trained.
"""

SIZES = ("smoke", "medium", "full")


def get_config(size: str) -> dict:
    data = {"name": {"full": "cifar10", "medium": "fashion_mnist"}.get(size, "digits")}
    return {"model": {"name": "resnet", "depth": 20, "width": 16}, "data": data, "train": {"batch_size": 128}}
