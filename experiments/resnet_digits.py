"""The demo: a deep BN ResNet (ResNet-56; full: ResNet-110) on the embedded digits data (8x8x1)."""


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "resnet", "depth": 56},
        "data": {"name": "digits"},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "warmup_steps": 20},
        "train": {"batch_size": 128, "epochs": 12.0, "steps_per_dispatch": 10},
        "log": {"dense_steps": 50, "every": 10},
        "checkpoint": {"every": 50},
    }
    if size == "full":
        cfg["model"]["depth"] = 110
        cfg["train"]["epochs"] = 60.0
    return cfg
