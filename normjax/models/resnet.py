"""CIFAR ResNet v1 (He et al. 2016), depth 6n+2, and its plain (no-shortcut) twin.

Stem conv3x3 → 3 stages of n basic blocks (widths w, 2w, 4w; stride 2 entering stages 2 and 3)
→ global average pool → dense. Every conv is bias-free and followed by BatchNorm; where the shape
changes the shortcut is a 1x1 conv + BN ("option B"). Identical blocks are stacked and scanned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from normjax.models.layers import BatchNorm, Conv, Stack
from normjax.models.layers import activation as make_activation
from normjax.analysis.graph import Edge, Graph, Node, Op
from normjax.models.structure import LayerInfo


def conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, dtype) -> Conv:
    return Conv(cin, cout, k, stride=stride, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
    """conv3x3-BN-act-conv3x3-BN, (+ shortcut), act."""

    def __init__(self, cin: int, cout: int, stride: int, *, shortcut: bool, act: str, prelu_init: float,
                 bn: dict, dtype, rngs: nnx.Rngs):
        self.conv1 = conv(cin, cout, 3, stride, rngs, dtype)
        self.bn1 = BatchNorm(cout, **bn)
        self.act1 = make_activation(act, cout, prelu_init)
        self.conv2 = conv(cout, cout, 3, 1, rngs, dtype)
        self.bn2 = BatchNorm(cout, **bn)
        self.act2 = make_activation(act, cout, prelu_init)
        self.shortcut = shortcut
        self.project = shortcut and (stride != 1 or cin != cout)
        if self.project:
            self.proj_conv = conv(cin, cout, 1, stride, rngs, dtype)
            self.proj_bn = BatchNorm(cout, **bn)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.act1(self.bn1(self.conv1(x), train=train))
        y = self.bn2(self.conv2(y), train=train)
        if self.shortcut:
            y = y + (self.proj_bn(self.proj_conv(x), train=train) if self.project else x)
        return self.act2(y)


def stage(cin: int, cout: int, stride: int, n: int, **kw) -> Stack:
    """A first block (may change shape) followed by n - 1 identical blocks, stacked and scanned."""
    return Stack(BasicBlock(cin, cout, stride, **kw), lambda: BasicBlock(cout, cout, 1, **kw), n)


class ResNet(nnx.Module):
    """CIFAR ResNet v1 of depth 6n+2 (20, 32, 44, 56, 110, ...).

    Example:
      >>> model = ResNet(depth=8, num_classes=10, in_channels=1, width=4, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape   # digits-sized images
      (2, 10)
      >>> deep = nnx.eval_shape(lambda: ResNet(depth=110, num_classes=10, rngs=nnx.Rngs(0)))  # shapes only
      >>> len(deep.layers()), deep.layers()[0].name, deep.layers()[-1].name
      (112, 'stem', 'head')
    """

    def __init__(self, *, depth: int, num_classes: int, in_channels: int = 3, width: int = 16,
                 width_mult: float = 1.0, shortcut: bool = True, activation: str = "relu",
                 prelu_init: float = 0.0, bn_momentum: float = 0.9, bn_eps: float = 1e-5,
                 bn_groups: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
        n = (depth - 2) // 6
        self.n = n
        w = [max(1, round(width * width_mult * m)) for m in (1, 2, 4)]
        self.widths = w
        self.in_channels, self.num_classes, self.act = in_channels, num_classes, activation
        self.shortcut = shortcut
        bn = dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups)
        kw = dict(shortcut=shortcut, act=activation, prelu_init=prelu_init, bn=bn, dtype=dtype, rngs=rngs)
        self.stem_conv = conv(in_channels, w[0], 3, 1, rngs, dtype)
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

        nodes = [Node("input", self.in_channels, "input", ()),
                 Node("stem", self.widths[0], act, (Edge(0, conv_bn((), "stem_conv", "stem_bn", None, 1)),),
                      ("stem_act",))]
        for s in (1, 2, 3):
            first = getattr(self, f"stage{s}").first
            for b in range(self.n):
                prefix = (f"stage{s}", "first") if b == 0 else (f"stage{s}", "rest")
                idx, stride = (None, first.conv1.stride) if b == 0 else (b - 1, 1)
                prev, c = len(nodes) - 1, self.widths[s - 1]
                nodes.append(Node(f"s{s}.b{b}.act1", c, act, (Edge(prev, conv_bn(prefix, "conv1", "bn1", idx, stride)),),
                                  prefix + ("act1",), idx))
                operands = [Edge(prev + 1, conv_bn(prefix, "conv2", "bn2", idx, 1))]
                if self.shortcut:
                    project = b == 0 and first.project
                    operands.append(Edge(prev, conv_bn(prefix, "proj_conv", "proj_bn", idx, stride) if project else ()))
                nodes.append(Node(f"s{s}.b{b}.act2", c, act, tuple(operands), prefix + ("act2",), idx))
        head = (Op("avgpool"), Op("dense", ("head",)))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(len(nodes) - 1, head),)))
        return Graph(tuple(nodes))

