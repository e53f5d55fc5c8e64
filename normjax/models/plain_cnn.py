"""VGG-style plain CNN: 3 stages of conv3x3-BN-act (widths w, 2w, 4w), 2x2 max-pool between
stages, global average pool, dense classifier. `depth` counts conv layers, spread evenly over the
stages (earlier stages take the remainder). On 1-D signals (`dims=1`, maps of height 1) the
convs are 1x3 and the pools 1x2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from normjax.analysis.graph import Edge, Graph, Node, Op, max_pool
from normjax.models.layers import BatchNorm, Stack
from normjax.models.layers import activation as make_activation
from normjax.models.resnet import conv
from normjax.models.structure import LayerInfo


class ConvBN(nnx.Module):
    def __init__(
        self, cin: int, cout: int, *, act: str, prelu_init: float, bn: dict, dtype, rngs: nnx.Rngs, dims: int = 2
    ):
        self.conv = conv(cin, cout, 3, 1, rngs, dtype, dims)
        self.bn = BatchNorm(cout, **bn)
        self.act = make_activation(act, cout, prelu_init)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.act(self.bn(self.conv(x), train=train))


class PlainCNN(nnx.Module):
    """Plain conv stack of `depth` conv layers (depth >= 3).

    Example:
      >>> model = PlainCNN(depth=4, num_classes=10, in_channels=1, width=4, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 8, 8, 1)), train=False).shape   # digits-sized images
      (2, 10)
      >>> model.counts, model.widths   # conv layers and channels per stage
      ([2, 1, 1], [4, 8, 16])
      >>> PlainCNN(depth=3, num_classes=10, in_channels=1, width=4, dims=1, rngs=nnx.Rngs(0))(
      ...     jnp.zeros((2, 1, 40, 1)), train=False).shape   # a 1-D signal (MNIST-1D)
      (2, 10)
    """

    def __init__(
        self,
        *,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        width_mult: float = 1.0,
        activation: str = "relu",
        prelu_init: float = 0.0,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        bn_groups: int = 1,
        dims: int = 2,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(
            act=activation,
            prelu_init=prelu_init,
            bn=dict(momentum=bn_momentum, eps=bn_eps, groups=bn_groups),
            dtype=dtype,
            rngs=rngs,
            dims=dims,
        )
        self.dims = dims
        w = [max(1, round(width * width_mult * m)) for m in (1, 2, 4)]
        counts = [depth // 3 + (1 if s < depth % 3 else 0) for s in range(3)]
        self.counts, self.widths = counts, w
        self.in_channels, self.num_classes, self.act, self.bn_eps = in_channels, num_classes, activation, bn_eps
        self.stage1 = Stack(ConvBN(in_channels, w[0], **kw), lambda: ConvBN(w[0], w[0], **kw), counts[0])
        self.stage2 = Stack(ConvBN(w[0], w[1], **kw), lambda: ConvBN(w[1], w[1], **kw), counts[1])
        self.stage3 = Stack(ConvBN(w[1], w[2], **kw), lambda: ConvBN(w[2], w[2], **kw), counts[2])
        self.head = nnx.Linear(w[2], num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i, stage in enumerate((self.stage1, self.stage2, self.stage3)):
            if i > 0:
                x = max_pool(x, "maxpool")  # the graph's op: 2x2, along each axis at least 2 long
            x = stage(x, train)
        return self.head(x.mean(axis=(1, 2)))

    def layers(self) -> list[LayerInfo]:
        out, depth = [], 0
        for s, n in enumerate(self.counts, start=1):
            out.append(LayerInfo(f"s{s}.c0", depth, (f"stage{s}", "first", "conv", "kernel"), None, True))
            out += [
                LayerInfo(f"s{s}.c{i + 1}", depth + i + 1, (f"stage{s}", "rest", "conv", "kernel"), i, True)
                for i in range(n - 1)
            ]
            depth += n
        out.append(LayerInfo("head", depth, ("head", "kernel"), None, False))
        return out

    def graph(self) -> Graph:
        """Nonlinearities and the linear maps between them (`normjax.analysis.graph`)."""
        nodes = [Node("input", self.in_channels, "input", ())]
        for s, n in enumerate(self.counts, start=1):
            for i in range(n):
                prefix, idx = (f"stage{s}", "first" if i == 0 else "rest"), None if i == 0 else i - 1
                ops = (Op("conv", prefix + ("conv",), idx), Op("bn", prefix + ("bn",), idx, eps=self.bn_eps))
                pool = (Op("maxpool"),) if s > 1 and i == 0 else ()
                nodes.append(
                    Node(
                        f"s{s}.c{i}",
                        self.widths[s - 1],
                        self.act,
                        (Edge(len(nodes) - 1, pool + ops),),
                        prefix + ("act",),
                        idx,
                    )
                )
        head = (Op("avgpool"), Op("dense", ("head",)))
        nodes.append(Node("logits", self.num_classes, "output", (Edge(len(nodes) - 1, head),)))
        return Graph(tuple(nodes))
