"""Average path length (APL): the effective depth of a partially linearized network.

APL is the average number of nonlinear units met on a path from the input to the output of the
network's graph (`normjax.analysis.graph`), nodes being channels. Two averages:

* **normalized** (the default, as the paper): paths drawn by a backward random walk from a
  uniformly chosen logit, picking at each node one operand uniformly (½ each at a residual
  addition) and, on a conv or dense operand, one input channel uniformly; identity shortcuts keep
  the channel. Per channel: `A(v) = nl(v) + mean over operands of (mean A(u) | A(u)_c)`.
* **unnormalized**: every input→output path counted once. Per channel the path count `N` and the
  mean nonlinear count `A` obey `N(v) = Σ_edges N(u)` and `A(v) = nl(v) + Σ N(u) A(u) / N(v)`;
  counts live in log space (`logsumexp`), so ResNet-110 costs a few hundred small vector ops and
  nothing is enumerated.

Conventions (normjax's choices where the paper is silent): a conv or dense layer links every input
channel to every output channel by one edge; an identity shortcut links channel c to channel c; a
projection shortcut is a full layer; BN, pooling and the classifier are linear; the input channels
and the logits are linear nodes; both APLs are averaged over the logits.

All functions take the per-node nonlinearity vectors of `graph.nonlinear` and are traceable.

Example:
  >>> from normjax.analysis.graph import Edge, Graph, Node, Op
  >>> dense = lambda p: (Op("dense", (p,)),)
  >>> g = Graph((Node("in", 3, "input", ()), Node("a", 4, "relu", (Edge(0, dense("a")),)),
  ...            Node("b", 4, "relu", (Edge(1, dense("b")), Edge(0, dense("s")))),
  ...            Node("out", 2, "output", (Edge(2, dense("h")),))))
  >>> nl = nonlinear(g, {})
  >>> float(normalized_apl(g, nl)), round(float(unnormalized_apl(g, nl)), 4)  # 1 + (1 + 0)/2; paths: 4 of 2, 1 of 1
  (1.5, 1.8)

References:
  Mehmeti-Göpel & Disselhoff, `Average Path Length: Sparsification of Nonlinearities Creates
  Surprisingly Shallow Networks`, 2022 (arXiv:2211.17180); published as `Nonlinear Advantage:
  Trained Networks Might Not Be As Complex as You Think`, ICML 2023.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normjax.analysis.graph import Graph, nonlinear

__all__ = [
    "core_profile",
    "effective_width",
    "layer_counts",
    "nonlinear",
    "normalized_apl",
    "unnormalized_apl",
    "path_counts",
    "summary",
]


def _xp(nl: Sequence):
    """numpy for concrete inputs (fast on the host, no dispatch), jax.numpy under tracing."""
    return jnp if any(isinstance(x, jax.core.Tracer) for x in nl) else np


def _f32(nl: Sequence) -> list:
    xp = _xp(nl)
    return [xp.asarray(x, jnp.float32 if xp is jnp else np.float64) for x in nl]


def _logsumexp(xp, x, axis=None):
    m = xp.max(x, axis=axis, keepdims=True)
    return (
        xp.squeeze(m, axis) + xp.log(xp.sum(xp.exp(x - m), axis=axis))
        if axis is not None
        else m.reshape(()) + xp.log(xp.sum(xp.exp(x - m)))
    )


def normalized_apl(graph: Graph, nl: Sequence[jax.Array]) -> jax.Array:
    """Normalized APL: expected nonlinear units on a backward random walk from the logits.

    Args:
      graph: the model's graph (`model.graph()`).
      nl: per node, 1.0 where a channel is nonlinear, else 0.0 (`graph.nonlinear`).

    Returns:
      A scalar: nothing linearized, a CIFAR ResNet-20 gives 14.5 and its plain twin 19.

    References:
      Mehmeti-Göpel & Disselhoff, 2022 (arXiv:2211.17180).
    """
    xp, nl = _xp(nl), _f32(nl)
    if len(nl) != len(graph.nodes):
        raise ValueError(f"{len(nl)} nonlinearity vectors for a graph of {len(graph.nodes)} nodes")
    a: list[jax.Array] = []
    for node, n in zip(graph.nodes, nl):
        if not node.operands:
            a.append(n)
            continue
        parts = [xp.mean(a[e.src]) if e.full else a[e.src] for e in node.operands]
        a.append(n + sum(parts) / len(parts))
    return xp.mean(a[-1])


def path_counts(graph: Graph, nl: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    """Per node and channel: the log number of input→channel paths, and their mean nonlinear count.

    Args:
      graph: the model's graph.
      nl: per node, 1.0 where a channel is nonlinear (`graph.nonlinear`).

    Returns:
      `(log_counts, mean_counts)`, each a list of `[channels]` vectors (node order); an input
      channel starts one path (log count 0).
    """
    xp, nl = _xp(nl), _f32(nl)
    logn: list[jax.Array] = []
    mean: list[jax.Array] = []
    for node, n in zip(graph.nodes, nl, strict=True):
        if not node.operands:
            logn.append(xp.zeros_like(n))
            mean.append(n)
            continue
        logs, avgs = [], []
        for e in node.operands:
            lu, au = logn[e.src], mean[e.src]
            if e.full:  # every source channel: count = Σ N(u), mean weighted by N(u)
                total = _logsumexp(xp, lu)
                logs.append(xp.broadcast_to(total, n.shape))
                avgs.append(xp.broadcast_to(xp.sum(xp.exp(lu - total) * au), n.shape))
            else:
                logs.append(lu)
                avgs.append(au)
        logs_, avgs_ = xp.stack(logs), xp.stack(avgs)
        lv = _logsumexp(xp, logs_, axis=0)
        logn.append(lv)
        mean.append(n + xp.sum(xp.exp(logs_ - lv) * avgs_, axis=0))
    return logn, mean


def unnormalized_apl(graph: Graph, nl: Sequence[jax.Array]) -> jax.Array:
    """Unnormalized APL: the mean nonlinear count over all input→output paths (per logit, then
    averaged over the logits); path counts in log space.

    Args:
      graph: the model's graph.
      nl: per node, 1.0 where a channel is nonlinear.

    Returns:
      A scalar.
    """
    _, mean = path_counts(graph, nl)
    return _xp(nl).mean(mean[-1])


def layer_counts(graph: Graph, nl: Sequence[jax.Array]) -> jax.Array:
    """Nonlinear channels per hidden node (`graph.hidden()` order), a `[hidden]` float vector."""
    xp = _xp(nl)
    return xp.stack([xp.sum(xp.asarray(nl[i], xp.float32)) for i in graph.hidden()])


def core_profile(graph: Graph, nl: Sequence[jax.Array]) -> jax.Array:
    """The core network's per-layer profile: the fraction of nonlinear channels of each hidden node."""
    return layer_counts(graph, nl) / _xp(nl).asarray([graph.nodes[i].channels for i in graph.hidden()], "float32")


def effective_width(graph: Graph, nl: Sequence[jax.Array]) -> jax.Array:
    """Mean number of nonlinear channels over the hidden nodes that keep any (0 when none does)."""
    xp, counts = _xp(nl), layer_counts(graph, nl)
    kept = counts > 0
    return xp.where(xp.any(kept), xp.sum(counts) / xp.maximum(xp.sum(kept), 1), 0.0)


def summary(graph: Graph, params, tolerance: float = 0.01) -> dict:
    """Every APL quantity of a model's parameters, as plain Python numbers and lists.

    Args:
      graph: the model's graph.
      params: its parameter tree (PReLU slopes are read from it).
      tolerance: a PReLU channel is nonlinear when `|1 - slope| >= tolerance`.

    Returns:
      A dict: `apl` (normalized), `apl_unnormalized`, `nonlinear_units`, `units`,
      `nonlinear_fraction`, `effective_width`, `nonlinear_layers` (hidden nodes keeping any
      nonlinear channel), `layers` (names), `channels`, `counts` and `profile` (per hidden node).
    """
    nl = [np.asarray(x) for x in nonlinear(graph, jax.tree.map(np.asarray, params), tolerance)]
    counts = np.asarray(layer_counts(graph, nl))
    units = sum(graph.nodes[i].channels for i in graph.hidden())
    return {
        "apl": float(normalized_apl(graph, nl)),
        "apl_unnormalized": float(unnormalized_apl(graph, nl)),
        "nonlinear_units": int(counts.sum()),
        "units": units,
        "nonlinear_fraction": float(counts.sum() / units),
        "effective_width": float(effective_width(graph, nl)),
        "nonlinear_layers": int((counts > 0).sum()),
        "layers": graph.names(),
        "channels": [graph.nodes[i].channels for i in graph.hidden()],
        "counts": [int(c) for c in counts],
        "profile": [float(x) for x in np.asarray(core_profile(graph, nl))],
    }
