"""On-device preprocessing: normalization plus random crop / flip, jit- and vmap-safe."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from normjax.errors import UserError


def preprocess(
    images: jax.Array,
    key: jax.Array | None,
    *,
    mean: Sequence[float] | jax.Array,
    std: Sequence[float] | jax.Array,
    crop_padding: int = 0,
    flip: bool = False,
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> jax.Array:
    """Normalizes uint8 images [B, H, W, C] (or float signals) and, if `key` is given, augments them.

    Normalization is (x / 255 - mean) / std per channel for uint8 images (mean/std in [0, 1]
    units, e.g. `Dataset.mean`), (x - mean) / std for float data (mean/std in its own units).
    With a key: a random crop with an independent
    offset in [-crop_padding, crop_padding]^2 per example (along the length alone on 1-D signals,
    maps of height 1: a random translation), then a horizontal
    flip with probability 1/2 per example. Padding is 0 *after* normalization,
    i.e. the channel-mean pixel, so padding adds no bias to the input.
    `key=None` (eval) skips augmentation. The output is deterministic in `key`.

    Example:
      >>> x = jnp.zeros((2, 8, 8, 1), jnp.uint8)
      >>> preprocess(x, jax.random.key(0), mean=(0.5,), std=(0.25,), crop_padding=2, flip=True).shape
      (2, 8, 8, 1)
    """
    if images.ndim != 4:
        raise UserError(f"images shape {images.shape} is invalid; allowed: [B, H, W, C]")
    channels = images.shape[-1]
    mean_arr = _channel_param("mean", mean, channels)
    std_arr = _channel_param("std", std, channels)
    if not isinstance(std_arr, jax.core.Tracer) and not bool(jnp.all(std_arr > 0)):
        raise UserError(f"std {std_arr.tolist()} is invalid; allowed: positive numbers")
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise UserError(f"crop_padding {crop_padding!r} is invalid; allowed: an integer >= 0")

    x = images.astype(jnp.float32)
    x = ((x / 255.0 if images.dtype == jnp.uint8 else x) - mean_arr) / std_arr
    if key is not None and (crop_padding > 0 or flip):
        x = _crop_and_flip(x, key, crop_padding, flip)
    return x.astype(dtype)


def _channel_param(name: str, value: Sequence[float] | jax.Array, channels: int) -> jax.Array:
    """Per-channel statistic as float32 [C]; one value is broadcast to all channels."""
    arr = jnp.asarray(value, jnp.float32).reshape(-1)
    if arr.shape[0] not in (1, channels):
        raise UserError(f"{name} has {arr.shape[0]} entries; allowed: 1 or {channels} (one per image channel)")
    return jnp.broadcast_to(arr, (channels,))


def _crop_and_flip(x: jax.Array, key: jax.Array, padding: int, flip: bool) -> jax.Array:
    """Random crop from the zero-padded image and random horizontal flip, as one gather.

    Output pixel (i, j) of example b reads input (i + dy_b, j' + dx_b), with
    j' = W-1-j when flipped; out-of-range reads give 0 (the padding). One
    gather with clipped indices and a mask avoids materializing the padded
    batch; on CPU it was faster than vmap(dynamic_slice) over a padded copy
    and than one-hot matmuls.
    """
    batch, height, width, _ = x.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (batch, 2), -padding, padding + 1)
    if height == 1:  # a 1-D signal: shifted along its length only
        offsets = offsets.at[:, 0].set(0)
    cols = jnp.broadcast_to(jnp.arange(width), (batch, width))
    if flip:
        flipped = jax.random.bernoulli(flip_key, 0.5, (batch,))
        cols = jnp.where(flipped[:, None], width - 1 - cols, cols)
    rows = jnp.arange(height)[None, :] + offsets[:, :1]
    cols = cols + offsets[:, 1:]
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    rows = jnp.clip(rows, 0, height - 1)
    cols = jnp.clip(cols, 0, width - 1)
    out = x[jnp.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
    inside = row_ok[:, :, None] & col_ok[:, None, :]
    return jnp.where(inside[..., None], out, 0.0)
