"""ResNet v1 (He et al. 2016): the CIFAR ResNet with basic blocks, and the ImageNet ResNet-50/101/152
with bottleneck blocks; each with its plain (no-shortcut) twin (`shortcut=False`).

`ResNet` (CIFAR, depth 6n+2): stem conv3x3 → 3 stages of n basic blocks (widths w, 2w, 4w; stride
2 entering stages 2 and 3) → global average pool → dense. `BottleneckResNet` (depth 50, 101, 152):
stem → 4 stages of bottleneck blocks (conv1x1 → conv3x3 → conv1x1, inner widths w, 2w, 4w, 8w,
outputs 4x that; stride 2 entering stages 2-4) → global average pool → dense.

Every conv is bias-free and followed by BatchNorm (scale 1, bias 0 at init, also the last BN of a
block); where the shape changes the shortcut is a 1x1 conv + BN ("option B"). The first block of
a stage may change the shape; the stage's other blocks are identical, stored stacked and scanned
(`normjax.models.layers.Stack`), so the compiled program does not grow with depth.

References:
  He, Zhang, Ren & Sun, `Deep Residual Learning for Image Recognition`, 2016 (arXiv:1512.03385).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from normjax.analysis.graph import Edge, Graph, Node, Op
from normjax.models.layers import BatchNorm, Conv, Stack
from normjax.models.layers import activation as make_activation
from normjax.models.structure import LayerInfo


def conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, dtype, dims: int = 2) -> Conv:
    return Conv(cin, cout, k, stride=stride, dims=dims, dtype=dtype, rngs=rngs)


def add_shortcut(
    block: nnx.Module,
    cin: int,
    cout: int,
    stride: int,
    *,
    shortcut: bool,
    bn: dict,
    dtype,
    rngs: nnx.Rngs,
    dims: int = 2,
) -> None:
    """Gives a residual block its shortcut: `block.shortcut`, `block.project` (the shape changes)
    and then its projection, a 1x1 conv of the block's stride and a BN ("option B")."""
    block.shortcut = shortcut
    block.project = shortcut and (stride != 1 or cin != cout)
    if block.project:
        block.proj_conv = conv(cin, cout, 1, stride, rngs, dtype, dims)
        block.proj_bn = BatchNorm(cout, **bn)


def with_shortcut(block: nnx.Module, y: jax.Array, x: jax.Array, train: bool) -> jax.Array:
    """The residual branch `y` plus the block's shortcut of its input `x` (identity or the
    projection `add_shortcut` made); `y` alone in a block without shortcuts."""
    if not block.shortcut:
        return y
    return y + (block.proj_bn(block.proj_conv(x), train=train) if block.project else x)


class BasicBlock(nnx.Module):
    """conv3x3-BN-act-conv3x3-BN, (+ shortcut), act."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        *,
        shortcut: bool,
        act: str,
        prelu_init: float,
        bn: dict,
        dtype,
        rngs: nnx.Rngs,
        dims: int = 2,
    ):
        self.conv1 = conv(cin, cout, 3, stride, rngs, dtype, dims)
        self.bn1 = BatchNorm(cout, **bn)
        self.act1 = make_activation(act, cout, prelu_init)
        self.conv2 = conv(cout, cout, 3, 1, rngs, dtype, dims)
        self.bn2 = BatchNorm(cout, **bn)
        self.act2 = make_activation(act, cout, prelu_init)
        add_shortcut(self, cin, cout, stride, shortcut=shortcut, bn=bn, dtype=dtype, rngs=rngs, dims=dims)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.act1(self.bn1(self.conv1(x), train=train))
        y = self.bn2(self.conv2(y), train=train)
        y = with_shortcut(self, y, x, train)
        return self.act2(y)


def stage(cin: int, cout: int, stride: int, n: int, **kw) -> Stack:
    """A first block (may change shape) followed by n - 1 identical blocks, stacked and scanned."""
    return Stack(BasicBlock(cin, cout, stride, **kw), lambda: BasicBlock(cout, cout, 1, **kw), n)


class ResNet(nnx.Module):
    """CIFAR ResNet v1 of depth 6n+2 (20, 32, 44, 56, 110, ...), on images or on 1-D signals.

    `dims=1` makes every conv `1 x k` (`normjax.models.layers.Conv`) for 1-D signals held as maps
    of height 1 (`[B, 1, L, C]`, e.g. MNIST-1D): the same blocks, strides and widths along the
    signal's length; the parameter count is a third of the 2-D net's, less the BNs and head.

    Example:
      >>> model = ResNet(depth=8, num_classes=10, in_channels=1, width=4, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape   # digits-sized images
      (2, 10)
      >>> signal = ResNet(depth=8, num_classes=10, in_channels=1, width=4, dims=1, rngs=nnx.Rngs(0))
      >>> signal(jnp.zeros((2, 1, 40, 1)), train=False).shape, signal.stem_conv.kernel.shape   # MNIST-1D
      ((2, 10), (1, 3, 1, 4))
      >>> deep = nnx.eval_shape(lambda: ResNet(depth=110, num_classes=10, rngs=nnx.Rngs(0)))  # shapes only
      >>> len(deep.layers()), deep.layers()[0].name, deep.layers()[-1].name
      (112, 'stem', 'head')
    """

    def __init__(
        self,
        *,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        width_mult: float = 1.0,
        shortcut: bool = True,
        activation: str = "relu",
        prelu_init: float = 0.0,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        bn_groups: int = 1,
        dims: int = 2,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        n = (depth - 2) // 6
        self.n = n
        w = [max(1, round(width * width_mult * m)) for m in (1, 2, 4)]
        self.widths = w
        self.in_channels, self.num_classes, self.act = in_channels, num_classes, activation
        self.shortcut, self.dims = shortcut, dims
        bn = dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups)
        kw = dict(shortcut=shortcut, act=activation, prelu_init=prelu_init, bn=bn, dtype=dtype, rngs=rngs, dims=dims)
        self.stem_conv = conv(in_channels, w[0], 3, 1, rngs, dtype, dims)
        self.stem_bn = BatchNorm(w[0], **bn)
        self.stem_act = make_activation(activation, w[0], prelu_init)
        self.stage1 = stage(w[0], w[0], 1, n, **kw)
        self.stage2 = stage(w[0], w[1], 2, n, **kw)
        self.stage3 = stage(w[1], w[2], 2, n, **kw)
        self.head = nnx.Linear(w[2], num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.stem_act(self.stem_bn(self.stem_conv(x), train=train))
        for stage in (self.stage1, self.stage2, self.stage3):
            x = stage(x, train)
        return self.head(x.mean(axis=(1, 2)))

    def layers(self) -> list[LayerInfo]:
        out = [LayerInfo("stem", 0, ("stem_conv", "kernel"), None, True)]
        depth = 1
        for s in (1, 2, 3):
            stage = getattr(self, f"stage{s}")
            for b in range(self.n):
                prefix = (f"stage{s}", "first") if b == 0 else (f"stage{s}", "rest")
                idx = None if b == 0 else b - 1
                out.append(LayerInfo(f"s{s}.b{b}.conv1", depth, prefix + ("conv1", "kernel"), idx, True))
                if b == 0 and stage.first.project:
                    out.append(LayerInfo(f"s{s}.b{b}.proj", depth, prefix + ("proj_conv", "kernel"), idx, True))
                out.append(LayerInfo(f"s{s}.b{b}.conv2", depth + 1, prefix + ("conv2", "kernel"), idx, True))
                depth += 2
        out.append(LayerInfo("head", depth, ("head", "kernel"), None, False))
        return out

    def graph(self) -> Graph:
        """Nonlinearities and the linear maps between them (`normjax.analysis.graph`)."""
        eps, act = self.stem_bn.eps, self.act

        def conv_bn(prefix, conv, bn, idx, stride):
            return (Op("conv", prefix + (conv,), idx, stride), Op("bn", prefix + (bn,), idx, eps=eps))

        nodes = [
            Node("input", self.in_channels, "input", ()),
            Node("stem", self.widths[0], act, (Edge(0, conv_bn((), "stem_conv", "stem_bn", None, 1)),), ("stem_act",)),
        ]
        for s in (1, 2, 3):
            first = getattr(self, f"stage{s}").first
            for b in range(self.n):
                prefix = (f"stage{s}", "first") if b == 0 else (f"stage{s}", "rest")
                idx, stride = (None, first.conv1.stride) if b == 0 else (b - 1, 1)
                prev, c = len(nodes) - 1, self.widths[s - 1]
                nodes.append(
                    Node(
                        f"s{s}.b{b}.act1",
                        c,
                        act,
                        (Edge(prev, conv_bn(prefix, "conv1", "bn1", idx, stride)),),
                        prefix + ("act1",),
                        idx,
                    )
                )
                operands = [Edge(prev + 1, conv_bn(prefix, "conv2", "bn2", idx, 1))]
                if self.shortcut:
                    project = b == 0 and first.project
                    operands.append(Edge(prev, conv_bn(prefix, "proj_conv", "proj_bn", idx, stride) if project else ()))
                nodes.append(Node(f"s{s}.b{b}.act2", c, act, tuple(operands), prefix + ("act2",), idx))
        head = (Op("avgpool"), Op("dense", ("head",)))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(len(nodes) - 1, head),)))
        return Graph(tuple(nodes))


# ---- ImageNet ResNet v1 with bottleneck blocks ------------------------------------------------

BLOCKS = ("basic", "bottleneck")
STEMS = ("auto", "cifar", "imagenet")
EXPANSION = 4  # a bottleneck block's output channels per inner channel
BOTTLENECK_STAGES: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resolve_stem(block: str, stem: str) -> str:
    """The stem `model.stem` names: `auto` is `cifar` for basic blocks, `imagenet` for bottleneck blocks.

    Args:
      block: `model.block` (`basic` or `bottleneck`).
      stem: `model.stem` (`auto`, `cifar` or `imagenet`).

    Returns:
      `cifar` or `imagenet`.

    Example:
      >>> resolve_stem("bottleneck", "auto"), resolve_stem("bottleneck", "cifar")
      ('imagenet', 'cifar')
    """
    return ("imagenet" if block == "bottleneck" else "cifar") if stem == "auto" else stem


class Bottleneck(nnx.Module):
    """conv1x1-BN-act, conv3x3 (the block's stride)-BN-act, conv1x1-BN, (+ shortcut), act.

    The stride sits on the 3x3 conv ("ResNet v1.5", as torchvision's `resnet50`); the paper puts
    it on the first 1x1 conv. Output channels: `EXPANSION * mid`.

    Example:
      >>> block = nnx.eval_shape(lambda: Bottleneck(256, 64, 1, shortcut=True, act="relu", prelu_init=0.0, bn={},
      ...                                           dtype=jnp.float32, rngs=nnx.Rngs(0)))   # shapes only
      >>> [getattr(block, c).kernel.shape for c in ("conv1", "conv2", "conv3")], block.project
      ([(1, 1, 256, 64), (3, 3, 64, 64), (1, 1, 64, 256)], False)
    """

    def __init__(
        self,
        cin: int,
        mid: int,
        stride: int,
        *,
        shortcut: bool,
        act: str,
        prelu_init: float,
        bn: dict,
        dtype,
        rngs: nnx.Rngs,
    ):
        cout = EXPANSION * mid
        self.conv1 = conv(cin, mid, 1, 1, rngs, dtype)
        self.bn1 = BatchNorm(mid, **bn)
        self.act1 = make_activation(act, mid, prelu_init)
        self.conv2 = conv(mid, mid, 3, stride, rngs, dtype)
        self.bn2 = BatchNorm(mid, **bn)
        self.act2 = make_activation(act, mid, prelu_init)
        self.conv3 = conv(mid, cout, 1, 1, rngs, dtype)
        self.bn3 = BatchNorm(cout, **bn)
        self.act3 = make_activation(act, cout, prelu_init)
        add_shortcut(self, cin, cout, stride, shortcut=shortcut, bn=bn, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.act1(self.bn1(self.conv1(x), train=train))
        y = self.act2(self.bn2(self.conv2(y), train=train))
        y = self.bn3(self.conv3(y), train=train)
        y = with_shortcut(self, y, x, train)
        return self.act3(y)


class BottleneckResNet(nnx.Module):
    """ResNet v1 with bottleneck blocks (ResNet-50, -101, -152), or its plain twin (`shortcut=False`).

    Stem → 4 stages of bottleneck blocks (`Bottleneck`: inner widths w, 2w, 4w, 8w, outputs 4x;
    stride 2 on the 3x3 conv entering stages 2-4, "v1.5") → global average pool → dense. Stages
    hold `BOTTLENECK_STAGES[depth]` blocks: depth = 3 convs per block + stem + classifier. Stems:
    `imagenet`, the paper's (conv7x7 stride 2 + BN + act, then a 3x3 stride-2 max-pool, padding 1:
    a 224x224 image reaches the stages at 56x56); `cifar`, the CIFAR ResNet's (conv3x3 stride 1,
    no pool) for small images. With `width=64` and the `imagenet` stem, the layers and parameter
    count are torchvision's `resnet50` / `resnet101` / `resnet152` (convs without bias, BN scale
    and bias, a dense head with bias). Initialization is normjax's (He-normal fan-in convs, BN
    scale 1 everywhere, as `ResNet`); torchvision draws conv kernels fan-out.

    `graph()` places the stem's max-pool as an `Op("maxpool3")` (3x3, stride 2, padding 1) at the
    start of the edges out of the stem node, so `normjax.analysis.fold` evaluates the model with
    either stem.

    Args:
      depth: 50, 101 or 152 (ignored when `stages` is given).
      num_classes: outputs of the dense head.
      in_channels: image channels.
      width: stage 1's inner width (64 in the paper); the stem has this many channels.
      width_mult: multiplies every width (widened or narrowed baselines).
      shortcut: False gives the plain net (no additions, no projections).
      stem: `imagenet` or `cifar` (see above).
      activation: `relu` or `prelu` (channel-wise slopes).
      prelu_init: the PReLU slopes at init (0: ReLU, 1: linear).
      bn_momentum: BN running statistics' momentum.
      bn_eps: added to the variance.
      bn_groups: BN statistics over this many slices of the batch (`normjax.models.layers.BatchNorm`).
      stages: blocks per stage (4 numbers, each >= 1) instead of the depth's, e.g. `(1, 1, 1, 1)`
        (depth 14) for small tests.
      dtype: activation dtype (parameters stay float32).
      rngs: parameter initialization.

    Example:
      >>> r50 = nnx.eval_shape(lambda: BottleneckResNet(depth=50, num_classes=1000, rngs=nnx.Rngs(0)))  # shapes only
      >>> layers = r50.layers()   # 53 convs (4 projections) and the head
      >>> len(layers), layers[-1].depth, sum(x.size for x in jax.tree.leaves(nnx.state(r50, nnx.Param)))
      (54, 49, 25557032)
      >>> graphdef, state = nnx.split(r50)
      >>> images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
      >>> jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, images).shape
      (2, 1000)

    References:
      He, Zhang, Ren & Sun, `Deep Residual Learning for Image Recognition`, 2016 (arXiv:1512.03385).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        width_mult: float = 1.0,
        shortcut: bool = True,
        stem: str = "imagenet",
        activation: str = "relu",
        prelu_init: float = 0.0,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        bn_groups: int = 1,
        stages: tuple[int, ...] | None = None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if stages is None:
            if depth not in BOTTLENECK_STAGES:
                raise ValueError(f"depth={depth}: a bottleneck ResNet has depth 50, 101 or 152 (or give stages)")
            stages = BOTTLENECK_STAGES[depth]
        stages = tuple(int(n) for n in stages)
        if len(stages) != 4 or min(stages) < 1:
            raise ValueError(f"stages={stages}: give 4 block counts, each >= 1")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem={stem!r}: 'cifar' or 'imagenet'")
        self.stages, self.depth, self.stem = stages, 3 * sum(stages) + 2, stem
        w = [max(1, round(width * width_mult * m)) for m in (1, 2, 4, 8)]
        self.widths = w  # inner widths; a stage's output has EXPANSION times as many channels
        self.in_channels, self.num_classes, self.act, self.bn_eps = in_channels, num_classes, activation, bn_eps
        self.shortcut = shortcut
        bn = dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups)
        kw = dict(shortcut=shortcut, act=activation, prelu_init=prelu_init, bn=bn, dtype=dtype, rngs=rngs)
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        self.stem_conv = conv(in_channels, w[0], k, s, rngs, dtype)
        self.stem_bn = BatchNorm(w[0], **bn)
        self.stem_act = make_activation(activation, w[0], prelu_init)
        cin = w[0]
        for i, (mid, n) in enumerate(zip(w, stages)):
            cout, stride = EXPANSION * mid, 1 if i == 0 else 2
            first = Bottleneck(cin, mid, stride, **kw)
            setattr(self, f"stage{i + 1}", Stack(first, lambda mid=mid, cout=cout: Bottleneck(cout, mid, 1, **kw), n))
            cin = cout
        self.head = nnx.Linear(cin, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def pool(self, x: jax.Array) -> jax.Array:
        """The stem's pooling: 3x3 max-pool, stride 2, padding 1 (`imagenet` stem); none for `cifar`."""
        if self.stem != "imagenet":
            return x
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.pool(self.stem_act(self.stem_bn(self.stem_conv(x), train=train)))
        for s in range(1, 5):
            x = getattr(self, f"stage{s}")(x, train)
        return self.head(x.mean(axis=(1, 2)))

    def _blocks(self):
        """(stage, block, path prefix, stacked index, stride) of every block in order."""
        for s, n in enumerate(self.stages, start=1):
            for b in range(n):
                prefix = (f"stage{s}", "first") if b == 0 else (f"stage{s}", "rest")
                yield s, b, prefix, None if b == 0 else b - 1, (1 if s == 1 else 2) if b == 0 else 1

    def layers(self) -> list[LayerInfo]:
        """The weight layers in depth order; every conv feeds a BatchNorm (scale-invariant), the head does not.

        A projection shortcut shares the depth of its block's first conv.
        """
        out = [LayerInfo("stem", 0, ("stem_conv", "kernel"), None, True)]
        depth = 1
        for s, b, prefix, idx, _ in self._blocks():
            name = f"s{s}.b{b}"
            out.append(LayerInfo(f"{name}.conv1", depth, prefix + ("conv1", "kernel"), idx, True))
            if b == 0 and getattr(self, f"stage{s}").first.project:
                out.append(LayerInfo(f"{name}.proj", depth, prefix + ("proj_conv", "kernel"), idx, True))
            out.append(LayerInfo(f"{name}.conv2", depth + 1, prefix + ("conv2", "kernel"), idx, True))
            out.append(LayerInfo(f"{name}.conv3", depth + 2, prefix + ("conv3", "kernel"), idx, True))
            depth += 3
        out.append(LayerInfo("head", depth, ("head", "kernel"), None, False))
        return out

    def graph(self) -> Graph:
        """Nonlinearities and the linear maps between them (`normjax.analysis.graph`).

        Three nodes per block (`act1`, `act2`, `act3`; `act3` sums the residual branch and the
        shortcut); the `imagenet` stem's max-pool (`Op("maxpool3")`) opens every edge out of the
        stem node.
        """
        eps, act = self.bn_eps, self.act

        def conv_bn(prefix, conv, bn, idx, stride):
            return (Op("conv", prefix + (conv,), idx, stride), Op("bn", prefix + (bn,), idx, eps=eps))

        stem_stride = self.stem_conv.stride
        nodes = [
            Node("input", self.in_channels, "input", ()),
            Node(
                "stem",
                self.widths[0],
                act,
                (Edge(0, conv_bn((), "stem_conv", "stem_bn", None, stem_stride)),),
                ("stem_act",),
            ),
        ]
        for s, b, prefix, idx, stride in self._blocks():
            pool = (Op("maxpool3"),) if self.stem == "imagenet" and s == 1 and b == 0 else ()
            prev, mid = len(nodes) - 1, self.widths[s - 1]
            name = f"s{s}.b{b}"
            nodes.append(
                Node(
                    f"{name}.act1",
                    mid,
                    act,
                    (Edge(prev, pool + conv_bn(prefix, "conv1", "bn1", idx, 1)),),
                    prefix + ("act1",),
                    idx,
                )
            )
            nodes.append(
                Node(
                    f"{name}.act2",
                    mid,
                    act,
                    (Edge(prev + 1, conv_bn(prefix, "conv2", "bn2", idx, stride)),),
                    prefix + ("act2",),
                    idx,
                )
            )
            operands = [Edge(prev + 2, conv_bn(prefix, "conv3", "bn3", idx, 1))]
            if self.shortcut:
                project = b == 0 and getattr(self, f"stage{s}").first.project
                operands.append(
                    Edge(prev, pool + (conv_bn(prefix, "proj_conv", "proj_bn", idx, stride) if project else ()))
                )
            nodes.append(Node(f"{name}.act3", EXPANSION * mid, act, tuple(operands), prefix + ("act3",), idx))
        head = (Op("avgpool"), Op("dense", ("head",)))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(len(nodes) - 1, head),)))
        return Graph(tuple(nodes))
