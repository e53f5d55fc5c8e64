"""A deep BN-ReLU MLP on the embedded digits data (full: depth 20, width 1024, as the benchmark).

medium: depth 31, width 256 on Fashion-MNIST (60k 28x28x1), 4 epochs, batch 128 (about 55 s a run
on 2 CPU cores): deep enough that the plain BN MLP's gradient explosion (a factor ~pi/(pi-1) per
layer) separates it from its residual twin (`--set model.shortcut=true`, odd depths), cheap enough
for LR x momentum x seed grids. The base of the ELR study's medium `sweep_lr` and `sweep_depth`.
"""

SIZES = ("smoke", "medium", "full")


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "mlp", "depth": 6, "width": 128},
        "data": {"name": "digits"},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
        "train": {"batch_size": 64, "epochs": 5.0, "steps_per_dispatch": 20},
        "checkpoint": {"every": 100},
    }
    if size == "medium":
        cfg["model"].update(depth=31, width=256)
        cfg["data"] = {"name": "fashion_mnist"}
        cfg["train"].update(batch_size=128, epochs=4.0, steps_per_dispatch=50)
        cfg["checkpoint"]["every"] = 1000
    if size == "full":
        cfg["model"].update(depth=20, width=1024)
        cfg["train"].update(batch_size=512, epochs=100.0)
    return cfg
