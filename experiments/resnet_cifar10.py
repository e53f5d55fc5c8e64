"""CIFAR ResNet v1 on CIFAR-10 (TFDS; prepare the data first, see README). smoke: a few steps of
ResNet-20 to check the pipeline; full: the standard 160-epoch recipe."""


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "resnet", "depth": 20},
        "data": {"name": "cifar10", "crop_padding": 4, "flip": True},
        "optim": {
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "step",
            "milestones": [0.5, 0.75],
            "step_factor": 0.1,
        },
        "train": {"batch_size": 128, "steps": 50, "steps_per_dispatch": 10},
        "log": {"dense_steps": 2000, "every": 50},
    }
    if size == "full":
        cfg["train"].update(steps=0, epochs=160.0, steps_per_dispatch=50)
        cfg["checkpoint"] = {"every": 2000, "keep": 3}
    return cfg
