"""The CIFAR ResNet-20 v1 at width 8 on Fashion-MNIST (28x28x1): the conv net of the paper's family
that 2 CPU cores can train in minutes, where the MLPs' verdicts cannot show depth.

fmnist_conv: the recipe of the Fashion-MNIST conv sizes, 3 epochs (SGD with momentum 0.9, cosine,
weight decay 5e-4, 100 warm-up steps, batch 128), about 4-5 min on 2 CPU cores. smoke: 200 steps.

    normjax train experiments/resnet_fmnist.py --size fmnist_conv --set model.shortcut=false
"""

SIZES = ("smoke", "fmnist_conv")


def get_config(size: str) -> dict:
    return {
        "model": {"name": "resnet", "depth": 20, "width": 8},
        "data": {"name": "fashion_mnist"},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "warmup_steps": 100},
        "train": {"batch_size": 128, "epochs": 3.0, "steps": 200 if size == "smoke" else 0, "steps_per_dispatch": 50},
        "log": {"dense_steps": 0, "every": 100},
        "checkpoint": {"every": 500},
    }
