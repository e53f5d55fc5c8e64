"""Early-training ELR trajectories over LR x depth x momentum, plain vs residual (the ELR study).

Every run logs per-layer ELRs each step of its dense window; `make sweep-elr_trajectories` then
draws the spread over steps per setting (`normjax elr-plot`) and compares each run with the
weight-dynamics model's prediction (`normjax ode`). smoke: ResNet-8/14 on digits, 100 steps;
full: ResNet-20/56/110 on CIFAR-10, the first 2000 steps, weight decay 0 and 5e-4; imagenet:
ResNet-50 with and without shortcuts on ImageNet, streamed (`resnet50_imagenet.py`), the first
2000 steps at constant LRs 0.1 to 1.6, momentum 0 and 0.9, weight decay 1e-4 (a GPU node or TPU VM).
medium: BN-ReLU MLPs (width 256) of depth 21 and 41, plain vs residual, on Fashion-MNIST, the first
1000 steps logged densely, LR 0.03/0.3/3 x momentum 0/0.9: 24 runs in 4 shape groups of 6, the
depths where the plain net's ELR spread grows by orders of magnitude; about 30 min on 2 CPU cores.
gpu (one H100/H200): ResNet-20/56/110 plain vs residual on Fashion-MNIST, the first 1000 steps,
the same LR x momentum grid: 36 runs, the paper's networks on the medium data.
mnist1d: 1-D ResNet-20/56 (width 16) plain vs residual on MNIST-1D, the first 1000 steps, the same
LR x momentum grid: 24 runs, conv nets of the paper's depths where depth matters, on 2 CPU cores.
fmnist_conv: ResNet-20/56 at width 8 plain vs residual on Fashion-MNIST, the first 500 steps, the
same grid: 24 runs, the paper's architecture at the size 2 CPU cores can train.
"""

SIZES = ("smoke", "medium", "gpu", "full", "imagenet", "mnist1d", "fmnist_conv")


def get_sweep(size: str) -> dict:
    if size == "imagenet":
        return {
            "base": "resnet50_imagenet.py",
            "grid": {"optim.lr": [0.1, 0.4, 1.6], "optim.momentum": [0.0, 0.9], "model.shortcut": [True, False]},
            "set": {
                "train.epochs": 0.0,
                "train.steps": 2000,
                "optim.schedule": "constant",
                "train.dtype": "float32",
                "log.metrics": ["elr"],
                "log.dense_steps": 2000,
                "checkpoint.every": 1000,
            },
        }
    if size == "medium":
        return {
            "base": "elr_resnet.py",
            "grid": {
                "optim.lr": [0.03, 0.3, 3.0],
                "model.depth": [21, 41],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
            },
            "set": {"train.steps": 1000, "log.dense_steps": 1000},
        }
    if size in ("mnist1d", "fmnist_conv"):
        steps = 1000 if size == "mnist1d" else 500
        return {
            "base": "elr_resnet.py",
            "grid": {
                "optim.lr": [0.03, 0.3, 3.0],
                "model.depth": [20, 56],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
            },
            "set": {"train.steps": steps, "log.dense_steps": steps},
        }
    if size == "gpu":
        return {
            "base": "elr_resnet.py",
            "grid": {
                "optim.lr": [0.03, 0.3, 3.0],
                "model.depth": [20, 56, 110],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
            },
        }
    if size == "full":
        return {
            "base": "elr_resnet.py",
            "grid": {
                "optim.lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                "model.depth": [20, 56, 110],
                "optim.momentum": [0.0, 0.9],
                "model.shortcut": [True, False],
                "optim.weight_decay": [0.0, 5e-4],
            },
            "set": {"train.epochs": 0.0, "train.steps": 2000, "log.every": 100},
        }
    return {
        "base": "elr_resnet.py",
        "grid": {
            "optim.lr": [0.03, 0.3, 3.0],
            "model.depth": [8, 14],
            "optim.momentum": [0.0, 0.9],
            "model.shortcut": [True, False],
        },
        "set": {"train.steps": 100, "log.dense_steps": 100},
    }
