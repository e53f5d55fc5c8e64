"""Decisive tests of the ELR study's causal claims, where plain SGD fails and its residual twin
trains: claim 8 (uniform ELR helps) and claim 9 (the critical-LR warm-up lets a large LR train).

The net: the plain BN-ReLU MLP of depth 41, width 256 (`elr_resnet.py --size medium` at depth 41,
no shortcuts) on Fashion-MNIST, 2 epochs (938 steps), momentum 0.9, weight decay 5e-4, cosine
schedule, at LR 1: there, in the pilot, plain SGD did not train and the residual twin did.
The arms (`optim.arm`, zipped with nothing: every arm at every seed):

- `sgd`, and the residual twin `sgd_residual` (the shortcut is what the arms try to replace);
- `linear_warmup`: the LR ramped from 0 over the first half of an epoch (234 steps);
- `critical_warmup`: the LR capped at the critical LR of the layers (`sgd_critical_warmup`), at the
  sweep's LR with momentum 0.9, and with momentum 0 at LR 1 and 3 (`*_m0_lr1`, `*_m0_lr3`, each
  beside plain SGD at the same LR and momentum), where the cap binds;
- uniform ELR with the common ELR at the layers' geometric mean (so the LR keeps its scale),
  early only (`optim.elr_until=0.25`: the first 234 steps, then SGD) and for the whole run, applied
  before and after momentum.

The LR is the pilot's (`sweep_elr_pilot.py`: LR 0.1, 0.3 and 1, the smallest LR at which plain
SGD fails and the residual twin trains; docs/reproduction.md reports its numbers). medium: every
arm, 5 seeds: 60 runs. mnist1d: the same arms on the plain 1-D ResNet-56 (width 16, 1x3 convs) on
MNIST-1D, 30 epochs (930 steps; warm-up and early uniform ELR over the first 232, a quarter of the
run as in medium), at its pilot's LR, 5 seeds: 60 runs, the conv setting where depth matters.
smoke: the same arms on a depth-9 MLP over the embedded digits, 60 steps, one seed (the tests' size).
"""

SIZES = ("smoke", "medium", "mnist1d")
LR = 1.0  # the pilot's choice (docs/reproduction.md)
LR_MNIST1D = 0.1  # its pilot's choice (docs/reproduction.md)
UNIFORM = {"optim.name": "sgd_uniform_elr", "optim.elr_reference": "geometric_mean"}


def arms(lr: float, warmup: int) -> list[dict]:
    at = lambda label, **kw: {"name": label} | {f"optim.{k}": v for k, v in kw.items()}
    out = [
        at("sgd", name="sgd"),
        {"name": "sgd_residual", "optim.name": "sgd", "model.shortcut": True},
        at("linear_warmup", name="sgd", warmup_steps=warmup),
        at("critical_warmup", name="sgd_critical_warmup"),
    ]
    for m_lr in (1.0, 3.0):
        tag = f"m0_lr{m_lr:g}"
        out += [
            at(f"sgd_{tag}", name="sgd", momentum=0.0, lr=m_lr),
            at(f"critical_warmup_{tag}", name="sgd_critical_warmup", momentum=0.0, lr=m_lr),
        ]
    for until, span in ((0.25, "early"), (1.0, "whole")):
        for position in ("before_momentum", "after_momentum"):
            out.append(
                {"name": f"uniform_{span}_{position.split('_')[0]}"}
                | UNIFORM
                | {"optim.elr_until": until, "optim.elr_position": position}
            )
    return out


RECIPE = {
    "model.shortcut": False,
    "optim.lr": LR,
    "optim.momentum": 0.9,
    "optim.weight_decay": 5e-4,
    "optim.schedule": "cosine",
    "train.steps": 0,
    "log.metrics": [],
    "log.dense_steps": 0,
}


def get_sweep(size: str) -> dict:
    if size == "medium":
        return {
            "base": "elr_resnet.py",
            "grid": {"optim.arm": arms(LR, 234), "train.seed": [0, 1, 2, 3, 4]},
            "set": RECIPE | {"model.depth": 41, "train.epochs": 2.0, "log.every": 100, "checkpoint.every": 1000},
        }
    if size == "mnist1d":
        return {
            "base": "elr_resnet.py",
            "grid": {"optim.arm": arms(LR_MNIST1D, 232), "train.seed": [0, 1, 2, 3, 4]},
            "set": RECIPE
            | {"optim.lr": LR_MNIST1D, "model.depth": 56, "train.epochs": 30.0, "log.every": 50}
            | {"checkpoint.every": 1000},
        }
    return {
        "base": "elr_resnet.py",
        "grid": {"optim.arm": arms(LR, 10)},
        "set": RECIPE
        | {"model.name": "mlp", "model.depth": 9, "model.width": 32, "train.steps": 60, "train.epochs": 0.0}
        | {"log.every": 20, "checkpoint.every": 60},
    }
