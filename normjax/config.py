"""Configs: nested dicts of defaults, experiment files that override them, `--set key=value`.

An experiment file under `experiments/` defines `get_config(size: str) -> dict` returning the
keys it changes; `size` is `smoke` (seconds on CPU), `medium` (the study files: Fashion-MNIST,
at most about an hour a sweep on 2 CPU cores), `gpu` (the study files: CIFAR ResNets on
Fashion-MNIST, minutes on one H100/H200) or `full` (paper scale, GPU/TPU), and for the
files that list them in their `SIZES`: `mnist1d` (1-D conv ResNets and CNNs on MNIST-1D, 2 CPU
cores), `fmnist_conv` (small 2-D conv ResNets and CNNs, widths 8-16, on Fashion-MNIST, 2 CPU
cores) and `imagenet` (ResNet-50 on ImageNet, streamed). Every key a config names must exist in
`DEFAULTS` and keep its type, so typos fail with one line.

Example:
  >>> cfg = load_config("experiments/resnet_digits.py", size="smoke", overrides=["optim.lr=0.05"])
  >>> cfg["optim"]["lr"]
  0.05
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

from normjax.errors import UserError

SIZES = ("smoke", "medium", "gpu", "full", "imagenet", "mnist1d", "fmnist_conv")
# The sizes a file has unless it lists its own in a module-level `SIZES` (the ELR study's
# files add `imagenet`: ResNet-50 on ImageNet, streamed).
FILE_SIZES = ("smoke", "full")
PIPELINES = ("auto", "memory", "stream")

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "resnet",  # mlp | plain_cnn | resnet
        "depth": 20,  # resnet: 6n+2 (basic blocks) | 50, 101, 152 (bottleneck); plain_cnn: conv layers;
        # mlp: hidden layers
        "block": "basic",  # resnet only: basic (CIFAR ResNet, 3 stages) | bottleneck (ImageNet ResNet v1.5,
        # 4 stages of conv1x1-conv3x3-conv1x1; normjax.models.resnet.BottleneckResNet)
        "stem": "auto",  # resnet only: cifar (conv3x3) | imagenet (conv7x7 stride 2 + 3x3 stride-2 max-pool;
        # bottleneck only) | auto (basic: cifar, bottleneck: imagenet)
        "width": 16,  # resnet/plain_cnn: base width (bottleneck: stage 1's inner width, 64 in ResNet-50);
        # mlp: hidden width
        "width_mult": 1.0,  # widened baselines
        "shortcut": "auto",  # auto | true | false: auto is true for resnet (False gives the plain net of the ELR
        # study), false for mlp (true groups the hidden layers after the first in residual
        # blocks dense-BN-act-dense-BN, + identity, act; depth odd); plain_cnn ignores it
        "activation": "relu",  # relu | prelu (channel-wise slopes)
        "prelu_init": 0.0,  # initial slope: 0 = ReLU at init, 1 = linear
        "bn_momentum": 0.9,  # BN running statistics: stat = m * stat + (1 - m) * batch statistic
        "bn_eps": 1e-5,  # added to the variance before the square root
        "per_device_bn": False,  # True: BN statistics per device instead of over the global batch
    },
    "data": {
        "name": "digits",  # digits | synthetic | mnist1d (built in) | any prepared TFDS image dataset: cifar10, mnist,
        # svhn_cropped, emnist/balanced, stl10, imagenette, imagenet2012, ...
        "data_dir": "",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
        "pipeline": "auto",  # memory (uint8 arrays on device) | stream (grain reads, decodes and augments on host
        # workers) | auto (memory when it fits in memory_limit_mb at the native size, else stream)
        "input_size": 0,  # side of the square input the model sees; 0 = the dataset's own size (stream: needs
        # fixed-size images); stream: random-resized crop (train), centre crop (eval)
        "eval_crop": 0.875,  # stream eval: centre crop's side over the shorter side (256 -> 224); 1.0 keeps all
        "crop_scale_min": 0.08,  # stream train: smallest area fraction of the random-resized crop (1.0: whole image)
        "memory_limit_mb": 4096,  # auto: the largest uint8 train + eval arrays held in memory
        "workers": -1,  # stream: grain worker processes; -1 = usable CPUs - 1, 0 = in this process
        "worker_threads": 2,  # stream: reader threads per worker process
        "prefetch": 2,  # stream: chunks of batches placed on device ahead of the step
        "crop_padding": 0,  # in memory: random-crop padding (0 = off)
        "flip": False,  # random horizontal flip (in memory: on device; stream: on host)
        "synthetic": {  # data.name=synthetic (normjax.data.sources: smooth class prototypes plus distractors)
            "num_train": 2048,  # training examples
            "num_test": 512,  # test examples
            "image_shape": [32, 32, 3],  # [H, W, C]: H, W >= 4, 1 <= C <= 4
            "num_classes": 10,  # classes (>= 2), balanced
            "difficulty": 0.5,  # 0: classes separable ... 1: labels carry no information
            "seed": 0,  # the generator's seed (prototypes, train and test streams)
            "task": "prototypes",  # prototypes: the class is a prototype | parity: the class is the sum mod num_classes
            # of two prototype features (2 classes: their XOR); equal class means: linear
            # classifiers fitted by least squares or cross-entropy stay at chance
        },
        "mnist1d": {  # data.name=mnist1d (MNIST-1D, generated by the mnist1d package: 1-D signals of length 40)
            "num_samples": 5000,  # signals in all, split 0.8 / 0.2: 5000 is the frozen dataset (4000 / 1000);
            # more are the package's larger variants
            "seed": 42,  # the generator's seed: 42 is the frozen dataset
        },
    },
    "optim": {
        "name": "sgd",  # sgd | sgd_uniform_elr | sgd_critical_warmup | sgd_prelu_l1 | sgd_prelu_target
        # (normjax.training.optim)
        "lr": 0.1,  # peak learning rate (traced: a sweep over it compiles once)
        "momentum": 0.9,  # traced: momentum coefficient (optax.trace decay; 0 = plain SGD)
        "weight_decay": 5e-4,  # traced: L2 coefficient on the leaves weight_decay_on names
        "nesterov": False,  # Nesterov momentum
        "decoupled_wd": False,  # False: g += wd*w before momentum (PyTorch SGD); True: w -= lr_t*wd*w
        "weight_decay_on": "all_but_prelu",  # kernels (conv/dense) | all_but_prelu | all: the leaves that decay;
        # decay pulls PReLU slopes toward 0 (ReLU), against the sparsity study
        "schedule": "cosine",  # constant | step | cosine
        "warmup_steps": 0,  # linear warm-up from 0 to the schedule, in steps
        "milestones": [0.5, 0.75],  # step schedule: fractions of training where lr *= step_factor
        "step_factor": 0.1,  # step schedule: the LR factor at each milestone
        # sgd_uniform_elr (normjax.transforms.scale_by_uniform_elr)
        "elr_definition": "relative",  # relative: lr*||g||/||w|| | classic: lr/||w||^2
        "elr_reference": "lr",  # lr: the LR is the common ELR | geometric_mean: the layers' mean ELR
        "elr_position": "after_momentum",  # before_momentum | after_momentum
        "elr_until": 1.0,  # traced: uniform ELR for this fraction of the run's steps, then plain SGD (1.0: the whole run)
        # sgd_prelu_l1 (normjax.transforms.prelu_sparsity_prior)
        "prelu_l1": 0.0,  # traced: strength of the prior on |1 - slope|^p
        "prelu_tolerance": 0.01,  # traced: slopes this close to 1 are set to 1 and frozen
        "prelu_mode": "proximal",  # proximal | subgradient
        "prelu_power": 1.0,  # p: 1.0 (L1) | 0.5
        "prelu_start": 0.0,  # traced: the prior (sgd_prelu_l1) or the target's ramp (sgd_prelu_target) starts after this fraction of the run
        # sgd_prelu_target (normjax.transforms.prelu_sparsity_controller): prelu_l1 > 0 is the initial strength
        "prelu_target": 1.0,  # traced: fraction of PReLU units to keep nonlinear (1.0 = all: the prior stays off)
        "prelu_gain": 0.01,  # traced: the strength grows by up to e^gain per step until the target is met
        "prelu_min_rate": 0.0,  # traced: the floor on the share left in the integral (0: none; > 0: the target is met in bounded time)
        "prelu_ramp": 0.0,  # traced: the target falls from 1 to prelu_target over this fraction of the run, from prelu_start (cubic, gradual pruning's); 0: at once
        "prelu_ramp_steps": 0,  # traced: the same span in steps (> 0 wins; give one of the two)
    },
    "train": {
        "seed": 0,  # traced: parameter init, data order and augmentation
        "batch_size": 128,  # global batch (over all devices; divisible by the device count)
        "epochs": 1.0,  # used when steps == 0
        "steps": 0,  # training steps; 0 = from epochs
        "steps_per_dispatch": 20,  # steps fused into one compiled call (lax.scan)
        "dtype": "float32",  # float32 | bfloat16 (activations; parameters stay float32)
        "eval_batch_size": 500,  # batch of the final evaluation (BN in inference mode: memory, not results)
        "eval_train_examples": 10000,  # train-set examples evaluated at the end (0 = all)
        "init_from": "",  # warm start: run dir whose params and BN statistics to start from
    },
    "log": {
        "dense_steps": 100,  # log every step for the first dense_steps steps ...
        "every": 20,  # ... then every `every` steps
        "metrics": ["layer_norms"],  # in-step metric hooks, see normjax.metrics.METRICS
    },
    "checkpoint": {
        "every": 500,  # save an Orbax checkpoint every this many steps (and at the end)
        "keep": 3,  # the newest checkpoints kept
    },
}


def merge(base: dict, update: dict, prefix: str = "") -> dict:
    """`base` with `update` laid over it; unknown keys or changed types raise UserError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = prefix + key
        if key not in out:
            raise UserError(f"config key {name!r} is unknown; allowed here: {', '.join(sorted(out))}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise UserError(
                    f"config key {name!r} is a section; give one of its keys ({', '.join(sorted(out[key]))})"
                )
            out[key] = merge(out[key], value, name + ".")
        else:
            out[key] = _coerce(name, value, out[key])
    return out


# Keys that take a bool besides their string default "auto" (the value is checked by `validate`),
# by their last part: a section merged on its own (`merge(DEFAULTS["model"], ...)`) names them so.
AUTO_OR_BOOL = ("shortcut",)  # model.shortcut


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name.rsplit(".", 1)[-1] in AUTO_OR_BOOL:
        if not isinstance(value, (bool, str)):
            raise UserError(f"config key {name!r} got {value!r} ({type(value).__name__}); allowed: auto, true, false")
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if type(value) is not kind:
        raise UserError(f"config key {name!r} got {value!r} ({type(value).__name__}); expected {kind.__name__}")
    # NaN and infinity pass every range check (a comparison with NaN is False) and would train,
    # diverge and leave a run behind: no config key takes them.
    if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
        raise UserError(f"config key {name!r} got {value!r}; allowed: finite numbers (not NaN or infinity)")
    return value


def parse_override(text: str) -> dict:
    """`a.b=v` → {'a': {'b': v}}; v is read as JSON when it parses (numbers, true, lists), else a string."""
    if "=" not in text:
        raise UserError(f"--set {text!r} is not key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {"True": True, "False": False}.get(raw, raw)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def call_file(path: str | os.PathLike, fn: str, size: str, kind: str, example: str) -> Any:
    """`fn(size)` from the Python file at `path` (an experiment or sweep file), with one-line errors.

    A syntax error in the file, or an exception raised while importing it or inside `fn`, becomes a
    `UserError` `<file>:<line>: <ExcType>: <message>` naming the innermost line of that file (for a
    syntax error: the file and line Python reports). A `UserError` raised by the file passes as it is.

    Args:
      path: the Python file.
      fn: the function it must define, called with `size`.
      size: one of `SIZES`, and of the file's own `SIZES` (default `FILE_SIZES`).
      kind: what the file is (`config`, `sweep`), for messages.
      example: a file to suggest when `path` does not exist.

    Returns:
      What `fn(size)` returns.

    Example:
      >>> call_file("experiments/resnet_digits.py", "get_config", "smoke", "config", "")["model"]["name"]
      'resnet'
    """
    if size not in SIZES:
        raise UserError(f"size {size!r} is unknown; allowed: {', '.join(SIZES)}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{kind} file {str(path)!r} does not exist; give a file such as {example}")
    spec = importlib.util.spec_from_file_location(f"normjax_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any error in a user's file is reported as one line
        raise UserError(_file_error(path, e)) from None
    if not callable(getattr(module, fn, None)):
        raise UserError(f"{kind} file {str(path)!r} defines no {fn}(size)")
    sizes = tuple(getattr(module, "SIZES", FILE_SIZES))
    if size not in sizes:
        raise UserError(f"{kind} file {str(path)!r} has no size {size!r}; it has: {', '.join(sizes)}")
    try:
        return getattr(module, fn)(size)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(_file_error(path, e)) from None


def _file_error(path: Path, e: Exception) -> str:
    """`<file>:<line>: <ExcType>: <first line of the message>` for an exception raised by a user's file."""
    if isinstance(e, SyntaxError):  # Python knows the file and line (maybe a file the user's file imports)
        where, line, text = e.filename or str(path), e.lineno, e.msg
    else:
        # The innermost frame in the user's file: where its code raised, or called what raised.
        target = os.path.realpath(path)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.realpath(f.filename) == target]
        where, line, text = str(path), frames[-1].lineno if frames else None, str(e)
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    location = f"{where}:{line}" if line else where
    return f"{location}: {type(e).__name__}" + (f": {first}" if first else "")


def read_experiment(path: str | os.PathLike, size: str) -> dict:
    """The overrides an experiment file's `get_config(size)` returns."""
    return call_file(path, "get_config", size, "config", "experiments/resnet_digits.py")


def load_config(
    path: str | os.PathLike | None = None, *, size: str = "smoke", overrides: list[str] | tuple[str, ...] = ()
) -> dict:
    """Defaults ← experiment file (if any) ← `key=value` overrides, validated."""
    cfg = merge(DEFAULTS, read_experiment(path, size)) if path else copy.deepcopy(DEFAULTS)
    for text in overrides:
        cfg = merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def canonical(cfg: dict) -> dict:
    """`cfg` with `model.shortcut` written `"auto"` where it equals what `auto` resolves to for its
    model (`normjax.models.resolve_shortcut`): configs that build the same model compare and hash
    alike, so the runs that wrote `shortcut: true` for a resnet (the default before `auto`) keep
    their names (`normjax.sweep.spec.config_hash`) and their run directories (`config_diff`).

    Example:
      >>> canonical({"model": {"name": "resnet", "shortcut": True}})["model"]["shortcut"]
      'auto'
      >>> canonical({"model": {"name": "mlp", "shortcut": True}})["model"]["shortcut"]
      True
    """
    from normjax.models import resolve_shortcut

    m = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(m, dict) or not isinstance(m.get("shortcut"), bool) or not isinstance(m.get("name"), str):
        return cfg
    if m["shortcut"] != resolve_shortcut(m["name"], "auto"):
        return cfg
    return {**cfg, "model": {**m, "shortcut": "auto"}}


def validate(cfg: dict) -> None:
    """One-line UserError for values no run can use (checks that need no data or devices)."""
    from normjax.models import check_model_config
    from normjax.training.optim import check_optim_config

    check_model_config(cfg["model"])
    check_optim_config(cfg["optim"], cfg["model"], DEFAULTS["optim"])
    t, o = cfg["train"], cfg["optim"]
    if t["batch_size"] < 1:
        raise UserError(f"train.batch_size={t['batch_size']} must be >= 1")
    if t["steps"] < 0 or t["epochs"] <= 0 and t["steps"] == 0:
        raise UserError(f"train.steps={t['steps']}, train.epochs={t['epochs']}: give steps > 0 or epochs > 0")
    if t["steps_per_dispatch"] < 1:
        raise UserError(f"train.steps_per_dispatch={t['steps_per_dispatch']} must be >= 1")
    if t["dtype"] not in ("float32", "bfloat16"):
        raise UserError(f"train.dtype={t['dtype']!r} is unknown; allowed: float32, bfloat16")
    if o["schedule"] not in ("constant", "step", "cosine"):
        raise UserError(f"optim.schedule={o['schedule']!r} is unknown; allowed: constant, step, cosine")
    if o["lr"] < 0 or o["weight_decay"] < 0 or not 0 <= o["momentum"] < 1:
        raise UserError(
            f"optim.lr={o['lr']}, optim.momentum={o['momentum']}, optim.weight_decay={o['weight_decay']}: "
            "need lr >= 0, 0 <= momentum < 1, weight_decay >= 0"
        )
    d = cfg["data"]
    if d["pipeline"] not in PIPELINES:
        raise UserError(f"data.pipeline={d['pipeline']!r} is unknown; allowed: {', '.join(PIPELINES)}")
    for key, low in (
        ("input_size", 0),
        ("memory_limit_mb", 0),
        ("workers", -1),
        ("worker_threads", 0),
        ("prefetch", 1),
    ):
        if d[key] < low:
            raise UserError(f"data.{key}={d[key]} is invalid; allowed: an integer >= {low}")
    for key in ("eval_crop", "crop_scale_min"):
        if not 0 < d[key] <= 1:
            raise UserError(f"data.{key}={d[key]} is invalid; allowed: a number in (0, 1]")
    if d["pipeline"] == "stream" and d["crop_padding"]:
        raise UserError(
            f"data.crop_padding={d['crop_padding']} is the in-memory augmentation; streamed data is "
            "augmented with random-resized crops: set data.crop_padding=0"
        )
    if cfg["log"]["every"] < 1 or cfg["checkpoint"]["every"] < 1 or cfg["checkpoint"]["keep"] < 1:
        raise UserError("log.every, checkpoint.every and checkpoint.keep must be >= 1")
