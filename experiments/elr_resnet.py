"""The ELR study's base run: a CIFAR ResNet v1 (with or without shortcuts) logging per-layer
effective learning rates every step of early training (`log.metrics=["elr"]`).

Constant LR, no warm-up and no weight decay, so the weight-dynamics model (`normjax ode RUNDIR`)
applies as stated; sweeps set other values. smoke: ResNet-20 on the embedded digits data, 150
steps; full: ResNet-56 on CIFAR-10, the first 2000 steps logged densely, then every epoch.
medium (2 CPU cores): a BN-ReLU MLP, depth 31 width 256, with identity shortcuts (residual blocks
of two BN-ReLU layers; `model.shortcut=false` gives the plain net) on Fashion-MNIST, the first
1000 steps (~2 epochs) logged densely: at depth 21-41 the plain net's per-layer ELRs spread over
orders of magnitude while the residual net's stay close, and a run costs about a minute.
gpu (one H100/H200): the CIFAR ResNet v1 (depth 20; the sweeps add 56 and 110) on Fashion-MNIST,
the first 1000 steps logged densely: the paper's architecture at the medium data, seconds a run.

mnist1d (2 CPU cores): the 1-D ResNet-20 (width 16, 1x3 convs) on MNIST-1D, the first 1000 steps
(32 epochs) logged densely: on MNIST-1D convolution and depth matter (a linear classifier reaches
about 32%, the 1-D ResNet about 99%), which the MLPs over Fashion-MNIST cannot show; under a
minute a run. fmnist_conv (2 CPU cores): the CIFAR ResNet-20 at width 8 on Fashion-MNIST, the first
1000 steps: the paper's architecture, narrowed to fit 2 cores (a few minutes a run).

    normjax train experiments/elr_resnet.py --set model.shortcut=false
    normjax elr-plot runs/elr_resnet && normjax ode runs/elr_resnet
"""

SIZES = ("smoke", "medium", "gpu", "full", "mnist1d", "fmnist_conv")


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "resnet", "depth": 20, "shortcut": True},
        "data": {"name": "digits"},
        "optim": {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "warmup_steps": 0},
        "train": {"batch_size": 128, "steps": 150, "steps_per_dispatch": 10},
        "log": {"dense_steps": 150, "every": 10, "metrics": ["elr"]},
        "checkpoint": {"every": 150},
    }
    if size == "medium":
        cfg["model"] = {"name": "mlp", "depth": 31, "width": 256, "shortcut": True}
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["train"].update(steps=1000, steps_per_dispatch=50)
        cfg["log"].update(dense_steps=1000, every=50)
        cfg["checkpoint"] = {"every": 1000}
    if size in ("mnist1d", "fmnist_conv"):
        cfg["model"] = {"name": "resnet", "depth": 20, "width": 16 if size == "mnist1d" else 8, "shortcut": True}
        cfg["data"] = {"name": "mnist1d" if size == "mnist1d" else "fashion_mnist"}
        cfg["train"].update(steps=1000, steps_per_dispatch=50)
        cfg["log"].update(dense_steps=1000, every=50)
        cfg["checkpoint"] = {"every": 1000}
    if size == "gpu":
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["train"].update(steps=1000, steps_per_dispatch=50)
        cfg["log"].update(dense_steps=1000, every=50)
        cfg["checkpoint"] = {"every": 1000}
    if size == "full":
        cfg["model"]["depth"] = 56
        cfg["data"] = {"name": "cifar10", "crop_padding": 4, "flip": True}
        cfg["train"].update(steps=0, epochs=160.0, steps_per_dispatch=50)
        cfg["log"].update(dense_steps=2000, every=390)
        cfg["checkpoint"] = {"every": 2000, "keep": 3}
    return cfg
