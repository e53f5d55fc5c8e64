"""Training regimes against the ELR spread: no warm-up, linear warm-up, critical-LR warm-up and
uniform ELR, plain vs residual; final accuracy against the run's mean log10 spread.

smoke: ResNet-14 on digits, 150 steps, 2 seeds; full: ResNet-56/110 on CIFAR-10 and CIFAR-100 with
the standard 160-epoch recipe, 3 seeds; imagenet: ResNet-50 with and without shortcuts on
ImageNet, streamed (`resnet50_imagenet.py`: 90 epochs, batch 256, step schedule), warm-up of 5
epochs, one seed, per-layer ELRs logged densely for the first 2000 steps (a GPU node or TPU VM).
medium: the BN MLP of `elr_resnet.py --size medium` (depth 31, width 256) plain vs residual on
Fashion-MNIST, 4 epochs with momentum 0.9, weight decay 5e-4 and a cosine schedule, 3 seeds (the
accuracy differences between regimes are a few tenths of a percent, so seeds matter), ELRs logged
densely for the first 500 steps: 24 runs, about 30 min on 2 CPU cores. gpu (one H100/H200): the
same on ResNet-56 plain vs residual (the paper's network) on Fashion-MNIST.
mnist1d: the 1-D ResNet-56 (width 16) plain vs residual on MNIST-1D, 30 epochs (930 steps), the
same recipe and regimes, 3 seeds: 24 runs, a deep conv net where depth matters, on 2 CPU cores.
fmnist_conv: ResNet-56 at width 8 plain vs residual on Fashion-MNIST, 2 epochs, 3 seeds: 24 runs,
the paper's deep network at the size 2 CPU cores can train (hours; the ELR study picks its arms).
`make sweep-elr_regimes` draws accuracy vs spread (`normjax elr-plot`).
"""

SIZES = ("smoke", "medium", "gpu", "full", "imagenet", "mnist1d", "fmnist_conv")
IMAGENET_STEPS_PER_EPOCH = 1281167 // 256

REGIMES = {  # zipped: one entry per regime
    "optim.name": ["sgd", "sgd", "sgd_critical_warmup", "sgd_uniform_elr"],
    "optim.warmup_steps": [0, 50, 0, 0],
}


def get_sweep(size: str) -> dict:
    if size == "imagenet":
        return {
            "base": "resnet50_imagenet.py",
            "grid": {"model.shortcut": [True, False]},
            "zip": REGIMES | {"optim.warmup_steps": [0, 5 * IMAGENET_STEPS_PER_EPOCH, 0, 0]},
            "set": {"log.metrics": ["elr"], "log.dense_steps": 2000, "log.every": 500},
        }
    if size in ("mnist1d", "fmnist_conv"):
        epochs, warmup = (30.0, 155) if size == "mnist1d" else (2.0, 200)
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [True, False], "train.seed": [0, 1, 2]},
            "zip": REGIMES | {"optim.warmup_steps": [0, warmup, 0, 0]},
            "set": {
                "model.depth": 56,
                "optim.lr": 0.3,
                "optim.momentum": 0.9,
                "optim.weight_decay": 5e-4,
                "optim.schedule": "cosine",
                "train.steps": 0,
                "train.epochs": epochs,
                "log.dense_steps": 300,
                "log.every": 50,
                "checkpoint.every": 1000,
            },
        }
    if size in ("medium", "gpu"):
        return {
            "base": "elr_resnet.py",
            "grid": {"model.shortcut": [True, False], "train.seed": [0, 1, 2]},
            "zip": REGIMES | {"optim.warmup_steps": [0, 500, 0, 0]},
            "set": {
                "optim.lr": 0.3,
                "optim.momentum": 0.9,
                "optim.weight_decay": 5e-4,
                "optim.schedule": "cosine",
                "train.steps": 0,
                "train.epochs": 4.0,
                "log.dense_steps": 500,
                "log.every": 100,
                "checkpoint.every": 1000,
            }
            | ({"model.depth": 56} if size == "gpu" else {}),
        }
    if size == "full":
        return {
            "base": "elr_resnet.py",
            "grid": {
                "data.name": ["cifar10", "cifar100"],
                "model.depth": [56, 110],
                "model.shortcut": [True, False],
                "train.seed": [0, 1, 2],
            },
            "zip": REGIMES | {"optim.warmup_steps": [0, 2000, 0, 0]},
            "set": {"optim.momentum": 0.9, "optim.weight_decay": 5e-4, "optim.schedule": "step"},
        }
    return {
        "base": "elr_resnet.py",
        "grid": {"model.shortcut": [True, False], "train.seed": [0, 1]},
        "zip": REGIMES,
        "set": {
            "model.depth": 14,
            "optim.lr": 0.3,
            "optim.momentum": 0.9,
            "optim.weight_decay": 5e-4,
            "optim.schedule": "cosine",
            "train.steps": 150,
            "log.dense_steps": 100,
        },
    }
