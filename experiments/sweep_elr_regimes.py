"""Training regimes against the ELR spread: no warm-up, linear warm-up, critical-LR warm-up and
uniform ELR, plain vs residual; final accuracy against the run's mean log10 spread.

smoke: ResNet-14 on digits, 150 steps, 2 seeds; full: ResNet-56/110 on CIFAR-10 and CIFAR-100 with
the standard 160-epoch recipe, 3 seeds. `make sweep-elr_regimes` draws accuracy vs spread (`normjax elr-plot`).
"""

REGIMES = {  # zipped: one entry per regime
    "optim.name": ["sgd", "sgd", "sgd_critical_warmup", "sgd_uniform_elr"],
    "optim.warmup_steps": [0, 50, 0, 0],
}


def get_sweep(size: str) -> dict:
    if size == "full":
        return {
            "base": "elr_resnet.py",
            "grid": {"data.name": ["cifar10", "cifar100"], "model.depth": [56, 110], "model.shortcut": [True, False],
                     "train.seed": [0, 1, 2]},
            "zip": REGIMES | {"optim.warmup_steps": [0, 2000, 0, 0]},
            "set": {"optim.momentum": 0.9, "optim.weight_decay": 5e-4, "optim.schedule": "step"},
        }
    return {
        "base": "elr_resnet.py",
        "grid": {"model.shortcut": [True, False], "train.seed": [0, 1]},
        "zip": REGIMES,
        "set": {"model.depth": 14, "optim.lr": 0.3, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
                "optim.schedule": "cosine", "train.steps": 150, "log.dense_steps": 100},
    }
