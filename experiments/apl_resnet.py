"""The APL study's base run: a CIFAR ResNet-20 with channel-wise PReLU slopes and the L1 sparsity
prior on them (`sgd_prelu_l1`), logging nonlinear units and APL (smoke: the embedded digits data;
full: CIFAR-10).

medium: a residual PReLU MLP (depth 21 = a first layer + 10 blocks of two BN-PReLU layers, width
128) on Fashion-MNIST, 6 epochs, batch 128 (the medium sweeps add the parity synthetic task and
digits): 20 PReLU layers leave the prior room to cut the path length by an order of magnitude,
and a run costs well under a minute on 2 CPU cores, so the APL sweeps fit in about an hour.

gpu (one H100/H200): the PReLU ResNet-20 (CIFAR ResNet v1) on Fashion-MNIST, 6 epochs.

mnist1d (2 CPU cores): the PReLU 1-D ResNet-20 (width 16, 1x3 convs) on MNIST-1D, 30 epochs (930
steps): a linear classifier reaches about 32% there and the ReLU net about 99%, so nonlinear units
are worth tens of points, and a run takes about half a minute. fmnist_conv (2 CPU cores): the PReLU
ResNet-20 at width 8 on Fashion-MNIST, 3 epochs: the paper's network, narrowed to fit 2 cores.

Vary the prior with `--set optim.prelu_l1=...`; `normjax apl RUNDIR` reports the reached APL.
"""

SIZES = ("smoke", "medium", "gpu", "full", "mnist1d", "fmnist_conv")


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "resnet", "depth": 20, "activation": "prelu", "prelu_init": 0.0},
        "data": {"name": "digits"},
        "optim": {
            "name": "sgd_prelu_l1",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "warmup_steps": 20,
            "prelu_l1": 0.03,
        },
        "train": {"batch_size": 128, "epochs": 30.0, "steps_per_dispatch": 10},
        "log": {"dense_steps": 0, "every": 10, "metrics": ["apl"]},
        "checkpoint": {"every": 100},
    }
    if size == "medium":
        cfg["model"] = {
            "name": "mlp",
            "depth": 21,
            "width": 128,
            "shortcut": True,
            "activation": "prelu",
            "prelu_init": 0.0,
        }
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["optim"]["warmup_steps"] = 100
        cfg["train"].update(epochs=6.0, steps_per_dispatch=50)
        cfg["log"]["every"] = 100
        cfg["checkpoint"]["every"] = 1000
    if size == "mnist1d":
        cfg["model"]["width"] = 16
        cfg["data"] = {"name": "mnist1d", "crop_padding": 2}
        cfg["optim"]["warmup_steps"] = 31
        cfg["train"].update(epochs=30.0, steps_per_dispatch=31)
        cfg["log"]["every"] = 31
        cfg["checkpoint"]["every"] = 310
    if size == "fmnist_conv":
        cfg["model"]["width"] = 8
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["optim"]["warmup_steps"] = 100
        cfg["train"].update(epochs=3.0, steps_per_dispatch=50)
        cfg["log"]["every"] = 100
        cfg["checkpoint"]["every"] = 500
    if size == "gpu":
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["optim"]["warmup_steps"] = 100
        cfg["train"].update(epochs=6.0, steps_per_dispatch=50)
        cfg["log"]["every"] = 100
        cfg["checkpoint"]["every"] = 1000
    if size == "full":
        cfg["data"].update(name="cifar10", crop_padding=4, flip=True)
        cfg["train"].update(epochs=160.0, steps_per_dispatch=50)
        cfg["log"]["every"] = 100
        cfg["checkpoint"]["every"] = 2000
    return cfg
