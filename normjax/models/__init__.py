"""Models registered by name; `build_model` validates the model config and builds one.

Example:
  >>> from flax import nnx
  >>> from normjax.config import DEFAULTS
  >>> model = build_model(DEFAULTS["model"] | {"depth": 8, "width": 4}, num_classes=10, image_shape=(8, 8, 1),
  ...                     rngs=nnx.Rngs(0))
  >>> [layer.name for layer in model.layers()][:3]
  ['stem', 's1.b0.conv1', 's1.b0.conv2']
"""

from __future__ import annotations

import jax.numpy as jnp

from normjax.errors import UserError, missing_extra

try:
    from flax import nnx
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.models.layers import ACTIVATIONS, BatchNorm, ChannelPReLU, plain_autodiff
from normjax.models.mlp import MLP
from normjax.models.plain_cnn import PlainCNN
from normjax.models.resnet import BLOCKS, BOTTLENECK_STAGES, STEMS, BottleneckResNet, ResNet, resolve_stem
from normjax.models.structure import LayerInfo, layer_axes, per_layer, per_layer_sums, prelu_mask, scale_invariant_mask

MODELS = ("mlp", "plain_cnn", "resnet")


def resolve_shortcut(name: str, shortcut: bool | str) -> bool:
    """The `model.shortcut` of a model named `name`: `auto` is True for resnet (basic and bottleneck
    blocks) and False for mlp (the plain MLP); plain_cnn has no shortcuts and ignores it (its `auto`
    reads True, the value its configs stored before `auto`).

    Example:
      >>> resolve_shortcut("resnet", "auto"), resolve_shortcut("mlp", "auto"), resolve_shortcut("mlp", True)
      (True, False, True)
    """
    return name != "mlp" if shortcut == "auto" else bool(shortcut)


def has_shortcuts(cfg: dict) -> bool:
    """Whether the model a model config builds has shortcuts (a resnet, or an mlp with
    `model.shortcut` true); `cfg` may lack keys (a stored config): the name defaults to resnet,
    the shortcut to `auto`."""
    name = cfg.get("name", "resnet")
    return name in ("mlp", "resnet") and resolve_shortcut(name, cfg.get("shortcut", "auto"))


def check_model_config(cfg: dict) -> None:
    """Raise UserError (one line) for a model config no model can build.

    Args:
      cfg: the `model` section of a config (`normjax.config.DEFAULTS["model"]` and overrides).

    Example:
      >>> from normjax.config import DEFAULTS
      >>> check_model_config(DEFAULTS["model"] | {"block": "bottleneck", "depth": 20})
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: model.depth=20 is not valid for resnet with model.block='bottleneck'; allowed: 50, 101, 152
    """
    name, depth = cfg["name"], cfg["depth"]
    if name not in MODELS:
        raise UserError(f"model.name={name!r} is unknown; allowed: {', '.join(MODELS)}")
    if cfg["activation"] not in ACTIVATIONS:
        raise UserError(f"model.activation={cfg['activation']!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")
    if cfg["block"] not in BLOCKS:
        raise UserError(f"model.block={cfg['block']!r} is unknown; allowed: {', '.join(BLOCKS)}")
    if not (isinstance(cfg["shortcut"], bool) or cfg["shortcut"] == "auto"):
        raise UserError(f"model.shortcut={cfg['shortcut']!r} is unknown; allowed: auto, true, false")
    if cfg["stem"] not in STEMS:
        raise UserError(f"model.stem={cfg['stem']!r} is unknown; allowed: {', '.join(STEMS)}")
    bottleneck = name == "resnet" and cfg["block"] == "bottleneck"
    if name == "resnet" and not bottleneck and (depth < 8 or (depth - 2) % 6):
        raise UserError(
            f"model.depth={depth} is not valid for resnet; allowed: 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)"
        )
    if bottleneck and depth not in BOTTLENECK_STAGES:
        raise UserError(
            f"model.depth={depth} is not valid for resnet with model.block='bottleneck'; "
            f"allowed: {', '.join(map(str, BOTTLENECK_STAGES))}"
        )
    if name == "resnet" and not bottleneck and cfg["stem"] == "imagenet":
        raise UserError(
            "model.stem='imagenet' needs model.block='bottleneck'; the basic-block resnet has the cifar stem"
        )
    if name == "plain_cnn" and depth < 3:
        raise UserError(f"model.depth={depth} is too small for plain_cnn; allowed: >= 3")
    if name == "mlp" and depth < 1:
        raise UserError(f"model.depth={depth} is too small for mlp; allowed: >= 1")
    if name == "mlp" and resolve_shortcut(name, cfg["shortcut"]) and depth % 2 == 0:
        raise UserError(
            f"model.depth={depth} is not valid for mlp with model.shortcut=true; allowed: odd "
            "(a first layer, then residual blocks of two: 1, 3, 5, ...)"
        )
    if cfg["width"] < 1 or cfg["width_mult"] <= 0:
        raise UserError(f"model.width={cfg['width']}, model.width_mult={cfg['width_mult']}: both must be positive")


def input_dims(image_shape: tuple[int, int, int]) -> int:
    """1 for 1-D signals, held as maps of height 1 (`[1, L, C]`, e.g. MNIST-1D), else 2 (images).

    Example:
      >>> input_dims((1, 40, 1)), input_dims((28, 28, 1))
      (1, 2)
    """
    return 1 if image_shape[0] == 1 else 2


def check_model_input(cfg: dict, image_shape: tuple[int, int, int], data_name: str = "") -> None:
    """Raise UserError (one line naming both) for options that need 2-D images on 1-D signals.

    Args:
      cfg: a config with a `model` section, and a `data` section when the data options are checked.
      image_shape: `(H, W, C)` of the data; `H == 1` is a 1-D signal (`input_dims`).
      data_name: the dataset's name, for the message (default: `cfg['data']['name']` if present).

    Example:
      >>> from normjax.config import DEFAULTS
      >>> check_model_input({"model": DEFAULTS["model"] | {"block": "bottleneck", "depth": 50},
      ...                    "data": DEFAULTS["data"] | {"name": "mnist1d"}}, (1, 40, 1))
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: model.block='bottleneck' needs 2-D images; data.name='mnist1d' holds 1-D signals (1x40x1): use model.block=basic (the ResNet of depth 6n+2), plain_cnn or mlp
    """
    if input_dims(image_shape) == 2:
        return
    data = cfg.get("data", {})
    name = data_name or data.get("name", "")
    holds = f"data.name={name!r} holds 1-D signals ({image_shape[0]}x{image_shape[1]}x{image_shape[2]})"
    model = cfg["model"]
    if model.get("name") == "resnet" and model.get("block") == "bottleneck":
        raise UserError(
            f"model.block='bottleneck' needs 2-D images; {holds}: use model.block=basic (the ResNet of depth "
            "6n+2), plain_cnn or mlp"
        )
    if data.get("flip"):
        raise UserError(f"data.flip=true flips 2-D images left to right; {holds}: set data.flip=false")


def build_model(
    cfg: dict,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
    bn_groups: int = 1,
    dtype=jnp.float32,
) -> nnx.Module:
    """Build the model named by `cfg['name']` from a (validated) model config.

    Convolutional models on 1-D signals (`image_shape` `(1, L, C)`, `input_dims`) get `1 x k`
    convs; the MLP flattens either.
    """
    check_model_config(cfg)
    check_model_input({"model": cfg}, image_shape)
    common = dict(
        num_classes=num_classes,
        activation=cfg["activation"],
        prelu_init=cfg["prelu_init"],
        bn_momentum=cfg["bn_momentum"],
        bn_eps=cfg["bn_eps"],
        bn_groups=bn_groups,
        dtype=dtype,
        rngs=rngs,
    )
    h, w, c = image_shape
    if cfg["name"] == "mlp":
        return MLP(
            depth=cfg["depth"],
            width=cfg["width"],
            in_features=h * w * c,
            shortcut=resolve_shortcut("mlp", cfg["shortcut"]),
            **common,
        )
    if cfg["name"] == "resnet" and cfg["block"] == "bottleneck":
        return BottleneckResNet(
            depth=cfg["depth"],
            in_channels=c,
            width=cfg["width"],
            width_mult=cfg["width_mult"],
            shortcut=resolve_shortcut("resnet", cfg["shortcut"]),
            stem=resolve_stem(cfg["block"], cfg["stem"]),
            **common,
        )
    if cfg["name"] == "resnet":
        return ResNet(
            depth=cfg["depth"],
            in_channels=c,
            width=cfg["width"],
            width_mult=cfg["width_mult"],
            shortcut=resolve_shortcut("resnet", cfg["shortcut"]),
            dims=input_dims(image_shape),
            **common,
        )
    return PlainCNN(
        depth=cfg["depth"],
        in_channels=c,
        width=cfg["width"],
        width_mult=cfg["width_mult"],
        dims=input_dims(image_shape),
        **common,
    )


__all__ = [
    "MODELS",
    "BatchNorm",
    "BottleneckResNet",
    "ChannelPReLU",
    "LayerInfo",
    "MLP",
    "PlainCNN",
    "ResNet",
    "build_model",
    "check_model_config",
    "check_model_input",
    "has_shortcuts",
    "input_dims",
    "layer_axes",
    "per_layer",
    "per_layer_sums",
    "plain_autodiff",
    "prelu_mask",
    "resolve_shortcut",
    "scale_invariant_mask",
]
