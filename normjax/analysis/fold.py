"""Folding: the smaller network a partially linearized network is, computing the same function.

A channel PReLU `max(0, x) + α_c min(0, x)` with `α_c == 1` is the identity on channel c. When
every channel of a node is linear, the node is an identity activation and the linear maps on its
two sides can be composed. `fold` rewrites a model's graph (`normjax.analysis.graph`) with its
parameters into a `Folded` network, and `apply_folded` runs it (eval mode). Hard-linearize first
(`graph.linearize`): only slopes *exactly* 1 count as linear.

Rules, in the order they are applied, and why:

1. **BatchNorm folds into the layer before it.** In eval mode BN is the per-channel affine map
   `x ↦ a x + c`, `a = scale / sqrt(var + eps)`, `c = bias - mean a`; scaling a conv/dense kernel's
   output channels by `a` and adding `c` to the layer's bias is the same function (exact up to
   float rounding). A BN on an edge without a weight layer becomes a diagonal 1x1 conv (dense).
   Biases live on nodes: a node's value is `Σ operands + bias`, then its activation.
2. **Parallel edges between the same two nodes are summed** into one (same pooling in front, same
   stride): kernels are zero-padded to a common centered size (exact: a zero-padded odd kernel with
   padding (K-1)/2 reads the same input positions with the same weights), an identity edge is a
   1x1 identity kernel (a dense identity on vectors). So a block whose units are all linear collapses
   with its shortcut into one layer.
3. **A fully linear hidden node is eliminated** when every pair (in-edge u→v, out-edge v→w) composes
   into one edge u→w under the rules below: each pair becomes an edge u→w, and the node's bias goes
   through the out-edge's linear map into w's bias (computed exactly, by running that map on the bias:
   a spatial conv of a constant bias is *not* constant at the zero-padded borders, so it becomes a
   position-dependent bias map `[H, W, C]`; this needs `input_shape`). Nodes are visited in
   topological order, repeatedly, until nothing changes (greedy). A fully linear node that cannot
   be eliminated stays as a **linear pass-through node** (no activation; BN still folded).
4. **Composition of two edges A then B** (each: an optional pooling, then one identity, conv or
   dense map):

   - with the identity, or dense∘dense (`K = K_A K_B`): always, exact;
   - conv∘conv: exact when either kernel is 1x1 (the composed conv has kernel
     `k_A + s_A (k_B - 1)`, stride `s_A s_B`, padding (K-1)/2; the taps of B land dilated by
     `s_A`): with a 1x1 A the intermediate's zero padding lies over input padding, with a 1x1 B
     there is no padding between them;
   - conv∘conv with both kernels spatial (k > 1) is **not exact at the image borders**: the
     original zero-pads the *intermediate* map, while the composed conv reads real values there
     (the deviation is confined to a border ring of width `(k_B - 1)/2` per composition, in B's
     output). The default (exact) mode never composes them; `spatial=True` does, the same formula,
     exact in the interior only (`normjax fold --spatial` reports the measured deviation);
   - **max-pooling is a barrier** (`maxpool`, `maxpool3`): it is not linear, so nothing composes
     across it (a node whose out-edge max-pools is never eliminated);
   - global average pooling then dense (the head): composes only with an identity or a 1x1
     stride-1 conv before it (which commute with the spatial mean); after a spatial or strided
     conv it stays as is, in both modes (a mean over a zero-padded map is not a mean of a
     conv's input);
   - flatten then dense (the MLP's first layer): composes only with an identity before it.
5. Partially linear nodes keep their PReLU (all their slopes); ReLU nodes are never linear.

**1-D signals** (maps of height 1, `1 x k` kernels: the 1-D ResNets and CNNs on MNIST-1D) fold by
the same rules, axis by axis: a composed kernel stays of height 1; composing with a `1 x 1` conv is
exact; two `1 x k` convs (k > 1) compose only with `spatial=True`, exact away from the signal's two
ends (a ring of `(k_B - 1)/2` samples at each end deviates); max-pooling pools the length alone.

Conventions of `stats` (the same for the original graph and the folded network): **depth** is the
number of weight layers (conv or dense) on the longest input→output path; **params** counts every
parameter inference needs (kernels, dense biases, BN scale and bias, PReLU slopes; folded: kernels,
node biases — a bias map counts H·W·C — and the slopes of the nodes that keep a PReLU);
**flops** is 2·MACs of the conv and dense layers at the given input shape plus, for the original,
one multiply-add per element of each BN (its eval-mode affine map); additions of biases and
shortcuts, activations and pooling are not counted.

Example:
  >>> from normjax.analysis.graph import Edge, Graph, Node, Op
  >>> g = Graph((Node("in", 2, "input", ()),
  ...            Node("a", 3, "prelu", (Edge(0, (Op("dense", ("d",)),)),), ("act",)),
  ...            Node("out", 1, "output", (Edge(1, (Op("dense", ("h",)),)),))))
  >>> params = {"d": {"kernel": np.ones((2, 3))}, "act": {"slope": np.ones(3)},
  ...           "h": {"kernel": np.ones((3, 1)), "bias": np.zeros(1)}}
  >>> f = fold(g, params, {})        # slopes all 1: `a` is linear, one dense layer remains
  >>> [n.name for n in f.nodes], f.nodes[1].operands[0].kernel.tolist()
  (['in', 'out'], [[3.0], [3.0]])
  >>> stats(g, input_shape=(2,), params=params)["depth"], stats(f, input_shape=(2,))["depth"]
  (2, 1)

References:
  Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
  Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180); published as `Nonlinear Advantage:
  Trained Networks Might Not Be As Complex as You Think`, ICML 2023.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normjax.analysis.graph import MAXPOOLS, Graph, max_pool, pooled_hw, subtree

__all__ = [
    "FEdge",
    "FNode",
    "Folded",
    "apply_folded",
    "apply_graph",
    "compose_conv",
    "fold",
    "load_folded",
    "save_folded",
    "stats",
]

PyTree = Any
PRES = (None, "maxpool", "maxpool3", "avgpool", "flatten")
KINDS = ("identity", "conv", "dense")
FOLDED_ACTS = ("input", "linear", "relu", "prelu", "output")
LINEAR_ACTS = ("linear", "identity")  # acts of a graph node that are linear by definition
_DN = ("NHWC", "HWIO", "NHWC")
_HI = jax.lax.Precision.HIGHEST


class FEdge(NamedTuple):
    """An operand of a folded node: node `src`'s value through `pre`, then one linear map.

    `pre`: None, `maxpool` (2x2, stride 2, along each axis at least 2 long), `maxpool3` (3x3,
    stride 2, padding 1), as the graph's ops (`normjax.analysis.graph.Op`), `avgpool` (global
    mean over space) or `flatten`. `kind`: `identity` (`kernel` None), `conv` (`kernel`
    `[kh, kw, cin, cout]` HWIO, odd sides, zero padding (k-1)/2 per axis, `stride` on both axes;
    `[1, k, ...]` on 1-D signals, maps of height 1) or `dense` (`kernel` `[cin, cout]`). No bias:
    biases live on nodes.
    """

    src: int
    kind: str
    kernel: Any = None
    stride: int = 1
    pre: str | None = None


class FNode(NamedTuple):
    """A folded node: `Σ operands + bias`, then `act`.

    `act`: `input`, `linear` (a pass-through: no activation), `relu`, `prelu` (`slope [C]`) or
    `output` (the logits). `bias`: None, `[C]`, or a position-dependent map `[H, W, C]`.
    """

    name: str
    channels: int
    act: str
    operands: tuple[FEdge, ...]
    bias: Any = None
    slope: Any = None


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Folded:
    """A folded network: nodes in topological order, `nodes[0]` the input, `nodes[-1]` the logits.

    Attributes:
      nodes: `FNode`s; each operand (`FEdge`) refers to an earlier node by index.
      input_shape: the input shape `(H, W, C)` (or `(features,)`) the bias maps were computed for;
        None when folding needed none (the network then runs on any input size).
      spatial: whether spatial∘spatial convs were composed (exact in the interior only).
      eliminated: names of the original nodes folded away.

    A pytree: its arrays are the leaves, so `jax.jit(apply_folded)(folded, x)` works.
    """

    nodes: tuple[FNode, ...]
    input_shape: tuple[int, ...] | None = None
    spatial: bool = False
    eliminated: tuple[str, ...] = ()

    def tree_flatten(self):
        leaves, skeleton = [], []
        for n in self.nodes:
            edges = []
            for e in n.operands:
                if e.kernel is not None:
                    leaves.append(e.kernel)
                edges.append((e.src, e.kind, e.kernel is not None, e.stride, e.pre))
            for a in (n.bias, n.slope):
                if a is not None:
                    leaves.append(a)
            skeleton.append((n.name, n.channels, n.act, tuple(edges), n.bias is not None, n.slope is not None))
        return leaves, (tuple(skeleton), self.input_shape, self.spatial, self.eliminated)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        skeleton, input_shape, spatial, eliminated = aux
        it = iter(leaves)
        nodes = []
        for name, channels, act, edges, has_bias, has_slope in skeleton:
            ops = tuple(
                FEdge(src, kind, next(it) if has_k else None, stride, pre) for src, kind, has_k, stride, pre in edges
            )
            bias = next(it) if has_bias else None
            slope = next(it) if has_slope else None
            nodes.append(FNode(name, channels, act, ops, bias, slope))
        return cls(tuple(nodes), input_shape, spatial, eliminated)

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


# ---- kernels and biases (float64 numpy) ------------------------------------------------------


def compose_conv(a: np.ndarray, stride_a: int, b: np.ndarray) -> np.ndarray:
    """The kernel of conv A (stride `stride_a`) followed by conv B, as one conv.

    Per spatial axis, kernel size `k_A + s_A (k_B - 1)`, stride `s_A s_B`, padding (K-1)/2: B's
    taps land dilated by `s_A`, each convolved with A. An axis where both kernels have one tap (a
    1-D signal's height) keeps one. Exact for 'valid' convs; with zero padding exact when either
    kernel is 1x1, otherwise in the interior only (module docstring).

    Args:
      a: `[kha, kwa, c0, c1]` (HWIO).
      stride_a: A's stride.
      b: `[khb, kwb, c1, c2]`.

    Returns:
      `[KH, KW, c0, c2]`.

    Example:
      >>> compose_conv(np.ones((3, 3, 1, 1)), 2, np.ones((3, 3, 1, 1)))[:, :, 0, 0][0].tolist()
      [1.0, 1.0, 2.0, 1.0, 2.0, 1.0, 1.0]
      >>> compose_conv(np.ones((1, 3, 1, 1)), 2, np.ones((1, 3, 1, 1))).shape   # 1-D
      (1, 7, 1, 1)
    """
    s = stride_a
    size = [ka + s * (kb - 1) for ka, kb in zip(a.shape[:2], b.shape[:2])]
    out = np.zeros((*size, a.shape[2], b.shape[3]), np.result_type(a, b))
    ka_h, ka_w = a.shape[:2]
    for ty in range(b.shape[0]):
        for tx in range(b.shape[1]):
            out[s * ty : s * ty + ka_h, s * tx : s * tx + ka_w] += np.einsum("yxij,jk->yxik", a, b[ty, tx])
    return out


def _conv_np(x: np.ndarray, k: np.ndarray, stride: int) -> np.ndarray:
    """`x [H, W, Ci]` conv `k [kh, kw, Ci, Co]`, zero padding (k-1)//2 per axis, float64 (for bias maps)."""
    (kh, kw), (ph, pw) = k.shape[:2], ((k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2)
    h, w = x.shape[:2]
    ho, wo = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
    xp = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
    out = np.zeros((ho, wo, k.shape[3]))
    for ty in range(kh):
        for tx in range(kw):
            out += xp[ty : ty + stride * (ho - 1) + 1 : stride, tx : tx + stride * (wo - 1) + 1 : stride] @ k[ty, tx]
    return out


def _pad_center(k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    dh, dw = (size[0] - k.shape[0]) // 2, (size[1] - k.shape[1]) // 2
    return np.pad(k, ((dh, dh), (dw, dw), (0, 0), (0, 0)))


def _spatial_kernel(e: FEdge) -> bool:
    return e.kind == "conv" and max(e.kernel.shape[:2]) > 1


def _pooled_hw(hw: tuple[int, int], pre: str | None) -> tuple[int, int]:
    """Spatial size after max-pool `pre` (unchanged for None and along an axis the pool skips)."""
    return pooled_hw(hw, pre) if pre in MAXPOOLS else hw


def _conv_hw(hw: tuple[int, int], kernel_shape: tuple[int, ...], stride: int) -> tuple[int, int]:
    """Spatial size after a conv of `[kh, kw, ...]`, padding (k-1)/2 per axis, `stride` on both."""
    return tuple((n + 2 * ((k - 1) // 2) - k) // stride + 1 for n, k in zip(hw, kernel_shape[:2]))


def _out_hw(hw: tuple[int, int] | None, e: FEdge) -> tuple[int, int] | None:
    """Spatial size after edge `e` (None: a vector, or unknown)."""
    if hw is None or e.pre in ("avgpool", "flatten") or e.kind == "dense":
        return None
    hw = _pooled_hw(hw, e.pre)
    if e.kind == "conv":
        hw = _conv_hw(hw, e.kernel.shape, e.stride)
    return hw


# ---- the original graph, read into edges with BN folded ---------------------------------------


def _read_edge(
    graph: Graph, node_index: int, edge, params: PyTree, stats_: PyTree, vector_in: bool
) -> tuple[FEdge, np.ndarray | None]:
    """One graph edge as an `FEdge` (BN folded into its weight layer) and the bias it adds."""
    name = graph.nodes[node_index].name
    pre, kind, kernel, stride, bias, vector = None, "identity", None, 1, None, vector_in
    for op in edge.ops:
        if op.kind in MAXPOOLS or op.kind in ("avgpool", "flatten"):
            if kind != "identity" or pre is not None or bias is not None or vector:
                raise ValueError(
                    f"node {name!r}: {op.kind} after a weight layer, a pooling or on a vector is not supported by fold"
                )
            pre, vector = op.kind, op.kind not in MAXPOOLS
        elif op.kind in ("conv", "dense"):
            if kind != "identity" or bias is not None:
                raise ValueError(f"node {name!r}: more than one weight layer on an edge is not supported by fold")
            p = subtree(params, op.path, op.index)
            kernel = np.asarray(p["kernel"], np.float64)
            if op.kind == "conv":
                if vector or kernel.ndim != 4 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
                    raise ValueError(
                        f"node {name!r}: conv kernel {kernel.shape} on a "
                        f"{'vector' if vector else 'map'}; fold needs odd kernels on maps"
                    )
                stride = op.stride
            else:
                if not vector or kernel.ndim != 2:
                    raise ValueError(f"node {name!r}: dense kernel {kernel.shape} on a map; flatten or pool first")
                if p.get("bias") is not None:
                    bias = np.asarray(p["bias"], np.float64)
            kind = op.kind
        elif op.kind == "bn":
            p, s = subtree(params, op.path, op.index), subtree(stats_, op.path, op.index)
            a = np.asarray(p["scale"], np.float64) / np.sqrt(np.asarray(s["var"], np.float64) + op.eps)
            c = np.asarray(p["bias"], np.float64) - np.asarray(s["mean"], np.float64) * a
            if kind == "identity":
                kind, kernel = ("dense", np.diag(a)) if vector else ("conv", np.diag(a)[None, None])
            else:
                kernel = kernel * a
            bias = c if bias is None else bias * a + c
        else:
            raise ValueError(f"node {name!r}: op {op.kind!r} is not supported by fold")
    return FEdge(edge.src, kind, kernel, stride, pre), bias


def _input_is_vector(graph: Graph, input_shape) -> bool:
    if input_shape is not None:
        return len(input_shape) == 1
    firsts = [e.ops[0].kind for n in graph.nodes for e in n.operands if e.src == 0 and e.ops]
    return bool(firsts) and all(k == "dense" for k in firsts)


def _add_bias(b1, b2):
    if b1 is None or b2 is None:
        return b2 if b1 is None else b1
    return b1 + b2  # [C] + [H, W, C] broadcasts


class _Work:
    """Mutable nodes during folding: dicts with name, channels, act, edges, bias, slope, vector, hw."""

    def __init__(self, nodes: list[dict], spatial: bool):
        self.nodes, self.spatial = nodes, spatial

    def edge_in_vector(self, e: FEdge) -> bool:
        """Whether the map an edge's kernel acts on is a vector (after its pooling)."""
        return e.pre in ("avgpool", "flatten") or self.nodes[e.src]["vector"]

    def identity_kernel(self, e: FEdge, channels: int) -> np.ndarray:
        eye = np.eye(channels)
        return eye if self.edge_in_vector(e) else eye[None, None]

    def sum_edges(self, e1: FEdge, e2: FEdge, channels: int) -> FEdge | None:
        """One edge computing `e1 + e2` (same source), or None when they cannot be merged."""
        if e1.src != e2.src or e1.pre != e2.pre:
            return None
        k1 = self.identity_kernel(e1, channels) if e1.kind == "identity" else e1.kernel
        k2 = self.identity_kernel(e2, channels) if e2.kind == "identity" else e2.kernel
        if k1.ndim != k2.ndim or k1.shape[-2:] != k2.shape[-2:]:
            return None
        if k1.ndim == 2:
            return FEdge(e1.src, "dense", k1 + k2, 1, e1.pre)
        s1, s2 = (1 if e.kind == "identity" else e.stride for e in (e1, e2))
        if s1 != s2:
            return None
        size = (max(k1.shape[0], k2.shape[0]), max(k1.shape[1], k2.shape[1]))
        return FEdge(e1.src, "conv", _pad_center(k1, size) + _pad_center(k2, size), s1, e1.pre)

    def merge_parallel(self, w: int) -> None:
        edges: list[FEdge] = []
        for e in self.nodes[w]["edges"]:
            for i, f in enumerate(edges):
                merged = self.sum_edges(f, e, self.nodes[w]["channels"])
                if merged is not None:
                    edges[i] = merged
                    break
            else:
                edges.append(e)
        self.nodes[w]["edges"] = edges

    def compose(self, a: FEdge, b: FEdge) -> FEdge | None:
        """One edge computing b(a(x)) (module docstring, rule 4), or None."""
        if b.pre in MAXPOOLS:
            return None
        if b.pre in ("avgpool", "flatten"):
            if a.kind == "identity" and a.pre is None:
                return b._replace(src=a.src)
            if (
                b.pre == "avgpool"
                and a.pre is None
                and a.kind == "conv"
                and a.kernel.shape[:2] == (1, 1)
                and a.stride == 1
                and b.kind in ("identity", "dense")
            ):
                m = a.kernel[0, 0]
                return FEdge(a.src, "dense", m if b.kind == "identity" else m @ b.kernel, 1, "avgpool")
            return None
        if b.kind == "identity":
            return a
        if a.kind == "identity":
            return b._replace(src=a.src, pre=a.pre)
        if a.kind == "dense" and b.kind == "dense":
            return FEdge(a.src, "dense", a.kernel @ b.kernel, 1, a.pre)
        if a.kind == "conv" and b.kind == "conv":
            if _spatial_kernel(a) and _spatial_kernel(b) and not self.spatial:
                return None
            return FEdge(a.src, "conv", compose_conv(a.kernel, a.stride, b.kernel), a.stride * b.stride, a.pre)
        return None

    def push_bias(self, v: int, b: FEdge):
        """Node v's bias through edge b's linear map (exactly, zero padding included)."""
        c = self.nodes[v]["bias"]
        if c is None:
            return None
        if c.ndim == 1 and b.pre in (None, "avgpool") and not _spatial_kernel(b):
            if b.kind == "identity":
                return c
            return c @ (b.kernel[0, 0] if b.kind == "conv" else b.kernel)
        hw = self.nodes[v]["hw"]
        if hw is None:
            raise ValueError(
                f"folding node {self.nodes[v]['name']!r} turns its bias into a position-dependent "
                "map: pass input_shape=(H, W, C) to fold"
            )
        x = np.broadcast_to(c, hw + (c.shape[-1],)) if c.ndim == 1 else c
        if b.pre == "avgpool":
            x = x.mean((0, 1))
        elif b.pre == "flatten":
            x = x.reshape(-1)
        if b.kind == "conv":
            return _conv_np(x, b.kernel, b.stride)
        return x @ b.kernel if b.kind == "dense" else np.array(x)

    def try_eliminate(self, v: int) -> bool:
        node = self.nodes[v]
        outs = [
            (w, j, e) for w, n in enumerate(self.nodes) if n is not None for j, e in enumerate(n["edges"]) if e.src == v
        ]
        new: dict[int, list[FEdge]] = {}
        for w, _, b in outs:
            for a in node["edges"]:
                c = self.compose(a, b)
                if c is None:
                    return False
                new.setdefault(w, []).append(c)
        biases = {}
        for w, j, b in outs:  # before any change: may raise (bias map without input_shape)
            biases[(w, j)] = self.push_bias(v, b)
        for w in {w for w, _, _ in outs}:
            n = self.nodes[w]
            for j, e in enumerate(n["edges"]):
                if e.src == v:
                    n["bias"] = _add_bias(n["bias"], biases[(w, j)])
            n["edges"] = [e for e in n["edges"] if e.src != v] + new.get(w, [])
            self.merge_parallel(w)
        self.nodes[v] = None
        return True


def fold(
    graph: Graph,
    params: PyTree,
    batch_stats: PyTree,
    *,
    spatial: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> Folded:
    """The folded network of a (hard-linearized) model: BN folded, fully linear nodes composed away.

    Args:
      graph: the model's graph (`model.graph()`).
      params: its parameter tree (`nnx.to_pure_dict(nnx.state(model, nnx.Param))`); PReLU slopes
        exactly 1 are linear (apply `graph.linearize` first for a tolerance).
      batch_stats: its BN statistics (`nnx.BatchStat`), used in eval mode.
      spatial: also compose two spatial (k > 1) convs: exact in the interior only.
      input_shape: `(H, W, C)` (or `(features,)`): needed when a folded bias meets a spatial conv
        (it becomes a position-dependent map); the result then runs on inputs of this size only.

    Returns:
      A `Folded` network; `apply_folded(folded, x)` equals the model's eval-mode logits (in the
      interior sense when `spatial`).

    Raises:
      ValueError: for a graph op fold does not support, or a bias map without `input_shape`.

    Example:
      >>> from normjax.analysis.graph import Edge, Graph, Node, Op
      >>> g = Graph((Node("in", 1, "input", ()), Node("a", 1, "relu", (Edge(0, (Op("dense", ("d",)),)),)),
      ...            Node("out", 1, "output", (Edge(1, (Op("dense", ("h",)),)),))))
      >>> f = fold(g, {"d": {"kernel": np.full((1, 1), 2.0)}, "h": {"kernel": np.ones((1, 1))}}, {})
      >>> [n.act for n in f.nodes], float(apply_folded(f, -np.ones((1, 1)))[0, 0])
      (['input', 'relu', 'output'], 0.0)

    References:
      Mehmeti-Göpel & Disselhoff, 2022 (arXiv:2211.17180).
    """
    params = jax.tree.map(np.asarray, params)
    batch_stats = jax.tree.map(np.asarray, batch_stats)
    vector_input = _input_is_vector(graph, input_shape)
    nodes: list[dict] = []
    for i, n in enumerate(graph.nodes):
        edges, bias = [], None
        for e in n.operands:
            fe, b = _read_edge(graph, i, e, params, batch_stats, nodes[e.src]["vector"])
            edges.append(fe)
            bias = _add_bias(bias, b)
        vector = (
            vector_input
            if i == 0
            else any(
                fe.pre in ("avgpool", "flatten")
                or fe.kind == "dense"
                or (fe.kind == "identity" and nodes[fe.src]["vector"])
                for fe in edges
            )
        )
        if i == 0:
            hw = None if input_shape is None or vector_input else tuple(input_shape[:2])
        else:
            hws = {_out_hw(nodes[fe.src]["hw"], fe) for fe in edges}
            if len(hws) > 1:
                raise ValueError(f"node {n.name!r}: operands of different spatial sizes {sorted(hws, key=str)}")
            hw = hws.pop()
        act, slope = n.act, None
        if act == "prelu":
            slope = np.asarray(subtree(params, n.slope, n.index)["slope"], np.float32)
            if np.all(slope == 1.0):
                act, slope = "linear", None
        elif act in LINEAR_ACTS:
            act = "linear"
        elif act not in ("input", "relu", "output"):
            raise ValueError(f"node {n.name!r}: act {act!r} is not supported by fold")
        nodes.append(
            dict(name=n.name, channels=n.channels, act=act, edges=edges, bias=bias, slope=slope, vector=vector, hw=hw)
        )
    work = _Work(nodes, spatial)
    for w in range(len(nodes)):
        work.merge_parallel(w)
    eliminated, changed = [], True
    while changed:
        changed = False
        for v in range(1, len(nodes) - 1):
            if work.nodes[v] is not None and work.nodes[v]["act"] == "linear" and work.try_eliminate(v):
                eliminated.append(graph.nodes[v].name)
                changed = True
    keep = [i for i, n in enumerate(work.nodes) if n is not None]
    index = {old: new for new, old in enumerate(keep)}
    out, bias_maps = [], False
    for i in keep:
        n = work.nodes[i]
        edges = tuple(
            FEdge(index[e.src], e.kind, None if e.kernel is None else e.kernel.astype(np.float32), e.stride, e.pre)
            for e in n["edges"]
        )
        bias = None if n["bias"] is None else np.asarray(n["bias"], np.float32)
        bias_maps |= bias is not None and bias.ndim == 3
        out.append(FNode(n["name"], n["channels"], n["act"], edges, bias, n["slope"]))
    shape = tuple(int(s) for s in input_shape) if input_shape is not None and bias_maps else None
    return Folded(tuple(out), shape, bool(spatial), tuple(eliminated))


# ---- running --------------------------------------------------------------------------------


def _pool(h: jax.Array, pre: str | None) -> jax.Array:
    if pre in MAXPOOLS:
        return max_pool(h, pre)
    if pre == "avgpool":
        return h.mean(axis=(1, 2))
    if pre == "flatten":
        return h.reshape(h.shape[0], -1)
    return h


def _conv(h: jax.Array, k: jax.Array, stride: int) -> jax.Array:
    ph, pw = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
    return jax.lax.conv_general_dilated(
        h, k, (stride, stride), ((ph, ph), (pw, pw)), dimension_numbers=_DN, precision=_HI
    )


def _act(h: jax.Array, act: str, slope) -> jax.Array:
    if act == "relu":
        return jax.nn.relu(h)
    if act == "prelu":
        return jnp.maximum(h, 0) + slope * jnp.minimum(h, 0)
    return h


def apply_folded(folded: Folded, x: jax.Array, *, all_nodes: bool = False):
    """Logits of a folded network (eval mode); jittable.

    Args:
      folded: from `fold` (or `load_folded`).
      x: the preprocessed input `[B, H, W, C]` (an MLP's input may also be `[B, features]`).
      all_nodes: return every node's value, `{name: array}`, instead of the logits.

    Returns:
      `[B, classes]` float32 logits (or the dict).

    Example:
      >>> f = Folded((FNode("in", 2, "input", ()), FNode("out", 1, "output", (FEdge(0, "dense", np.ones((2, 1))),),
      ...             np.array([0.5]))))
      >>> apply_folded(f, np.ones((1, 2))).tolist()
      [[2.5]]
    """
    x = jnp.asarray(x, jnp.float32)
    if folded.input_shape is not None and tuple(x.shape[1:]) != tuple(folded.input_shape):
        raise ValueError(
            f"input shape {tuple(x.shape[1:])} differs from {folded.input_shape}, the shape this "
            "network was folded for (its bias maps depend on it)"
        )
    values = [x]
    for node in folded.nodes[1:]:
        h = None
        for e in node.operands:
            y = _pool(values[e.src], e.pre)
            if e.kind == "conv":
                y = _conv(y, jnp.asarray(e.kernel, jnp.float32), e.stride)
            elif e.kind == "dense":
                y = jnp.dot(y, jnp.asarray(e.kernel, jnp.float32), precision=_HI)
            h = y if h is None else h + y
        if node.bias is not None:
            h = h + jnp.asarray(node.bias, jnp.float32)
        values.append(_act(h, node.act, node.slope))
    return {n.name: v for n, v in zip(folded.nodes, values)} if all_nodes else values[-1]


def apply_graph(graph: Graph, params: PyTree, batch_stats: PyTree, x: jax.Array, *, all_nodes: bool = False):
    """The original model evaluated from its graph, op by op (eval mode): the reference `fold` keeps.

    Args:
      graph: the model's graph.
      params: its parameters.
      batch_stats: its BN statistics.
      x: the preprocessed input `[B, H, W, C]`.
      all_nodes: return every node's value, `{name: array}`, instead of the logits.

    Returns:
      `[B, classes]` logits (equal to `model(x, train=False)` up to float rounding), or the dict.
    """
    values = [jnp.asarray(x, jnp.float32)]
    for node in graph.nodes[1:]:
        h = None
        for e in node.operands:
            y = values[e.src]
            for op in e.ops:
                if op.kind in MAXPOOLS or op.kind in ("avgpool", "flatten"):
                    y = _pool(y, op.kind)
                    continue
                p = subtree(params, op.path, op.index)
                if op.kind == "conv":
                    y = _conv(y, jnp.asarray(p["kernel"]), op.stride)
                elif op.kind == "dense":
                    y = jnp.dot(y, jnp.asarray(p["kernel"]), precision=_HI)
                    y = y if p.get("bias") is None else y + p["bias"]
                else:  # bn, eval mode as `BatchNorm`
                    s = subtree(batch_stats, op.path, op.index)
                    y = (y - s["mean"]) * jax.lax.rsqrt(s["var"] + op.eps) * p["scale"] + p["bias"]
            h = y if h is None else h + y
        slope = subtree(params, node.slope, node.index)["slope"] if node.act == "prelu" else None
        values.append(_act(h, node.act, slope))
    return {n.name: v for n, v in zip(graph.nodes, values)} if all_nodes else values[-1]


# ---- statistics -----------------------------------------------------------------------------


def stats(net: Graph | Folded, *, input_shape: tuple[int, ...], params: PyTree | None = None) -> dict:
    """Depth, parameter count and inference FLOPs, computed the same way for a graph and a folded net.

    Args:
      net: the original `Graph` (then `params` is required: shapes are read from it) or a `Folded`.
      input_shape: `(H, W, C)` of one input (or `(features,)`).
      params: the graph's parameter tree.

    Returns:
      `{"depth", "params", "flops", "weight_layers", "hidden_nodes", "nonlinear_nodes"}`:
      depth = weight layers on the longest input→output path; flops = 2·MACs (module docstring);
      weight_layers = conv/dense kernels; hidden_nodes = nodes besides input and logits;
      nonlinear_nodes = hidden nodes with an activation that is not the identity.

    Example:
      >>> f = Folded((FNode("in", 2, "input", ()), FNode("out", 1, "output", (FEdge(0, "dense", np.ones((2, 1))),),
      ...             np.array([0.5]))))
      >>> stats(f, input_shape=(2,))
      {'depth': 1, 'params': 3, 'flops': 4, 'weight_layers': 1, 'hidden_nodes': 0, 'nonlinear_nodes': 0}
    """
    if isinstance(net, Graph):
        if params is None:
            raise ValueError("stats of a Graph needs its params")
        return _graph_stats(net, jax.tree.map(np.asarray, params), tuple(input_shape))
    return _folded_stats(net, tuple(input_shape))


def _result(depth, n_params, flops, layers, nodes, nonlinear) -> dict:
    return {
        "depth": int(depth),
        "params": int(n_params),
        "flops": int(flops),
        "weight_layers": int(layers),
        "hidden_nodes": int(nodes),
        "nonlinear_nodes": int(nonlinear),
    }


def _graph_stats(graph: Graph, params: PyTree, input_shape: tuple) -> dict:
    hws = [None if len(input_shape) == 1 else input_shape[:2]]
    depth, total, flops, layers = [0], 0, 0, 0
    for node in graph.nodes[1:]:
        d, hw_node = 0, None
        for e in node.operands:
            hw, n_w = hws[e.src], 0
            for op in e.ops:
                if op.kind in MAXPOOLS:
                    hw = _pooled_hw(hw, op.kind)
                elif op.kind in ("avgpool", "flatten"):
                    hw = None
                elif op.kind in ("conv", "dense"):
                    p = subtree(params, op.path, op.index)
                    k = p["kernel"]
                    if op.kind == "conv":
                        hw = _conv_hw(hw, k.shape, op.stride)
                        flops += 2 * hw[0] * hw[1] * k.size
                    else:
                        hw = None
                        flops += 2 * k.size
                        total += 0 if p.get("bias") is None else p["bias"].size
                    total += k.size
                    n_w, layers = n_w + 1, layers + 1
                elif op.kind == "bn":
                    p = subtree(params, op.path, op.index)
                    total += p["scale"].size + p["bias"].size
                    flops += 2 * p["scale"].size * (1 if hw is None else hw[0] * hw[1])
            d, hw_node = max(d, depth[e.src] + n_w), hw
        if node.act == "prelu":
            total += subtree(params, node.slope, node.index)["slope"].size
        depth.append(d)
        hws.append(hw_node)
    hidden = graph.hidden()
    nonlinear = sum(graph.nodes[i].act not in LINEAR_ACTS for i in hidden)
    return _result(depth[-1], total, flops, layers, len(hidden), nonlinear)


def _folded_stats(folded: Folded, input_shape: tuple) -> dict:
    hws = [None if len(input_shape) == 1 else input_shape[:2]]
    depth, total, flops, layers = [0], 0, 0, 0
    for node in folded.nodes[1:]:
        d, hw = 0, None
        for e in node.operands:
            hw = _out_hw(hws[e.src], e)
            if e.kind != "identity":
                k = np.asarray(e.kernel)
                total += k.size
                flops += 2 * k.size * (hw[0] * hw[1] if e.kind == "conv" else 1)
                layers += 1
            d = max(d, depth[e.src] + (e.kind != "identity"))
        for a in (node.bias, node.slope):
            total += 0 if a is None else np.asarray(a).size
        depth.append(d)
        hws.append(hw)
    hidden = folded.nodes[1:-1]
    return _result(depth[-1], total, flops, layers, len(hidden), sum(n.act in ("relu", "prelu") for n in hidden))


# ---- saving ---------------------------------------------------------------------------------


def save_folded(folded: Folded, directory: str | os.PathLike) -> list[Path]:
    """Write `folded.json` (structure) and `folded.npz` (arrays) into `directory`; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays, nodes = {}, []
    for i, n in enumerate(folded.nodes):

        def put(key, a):
            if a is None:
                return None
            arrays[key] = np.asarray(a)
            return key

        nodes.append(
            {
                "name": n.name,
                "channels": n.channels,
                "act": n.act,
                "bias": put(f"n{i}.bias", n.bias),
                "slope": put(f"n{i}.slope", n.slope),
                "operands": [
                    {
                        "src": e.src,
                        "kind": e.kind,
                        "stride": e.stride,
                        "pre": e.pre,
                        "kernel": put(f"n{i}.e{j}.kernel", e.kernel),
                    }
                    for j, e in enumerate(n.operands)
                ],
            }
        )
    meta = {
        "format": 1,
        "input_shape": None if folded.input_shape is None else list(folded.input_shape),
        "spatial": folded.spatial,
        "eliminated": list(folded.eliminated),
        "nodes": nodes,
    }
    tmp = d / "folded.npz.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, d / "folded.npz")
    (d / "folded.json").write_text(json.dumps(meta, indent=1) + "\n")
    return [d / "folded.json", d / "folded.npz"]


def load_folded(directory: str | os.PathLike) -> Folded:
    """The `Folded` network `save_folded` wrote into `directory`.

    Raises:
      FileNotFoundError: when `folded.json` or `folded.npz` is missing.
    """
    d = Path(directory)
    meta = json.loads((d / "folded.json").read_text())
    with np.load(d / "folded.npz") as z:
        arrays = {k: z[k] for k in z.files}
    get = lambda key: None if key is None else arrays[key]  # noqa: E731
    nodes = tuple(
        FNode(
            n["name"],
            n["channels"],
            n["act"],
            tuple(FEdge(e["src"], e["kind"], get(e["kernel"]), e["stride"], e["pre"]) for e in n["operands"]),
            get(n["bias"]),
            get(n["slope"]),
        )
        for n in meta["nodes"]
    )
    shape = None if meta["input_shape"] is None else tuple(meta["input_shape"])
    return Folded(nodes, shape, bool(meta["spatial"]), tuple(meta["eliminated"]))
