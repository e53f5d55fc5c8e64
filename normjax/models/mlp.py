"""BN-ReLU MLP: `depth` hidden layers of (dense without bias → BN → act), then a dense classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from normjax.models.layers import BatchNorm, Stack, he_normal
from normjax.models.layers import activation as make_activation
from normjax.analysis.graph import Edge, Graph, Node, Op
from normjax.models.structure import LayerInfo


class Hidden(nnx.Module):
    def __init__(self, din: int, dout: int, *, act: str, prelu_init: float, bn: dict, dtype, rngs: nnx.Rngs):
        self.dense = nnx.Linear(din, dout, use_bias=False, kernel_init=he_normal, dtype=dtype,
                                param_dtype=jnp.float32, rngs=rngs)
        self.bn = BatchNorm(dout, **bn)
        self.act = make_activation(act, dout, prelu_init)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.act(self.bn(self.dense(x), train=train))


class MLP(nnx.Module):
    """BN-ReLU MLP on flattened inputs; `depth` counts hidden layers.

    Example:
      >>> model = MLP(depth=4, width=64, in_features=64, num_classes=10, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape
      (2, 10)
    """

    def __init__(self, *, depth: int, width: int, in_features: int, num_classes: int,
                 activation: str = "relu", prelu_init: float = 0.0, bn_momentum: float = 0.9,
                 bn_eps: float = 1e-5, bn_groups: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(act=activation, prelu_init=prelu_init,
                  bn=dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups), dtype=dtype, rngs=rngs)
        self.depth, self.width, self.in_features, self.num_classes = depth, width, in_features, num_classes
        self.act, self.bn_eps = activation, bn_eps
        self.hidden = Stack(Hidden(in_features, width, **kw), lambda: Hidden(width, width, **kw), depth, unroll=True)
        self.head = nnx.Linear(width, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.head(self.hidden(x.reshape(x.shape[0], -1), train))

    def layers(self) -> list[LayerInfo]:
        out = [LayerInfo("fc0", 0, ("hidden", "first", "dense", "kernel"), None, True)]
        out += [LayerInfo(f"fc{i + 1}", i + 1, ("hidden", "rest", "dense", "kernel"), i, True) for i in range(self.depth - 1)]
        out.append(LayerInfo("head", self.depth, ("head", "kernel"), None, False))
        return out

    def graph(self) -> Graph:
        """Nonlinearities and the linear maps between them (`normjax.analysis.graph`)."""
        nodes = [Node("input", self.in_features, "input", ())]
        for i in range(self.depth):
            prefix, idx = ("hidden", "first" if i == 0 else "rest"), None if i == 0 else i - 1
            ops = (Op("dense", prefix + ("dense",), idx), Op("bn", prefix + ("bn",), idx, eps=self.bn_eps))
            nodes.append(Node(f"fc{i}", self.width, self.act, (Edge(i, ((Op("flatten"),) if i == 0 else ()) + ops),),
                              prefix + ("act",), idx))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(self.depth, (Op("dense", ("head",)),)),)))
        return Graph(tuple(nodes))
