"""Baselines of the APL study: plain ReLU CNNs whose depth spans the APLs the sparsity sweep reaches,
at the sparsified network's width and widened (`model.width_mult`) to its parameter count, trained
with the same recipe and tasks as `sweep_apl_sparsity.py`. `normjax apl-plot SPARSITY --baselines
THIS` draws them beside the sparsified networks.
"""

import importlib.util
from pathlib import Path

from normjax.studies.apl import matched_width_mult

_spec = importlib.util.spec_from_file_location("sweep_apl_sparsity", Path(__file__).with_name("sweep_apl_sparsity.py"))
_sparsity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sparsity)


def get_sweep(size: str) -> dict:
    smoke = size == "smoke"
    depths = [3, 5, 8, 12] if smoke else [3, 4, 6, 8, 11, 14, 19]
    # The sparsified network: ResNet-14 width 8 (smoke) or ResNet-20 width 16 (full).
    target = {"name": "resnet", "depth": 14 if smoke else 20, "width": 8 if smoke else 16}
    shape = (8, 8, 3) if smoke else (32, 32, 3)
    mults = [matched_width_mult({"name": "plain_cnn", "depth": d, "width": target["width"]}, target, shape) for d in depths]
    kinds = [{"name": "equal_width", "model.width_mult": 1.0}] * len(depths) + \
            [{"name": "equal_params", "model.width_mult": m} for m in mults]
    return {
        "base": "apl_resnet.py",
        "grid": {"data.task": _sparsity.tasks(size)} | ({} if smoke else {"train.seed": [0, 1]}),
        "zip": {"model.baseline": kinds, "model.depth": depths + depths},
        "set": {"model.name": "plain_cnn", "model.width": target["width"], "model.activation": "relu",
                "optim.name": "sgd", "optim.prelu_l1": 0.0, "train.epochs": 20.0 if smoke else 160.0},
    }
