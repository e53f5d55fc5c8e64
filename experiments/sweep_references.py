"""Reference accuracies of the conv sizes: what a linear classifier, an MLP, a plain CNN and a ResNet
reach on the data the conv studies train on, with one recipe, 3 seeds (the README sizes table).

mnist1d: on MNIST-1D (`mnist1d.py --size mnist1d`: 30 epochs, SGD with momentum 0.9, cosine,
weight decay 5e-4, batch 128, random translation of up to 2 samples), the linear classifier (one
hidden layer of PReLU units frozen linear: dense → BN → dense, an affine map), a BN-ReLU MLP of
depth 2 and width 128, the plain 1-D CNN of depth 3 (width 32), and the 1-D ResNet-20 (width 16)
with and without shortcuts: 15 runs, about 5 min on 2 CPU cores. The published numbers (Greydanus
& Kobak, arXiv:2011.14439): logistic regression about 32%, MLP about 68%, CNN about 94%.

fmnist_conv: on Fashion-MNIST at the same budget (3 epochs, the recipe of `sweep_depth.py --size
fmnist_conv`: `resnet_fmnist.py`), the linear classifier, the plain CNN of depth 3 (width 16) and ResNet-20 (width
8) with and without shortcuts: 12 runs, about an hour on 2 CPU cores. Does depth help here?

    make sweep-references SIZE=mnist1d
"""

SIZES = ("mnist1d", "fmnist_conv")

LINEAR = {"name": "linear", "model.name": "mlp", "model.depth": 1, "model.width": 128, "model.activation": "prelu"}
LINEAR |= {"model.prelu_init": 1.0, "optim.name": "sgd_prelu_l1"}


def get_sweep(size: str) -> dict:
    if size == "mnist1d":
        models = [
            LINEAR,
            {"name": "mlp", "model.name": "mlp", "model.depth": 2, "model.width": 128},
            {"name": "plain_cnn3", "model.name": "plain_cnn", "model.depth": 3, "model.width": 32},
            {"name": "resnet20_plain", "model.depth": 20, "model.shortcut": False},
            {"name": "resnet20", "model.depth": 20, "model.shortcut": True},
        ]
        return {"base": "mnist1d.py", "grid": {"model.reference": models, "train.seed": [0, 1, 2]}}
    models = [
        LINEAR,
        {"name": "plain_cnn3", "model.name": "plain_cnn", "model.depth": 3, "model.width": 16},
        {"name": "resnet20_plain", "model.depth": 20, "model.shortcut": False},
        {"name": "resnet20", "model.depth": 20, "model.shortcut": True},
    ]
    return {"base": "resnet_fmnist.py", "grid": {"model.reference": models, "train.seed": [0, 1, 2]}}
