"""BN-ReLU MLP: `depth` hidden layers of (dense without bias → BN → act), then a dense classifier.

With `shortcut=True` the hidden layers after the first are grouped in residual blocks of two,
the dense twin of the CIFAR ResNet's basic block (`normjax.models.resnet.BasicBlock`):
`block(x) = act(x + BN(W2 act(BN(W1 x))))`, the shortcut the identity (the width is constant
after the first layer). The first layer (input → width) stays a plain hidden layer, so `depth`
is odd: 1 + 2 x blocks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from normjax.analysis.graph import Edge, Graph, Node, Op
from normjax.models.layers import BatchNorm, Stack, he_normal
from normjax.models.layers import activation as make_activation
from normjax.models.resnet import add_shortcut, with_shortcut
from normjax.models.structure import LayerInfo


def dense(din: int, dout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A bias-free dense layer with He-normal fan-in init (it feeds a BatchNorm)."""
    return nnx.Linear(din, dout, use_bias=False, kernel_init=he_normal, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Hidden(nnx.Module):
    def __init__(self, din: int, dout: int, *, act: str, prelu_init: float, bn: dict, dtype, rngs: nnx.Rngs):
        self.dense = dense(din, dout, dtype, rngs)
        self.bn = BatchNorm(dout, **bn)
        self.act = make_activation(act, dout, prelu_init)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.act(self.bn(self.dense(x), train=train))


class Block(nnx.Module):
    """dense-BN-act-dense-BN, + identity shortcut, act: the residual MLP's block of two hidden layers.

    Example:
      >>> block = Block(8, act="relu", prelu_init=0.0, bn={}, dtype=jnp.float32, rngs=nnx.Rngs(0))
      >>> block(jnp.ones((4, 8)), train=True).shape, block.shortcut, block.project
      ((4, 8), True, False)
    """

    def __init__(self, width: int, *, act: str, prelu_init: float, bn: dict, dtype, rngs: nnx.Rngs):
        self.dense1 = dense(width, width, dtype, rngs)
        self.bn1 = BatchNorm(width, **bn)
        self.act1 = make_activation(act, width, prelu_init)
        self.dense2 = dense(width, width, dtype, rngs)
        self.bn2 = BatchNorm(width, **bn)
        self.act2 = make_activation(act, width, prelu_init)
        add_shortcut(self, width, width, 1, shortcut=True, bn=bn, dtype=dtype, rngs=rngs)  # the identity

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.act1(self.bn1(self.dense1(x), train=train))
        y = self.bn2(self.dense2(y), train=train)
        return self.act2(with_shortcut(self, y, x, train))


class MLP(nnx.Module):
    """BN-ReLU MLP on flattened inputs; `depth` counts hidden layers.

    `shortcut=True`: a first hidden layer, then `(depth - 1) / 2` residual blocks (`Block`), stored
    stacked at `hidden.rest`; `depth` must be odd. Layers and graph nodes are named `fc0` ...
    `fc{depth-1}` in both forms (block b holds `fc{2b+1}` and `fc{2b+2}`, whose node also sums the
    shortcut from `fc{2b}`).

    Example:
      >>> model = MLP(depth=4, width=64, in_features=64, num_classes=10, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape
      (2, 10)
      >>> residual = MLP(depth=5, width=16, in_features=64, num_classes=10, shortcut=True, rngs=nnx.Rngs(0))
      >>> [layer.name for layer in residual.layers()], residual.blocks
      (['fc0', 'fc1', 'fc2', 'fc3', 'fc4', 'head'], 2)
    """

    def __init__(
        self,
        *,
        depth: int,
        width: int,
        in_features: int,
        num_classes: int,
        shortcut: bool = False,
        activation: str = "relu",
        prelu_init: float = 0.0,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        bn_groups: int = 1,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if shortcut and depth % 2 == 0:
            raise ValueError(f"depth={depth}: a residual MLP has a first layer and blocks of two, so an odd depth")
        kw = dict(
            act=activation,
            prelu_init=prelu_init,
            bn=dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups),
            dtype=dtype,
            rngs=rngs,
        )
        self.depth, self.width, self.in_features, self.num_classes = depth, width, in_features, num_classes
        self.act, self.bn_eps = activation, bn_eps
        self.shortcut, self.blocks = shortcut, (depth - 1) // 2 if shortcut else 0
        if shortcut:
            self.hidden = Stack(
                Hidden(in_features, width, **kw), lambda: Block(width, **kw), 1 + self.blocks, unroll=True
            )
        else:
            self.hidden = Stack(
                Hidden(in_features, width, **kw), lambda: Hidden(width, width, **kw), depth, unroll=True
            )
        self.head = nnx.Linear(width, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.head(self.hidden(x.reshape(x.shape[0], -1), train))

    def _rest(self, i: int) -> tuple[tuple[str, ...], int, str]:
        """Hidden layer i >= 1: its module's path prefix, its index in the stacked `rest`, and the
        suffix of its dense/bn/act names (`""`, or `1`/`2` inside a block)."""
        if not self.shortcut:
            return ("hidden", "rest"), i - 1, ""
        return ("hidden", "rest"), (i - 1) // 2, "1" if i % 2 else "2"

    def layers(self) -> list[LayerInfo]:
        out = [LayerInfo("fc0", 0, ("hidden", "first", "dense", "kernel"), None, True)]
        for i in range(1, self.depth):
            prefix, idx, k = self._rest(i)
            out.append(LayerInfo(f"fc{i}", i, prefix + (f"dense{k}", "kernel"), idx, True))
        out.append(LayerInfo("head", self.depth, ("head", "kernel"), None, False))
        return out

    def graph(self) -> Graph:
        """Nonlinearities and the linear maps between them (`normjax.analysis.graph`); with
        shortcuts, the node closing a block also sums the identity from the block's input node."""
        nodes = [Node("input", self.in_features, "input", ())]
        for i in range(self.depth):
            prefix, idx, k = (("hidden", "first"), None, "") if i == 0 else self._rest(i)
            ops = (Op("dense", prefix + (f"dense{k}",), idx), Op("bn", prefix + (f"bn{k}",), idx, eps=self.bn_eps))
            operands = (Edge(i, ((Op("flatten"),) if i == 0 else ()) + ops),)
            if k == "2":  # the block's shortcut, from its input fc{i-2} (graph node i - 1)
                operands += (Edge(i - 1),)
            nodes.append(Node(f"fc{i}", self.width, self.act, operands, prefix + (f"act{k}",), idx))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(self.depth, (Op("dense", ("head",)),)),)))
        return Graph(tuple(nodes))
