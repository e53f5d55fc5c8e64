"""The APL study's main sweep, the paper's protocol: a fixed prior strength λ against the reached APL
and accuracy, in both regimes (`regimes`: during training, the prior from step 0; after training,
the same number of steps continuing a base network trained once per task, on the same LR schedule
without its warm-up), over tasks of graded difficulty. The prior moves every slope by lr*λ per
step, so the reached APL falls steeply over a narrow λ range (the grid runs to λ = 1, where
everything is linear). `sweep_apl_targets.py` asks for
APLs directly with the λ controller.

smoke: ResNet-14 (width 8) on the embedded digits and synthetic easy/hard tasks at 8x8, minutes on
2 CPU cores. full: ResNet-20 on CIFAR-10 and CIFAR-100 (and synthetic easy/hard at 32x32), 2 seeds.
medium: the residual PReLU MLP of `apl_resnet.py --size medium` (depth 21, width 128) on three
tasks of graded difficulty: digits (8x8x1, batch 16 so its 1.4k examples give as many steps as
the others' epochs need), Fashion-MNIST, and the synthetic `parity` task (8x8x1, 4 classes, 16k
examples; no linear classifier solves it, so the net keeps nonlinear units); 6 epochs per regime,
λ from 1e-3 to 1, 3 seeds: 126 runs + 3 base runs per task.
gpu (one H100/H200): the PReLU ResNet-20 of `apl_resnet.py --size gpu` on Fashion-MNIST and
parity, the same λ grid and regimes, 3 seeds.
mnist1d: the PReLU 1-D ResNet-20 of `apl_resnet.py --size mnist1d` on MNIST-1D (a linear classifier
about 32%, the ReLU net about 99%: the setting where the nonlinear advantage can show on 2 CPU
cores), 30 epochs per regime, the medium λ grid, 3 seeds: 42 runs + 3 base runs.
fmnist_conv: the PReLU ResNet-20 at width 8 on Fashion-MNIST, 3 epochs per regime, the same grid,
3 seeds: 42 runs + 3 base runs (hours on 2 CPU cores).
`make sweep-apl_sparsity` draws accuracy vs APL per regime and task, the core network and the
advantage gap (`normjax apl-plot`).
"""

SIZES = ("smoke", "medium", "gpu", "full", "mnist1d", "fmnist_conv")

# The epochs of each regime at each size with a λ grid like medium's.
EPOCHS = {"medium": 6.0, "gpu": 6.0, "mnist1d": 30.0, "fmnist_conv": 3.0}
# The after regime runs the during regime's LR schedule without its warm-up (the base is trained:
# nothing needs re-warming), so both sparsify at the same LRs and the same λ is the same push. A
# smaller constant LR leaves a trained net too slow to adapt to its linearized units (the pilot in
# docs/reproduction.md).
PARITY = {
    "data.synthetic.task": "parity",
    "data.synthetic.num_classes": 4,
    "data.synthetic.difficulty": 0.5,
    "data.synthetic.image_shape": [8, 8, 1],
    "data.synthetic.num_train": 16384,
    "data.synthetic.num_test": 4096,
}


def tasks(size: str) -> list[dict]:
    if size == "mnist1d":
        return [{"name": "mnist1d", "data.name": "mnist1d", "data.crop_padding": 2}]
    if size == "fmnist_conv":
        return [{"name": "fashion_mnist", "data.name": "fashion_mnist"}]
    if size == "gpu":
        return [
            {"name": "fashion_mnist", "data.name": "fashion_mnist"},
            {"name": "parity", "data.name": "synthetic"} | PARITY,
        ]
    if size == "medium":
        return [
            {"name": "digits", "data.name": "digits", "train.batch_size": 16},
            {"name": "fashion_mnist", "data.name": "fashion_mnist"},
            {"name": "parity", "data.name": "synthetic"} | PARITY,
        ]
    shape = [8, 8, 3] if size == "smoke" else [32, 32, 3]
    synthetic = [
        {"name": name, "data.name": "synthetic", "data.synthetic.difficulty": d, "data.synthetic.image_shape": shape}
        for name, d in (("easy", 0.3), ("hard", 0.8))
    ]
    if size == "smoke":
        return [{"name": "digits", "data.name": "digits"}] + synthetic
    return synthetic + [
        {"name": n, "data.name": n, "data.crop_padding": 4, "data.flip": True} for n in ("cifar10", "cifar100")
    ]


# Input shape and classes of the named datasets the tasks use (the synthetic ones say their own).
_INPUTS = {"digits": ((8, 8, 1), 10), "fashion_mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}
_INPUTS["mnist1d"] = ((1, 40, 1), 10)
_INPUTS["cifar100"] = ((32, 32, 3), 100)


def task_input(task: dict) -> tuple[tuple[int, int, int], int]:
    """A task bundle's (input shape, classes), as its models see them, without loading the data."""
    if task["data.name"] != "synthetic":
        return _INPUTS[task["data.name"]]
    from normjax.config import DEFAULTS

    syn = DEFAULTS["data"]["synthetic"]
    shape = task.get("data.synthetic.image_shape", syn["image_shape"])
    return tuple(shape), task.get("data.synthetic.num_classes", syn["num_classes"])


def regimes(epochs: float, from_k: bool = False) -> list[dict]:
    """during: the prior from step 0 of a run from scratch; after: as many steps again, continuing
    the base run (`train.init_from`) on the same LR schedule without its warm-up; from_half (from_k):
    the prior switched on half-way through training (`optim.prelu_start`). With the same length
    and the same target ramp (`optim.prelu_start`, `optim.prelu_ramp`: fractions of the run), each
    regime gets as many steps after its target is met as the other."""
    after = {"name": "after", "train.init_from": "pretrain", "train.epochs": epochs, "optim.warmup_steps": 0}
    out = [{"name": "during", "train.init_from": "", "train.epochs": epochs}, after]
    return out + (
        [{"name": "from_half", "train.init_from": "", "train.epochs": epochs, "optim.prelu_start": 0.5}]
        if from_k
        else []
    )


LAMBDAS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]


def get_sweep(size: str) -> dict:
    if size in EPOCHS:
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": tasks(size),
                "train.regime": regimes(EPOCHS[size]),
                "optim.prelu_l1": LAMBDAS,
                "train.seed": [0, 1, 2],
            },
            "pretrain": {"optim.prelu_l1": 0.0, "train.epochs": EPOCHS[size]},
        }
    if size == "full":
        return {
            "base": "apl_resnet.py",
            "grid": {
                "data.task": tasks(size),
                "train.regime": regimes(160.0, from_k=True),
                "optim.prelu_l1": [1e-4, 3e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 1e-1, 3.2e-1],
                "train.seed": [0, 1],
            },
            "pretrain": {"optim.prelu_l1": 0.0, "train.epochs": 160.0},
        }
    return {
        "base": "apl_resnet.py",
        "grid": {
            "data.task": tasks(size),
            "train.regime": regimes(20.0),
            "optim.prelu_l1": [0.04, 0.09, 0.2, 0.5, 1.0, 2.0],
        },
        "set": {"model.depth": 14, "model.width": 8},
        "pretrain": {"optim.prelu_l1": 0.0, "train.epochs": 20.0},
    }
