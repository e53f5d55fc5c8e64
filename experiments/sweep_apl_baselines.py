"""Baselines of the APL study: plain ReLU CNNs whose depth spans the APLs the sparsity sweep reaches,
at the sparsified network's width and widened (`model.width_mult`) to its parameter count, trained
with the same recipe and tasks as `sweep_apl_sparsity.py`. `normjax apl-plot SPARSITY --baselines
THIS` draws them beside the sparsified networks.

medium: plain BN-ReLU MLPs of depth 2-20 (the path lengths the residual PReLU MLP of depth 21 can
reach) at its width 128 and widened to its parameter count (`model.width`: an MLP has no
`width_mult`), on the tasks of `sweep_apl_sparsity.py --size medium`, 6 epochs, 3 seeds: 108
runs, most of them shallow, about 30 min on 2 CPU cores.
"""

import importlib.util
from pathlib import Path

from normjax.studies.apl import count_params, matched_width_mult

_spec = importlib.util.spec_from_file_location("sweep_apl_sparsity", Path(__file__).with_name("sweep_apl_sparsity.py"))
_sparsity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sparsity)


SIZES = ("smoke", "medium", "full")


def matched_mlp_width(depth: int, target: dict, shape: tuple, num_classes: int = 10) -> int:
    """The hidden width at which a plain MLP of `depth` has (about) the parameters of `target`."""
    count = lambda w: count_params({"name": "mlp", "depth": depth, "width": w}, shape, num_classes)  # noqa: E731
    goal, lo, hi = count_params(target, shape, num_classes), 1, 8192
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < goal else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - goal))


def medium_sweep() -> dict:
    depths = [2, 3, 5, 8, 12, 20]
    target = {"name": "mlp", "depth": 21, "width": 128, "shortcut": True}  # apl_resnet.py --size medium
    widths = [matched_mlp_width(d, target, (28, 28, 1)) for d in depths]
    kinds = [{"name": "equal_width", "model.width": 128}] * len(depths) + [
        {"name": "equal_params", "model.width": w} for w in widths
    ]
    return {
        "base": "apl_resnet.py",
        "grid": {"data.task": _sparsity.tasks("medium"), "train.seed": [0, 1, 2]},
        "zip": {"model.baseline": kinds, "model.depth": depths + depths},
        "set": {
            "model.name": "mlp",
            "model.shortcut": False,
            "model.activation": "relu",
            "optim.name": "sgd",
            "optim.prelu_l1": 0.0,
            "train.epochs": 6.0,
        },
    }


def get_sweep(size: str) -> dict:
    if size == "medium":
        return medium_sweep()
    smoke = size == "smoke"
    depths = [3, 5, 8, 12] if smoke else [3, 4, 6, 8, 11, 14, 19]
    # The sparsified network: ResNet-14 width 8 (smoke) or ResNet-20 width 16 (full).
    target = {"name": "resnet", "depth": 14 if smoke else 20, "width": 8 if smoke else 16}
    shape = (8, 8, 3) if smoke else (32, 32, 3)
    mults = [
        matched_width_mult({"name": "plain_cnn", "depth": d, "width": target["width"]}, target, shape) for d in depths
    ]
    kinds = [{"name": "equal_width", "model.width_mult": 1.0}] * len(depths) + [
        {"name": "equal_params", "model.width_mult": m} for m in mults
    ]
    return {
        "base": "apl_resnet.py",
        "grid": {"data.task": _sparsity.tasks(size)} | ({} if smoke else {"train.seed": [0, 1]}),
        "zip": {"model.baseline": kinds, "model.depth": depths + depths},
        "set": {
            "model.name": "plain_cnn",
            "model.width": target["width"],
            "model.activation": "relu",
            "optim.name": "sgd",
            "optim.prelu_l1": 0.0,
            "train.epochs": 20.0 if smoke else 160.0,
        },
    }
