"""Baselines of the APL study: plain ReLU networks whose depth spans the APLs the sparsity sweeps
reach, at the sparsified network's width and widened to its parameter count on each task (the
count depends on the task's input and classes), trained with the same recipe and tasks as
`sweep_apl_sparsity.py`. `normjax apl-plot SPARSITY --baselines THIS` draws them beside the
sparsified networks. A widened baseline that comes out at the sparsified width is the
equal-width run under a second label: trained once (`normjax.sweep.spec`).

medium: plain BN-ReLU MLPs of depth 2-20 (the path lengths the residual PReLU MLP of depth 21 can
reach) at its width 128 and widened (`model.width`: an MLP has no `width_mult`) to its parameter
count on each task, and the linear classifier (`LINEAR`), on the tasks of `sweep_apl_sparsity.py
--size medium`, 6 epochs, 3 seeds: 117 runs, most of them shallow.
mnist1d: plain 1-D BN-ReLU CNNs (`plain_cnn`, 1x3 convs) of depth 3-20 at the PReLU 1-D ResNet-20's
width 16 and widened to its parameter count, and the linear classifier, on MNIST-1D, 30 epochs,
3 seeds: 39 runs. fmnist_conv: plain CNNs of depth 3, 5, 8 at width 8 and widened to the PReLU
ResNet-20 (width 8)'s parameter count, and the linear classifier, on Fashion-MNIST, 3 epochs, 3
seeds: 21 runs. The conv baselines of the conv sizes: a plain net of the depth the sparsified one
reaches, at equal width and at equal parameters.
"""

import importlib.util
from pathlib import Path

from normjax.studies.apl.baselines import matched_width, matched_width_mult

_spec = importlib.util.spec_from_file_location("sweep_apl_sparsity", Path(__file__).with_name("sweep_apl_sparsity.py"))
_sparsity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sparsity)


SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


# The floor of the collapse: a linear classifier trained with the same recipe. One hidden layer
# of PReLU units at slope 1, frozen there from the first step (the prior's tolerance), is
# dense -> BN -> dense: an affine map, the function class of the all-linear sparsified network
# (128 wide, so of full rank for up to 128 classes).
LINEAR = {"name": "linear", "model.name": "mlp", "model.width": 128, "model.activation": "prelu"}
LINEAR |= {"model.prelu_init": 1.0, "optim.name": "sgd_prelu_l1"}


def _zipped(tasks: list[dict], depths: list[int], equal_width: dict, widened, linear: dict | None = None) -> dict:
    """Zipped (task, baseline, depth) triples: per task, each depth at the equal width and widened
    to the sparsified network's parameter count on that task (`widened(depth, task) -> settings`),
    and the linear classifier (depth 1) when `linear` gives its settings."""
    rows = [
        (task, kind, d)
        for task in tasks
        for kind, d in zip(
            [{"name": "equal_width"} | equal_width] * len(depths)
            + [{"name": "equal_params"} | widened(d, task) for d in depths]
            + ([linear] if linear else []),
            depths + depths + [1],
        )
    ]
    return {
        "data.task": [t for t, _, _ in rows],
        "model.baseline": [k for _, k, _ in rows],
        "model.depth": [d for *_, d in rows],
    }


def medium_sweep() -> dict:
    depths = [2, 3, 5, 8, 12, 20]
    target = {"name": "mlp", "depth": 21, "width": 128, "shortcut": True}  # apl_resnet.py --size medium
    plain = {"name": "mlp", "shortcut": False}

    def widened(depth: int, task: dict) -> dict:
        return {"model.width": matched_width(plain | {"depth": depth}, target, *_sparsity.task_input(task))}

    return {
        "base": "apl_resnet.py",
        "grid": {"train.seed": [0, 1, 2]},
        "zip": _zipped(_sparsity.tasks("medium"), depths, {"model.width": 128}, widened, LINEAR),
        "set": {
            "model.name": "mlp",
            "model.shortcut": False,
            "model.activation": "relu",
            "optim.name": "sgd",
            "optim.prelu_l1": 0.0,
            "train.epochs": 6.0,
        },
    }


def conv_sweep(size: str) -> dict:
    """The plain-CNN baselines of the conv sizes (module docstring)."""
    depths, width = ([3, 5, 8, 12, 20], 16) if size == "mnist1d" else ([3, 5, 8], 8)
    target = {"name": "resnet", "depth": 20, "width": width}  # apl_resnet.py --size SIZE

    def widened(depth: int, task: dict) -> dict:
        model = {"name": "plain_cnn", "depth": depth, "width": width}
        return {"model.width_mult": matched_width_mult(model, target, *_sparsity.task_input(task))}

    return {
        "base": "apl_resnet.py",
        "grid": {"train.seed": [0, 1, 2]},
        "zip": _zipped(_sparsity.tasks(size), depths, {"model.width_mult": 1.0}, widened, LINEAR),
        "set": {
            "model.name": "plain_cnn",
            "model.width": width,
            "model.activation": "relu",
            "optim.name": "sgd",
            "optim.prelu_l1": 0.0,
            "train.epochs": _sparsity.EPOCHS[size],
        },
    }


def get_sweep(size: str) -> dict:
    if size == "medium":
        return medium_sweep()
    if size in ("mnist1d", "fmnist_conv"):
        return conv_sweep(size)
    smoke = size == "smoke"
    depths = [3, 5, 8, 12] if smoke else [3, 4, 6, 8, 11, 14, 19]
    # The sparsified network: ResNet-14 width 8 (smoke) or ResNet-20 width 16 (full).
    target = {"name": "resnet", "depth": 14 if smoke else 20, "width": 8 if smoke else 16}

    def widened(depth: int, task: dict) -> dict:
        model = {"name": "plain_cnn", "depth": depth, "width": target["width"]}
        return {"model.width_mult": matched_width_mult(model, target, *_sparsity.task_input(task))}

    return {
        "base": "apl_resnet.py",
        "grid": {} if smoke else {"train.seed": [0, 1]},
        "zip": _zipped(
            _sparsity.tasks(size), depths, {"model.width_mult": 1.0}, widened, LINEAR | {"model.name": "mlp"}
        ),
        "set": {
            "model.name": "plain_cnn",
            "model.width": target["width"],
            "model.activation": "relu",
            "optim.name": "sgd",
            "optim.prelu_l1": 0.0,
            "train.epochs": 20.0 if smoke else 160.0,
        },
    }
