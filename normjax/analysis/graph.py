"""A model's graph of nonlinearities: what APL, core-network profiles and folding read.

Nodes are the places where a nonlinearity may act (one per activation module), plus the input
and the logits, which are linear. Each node sums its *operands*; an operand is an edge from an
earlier node through a sequence of linear ops (conv, BatchNorm, pooling, dense). An operand with
no conv or dense op (an identity shortcut) links channel c to channel c; any other links every
input channel to every output channel. Models build their graph with `Graph` beside `layers()`.

This module holds plain data and reads parameter trees; it imports only jax and numpy.

Example:
  >>> g = Graph((Node("input", 4, "input", ()),
  ...            Node("fc0", 8, "relu", (Edge(0, (Op("dense", ("fc0",)),)),)),
  ...            Node("logits", 2, "output", (Edge(1, (Op("dense", ("head",)),)),))))
  >>> g.hidden()
  [1]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
OP_KINDS = ("conv", "dense", "bn", "maxpool", "maxpool3", "avgpool", "flatten")
# (window, stride, padding) of each max-pool kind; padded positions hold -inf (never the maximum)
MAXPOOLS = {"maxpool": (2, 2, 0), "maxpool3": (3, 2, 1)}
ACTS = ("input", "relu", "prelu", "output")


def _pooled_axes(hw: tuple[int, int], kind: str) -> tuple[bool, bool]:
    """Which spatial axes max-pool `kind` pools: `maxpool` (2x2) leaves an axis shorter than its
    window alone (a 1-D signal's height of 1; a map smaller than 2x2 stays as it is); `maxpool3`
    pools both (its padding covers any size)."""
    k, _, p = MAXPOOLS[kind]
    return tuple(n + 2 * p >= k for n in hw)


def pooled_hw(hw: tuple[int, int], kind: str) -> tuple[int, int]:
    """The spatial size `(H, W)` after max-pool `kind` (`MAXPOOLS`).

    Example:
      >>> pooled_hw((8, 8), "maxpool"), pooled_hw((1, 40), "maxpool"), pooled_hw((1, 1), "maxpool")
      ((4, 4), (1, 20), (1, 1))
    """
    k, s, p = MAXPOOLS[kind]
    return tuple((n + 2 * p - k) // s + 1 if on else n for n, on in zip(hw, _pooled_axes(hw, kind)))


def max_pool(h: jax.Array, kind: str) -> jax.Array:
    """Max-pool `kind` (`MAXPOOLS`) of `h [B, H, W, C]`, the one definition models and folding use.

    `maxpool` pools 2x2 with stride 2, along each spatial axis at least 2 long: a 1-D signal
    (height 1) is pooled along its length only. `maxpool3` pools 3x3, stride 2, padding 1 with -inf.

    Example:
      >>> max_pool(jnp.arange(8.0).reshape(1, 1, 8, 1), "maxpool")[0, 0, :, 0].tolist()
      [1.0, 3.0, 5.0, 7.0]
    """
    k, s, p = MAXPOOLS[kind]
    on = _pooled_axes(tuple(h.shape[1:3]), kind)
    window = (1,) + tuple(k if a else 1 for a in on) + (1,)
    strides = (1,) + tuple(s if a else 1 for a in on) + (1,)
    pads = ((0, 0),) + tuple((p, p) if a else (0, 0) for a in on) + ((0, 0),)
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, strides, pads)


class Op(NamedTuple):
    """One linear op on an edge.

    `kind`: `conv` (params[path]['kernel'], `[kh, kw, cin, cout]` with odd sides: `[k, k, ...]` on
    images, `[1, k, ...]` on 1-D signals held as maps of height 1; padding (k-1)/2 per axis,
    `stride` along both axes, which keeps a height of 1), `dense`
    (params[path]['kernel'] and 'bias' if present), `bn` (params[path]['scale'|'bias'],
    batch_stats[path]['mean'|'var'], `eps`), `maxpool` (2x2, stride 2, no padding, along each
    axis at least 2 long: `max_pool`), `maxpool3` (3x3, stride 2, padding 1 with -inf: torchvision's
    `MaxPool2d(3, 2, 1)`, the ImageNet ResNet stem's; an `[H, W]` map becomes
    `[ceil(H/2), ceil(W/2)]`), `avgpool` (global mean over space), `flatten`. `index` selects a
    stacked layer's slice along axis 0. `MAXPOOLS` holds each max-pool's window, stride and
    padding; a max-pool's `stride` field is unused.
    """

    kind: str
    path: tuple[str, ...] = ()
    index: int | None = None
    stride: int = 1
    eps: float = 0.0


class Edge(NamedTuple):
    """An operand of a node: node `src`'s output through `ops`, applied in order."""

    src: int
    ops: tuple[Op, ...] = ()

    @property
    def full(self) -> bool:
        """True when the edge links every channel pair (it holds a conv or dense op)."""
        return any(op.kind in ("conv", "dense") for op in self.ops)


class Node(NamedTuple):
    """A nonlinearity (`relu`, `prelu` with its slope module at `slope`/`index`), the `input` or
    the `output` (logits); its value is the sum of its operands, then the activation."""

    name: str
    channels: int
    act: str
    operands: tuple[Edge, ...]
    slope: tuple[str, ...] | None = None
    index: int | None = None


class Graph(NamedTuple):
    """Nodes in topological order: `nodes[0]` is the input, `nodes[-1]` the logits."""

    nodes: tuple[Node, ...]

    def hidden(self) -> list[int]:
        """Indices of the nonlinearity nodes (all but input and output), in order."""
        return [i for i, n in enumerate(self.nodes) if n.act in ("relu", "prelu")]

    def names(self) -> list[str]:
        """Names of the nonlinearity nodes, in the order of `hidden`."""
        return [self.nodes[i].name for i in self.hidden()]

    def to_json(self) -> list[dict]:
        """The graph as JSON-ready dicts (written to a run directory as `graph.json`)."""
        return [
            {
                "name": n.name,
                "channels": n.channels,
                "act": n.act,
                "operands": [{"src": e.src, "ops": [list(op) for op in e.ops]} for e in n.operands],
                "slope": None if n.slope is None else list(n.slope),
                "index": n.index,
            }
            for n in self.nodes
        ]

    @classmethod
    def from_json(cls, data: list[dict]) -> Graph:
        """The graph `to_json` wrote; files written before the `maxpool3` op existed load unchanged.

        Args:
          data: the list `to_json` returned, e.g. read back from a run directory's `graph.json`.

        Returns:
          The `Graph`, equal to the one written.
        """

        def op(x):
            kind, path, index, stride, eps = x
            return Op(kind, tuple(path), index, stride, eps)

        return cls(
            tuple(
                Node(
                    d["name"],
                    d["channels"],
                    d["act"],
                    tuple(Edge(e["src"], tuple(op(o) for o in e["ops"])) for e in d["operands"]),
                    None if d["slope"] is None else tuple(d["slope"]),
                    d["index"],
                )
                for d in data
            )
        )


def subtree(tree: PyTree, path: tuple[str, ...], index: int | None = None) -> PyTree:
    """The dict at `path` of a nested dict, sliced at `index` along axis 0 when stacked."""
    for key in path:
        tree = tree[key]
    return tree if index is None else {k: v[index] for k, v in tree.items()}


def slopes(graph: Graph, params: PyTree) -> list[jax.Array | None]:
    """Per node, its PReLU slopes `[channels]` (None for relu, input and output nodes)."""
    return [subtree(params, n.slope, n.index)["slope"] if n.act == "prelu" else None for n in graph.nodes]


def nonlinear(graph: Graph, params: PyTree, tolerance: float = 0.01) -> list[jax.Array]:
    """Per node, a float `[channels]` vector: 1 where the unit is nonlinear, else 0.

    A PReLU channel is nonlinear when `|1 - slope| >= tolerance`; ReLU channels always are; the
    input and the logits never are. Traceable; numpy slopes give numpy vectors.
    """
    return nonlinear_from_slopes(graph, slopes(graph, params), tolerance)


def nonlinear_from_slopes(
    graph: Graph, found: list, tolerance: float = 0.01, frozen: list | None = None
) -> list[jax.Array]:
    """`nonlinear` from the per-node slope vectors (`slopes`) rather than a parameter tree.

    `frozen`: per node, the mask of slopes an optimizer froze at 1 (`slopes` of its `frozen`
    tree). Given, a PReLU channel is linear exactly when it is frozen: a slope the optimizer left
    free is nonlinear even within the tolerance of 1, since it can drift away again.
    """
    out = []
    xp = jnp if any(isinstance(a, jax.Array) for a in found) else np  # numpy in, numpy out
    frozen = [None] * len(graph.nodes) if frozen is None else frozen
    for n, a, f in zip(graph.nodes, found, frozen, strict=True):
        if n.act == "prelu" and f is not None:
            out.append((~xp.asarray(f, bool)).astype(xp.float32))
        elif n.act == "prelu":
            out.append((xp.abs(1.0 - a.astype(xp.float32)) >= tolerance).astype(xp.float32))
        else:
            out.append(xp.full((n.channels,), 1.0 if n.act == "relu" else 0.0, xp.float32))
    return out


def linearize(graph: Graph, params: PyTree, tolerance: float = 0.01) -> PyTree:
    """Hard linearization: `params` with every PReLU slope within `tolerance` of 1 set to exactly 1.

    The prior freezes slopes at 1 as they reach the tolerance; this applies the same rule to a
    trained network (e.g. one trained without the freeze, or a looser tolerance) so the units are
    exactly linear and can be folded. Other leaves are returned unchanged (not copied).

    Example:
      >>> g = Graph((Node("in", 2, "input", ()), Node("a", 2, "prelu", (Edge(0, (Op("dense", ("d",)),)),), ("act",)),
      ...            Node("out", 1, "output", (Edge(1, (Op("dense", ("h",)),)),))))
      >>> linearize(g, {"act": {"slope": np.array([0.995, 0.5])}})["act"]["slope"].tolist()
      [1.0, 0.5]
    """
    out = jax.tree.map(lambda x: x, params)  # new containers, same leaves
    for n in graph.nodes:
        if n.act != "prelu":
            continue
        holder = out
        for key in n.slope:
            holder = holder[key]
        xp = jnp if isinstance(holder["slope"], jax.Array) else np
        holder["slope"] = xp.where(
            xp.abs(1.0 - holder["slope"]) < tolerance, xp.ones_like(holder["slope"]), holder["slope"]
        )
    return out


def check(graph: Graph) -> None:
    """Raise ValueError when the graph is malformed (order, channel counts of identity edges)."""
    nodes = graph.nodes
    if not nodes or nodes[0].act != "input" or nodes[-1].act != "output":
        raise ValueError("a graph starts with its input node and ends with its output node")
    for i, n in enumerate(nodes):
        if n.act not in ACTS:
            raise ValueError(f"node {n.name!r}: act {n.act!r} is not one of {ACTS}")
        if (i == 0) != (not n.operands):
            raise ValueError(f"node {n.name!r}: only the input node has no operands")
        for e in n.operands:
            if not 0 <= e.src < i:
                raise ValueError(f"node {n.name!r}: operand from node {e.src} is not an earlier node")
            if not e.full and nodes[e.src].channels != n.channels:
                raise ValueError(f"node {n.name!r}: identity operand from {nodes[e.src].name!r} changes channels")
            for op in e.ops:
                if op.kind not in OP_KINDS:
                    raise ValueError(f"node {n.name!r}: op {op.kind!r} is not one of {OP_KINDS}")
