"""Building blocks shared by every model: BatchNorm with an explicit `train` flag, channel PReLU.

Every normalized layer's kernel is created without bias: its output goes straight into BatchNorm,
which makes the kernel scale-invariant (docs/science.md#scale-invariance).

`conv` and `normalize` have hand-written backward passes (`custom_vjp`, for XLA:CPU speed):
reverse mode (`jax.grad`) and forward-over-reverse (`jax.jvp` of a gradient: Hessian-vector
products, `jax.hessian`) work as they are; forward mode through the forward pass (`jax.jvp`,
`jax.jacfwd`, reverse-over-forward) and reverse-over-reverse need the plain ops, traced under
`plain_autodiff()`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

from normjax.errors import UserError
from normjax.parallel import platform

he_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
_DN = ("NHWC", "HWIO", "NHWC")

# Part of jit's cache key: a function traced with the fast ops is retraced, not reused, under the switch.
_PLAIN_AUTODIFF = jax.make_user_context(False)


@contextlib.contextmanager
def plain_autodiff(enabled: bool = True) -> Iterator[None]:
    """Trace `conv`, `normalize` (and so every model) with plain JAX ops, differentiable in every mode.

    A `custom_vjp` cannot be differentiated in forward mode, and a `custom_jvp` rule would lose
    the fast backward passes (JAX transposes it into XLA's own backward convs, the slow ones), so
    the switch is explicit. Inside it, `jax.jvp`, `jax.jacfwd`, reverse-over-forward, a gradient's
    gradient and higher orders work; forward values are the fast path's, derivatives equal to
    float rounding. Training keeps the default. Also for many tangents at once (`jax.jacfwd`,
    `jax.hessian`): there the fast path runs one conv per tangent (`vmap_per_slice`), XLA's conv
    one conv for all. Read when a program is traced; `jax.jit` retraces for it, so jitted
    functions may be reused.

    Args:
      enabled: the switch's value inside the block (False restores the fast ops within an outer block).

    Returns:
      A context manager.

    Example:
      >>> x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
      >>> with plain_autodiff():
      ...     y, dy = jax.jvp(lambda x: conv(x, w, 1), (x,), (x,))   # outside: TypeError
    """
    with _PLAIN_AUTODIFF(enabled):
        yield


def plain_autodiff_enabled() -> bool:
    """Whether programs traced now use the plain ops.

    Returns:
      True inside `plain_autodiff()`.

    Example:
      >>> with plain_autodiff():
      ...     plain_autodiff_enabled()
      True
    """
    return bool(_PLAIN_AUTODIFF.value)


def same_padding(w: jax.Array) -> tuple[tuple[int, int], ...]:
    """The zero padding `(k - 1) / 2` on each side of each spatial axis of an odd kernel
    `[*taps, Cin, Cout]` (one or two spatial axes).

    A 1-D signal is a map of height 1 with a `[1, k, ...]` kernel: no padding on the height.

    Example:
      >>> same_padding(jnp.ones((1, 3, 2, 4))), same_padding(jnp.ones((5, 2, 4)))
      (((0, 0), (1, 1)), ((2, 2),))
    """
    return tuple(((k - 1) // 2, (k - 1) // 2) for k in w.shape[:-2])


def kernel_size(k: int, dims: int) -> tuple[int, int]:
    """The `(kh, kw)` of a `k`-tap conv on 2-D images (`k x k`) or on 1-D signals (`1 x k`).

    Example:
      >>> kernel_size(3, 2), kernel_size(3, 1)
      ((3, 3), (1, 3))
    """
    return (k, k) if dims == 2 else (1, k)


def _conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    # One stride for both axes: on a 1-D signal (height 1, kernel height 1) the height stays 1.
    return jax.lax.conv_general_dilated(x, w, (stride, stride), same_padding(w), dimension_numbers=_DN)


def vmap_per_slice(f):
    """`f` whose vmap calls `f` on each mapped slice in turn and stacks the results.

    Sweeps vmap the train step over runs, and a vmapped conv becomes a grouped conv
    (`feature_group_count` = runs), which XLA:CPU runs far slower than the same convs one run
    at a time (benchmarks/RESULTS.md). Convs wrapped here keep their fast unbatched kernel under vmap. The slices are
    unrolled: a `lax.map` over them (`jax.custom_batching.sequential_vmap`) measured slower.

    Example:
      >>> mean = vmap_per_slice(lambda x: x.mean(0))
      >>> jax.vmap(mean)(jnp.ones((4, 3, 2))).shape
      (4, 2)
    """
    f = jax.custom_batching.custom_vmap(f)

    @f.def_vmap
    def _rule(axis_size, in_batched, *args):
        outs = [f(*(a[i] if b else a for a, b in zip(args, in_batched))) for i in range(axis_size)]
        stacked = jax.tree.map(lambda *o: jnp.stack(o), *outs)
        return stacked, jax.tree.map(lambda _: True, stacked)

    return f


def bilinear_jvp(f: Callable) -> Callable:
    """`f`, bilinear in its two arguments, with the JVP `f(dx, w) + f(x, dw)` written in `f` itself.

    For a `vmap_per_slice` function: the tangents then stay one op per run under vmap, also when
    they are batched unlike the primals (one Hessian-vector direction for all runs), where
    custom_vmap's own JVP rule fails. Zero tangents (e.g. of the input images) cost nothing.

    Args:
      f: a function of two arrays, linear in each.

    Returns:
      `f` with that JVP rule (`jax.custom_jvp`); reverse mode through it is not supported.

    Example:
      >>> mul = bilinear_jvp(vmap_per_slice(lambda a, b: a @ b))
      >>> jax.jvp(mul, (jnp.ones((2, 2)), jnp.eye(2)), (jnp.eye(2), jnp.zeros((2, 2))))[1]
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
    """
    f = jax.custom_jvp(f)

    def _jvp(primals, tangents):
        (x, w), (dx, dw) = primals, tangents
        terms = [f(t, w) for t in (dx,) if not isinstance(t, SymbolicZero)]
        terms += [f(x, t) for t in (dw,) if not isinstance(t, SymbolicZero)]
        return f(x, w), functools.reduce(jnp.add, terms)  # both zero: JAX skips the rule

    f.defjvp(_jvp, symbolic_zeros=True)
    return f


_DN1 = ("NWC", "WIO", "NWC")


@functools.cache
def _run_conv(strides: tuple, padding: tuple, lhs_dilation: tuple | None = None, rhs_dilation: tuple | None = None):
    """A canonical conv (NHWC/HWIO, or NWC/WIO with one stride: 1-D) that stays one conv per run
    under vmap (`vmap_per_slice`), its tangents too (`bilinear_jvp`: forward-over-reverse through
    `conv`'s backward pass)."""
    ones = (1,) * len(strides)
    dn = _DN if len(strides) == 2 else _DN1
    return bilinear_jvp(
        vmap_per_slice(
            lambda lhs, rhs: jax.lax.conv_general_dilated(
                lhs, rhs, strides, padding, lhs_dilation or ones, rhs_dilation or ones, dimension_numbers=dn
            )
        )
    )


def conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Conv, NHWC/HWIO, padding (k-1)/2 per axis, whose backward pass stays fast inside loops on XLA:CPU.

    Under `plain_autodiff()`, XLA's own conv (`jax.lax.conv_general_dilated`), differentiable in
    every mode; otherwise `_fast_conv` (see there).

    Args:
      x: input, [B, H, W, Cin].
      w: kernel, [kh, kw, Cin, Cout], kh and kw odd ([1, k, ...] on 1-D signals, height 1).
      stride: the same in both spatial dimensions (a height of 1 stays 1).

    Returns:
      [B, Ho, Wo, Cout], Ho = ceil(H / stride).

    Example:
      >>> conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), 2).shape
      (2, 4, 4, 4)
      >>> conv(jnp.ones((2, 1, 40, 1)), jnp.ones((1, 3, 1, 4)), 2).shape   # a 1-D signal
      (2, 1, 20, 4)
    """
    if plain_autodiff_enabled():
        return _conv(x, w, stride)
    if x.shape[1] == 1 and w.shape[0] == 1:
        # A 1-D signal (height 1, a 1 x k kernel): the same conv along the length alone, in XLA:CPU's
        # 1-D form, faster than the 2-D one (benchmarks/RESULTS.md); a height of 1 stays 1.
        return _fast_conv(x[:, 0], w[0], stride)[:, None]
    return _fast_conv(x, w, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fast_conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """`conv` with a backward pass that stays fast inside loops on XLA:CPU.

    XLA:CPU folds the transposes of a conv's backward pass into non-canonical dimension orders;
    inside a while loop or conditional (the layer scan, the fused steps) they are not
    canonicalized back and fall to a naive kernel, many times slower
    (benchmarks/RESULTS.md). Writing both backward
    convs in canonical NHWC/HWIO form, with the transposed operands behind
    `optimization_barrier`, keeps them on the fast path. Under vmap (runs of a sweep) all three
    convs stay one conv per run (`vmap_per_slice`). Gradients equal XLA's own rule, alone and
    vmapped (tests/test_models.py). Forward-over-reverse differentiates `_conv_fwd` and `_conv_bwd`
    as plain JAX code (tests/test_autodiff.py).
    """
    return _conv_fwd(x, w, stride)[0]


def _conv_fwd(x, w, stride):
    # The ops themselves, not `_fast_conv`: an outer jvp (a Hessian-vector product) traces this
    # function, and a custom_vjp call here would refuse it. Rank-generic: x [B, *spatial, C] and
    # w [*taps, Cin, Cout] with one or two spatial axes.
    return _run_conv((stride,) * (w.ndim - 2), same_padding(w))(x, w), (x, w)


def _conv_bwd(stride, res, g):
    x, w = res
    s, n = stride, w.ndim - 2
    dx_pads, dw_pads = [], []
    for axis in range(n):  # per spatial axis: kernel taps, padding, input and output sizes
        k, h, ho = w.shape[axis], x.shape[axis + 1], g.shape[axis + 1]
        p = (k - 1) // 2
        extra = h + 2 * p - ((ho - 1) * s + k)  # input rows the forward window never reached
        dx_pads.append((k - 1 - p, k - 1 - p + extra))
        dw_pads.append((p, k + (ho - 1) * s - h - p))
    hide = jax.lax.optimization_barrier
    ones, dilated, spatial = (1,) * n, (s,) * n, tuple(range(1, n + 1))
    # dx: the transposed conv, as a conv of the (stride-dilated) output gradient with the flipped kernel.
    dx = _run_conv(ones, tuple(dx_pads), dilated)(g, hide(jnp.flip(w, tuple(range(n))).swapaxes(n, n + 1)))
    # dW: a conv with batch and feature swapped, [Cin, *spatial, B] * [*spatial_out, B, Cout] -> [Cin, *taps, Cout].
    lhs = x.transpose(n + 1, *spatial, 0)
    rhs = g.transpose(*spatial, 0, n + 1)
    dw = _run_conv(ones, tuple(dw_pads), ones, dilated)(hide(lhs), hide(rhs))
    return dx, dw.transpose(*spatial, 0, n + 1)


_fast_conv.defvjp(_conv_fwd, _conv_bwd)


CONV_IMPLS = ("auto", "custom", "xla")


def use_custom_conv() -> bool:
    """Whether `Conv` uses `conv`'s fast path (canonical backward convs, one conv per run under
    vmap) or XLA's own rule (vmapped: grouped convs, which cuDNN runs natively).

    `NORMJAX_CONV=auto` (default): `conv` on CPU, where it is needed, XLA's rule on GPU/TPU.
    `custom` or `xla` force one, e.g. to compare both on a GPU (`benchmarks/`). Always XLA's
    rule under `plain_autodiff()`. Read when a program is traced.
    """
    impl = os.environ.get("NORMJAX_CONV", "auto")
    if impl not in CONV_IMPLS:
        raise UserError(f"NORMJAX_CONV={impl!r} is not one of {', '.join(CONV_IMPLS)}")
    if plain_autodiff_enabled():
        return False
    return impl == "custom" or (impl == "auto" and platform() == "cpu")


class Conv(nnx.Module):
    """Bias-free conv, NHWC, He-normal init, padding (k-1)/2 on each side (as PyTorch's).

    `dims=2`: a `k x k` kernel on images; `dims=1`: a `1 x k` kernel on 1-D signals, held as maps
    of height 1 (`[B, 1, L, C]`), so every op after a conv (BN, pooling, the graph, folding) is
    the same for both.

    Example:
      >>> Conv(3, 16, 3, rngs=nnx.Rngs(0))(jnp.zeros((2, 32, 32, 3))).shape
      (2, 32, 32, 16)
      >>> Conv(1, 8, 3, stride=2, dims=1, rngs=nnx.Rngs(0))(jnp.zeros((2, 1, 40, 1))).shape
      (2, 1, 20, 8)
    """

    def __init__(
        self, cin: int, cout: int, k: int, *, stride: int = 1, dims: int = 2, dtype=jnp.float32, rngs: nnx.Rngs
    ):
        if dims not in (1, 2):
            raise ValueError(f"dims={dims}: 1 (signals) or 2 (images)")
        self.kernel = nnx.Param(he_normal(rngs.params(), (*kernel_size(k, dims), cin, cout), jnp.float32))
        self.stride, self.dims, self.dtype = stride, dims, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...].astype(self.dtype)
        x = x.astype(self.dtype)
        if use_custom_conv():
            return conv(x, w, self.stride)
        return _conv(x, w, self.stride)


def normalize(x: jax.Array, axes: tuple[int, ...], eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(x - mean) / sqrt(var + eps)` over `axes`, and the batch mean and variance.

    The statistics carry no gradient: they feed the running averages only. The backward pass is
    `_fast_normalize`'s closed form, or, under `plain_autodiff()`, JAX's autodiff of the same
    forward ops (differentiable in every mode).

    Args:
      x: the activations.
      axes: the axes reduced over (all but the channel axis, and the group axis if any).
      eps: added to the variance.

    Returns:
      `(xhat, mean, var)`, the statistics with `axes` kept as size-1 dimensions.

    Example:
      >>> xhat, mean, var = normalize(jnp.ones((4, 8)), (0,), 1e-5)
    """
    if plain_autodiff_enabled():
        xhat, mean, var = _normalize_fwd(x, axes, eps)[0]
        return xhat, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    return _fast_normalize(x, axes, eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _fast_normalize(x: jax.Array, axes: tuple[int, ...], eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`normalize` with a closed-form backward pass.

    The backward pass is the closed form `dx = (dy - mean(dy) - x̂ mean(dy x̂)) / sqrt(var + eps)`:
    two reductions instead of the several that autodiff of the forward pass emits, which
    XLA:CPU runs slowly over the batch axis (the closed form is faster; benchmarks/RESULTS.md).
    """
    return _normalize_fwd(x, axes, eps)[0]


def _normalize_fwd(x, axes, eps):
    mean = x.mean(axes, keepdims=True)
    var = jnp.square(x - mean).mean(axes, keepdims=True)
    rstd = jax.lax.rsqrt(var + eps)
    xhat = (x - mean) * rstd
    return (xhat, mean, var), (xhat, rstd)


def _normalize_bwd(axes, eps, res, cotangents):
    xhat, rstd = res
    dy = cotangents[0]
    return ((dy - dy.mean(axes, keepdims=True) - xhat * (dy * xhat).mean(axes, keepdims=True)) * rstd,)


_fast_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nnx.Module):
    """BatchNorm over all axes but the last, statistics in float32.

    `groups > 1` normalizes each of `groups` equal slices of the batch with its own statistics
    ("ghost" BN). With the batch sharded over G devices, `groups=G` is per-device BN computed with
    no communication; `groups=1` (default) uses the global batch.

    Example:
      >>> bn = BatchNorm(8)
      >>> y = bn(jnp.ones((4, 8)), train=True)
    """

    def __init__(self, features: int, *, momentum: float = 0.9, eps: float = 1e-5, groups: int = 1):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
        self.momentum, self.eps, self.groups = momentum, eps, groups

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if train:
            g = self.groups
            # Groups split the batch axis; with one group, skip the reshape (XLA:CPU reduces faster).
            xg = x if g == 1 else x.reshape((g, x.shape[0] // g) + x.shape[1:])
            axes = tuple(range(xg.ndim - 1)) if g == 1 else tuple(range(1, xg.ndim - 1))
            y, mean, var = normalize(xg, axes, self.eps)
            y = y.reshape(x.shape)
            mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
            # Running statistics: average of the groups' batch statistics.
            m = self.momentum
            self.mean[...] = m * self.mean[...] + (1 - m) * mean.reshape(g, -1).mean(0)
            self.var[...] = m * self.var[...] + (1 - m) * var.reshape(g, -1).mean(0)
        else:
            y = (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(dtype)


class ChannelPReLU(nnx.Module):
    """PReLU with one slope per channel: `max(0, x) + slope_c * min(0, x)`.

    slope 0 is a ReLU, slope 1 the identity (a linear unit, docs/science.md#channel-wise-prelu).

    Example:
      >>> act = ChannelPReLU(8, init=0.0)
      >>> y = act(-jnp.ones((2, 8)))   # zeros at init
    """

    def __init__(self, features: int, *, init: float = 0.0):
        self.slope = nnx.Param(jnp.full((features,), init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.slope[...].astype(x.dtype)
        return jnp.maximum(x, 0) + slope * jnp.minimum(x, 0)


class ReLU(nnx.Module):
    """Stateless ReLU; a module so that `relu` and `prelu` models share one structure."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


ACTIVATIONS = ("relu", "prelu")


def activation(name: str, features: int, prelu_init: float) -> nnx.Module:
    """The activation named in the model config (`relu` or channel-wise `prelu`)."""
    return ChannelPReLU(features, init=prelu_init) if name == "prelu" else ReLU()


class Stack(nnx.Module):
    """`first` (which may change the shape), then `n - 1` identical layers stored stacked and
    applied with `lax.scan`; every layer is called as `layer(x, train)`.

    `unroll=True` unrolls the scan in the compiled program (the parameters stay stacked): for
    layers that are one matmul each (the MLP), where the loop's per-layer stacking of activations
    and gradients costs a visible share of the step and compile time stays small.
    """

    def __init__(self, first: nnx.Module, make_rest, n: int, unroll: bool = False):
        self.first = first
        self.rest = stack_modules([make_rest() for _ in range(n - 1)]) if n > 1 else None
        self.unroll = unroll

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.first(x, train)
        if self.rest is not None:
            x = scan_apply(self.rest, x, lambda layer, h: layer(h, train), unroll=self.unroll)
        return x


def stack_modules(modules: list[nnx.Module]) -> nnx.Module:
    """One module whose every variable holds the stacked variables of `modules` (axis 0).

    Identical layers are stored stacked and applied with `lax.scan` (see `scan_apply`), so the
    compiled program does not grow with depth: ResNet-110 compiles about as fast as ResNet-20.
    """
    first = modules[0]
    states = [nnx.state(m) for m in modules]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    nnx.update(first, stacked)
    return first


def scan_apply(stacked: nnx.Module, x: jax.Array, fn, unroll: bool = False) -> jax.Array:
    """Apply `fn(layer, x)` for each layer of a stacked module in order, updating its state."""
    graphdef, state = nnx.split(stacked)

    def body(h, layer_state):
        layer = nnx.merge(graphdef, layer_state)
        h = fn(layer, h)
        return h, nnx.state(layer)

    x, new_state = jax.lax.scan(body, x, state, unroll=unroll)
    nnx.update(stacked, new_state)
    return x
