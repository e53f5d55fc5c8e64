"""A deep BN-ReLU MLP on the embedded digits data (full: depth 20, width 1024, as the benchmark)."""


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "mlp", "depth": 6, "width": 128},
        "data": {"name": "digits"},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
        "train": {"batch_size": 64, "epochs": 5.0, "steps_per_dispatch": 20},
        "checkpoint": {"every": 100},
    }
    if size == "full":
        cfg["model"].update(depth=20, width=1024)
        cfg["train"].update(batch_size=512, epochs=100.0)
    return cfg
