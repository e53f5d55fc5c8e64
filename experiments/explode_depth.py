"""Gradient explosion at init over depth, BN-ReLU MLPs (docs/science.md#gradient-explosion): per-layer
||grad_{w_l} L||² and its fitted growth per layer against the mean-field pi/(pi-1).

  normjax explode experiments/explode_depth.py [--size full] [--depths 4,8,16,32] [--out DIR]
  make explode     # this and experiments/explode_resnet.py (plain vs residual)

smoke: width 256 on the offline digits data, batch 256, depths 4-32; full: width 1024 on CIFAR-10
(prepare the data first, see README), batch 512, depths 10-100. Nothing is trained: only `model`,
`data` and `train.batch_size` are read.
medium: width 512 on Fashion-MNIST, batch 512, depths 10-80 (`DEFAULT_DEPTHS`): wide enough that
the mean-field pi/(pi-1) applies, deep enough for a clean fit; a few minutes on 2 CPU cores.
mnist1d: the BN-ReLU MLPs (width 512) on MNIST-1D's 40-sample signals, depths 10-80, the input of
the 1-D conv study. fmnist_conv: the plain BN-ReLU CNN (width 16, no shortcuts) on Fashion-MNIST,
depths 6-12: the conv nets' explosion at the depths the CPU conv baselines use.
"""

SIZES = ("smoke", "medium", "full", "mnist1d", "fmnist_conv")


def get_config(size: str) -> dict:
    if size == "medium":
        return {
            "model": {"name": "mlp", "depth": 20, "width": 512},
            "data": {"name": "fashion_mnist"},
            "train": {"batch_size": 512},
        }
    if size == "mnist1d":
        return {
            "model": {"name": "mlp", "depth": 20, "width": 512},
            "data": {"name": "mnist1d"},
            "train": {"batch_size": 512},
        }
    if size == "fmnist_conv":
        return {
            "model": {"name": "plain_cnn", "depth": 9, "width": 16},
            "data": {"name": "fashion_mnist"},
            "train": {"batch_size": 128},
        }
    if size == "full":
        return {
            "model": {"name": "mlp", "depth": 20, "width": 1024},
            "data": {"name": "cifar10"},
            "train": {"batch_size": 512},
        }
    return {
        "model": {"name": "mlp", "depth": 16, "width": 256},
        "data": {"name": "digits"},
        "train": {"batch_size": 256},
    }
