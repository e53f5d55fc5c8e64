"""A 1-D ResNet v1 on MNIST-1D (Greydanus & Kobak, arXiv:2011.14439): 4,000 training and 1,000 test
signals of length 40 in 10 classes, generated offline by the `mnist1d` package.

Published accuracies: logistic regression about 32%, MLP about 68%, CNN about 94%: nonlinearity
and convolution are worth tens of points here, where depth and nonlinearity can show on 2 CPU
cores (the MLPs over Fashion-MNIST cannot: a depth-2 MLP beats the deep one there).

smoke: the residual 1-D ResNet-20 (width 16, every conv 1x3) for 10 epochs, about 15 s on 2 CPU
cores. mnist1d: the reference recipe of the 1-D study sizes, 30 epochs (SGD, momentum 0.9,
cosine, weight decay 5e-4, batch 128, a random translation of up to 2 samples).

    normjax train experiments/mnist1d.py --size smoke
    normjax train experiments/mnist1d.py --size mnist1d --set model.shortcut=false
"""

SIZES = ("smoke", "mnist1d")


def get_config(size: str) -> dict:
    return {
        "model": {"name": "resnet", "depth": 20, "width": 16},
        "data": {"name": "mnist1d", "crop_padding": 2},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "warmup_steps": 31},
        "train": {"batch_size": 128, "epochs": 10.0 if size == "smoke" else 30.0, "steps_per_dispatch": 31},
        "log": {"dense_steps": 0, "every": 31},
        "checkpoint": {"every": 310},
    }
