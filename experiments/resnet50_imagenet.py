"""ResNet-50 v1.5 (bottleneck blocks, stride on the 3x3 conv; `normjax.models.resnet.BottleneckResNet`)
on ImageNet (ILSVRC-2012), the standard 90-epoch SGD recipe.

full: `imagenet2012`, batch 256, 90 epochs, SGD with momentum 0.9, LR 0.1 x batch / 256, weight
decay 1e-4 on every parameter (`all_but_prelu`: all of them in a ReLU net, as torchvision's
reference recipe), step schedule: LR x 0.1 at epochs 30, 60 and 80 (Goyal et al. 2017), no
warm-up (the batch is the reference 256); bfloat16 activations (parameters and BN statistics stay
float32). The data streams (`data.pipeline=stream`: grain workers decode JPEGs, random-resized
crops to 224x224 and flips for training; the centre 87.5% resized to 224x224 for evaluation);
prepare it once with `tfds build imagenet2012 --file_format array_record` (the manual download
of ILSVRC-2012 is needed) and set `data.data_dir` or $TFDS_DATA_DIR. `--set model.shortcut=false`
gives the plain ResNet-50. `imagenet` is the same as `full` (the size the ELR study's sweep
files use for ImageNet).

smoke: the same ResNet-50 (stages 3, 4, 6, 3, imagenet stem) at width 4 on `synthetic` 64x64
images, a few steps on CPU to check the model end to end.

References:
  He, Zhang, Ren & Sun, `Deep Residual Learning for Image Recognition`, 2016 (arXiv:1512.03385).
  Goyal et al., `Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour`, 2017 (arXiv:1706.02677).
"""

SIZES = ("smoke", "full", "imagenet")


def get_config(size: str) -> dict:
    if size in ("full", "imagenet"):
        batch = 256
        return {
            "model": {"name": "resnet", "block": "bottleneck", "depth": 50, "width": 64, "stem": "imagenet"},
            "data": {"name": "imagenet2012", "pipeline": "stream", "input_size": 224, "eval_crop": 0.875, "flip": True},
            "optim": {
                "name": "sgd",
                "lr": 0.1 * batch / 256,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "weight_decay_on": "all_but_prelu",
                "schedule": "step",
                "milestones": [30 / 90, 60 / 90, 80 / 90],
                "step_factor": 0.1,
                "warmup_steps": 0,
            },
            "train": {
                "batch_size": batch,
                "epochs": 90.0,
                "steps": 0,
                "steps_per_dispatch": 50,
                "dtype": "bfloat16",
                "eval_batch_size": 500,
            },
            "log": {"dense_steps": 100, "every": 100},
            "checkpoint": {"every": 5000, "keep": 3},
        }
    return {
        "model": {"name": "resnet", "block": "bottleneck", "depth": 50, "width": 4, "stem": "imagenet"},
        "data": {
            "name": "synthetic",
            "flip": True,
            "synthetic": {"num_train": 256, "num_test": 128, "image_shape": [64, 64, 3], "num_classes": 10},
        },
        "optim": {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "step",
            "milestones": [30 / 90, 60 / 90, 80 / 90],
            "step_factor": 0.1,
        },
        "train": {
            "batch_size": 32,
            "steps": 20,
            "steps_per_dispatch": 10,
            "eval_batch_size": 128,
            "eval_train_examples": 256,
        },
        "log": {"dense_steps": 20, "every": 10},
    }
