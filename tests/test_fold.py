"""Folding partially linear networks (normjax.analysis.fold) and `normjax fold` (normjax.studies.apl.fold_checkpoint).

Folded logits are compared with the model's own eval-mode forward pass on random parameters and
BN statistics; the measured relative deviation (max |Δ| / max(1, max |logit|)) is at most 6e-7 on CPU
(float32); the tests allow 1e-5.
"""

import copy
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from normjax.analysis.fold import (
    FEdge,
    FNode,
    Folded,
    apply_folded,
    apply_graph,
    compose_conv,
    fold,
    load_folded,
    save_folded,
    stats,
)
from normjax.analysis.graph import Edge, Graph, Node, Op, subtree
from normjax.config import DEFAULTS
from normjax.errors import UserError
from normjax.models import BottleneckResNet, build_model

RTOL = 1e-5
SHAPE = (8, 8, 2)
apply_jit = jax.jit(apply_folded)


# ---- helpers --------------------------------------------------------------------------------


@functools.cache
def _model(
    name: str,
    depth: int,
    shortcut: bool | str = "auto",
    activation: str = "prelu",
    width: int = 4,
    shape: tuple = SHAPE,
    classes: int = 3,
):
    """Graph, templates and a jitted eval-mode forward of a tiny model (built abstractly: fast)."""
    cfg = dict(DEFAULTS["model"], name=name, depth=depth, activation=activation, width=width, shortcut=shortcut)
    return _wrap(nnx.eval_shape(lambda: build_model(cfg, num_classes=classes, image_shape=shape, rngs=nnx.Rngs(0))))


@functools.cache
def _bottleneck(stem: str = "imagenet"):
    """`_model` of a tiny bottleneck ResNet (one block per stage, widths 2-16, PReLU)."""
    return _wrap(
        nnx.eval_shape(
            lambda: BottleneckResNet(
                num_classes=3, width=2, stem=stem, stages=(1, 1, 1, 1), activation="prelu", rngs=nnx.Rngs(0)
            )
        )
    )


def _wrap(abstract):
    """Graph, parameter and statistics templates, and a jitted eval-mode forward of an abstract model."""
    gdef, p, s = nnx.split(abstract, nnx.Param, nnx.BatchStat)

    @jax.jit
    def forward(params, stats_, x):
        pp, ss = jax.tree.map(lambda v: v, p), jax.tree.map(lambda v: v, s)
        nnx.replace_by_pure_dict(pp, params)
        nnx.replace_by_pure_dict(ss, stats_)
        return nnx.merge(gdef, pp, ss)(x, train=False)

    return abstract.graph(), nnx.to_pure_dict(p), nnx.to_pure_dict(s), forward


def _randomize(params, stats_, seed=0):
    """Random kernels, BN scales/biases/statistics, head bias and nonlinear slopes in [0, 0.5)."""
    rng = np.random.default_rng(seed)

    def draw(path, a):
        key, shape = jax.tree_util.keystr(path), a.shape
        if key.endswith("['kernel']"):
            fan_in = int(np.prod(shape[:-1])) // (shape[0] if len(shape) in (3, 5) else 1)
            return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        if key.endswith("['mean']"):
            return rng.normal(0, 0.5, shape).astype(np.float32)
        if key.endswith("['var']"):
            return rng.uniform(0.5, 2.0, shape).astype(np.float32)
        if key.endswith("['scale']"):
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        if key.endswith("['bias']"):
            return rng.normal(0, 0.3, shape).astype(np.float32)
        if key.endswith("['slope']"):
            return rng.uniform(0.0, 0.5, shape).astype(np.float32)
        raise AssertionError(key)

    return (jax.tree_util.tree_map_with_path(draw, params), jax.tree_util.tree_map_with_path(draw, stats_))


def _linear(params, graph: Graph, names, channels=None):
    """`params` with the slopes of the named nodes set to exactly 1 (all channels, or `channels`)."""
    params = copy.deepcopy(params)
    for n in graph.nodes:
        if n.name in names:
            holder = subtree(params, n.slope)
            sl = np.array(holder["slope"])
            row = sl if n.index is None else sl[n.index]
            row[slice(None) if channels is None else list(channels)] = 1.0
            holder["slope"] = sl
    return params


def _x(shape=SHAPE, n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _close(out, ref, rtol=RTOL):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape
    dev = np.abs(out - ref).max() / max(1.0, np.abs(ref).max())
    assert dev <= rtol, dev


def _kernel_sizes(folded: Folded) -> list[int]:
    return [max(e.kernel.shape[:2]) for n in folded.nodes for e in n.operands if e.kind == "conv"]


# ---- MLP: exact folding, depth ----------------------------------------------------------------

MLP_PATTERNS = {
    "none": [],
    "middle": ["fc1"],
    "outer": ["fc0", "fc3"],
    "all": ["fc0", "fc1", "fc2", "fc3"],
    "partial": None,
}


@pytest.mark.parametrize("pattern", list(MLP_PATTERNS))
def test_mlp_folds_exactly_and_loses_one_layer_per_linear_node(pattern):
    graph, p0, s0, forward = _model("mlp", 4)
    params, stats_ = _randomize(p0, s0)
    names = MLP_PATTERNS[pattern]
    params = _linear(params, graph, ["fc1"], channels=[0, 2]) if names is None else _linear(params, graph, names)
    x = _x()
    folded = fold(graph, params, stats_)
    _close(apply_jit(folded, x), forward(params, stats_, x))
    linear = names or []
    assert list(folded.eliminated) == linear
    assert stats(folded, input_shape=SHAPE)["depth"] == 5 - len(linear)
    assert stats(graph, input_shape=SHAPE, params=params)["depth"] == 5
    kept = [n for n in folded.nodes[1:-1]]
    assert [n.act for n in kept] == ["prelu"] * (4 - len(linear))  # partially linear nodes keep their PReLU
    if pattern == "all":  # one dense layer: flatten, then [features, classes], the bias on the logits
        (edge,) = folded.nodes[-1].operands
        assert len(folded.nodes) == 2 and edge.pre == "flatten" and edge.kernel.shape == (128, 3)
        assert folded.nodes[-1].bias.shape == (3,)


# ---- conv nets: exact mode --------------------------------------------------------------------

SIGNAL = (1, 12, 2)  # a 1-D signal of length 12, 2 channels (a map of height 1)
CNNS = {
    "plain_cnn4": ("plain_cnn", 4, True),
    "resnet8": ("resnet", 8, True),
    "resnet8_plain": ("resnet", 8, False),
    "resnet14": ("resnet", 14, True),
    "resnet8_1d": ("resnet", 8, True, "prelu", 4, SIGNAL),
    "resnet8_plain_1d": ("resnet", 8, False, "prelu", 4, SIGNAL),
    "plain_cnn5_1d": ("plain_cnn", 5, True, "prelu", 4, SIGNAL),
}


def _patterns(graph: Graph) -> dict:
    hidden = graph.names()
    return {"none": [], "alternate": hidden[1::2], "all": hidden, "partial": None}


@pytest.mark.parametrize("model", list(CNNS))
def test_conv_nets_fold_exactly_and_never_compose_spatial_convs(model):
    graph, p0, s0, forward = _model(*CNNS[model])
    base, stats_ = _randomize(p0, s0, seed=2)
    shape = CNNS[model][5] if len(CNNS[model]) > 5 else SHAPE
    x = _x(shape)
    for pattern, names in _patterns(graph).items():
        params = _linear(base, graph, graph.names()[:2], channels=[1]) if names is None else _linear(base, graph, names)
        folded = fold(graph, params, stats_)
        ref = forward(params, stats_, x)
        _close(apply_jit(folded, x), ref)
        # every linear node sits between 3x3 convs (or before a max-pool / the pooled head): none
        # is eliminated, none composes two spatial convs; linear nodes lose their PReLU
        assert folded.eliminated == () and set(_kernel_sizes(folded)) <= {1, 3}, pattern
        assert [n.act == "linear" for n in folded.nodes[1:-1]] == [n.name in (names or []) for n in graph.nodes[1:-1]]
        before, after = stats(graph, input_shape=shape, params=params), stats(folded, input_shape=shape)
        assert after["depth"] == before["depth"] and after["flops"] < before["flops"]
        assert after["nonlinear_nodes"] == before["nonlinear_nodes"] - len(names or [])
    _close(apply_graph(graph, base, stats_, x), forward(base, stats_, x))  # the graph reference is the model


def test_relu_resnet_folds_only_batchnorm():
    graph, p0, s0, forward = _model("resnet", 8, activation="relu")
    params, stats_ = _randomize(p0, s0, seed=3)
    x = _x()
    for spatial in (False, True):
        folded = fold(graph, params, stats_, spatial=spatial, input_shape=SHAPE)
        _close(apply_jit(folded, x), forward(params, stats_, x))
        assert folded.eliminated == () and [n.act for n in folded.nodes[1:-1]] == ["relu"] * 7
        # BN scales are absorbed into the kernels; the BN biases of a node (two where a block
        # projects its shortcut) become one node bias
        bn_params = sum(
            2 * np.size(subtree(params, op.path, op.index)["scale"])
            for n in graph.nodes
            for e in n.operands
            for op in e.ops
            if op.kind == "bn"
        )
        node_biases = sum(n.channels for n in graph.nodes if any(op.kind == "bn" for e in n.operands for op in e.ops))
        assert (
            stats(graph, input_shape=SHAPE, params=params)["params"] - stats(folded, input_shape=SHAPE)["params"]
            == bn_params - node_biases
            == 84 + 8 + 16
        )


# ---- conv nets: spatial mode --------------------------------------------------------------------


def test_spatial_mode_collapses_resnet_blocks_with_their_shortcuts():
    graph, p0, s0, forward = _model("resnet", 14)
    base, stats_ = _randomize(p0, s0, seed=4)
    act1 = [n for n in graph.names() if n.endswith("act1")]
    folded = fold(graph, _linear(base, graph, act1), stats_, spatial=True, input_shape=SHAPE)
    assert sorted(folded.eliminated) == sorted(act1)
    assert stats(folded, input_shape=SHAPE)["depth"] == 14 - 6  # one conv per block instead of two
    # each block is one conv: conv1 ∘ conv2 (5x5; 7x7 stride 2 where conv1 has stride 2) summed with its shortcut
    for n in folded.nodes:
        if n.name.endswith("act2"):
            (edge,) = n.operands
            assert (edge.kernel.shape[0], edge.stride) == ((7, 2) if ".b0." in n.name and n.name[1] != "1" else (5, 1))
    # all linear: one conv from the input, then the pooled head (avgpool + dense is a barrier for a spatial conv)
    folded = fold(graph, _linear(base, graph, graph.names()), stats_, spatial=True, input_shape=SHAPE)
    assert stats(folded, input_shape=SHAPE)["depth"] == 2 and len(folded.nodes) == 3
    assert folded.nodes[1].act == "linear" and folded.nodes[1].operands[0].stride == 4
    # the plain twin too
    graph, p0, s0, _ = _model("resnet", 8, shortcut=False)
    params, stats_ = _randomize(p0, s0, seed=5)
    folded = fold(graph, _linear(params, graph, graph.names()), stats_, spatial=True, input_shape=SHAPE)
    assert stats(folded, input_shape=SHAPE)["depth"] == 2
    with pytest.raises(ValueError, match="input_shape"):  # its folded biases become maps
        fold(graph, _linear(params, graph, graph.names()), stats_, spatial=True)


def test_spatial_mode_keeps_maxpool_as_a_barrier():
    graph, p0, s0, _ = _model("plain_cnn", 6)  # stages of 2 convs; max-pool between stages
    params, stats_ = _randomize(p0, s0, seed=6)
    folded = fold(graph, _linear(params, graph, graph.names()), stats_, spatial=True, input_shape=SHAPE)
    assert list(folded.eliminated) == ["s1.c0", "s2.c0", "s3.c0"]  # the second of each stage feeds a max-pool
    assert stats(folded, input_shape=SHAPE)["depth"] == 4
    assert [e.pre for n in folded.nodes for e in n.operands] == [None, "maxpool", "maxpool", "avgpool"]


def test_bottleneck_imagenet_stem_folds_exactly():
    """The imagenet stem's 3x3 stride-2 max-pool with padding 1 (`maxpool3`): the graph and the
    folded net evaluate it as the model does, and size the maps after it as it does. At 18x18 the
    stem's 9x9 map pools to 5x5 (a 2x2 pool would give 4x4 and other values)."""
    shape = (18, 18, 3)
    graph, p0, s0, forward = _bottleneck()
    base, stats_ = _randomize(p0, s0, seed=11)
    x = _x(shape, n=2)
    ref = forward(base, stats_, x)
    values = jax.jit(functools.partial(apply_graph, graph, all_nodes=True))(base, stats_, x)
    _close(values["logits"], ref)
    assert values["stem"].shape[1:3] == (9, 9) and values["s1.b0.act1"].shape[1:3] == (5, 5)
    # nothing linear: BN folds away; the graph and the folded net count the same convs at the same sizes
    bn_flops = sum(
        2 * values[n.name].shape[1] * values[n.name].shape[2] * n.channels
        for n in graph.nodes
        for e in n.operands
        for op in e.ops
        if op.kind == "bn"
    )
    folded = fold(graph, base, stats_)
    _close(apply_jit(folded, x), ref)
    assert stats(graph, input_shape=shape, params=base)["flops"] - bn_flops == stats(folded, input_shape=shape)["flops"]
    # the stem linear: the pool is a barrier, the stem node stays (a pass-through); s1.b0.act1
    # linear: its pooled 1x1 conv composes with the 3x3 conv after it, its bias becomes a 5x5 map
    params = _linear(base, graph, ["stem", "s1.b0.act1"])
    ref = forward(params, stats_, x)
    folded = fold(graph, params, stats_, input_shape=shape)
    _close(apply_jit(folded, x), ref)
    assert list(folded.eliminated) == ["s1.b0.act1"] and folded.nodes[1].act == "linear"
    act2 = folded.nodes[folded.names().index("s1.b0.act2")]
    assert [(e.src, e.pre, e.kernel.shape[0]) for e in act2.operands] == [(1, "maxpool3", 3)]
    assert act2.bias.shape == (5, 5, 2)
    # everything linear, spatial mode: every out-edge of the stem node pools, so it stays; the
    # blocks collapse into one strided conv, which stays before the pooled head
    folded = fold(graph, _linear(base, graph, graph.names()), stats_, spatial=True, input_shape=shape)
    assert folded.names() == ["input", "stem", "s4.b0.act3", "logits"]
    assert [e.pre for n in folded.nodes for e in n.operands] == [None, "maxpool3", "avgpool"]
    assert stats(folded, input_shape=shape)["depth"] == 3


def _chain(k1: int, stride1: int, k2: int, act2: str = "relu"):
    """input(2) → a: conv k1 (stride1) + BN, linear PReLU → b: conv k2 + BN, `act2` → logits (pool, dense)."""
    g = Graph(
        (
            Node("in", 2, "input", ()),
            Node(
                "a", 3, "prelu", (Edge(0, (Op("conv", ("c1",), stride=stride1), Op("bn", ("n1",), eps=1e-5))),), ("p1",)
            ),
            Node("b", 4, act2, (Edge(1, (Op("conv", ("c2",)), Op("bn", ("n2",), eps=1e-5))),)),
            Node("out", 2, "output", (Edge(2, (Op("avgpool"), Op("dense", ("h",)))),)),
        )
    )
    rng = np.random.default_rng(7)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    bn = lambda c: {"scale": f32(rng.uniform(0.5, 1.5, c)), "bias": f32(rng.normal(0, 1, c))}  # noqa: E731
    stat = lambda c: {"mean": f32(rng.normal(0, 1, c)), "var": f32(rng.uniform(0.5, 2, c))}  # noqa: E731
    params = {
        "c1": {"kernel": f32(rng.normal(0, 0.5, (k1, k1, 2, 3)))},
        "n1": bn(3),
        "p1": {"slope": np.ones(3, np.float32)},
        "c2": {"kernel": f32(rng.normal(0, 0.5, (k2, k2, 3, 4)))},
        "n2": bn(4),
        "h": {"kernel": f32(rng.normal(0, 1, (4, 2))), "bias": f32(rng.normal(0, 1, 2))},
    }
    return g, params, {"n1": stat(3), "n2": stat(4)}


@pytest.mark.parametrize("stride1", [1, 2])
def test_spatial_composition_is_exact_in_the_interior_only(stride1):
    g, params, stats_ = _chain(3, stride1, 3)
    x = _x((10, 10, 2), n=3)
    ref = np.asarray(apply_graph(g, params, stats_, x, all_nodes=True)["b"])
    exact = fold(g, params, stats_, input_shape=(10, 10, 2))
    assert exact.names() == ["in", "a", "b", "out"] and exact.nodes[1].act == "linear"
    _close(apply_folded(exact, x, all_nodes=True)["b"], ref)
    folded = fold(g, params, stats_, spatial=True, input_shape=(10, 10, 2))
    (edge,) = folded.nodes[1].operands
    assert folded.names() == ["in", "b", "out"] and edge.kernel.shape[0] == 3 + stride1 * 2 and edge.stride == stride1
    got = np.asarray(apply_folded(folded, x, all_nodes=True)["b"])
    _close(got[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1])  # interior: exact
    ring = np.abs(got - ref).max() / np.abs(ref).max()
    assert ring > 1e-3  # the border ring (width (k2-1)/2 = 1) is not: the intermediate map was zero-padded


@pytest.mark.parametrize("k1,s1,k2,s2", [(3, 1, 3, 1), (3, 2, 3, 2), (1, 2, 3, 1), (3, 2, 1, 2), (5, 1, 3, 2)])
@pytest.mark.parametrize("dims", [2, 1])
def test_compose_conv_equals_two_valid_convs(k1, s1, k2, s2, dims):
    rng = np.random.default_rng(8)
    side = lambda k: (k, k) if dims == 2 else (1, k)  # noqa: E731 - 1-D: 1 x k kernels on a map of height 1
    a, b = rng.normal(size=(*side(k1), 2, 3)), rng.normal(size=(*side(k2), 3, 4))
    x = rng.normal(size=(2, 13 if dims == 2 else 1, 13, 2))
    conv = lambda x, w, s: jax.lax.conv_general_dilated(  # noqa: E731
        x,
        jnp.asarray(w, jnp.float32),
        (s, s),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    two = conv(conv(x.astype(np.float32), a, s1), b, s2)
    composed = compose_conv(a, s1, b)
    assert composed.shape[:2] == tuple(ka + s1 * (kb - 1) for ka, kb in zip(side(k1), side(k2)))
    one = conv(x.astype(np.float32), composed, s1 * s2)
    _close(one, two, 1e-5)


def test_spatial_mode_folds_a_linear_1d_resnet_into_long_1xk_convs_exact_in_the_interior():
    """On a 1-D signal, spatial folding composes 1x3 convs into 1xK ones (never taller than 1) and
    keeps the max-pool-free 1-D ResNet exact away from the signal's ends."""
    graph, p0, s0, forward = _model("resnet", 8, False, "prelu", 4, (1, 24, 2))
    base, stats_ = _randomize(p0, s0, seed=3)
    params = _linear(base, graph, ["s1.b0.act1"])  # one linear node between two 1x3 convs
    x = _x((1, 24, 2), n=3)
    folded = fold(graph, params, stats_, spatial=True, input_shape=(1, 24, 2))
    assert list(folded.eliminated) == ["s1.b0.act1"]
    kernels = [e.kernel.shape[:2] for n in folded.nodes for e in n.operands if e.kind == "conv"]
    assert (1, 5) in kernels and all(kh == 1 for kh, _ in kernels)
    ref = np.asarray(apply_graph(graph, params, stats_, x, all_nodes=True)["s1.b0.act2"])
    got = np.asarray(apply_folded(folded, x, all_nodes=True)["s1.b0.act2"])
    _close(got[:, :, 2:-2], ref[:, :, 2:-2])  # interior: exact
    assert np.abs(got - ref).max() > 1e-3  # the ends are not: the intermediate signal was zero-padded
    _close(apply_graph(graph, params, stats_, x), forward(params, stats_, x))


@pytest.mark.parametrize("k1,stride1,k2", [(1, 1, 3), (1, 2, 3), (3, 2, 1)])
def test_exact_mode_composes_1x1_convs_with_bias_maps(k1, stride1, k2):
    """A 1x1 conv composes with a 3x3 exactly; a folded bias through a zero-padded 3x3 conv is a map."""
    g, params, stats_ = _chain(k1, stride1, k2)
    x = _x((9, 9, 2), n=3)
    folded = fold(g, params, stats_, input_shape=(9, 9, 2))
    assert folded.names() == ["in", "b", "out"]
    assert folded.nodes[1].operands[0].kernel.shape[0] == k1 + stride1 * (k2 - 1)
    bias = folded.nodes[1].bias
    assert bias.ndim == (3 if k2 > 1 else 1)
    if k2 > 1:  # position-dependent at the borders only
        assert np.ptp(bias[1:-1, 1:-1], axis=(0, 1)).max() < 1e-5 < np.ptp(bias, axis=(0, 1)).max()
        assert folded.input_shape == (9, 9, 2)
        with pytest.raises(ValueError, match="input_shape"):
            fold(g, params, stats_)
        with pytest.raises(ValueError, match="folded for"):
            apply_folded(folded, _x((8, 8, 2)))
    ref = apply_graph(g, params, stats_, x, all_nodes=True)
    _close(apply_folded(folded, x, all_nodes=True)["b"], ref["b"])
    _close(apply_folded(folded, x), ref["out"])


@pytest.mark.parametrize("k1,stride1,kept", [(3, 1, ["b"]), (1, 1, []), (1, 2, ["b"])])
def test_global_avgpool_composes_only_after_an_identity_or_1x1_stride_1_conv(k1, stride1, kept):
    g, params, stats_ = _chain(k1, stride1, 1, act2="prelu")
    g = g._replace(nodes=g.nodes[:2] + (g.nodes[2]._replace(slope=("p2",)),) + g.nodes[3:])  # b linear too
    params["p2"] = {"slope": np.ones(4, np.float32)}
    x = _x((6, 6, 2), n=2)
    folded = fold(g, params, stats_)
    # a (then 1x1) always folds into b; b folds into the pooled head only when what reaches it is a
    # 1x1 stride-1 conv: the mean of a zero-padded or strided conv is not a conv of the mean
    assert folded.names() == ["in", *kept, "out"] and list(folded.eliminated) == ["a", "b"][: 2 - len(kept)]
    head = folded.nodes[-1].operands[0]
    assert head.pre == "avgpool" and head.kernel.shape == ((4, 2) if kept else (2, 2))
    _close(apply_folded(folded, x), apply_graph(g, params, stats_, x))


# ---- counts ---------------------------------------------------------------------------------


def _leaves(tree) -> int:
    return sum(np.size(a) for a in jax.tree.leaves(tree))


def test_counts_of_small_models_equal_hand_computed_values():
    # MLP: 9 inputs, 2 hidden layers of 4, 3 classes
    graph, p0, s0, _ = _model("mlp", 2, shape=(3, 3, 1))
    params, stats_ = _randomize(p0, s0)
    # dense 9x4 + BN 2x4 + slopes 4; dense 4x4 + BN 8 + slopes 4; head 4x3 + 3
    assert stats(graph, input_shape=(3, 3, 1), params=params) == {
        "depth": 3,
        "params": 91,
        "flops": 2 * (36 + 16 + 12) + 2 * (4 + 4),
        "weight_layers": 3,
        "hidden_nodes": 2,
        "nonlinear_nodes": 2,
    }
    assert _leaves(params) == 91
    assert stats(fold(graph, params, stats_), input_shape=(3, 3, 1)) == {
        "depth": 3,
        "params": 91 - 8,
        "flops": 128,
        "weight_layers": 3,
        "hidden_nodes": 2,
        "nonlinear_nodes": 2,
    }
    assert stats(fold(graph, _linear(params, graph, ["fc0", "fc1"]), stats_), input_shape=(3, 3, 1)) == {
        "depth": 1,
        "params": 9 * 3 + 3,
        "flops": 2 * 27,
        "weight_layers": 1,
        "hidden_nodes": 0,
        "nonlinear_nodes": 0,
    }
    # plain CNN, widths 2, 4, 8 on 4x4x1: convs at 4x4, 2x2, 1x1 (max-pools between), head 8 -> 3
    graph, p0, s0, _ = _model("plain_cnn", 3, width=2, shape=(4, 4, 1))
    params, stats_ = _randomize(p0, s0)
    conv_flops = 2 * (16 * 9 * 1 * 2 + 4 * 9 * 2 * 4 + 1 * 9 * 4 * 8)
    bn_flops = 2 * (2 * 16 + 4 * 4 + 8 * 1)
    n_params = 18 + 72 + 288 + 2 * (2 + 4 + 8) + (2 + 4 + 8) + 8 * 3 + 3
    assert n_params == _leaves(params) == 447
    assert stats(graph, input_shape=(4, 4, 1), params=params) == {
        "depth": 4,
        "params": 447,
        "flops": conv_flops + bn_flops + 2 * 24,
        "weight_layers": 4,
        "hidden_nodes": 3,
        "nonlinear_nodes": 3,
    }
    assert conv_flops + bn_flops + 48 == 1888
    folded = fold(graph, _linear(params, graph, ["s2.c0"]), stats_)
    assert stats(folded, input_shape=(4, 4, 1)) == {
        "depth": 4,
        "params": 447 - 14 - 4,
        "flops": 1888 - bn_flops,
        "weight_layers": 4,
        "hidden_nodes": 3,
        "nonlinear_nodes": 2,
    }


def test_depth_counts_weight_layers_not_identity_edges():
    f = Folded(
        (
            FNode("in", 2, "input", ()),
            FNode("a", 2, "relu", (FEdge(0, "identity"),)),
            FNode("out", 1, "output", (FEdge(1, "dense", np.ones((2, 1))), FEdge(0, "dense", np.ones((2, 1))))),
        )
    )
    assert stats(f, input_shape=(2,)) == {
        "depth": 1,
        "params": 4,
        "flops": 8,
        "weight_layers": 2,
        "hidden_nodes": 1,
        "nonlinear_nodes": 1,
    }
    np.testing.assert_allclose(np.asarray(apply_folded(f, np.array([[1.0, -2.0]]))), [[0.0]])


def test_save_load_and_jit_round_trip(tmp_path):
    graph, p0, s0, forward = _model("resnet", 8)
    params, stats_ = _randomize(p0, s0, seed=9)
    params = _linear(params, graph, graph.names()[::2])
    folded = fold(graph, params, stats_, spatial=True, input_shape=SHAPE)
    x = _x()
    paths = save_folded(folded, tmp_path / "f")
    assert sorted(p.name for p in paths) == ["folded.json", "folded.npz"]
    back = load_folded(tmp_path / "f")
    assert back.names() == folded.names() and back.eliminated == folded.eliminated and back.input_shape == SHAPE
    eager = np.asarray(apply_folded(folded, x))
    np.testing.assert_array_equal(np.asarray(apply_jit(back, x)), np.asarray(apply_jit(folded, x)))
    _close(eager, apply_jit(back, x), 1e-6)


# ---- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 3-layer PReLU MLP on digits after 20 steps of a strong sparsity prior: most units linear."""
    from normjax.config import load_config
    from normjax.training.loop import train

    cfg = load_config(
        "experiments/mlp_digits.py",
        size="smoke",
        overrides=[
            "model.activation=prelu",
            "model.depth=3",
            "model.width=16",
            "optim.name=sgd_prelu_l1",
            "optim.prelu_l1=1.0",
            "train.steps=20",
            "train.steps_per_dispatch=10",
            "train.batch_size=32",
            "train.eval_train_examples=64",
            "checkpoint.every=20",
            "log.metrics=[]",
        ],
    )
    d = tmp_path_factory.mktemp("fold_run") / "run"
    assert train(cfg, d, progress=False)["status"] == "done"
    return d


def _slope_deviation(rundir) -> dict:
    """Per hidden node of the run's checkpoint, max |1 - slope| (read independently of fold)."""
    from normjax.training.checkpoint import read_latest_items
    from normjax.training.inputs import input_for
    from normjax.training.loop import program_for
    from normjax.training.rundir import read_json

    cfg = read_json(rundir / "config.json")
    a = program_for(cfg, input_for(cfg)).abstract_state()
    _, items = read_latest_items(rundir / "checkpoints", {"params": a.params})
    h = jax.device_get(items["params"])["hidden"]
    slopes = [h["first"]["act"]["slope"], *h["rest"]["act"]["slope"]]
    return {f"fc{i}": float(np.abs(1 - s).max()) for i, s in enumerate(slopes)}


def test_fold_command_on_a_trained_run(trained_run, tmp_path, capsys):
    from normjax.studies.apl.fold_checkpoint import fold_main

    dev = _slope_deviation(trained_run)
    ordered = sorted(dev.values())
    assert ordered[0] < ordered[-1], dev
    # a tolerance between the two smallest deviations: exactly the node(s) closest to linear fold away
    tol = next((a + b) / 2 for a, b in zip(ordered, ordered[1:]) if b > a)
    linear = sorted(n for n, d in dev.items() if d < tol)
    assert 1 <= len(linear) < 3
    assert fold_main([str(trained_run), "--tolerance", str(tol), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "depth" in printed and "FLOPs" in printed and str(tmp_path / "out" / "fold.json") in printed
    rec = json.loads((tmp_path / "out" / "fold.json").read_text())
    assert rec["tolerance"] == tol and rec["spatial"] is False and rec["step"] == 20
    assert sorted(rec["eliminated"]) == linear and rec["pass_through"] == []
    assert rec["original"]["depth"] == 4 and rec["folded"]["depth"] == 4 - len(linear)
    assert rec["folded"]["params"] < rec["original"]["params"] and rec["folded"]["flops"] < rec["original"]["flops"]
    assert rec["deviation"]["max_abs"] < 1e-4 and rec["deviation"]["max_rel"] < RTOL
    assert rec["accuracy"]["folded"] == rec["accuracy"]["linearized"] and 0.3 < rec["accuracy"]["folded"] <= 1
    back = load_folded(tmp_path / "out")
    assert [n.name for n in back.nodes] == ["input"] + sorted(set(dev) - set(linear)) + ["logits"]

    # default tolerance (the run's optim.prelu_tolerance) and output directory
    assert fold_main([str(trained_run)]) == 0
    rec = json.loads((trained_run / "folded" / "fold.json").read_text())
    assert rec["tolerance"] == 0.01 and sorted(rec["eliminated"]) == sorted(n for n, d in dev.items() if d < 0.01)


def test_fold_command_errors(trained_run, tmp_path):
    from normjax.studies.apl.fold_checkpoint import fold_main

    with pytest.raises(UserError, match="no config.json"):
        fold_main([str(tmp_path)])
    (tmp_path / "config.json").write_text((trained_run / "config.json").read_text())
    with pytest.raises(UserError, match="no checkpoint"):
        fold_main([str(tmp_path)])
    with pytest.raises(UserError, match="tolerance"):
        fold_main([str(trained_run), "--tolerance", "-1", "--out", str(tmp_path / "o")])
