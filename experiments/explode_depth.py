"""Gradient explosion at init over depth (science.md §1): per-layer ||grad_{w_l} L||² of BN nets.

Run:
  normjax explode experiments/explode_depth.py                  # smoke: BN-ReLU MLPs on digits
  normjax explode experiments/explode_depth.py --size full      # CIFAR-10 ResNets, plain vs residual
  normjax explode experiments/explode_depth.py --depths 4,8,16,32 --set model.width=512 --out runs/explode
(or, from Python, `normjax.studies.explosion.explode_main([...])`). Writes explosion.json and the
figures explosion_layers / explosion_factor (PNG and PDF) to --out (default runs/explode_depth).

smoke: a plain BN-ReLU MLP of width 256 on the offline digits data, batch 256, depths 4-32;
full: CIFAR ResNet v1 with and without shortcuts on CIFAR-10 (prepare the data first, see
README), batch 128, depths 20/32/56/110. Nothing is trained: only `model`, `data` and
`train.batch_size` are read.
"""


def get_config(size: str) -> dict:
    cfg = {
        "model": {"name": "mlp", "depth": 16, "width": 256},
        "data": {"name": "digits"},
        "train": {"batch_size": 256},
    }
    if size == "full":
        cfg = {
            "model": {"name": "resnet", "depth": 56, "width": 16},
            "data": {"name": "cifar10"},
            "train": {"batch_size": 128},
        }
    return cfg
