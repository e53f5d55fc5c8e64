"""The bottleneck ResNet (ResNet-50/101/152, v1.5): torchvision's parameter counts, ImageNet shapes,
layers / masks / graph agreeing, the graph's APL, scanned == unrolled, plain vs residual, PReLU,
config validation; a few training steps and the experiment's smoke size under the slow mark.
Small nets use `stages=(1, ...)` and widths of 2-4; the full-size nets are only built abstractly
(`nnx.eval_shape`, `jax.eval_shape`)."""

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from normjax.analysis import apl
from normjax.analysis.fold import apply_graph, stats
from normjax.analysis.graph import Edge, Graph, Node, Op, check, nonlinear
from normjax.config import DEFAULTS, load_config, merge
from normjax.errors import UserError
from normjax.models import BottleneckResNet, build_model, prelu_mask, scale_invariant_mask
from normjax.models.resnet import BOTTLENECK_STAGES
from normjax.models.structure import get_path

ROOT = Path(__file__).parents[1]
# torchvision.models.resnet{50,101,152}(num_classes=1000): convs without bias, BN scale and bias, fc with bias.
TORCHVISION = {50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# ResNet-50's four projections (1x1 conv + BN): 64*256 + 256*512 + 512*1024 + 1024*2048 weights, 2*(256+512+1024+2048).
PROJECTIONS_50 = 64 * 256 + 256 * 512 + 512 * 1024 + 1024 * 2048 + 2 * (256 + 512 + 1024 + 2048)
# The small net of most tests: 6 blocks (stage 2: first + two stacked), widths 2, 4, 8, 16 (outputs 4x).
SMALL = dict(num_classes=5, width=2, stem="cifar", stages=(1, 3, 1, 1))
X = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)


@functools.cache
def _templates(items: tuple):
    """Graph definition, abstract state and numpy values of a small net, built without compiling
    anything (eager initialization compiles one XLA program per parameter shape): He-normal
    kernels, BN scales, biases and statistics away from 1 and 0, PReLU slopes at `prelu_init`."""
    kw = dict(items)
    abstract = nnx.eval_shape(lambda: BottleneckResNet(**kw, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(s.shape[-4:-1]) if len(s.shape) - (path[1].key == "rest") == 4 else s.shape[-2]
            return rng.normal(0, math.sqrt(2 / fan_in), s.shape).astype(np.float32)
        if name == "slope":
            return np.full(s.shape, kw.get("prelu_init", 0.0), np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        return rng.normal(0, 0.1, s.shape).astype(np.float32)  # BN bias and mean, the head's bias

    return graphdef, state, jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))


def _small(**kw) -> BottleneckResNet:
    """A fresh small net: `SMALL` updated by `kw`, its values from `_templates`."""
    graphdef, state, values = _templates(tuple(sorted((SMALL | kw).items())))
    state = jax.tree.map(lambda v: v, state)
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def _abstract(depth: int, shortcut: bool = True) -> BottleneckResNet:
    return _abstract_cached(depth, shortcut)


@functools.cache
def _abstract_cached(depth: int, shortcut: bool) -> BottleneckResNet:
    cfg = merge(DEFAULTS["model"], dict(block="bottleneck", depth=depth, width=64, shortcut=shortcut))
    return nnx.eval_shape(lambda: build_model(cfg, num_classes=1000, image_shape=(224, 224, 3), rngs=nnx.Rngs(0)))


def _count(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _zeros(model) -> dict:
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_parameter_counts_equal_torchvision(depth):
    model = _abstract(depth)
    assert isinstance(model, BottleneckResNet) and model.stem == "imagenet"  # model.stem=auto
    assert _count(model) == TORCHVISION[depth]
    layers = model.layers()
    blocks = sum(BOTTLENECK_STAGES[depth])
    assert len(layers) == 1 + 3 * blocks + 4 + 1  # stem, 3 convs per block, 4 projections, head
    assert layers[-1].depth == depth - 1 and model.depth == depth
    if depth == 50:
        plain = _abstract(50, shortcut=False)
        assert _count(plain) == TORCHVISION[50] - PROJECTIONS_50 == 22_780_456
        assert len(plain.layers()) == 50 and not any("proj" in l.name for l in plain.layers())


def test_resnet50_shapes_at_224_without_computing():
    model = _abstract(50)
    graphdef, state = nnx.split(model)

    def forward(state, x, train, shapes):
        m = nnx.merge(graphdef, state)
        h = m.pool(m.stem_act(m.stem_bn(m.stem_conv(x), train=train)))
        shapes.append(h.shape)
        for s in range(1, 5):
            h = getattr(m, f"stage{s}")(h, train)
            shapes.append(h.shape)
        return m.head(h.mean(axis=(1, 2)))

    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    for train in (False, True):
        shapes = []  # filled while tracing
        out = jax.eval_shape(lambda s, x: forward(s, x, train, shapes), state, x)
        assert out.shape == (2, 1000) and out.dtype == jnp.float32
        assert shapes == [(2, 56, 56, 64), (2, 56, 56, 256), (2, 28, 28, 512), (2, 14, 14, 1024), (2, 7, 7, 2048)]
    # The graph agrees: 50 weight layers deep, the same parameters, about 4.1 GMACs (torchvision: 4.09 "GFLOPS").
    s = stats(model.graph(), input_shape=(224, 224, 3), params=_zeros(model))
    assert s["depth"] == 50 and s["params"] == TORCHVISION[50] and s["weight_layers"] == 54
    assert 2 * 4.05e9 < s["flops"] < 2 * 4.15e9, s["flops"]
    # The stem's pool, as torchvision's MaxPool2d(3, stride=2, padding=1): windows padded with -inf.
    x = np.random.default_rng(1).normal(size=(1, 5, 6, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    want = np.stack(
        [
            np.stack([padded[:, i : i + 3, j : j + 3].max(axis=(1, 2)) for j in range(0, 6, 2)], 1)
            for i in range(0, 5, 2)
        ],
        1,
    )
    np.testing.assert_array_equal(model.pool(jnp.asarray(x)), want)


@pytest.mark.parametrize(
    "depth,shortcut,expected", [(50, True, 33.0), (50, False, 49.0), (101, True, 67.0), (152, True, 101.0)]
)
def test_apl_of_the_relu_graph(depth, shortcut, expected):
    """Normalized APL, nothing linearized: the stem 1, then per block act1 +1, act2 +1 and act3 +1
    over the mean of its operands: the residual branch (A_in + 2) and the shortcut (A_in), so a
    residual block adds 2 (plain: 3). ResNet-50: 1 + 16 x 2 = 33; plain 1 + 16 x 3 = 49 = depth - 1."""
    model = _abstract(depth, shortcut)
    g = model.graph()
    check(g)
    nl = nonlinear(g, {})
    assert float(apl.normalized_apl(g, nl)) == expected
    assert len(g.hidden()) == 1 + 3 * sum(BOTTLENECK_STAGES[depth])
    if depth == 50 and shortcut:
        s = apl.summary(g, {})
        # stem 64 + per block mid + mid + 4 mid: 6 x (64 x 3 + 128 x 4 + 256 x 6 + 512 x 3)
        assert s["units"] == s["nonlinear_units"] == 64 + 6 * (64 * 3 + 128 * 4 + 256 * 6 + 512 * 3)
        assert expected < s["apl_unnormalized"] < 49  # more paths skip blocks, but the wide ones dominate
    if not shortcut:
        assert float(apl.unnormalized_apl(g, nl)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_layers_masks_and_graph_agree(stem):
    model = _small(stem=stem, activation="prelu", prelu_init=0.25)
    params = _params(model)
    layers = model.layers()
    assert [l.depth for l in layers] == sorted(l.depth for l in layers) and len({l.name for l in layers}) == len(layers)
    assert len(layers) == 1 + 3 * 6 + 4 + 1 and layers[0].name == "stem" and layers[-1].name == "head"
    assert [l.name for l in layers[1:5]] == ["s1.b0.conv1", "s1.b0.proj", "s1.b0.conv2", "s1.b0.conv3"]
    for l in layers:
        leaf = np.asarray(get_path(params, l.path))
        assert leaf.ndim == (4 if l.scale_invariant else 2) + (l.index is not None)
        assert l.index is None or 0 <= l.index < leaf.shape[0]
    # The scale-invariant mask is exactly the conv kernels; the PReLU mask exactly the slopes.
    si = scale_invariant_mask(params, layers)
    flat = {tuple(str(k.key) for k in p): m for p, m in jax.tree_util.tree_leaves_with_path(si)}
    assert {p for p, m in flat.items() if m} == {l.path for l in layers if l.scale_invariant}
    assert all(p[-1] == "kernel" and p[0] != "head" for p, m in flat.items() if m)
    slopes = [x for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(prelu_mask(params))) if m]
    assert len(slopes) == 1 + 3 * 4 + 3  # the stem's; act1-3 of each first block, stacked act1-3 of stage 2
    assert all(np.all(np.asarray(s) == 0.25) for s in slopes)
    # The graph: its weight ops are exactly the layers, its PReLU nodes exactly the slopes.
    g = model.graph()
    check(g)
    ops = {
        (op.path + ("kernel",), op.index)
        for n in g.nodes
        for e in n.operands
        for op in e.ops
        if op.kind in ("conv", "dense")
    }
    assert ops == {(l.path, l.index) for l in layers}
    assert sum(g.nodes[i].channels for i in g.hidden()) == sum(np.asarray(s).size for s in slopes)
    assert all(g.nodes[i].act == "prelu" for i in g.hidden())
    s = stats(g, input_shape=(32, 32, 3), params=params)
    assert s["depth"] == layers[-1].depth + 1 == model.depth == 20 and s["params"] == _count(model)
    pools = [(n.name, e.src) for n in g.nodes for e in n.operands if e.ops and "maxpool" in e.ops[0].kind]
    assert all(e.ops[0].kind == "maxpool3" for n in g.nodes for e in n.operands if e.ops and "maxpool" in e.ops[0].kind)
    stem_conv = g.nodes[1].operands[0].ops[0]
    if stem == "imagenet":  # both edges out of the stem node (conv1 and the projection) open with the pool
        assert pools == [("s1.b0.act1", 1), ("s1.b0.act3", 1)]
        assert (stem_conv.stride, model.stem_conv.kernel.shape[0]) == (2, 7)
    else:
        assert pools == [] and stem_conv.stride == 1 and model.stem_conv.kernel.shape[0] == 3


@pytest.mark.parametrize("stem,size", [("cifar", 16), ("imagenet", 16), ("imagenet", 18)])
def test_graph_evaluates_to_the_model(stem, size):
    """`apply_graph` (op by op from the graph) equals the model in eval mode, with either stem (the
    imagenet stem's 3x3 stride-2 padded max-pool is the graph's `maxpool3`; at 18x18 the stem's 9x9
    map pools to 5x5, where a 2x2 pool would give 4x4). Slopes differ per channel, BN is not the identity."""
    model = _small(activation="prelu", stem=stem)
    x = X if size == 16 else np.random.default_rng(3).normal(size=(4, size, size, 3)).astype(np.float32)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: (
            np.random.default_rng(len(v)).uniform(-0.5, 1.5, v.shape).astype(np.float32) if p[-1].key == "slope" else v
        ),
        _params(model),
    )
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    batch_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    got = jax.jit(functools.partial(apply_graph, model.graph()))(params, batch_stats, x)
    graphdef, state = nnx.split(model)
    want = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=False))(state, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_graph_json_round_trip_and_old_files():
    """The imagenet stem's graph survives `graph.json` (as a run directory stores it); a file written
    before `maxpool3` existed (its 2x2 `maxpool` ops, 5 fields per op) still loads, as 2x2 pools."""
    g = _small(stem="imagenet").graph()
    assert Graph.from_json(json.loads(json.dumps(g.to_json()))) == g
    old = json.loads("""[{"name": "input", "channels": 3, "act": "input", "operands": [], "slope": null, "index": null},
        {"name": "c0", "channels": 4, "act": "relu", "slope": null, "index": null,
         "operands": [{"src": 0, "ops": [["conv", ["c0"], null, 1, 0.0], ["bn", ["n0"], null, 1, 1e-05]]}]},
        {"name": "c1", "channels": 4, "act": "prelu", "slope": ["a1"], "index": 0,
         "operands": [{"src": 1, "ops": [["maxpool", [], null, 1, 0.0], ["conv", ["c1"], 0, 2, 0.0]]}]},
        {"name": "logits", "channels": 2, "act": "output", "slope": null, "index": null,
         "operands": [{"src": 2, "ops": [["avgpool", [], null, 1, 0.0], ["dense", ["head"], null, 1, 0.0]]}]}]""")
    g = Graph.from_json(old)
    check(g)
    assert g.nodes[2] == Node("c1", 4, "prelu", (Edge(1, (Op("maxpool"), Op("conv", ("c1",), 0, 2))),), ("a1",), 0)
    assert json.loads(json.dumps(g.to_json())) == old  # written back unchanged
    x = jnp.arange(2 * 5 * 5 * 4, dtype=jnp.float32).reshape(2, 5, 5, 4)
    params = {
        "c0": {"kernel": np.eye(3, 4)[None, None]},
        "n0": {"scale": np.ones(4), "bias": np.zeros(4)},
        "c1": {"kernel": np.eye(4)[None, None, None]},
        "a1": {"slope": np.ones((1, 4))},
        "head": {"kernel": np.eye(4, 2), "bias": np.zeros(2)},
    }
    values = apply_graph(g, params, {"n0": {"mean": np.zeros(4), "var": np.ones(4)}}, x[..., :3], all_nodes=True)
    assert values["c1"].shape == (2, 1, 1, 4)  # 5x5 → 2x2 max-pool → 2x2 → stride-2 1x1 conv → 1x1
    np.testing.assert_allclose(values["c1"][:, 0, 0], values["c0"][:, :2, :2].max(axis=(1, 2)), rtol=1e-6)


@pytest.mark.cross_program
@pytest.mark.parametrize("train", [False, True])
def test_scanned_blocks_equal_the_unrolled_network(train):
    """A stage of first + two stacked blocks computes exactly what its blocks applied one by one
    compute, and in training updates the same BN statistics, both compiled: to a few ulps (two
    programs, whose reductions XLA may order differently on another CPU)."""
    model = _small()
    h = jnp.asarray(
        np.random.default_rng(2).normal(size=(4, 16, 16, 8)), jnp.float32
    )  # stage 1's output: 4 x 2 channels
    graphdef, state = nnx.split(model.stage2)

    def scanned(state, h):
        stage = nnx.merge(graphdef, state)
        return stage(h, train), nnx.to_pure_dict(nnx.state(stage, nnx.BatchStat))

    def unrolled(state, h):
        stage = nnx.merge(graphdef, state)
        rest_def, rest = nnx.split(stage.rest)
        h, new = stage.first(h, train), []
        for i in range(2):
            block = nnx.merge(rest_def, jax.tree.map(lambda v: v[i], rest))
            h = block(h, train)
            new.append(nnx.to_pure_dict(nnx.state(block, nnx.BatchStat)))
        return h, {
            "first": nnx.to_pure_dict(nnx.state(stage.first, nnx.BatchStat)),
            "rest": jax.tree.map(lambda *v: jnp.stack(v), *new),
        }

    before = nnx.to_pure_dict(nnx.state(model.stage2, nnx.BatchStat))
    out, got = jax.jit(scanned)(state, h)
    ref, want = jax.jit(unrolled)(state, h)
    # Equal up to rounding: scanned and unrolled are two programs (tests/helpers.py).
    assert_close(out, ref, 4, "scanned vs unrolled output")
    assert len(jax.tree.leaves(got)) == 14  # mean and var: first's bn1-3 and proj_bn; the stacked bn1-3
    assert_close(got, want, 4, "scanned vs unrolled BN statistics")
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), got, before)
    assert all(jax.tree.leaves(changed)) if train else not any(jax.tree.leaves(changed))


def test_plain_and_residual_twins():
    res, plain = _small(), _small(shortcut=False)
    assert not any("proj" in l.name for l in plain.layers()) and len(plain.layers()) == len(res.layers()) - 4
    assert "proj_conv" not in _params(plain)["stage1"]["first"]
    gr, gp = res.graph(), plain.graph()
    assert [len(n.operands) for n in gp.nodes[1:]] == [1] * (len(gp.nodes) - 1)
    assert [n.name for n in gr.nodes if len(n.operands) == 2] == [
        f"s{s}.b{b}.act3" for s, b in ((1, 0), (2, 0), (2, 1), (2, 2), (3, 0), (4, 0))
    ]
    identity = [gr.nodes[e.src].name for n in gr.nodes for e in n.operands if not e.ops]
    assert identity == ["s2.b0.act3", "s2.b1.act3"]  # the shortcuts of the two stacked blocks
    # 6 blocks: 1 + 6 x 2 with shortcuts, 1 + 6 x 3 without.
    assert float(apl.normalized_apl(gr, nonlinear(gr, {}))) == 13
    assert float(apl.normalized_apl(gp, nonlinear(gp, {}))) == 19
    graphdef, state = nnx.split(plain)
    out = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=True))(state, X)
    assert out.shape == (4, 5) and np.all(np.isfinite(out))


def test_prelu_variant():
    """Slopes in every activation (stem, act1-3 of each block); all slopes 1: no nonlinear unit left.
    (Its forward pass is `test_graph_evaluates_to_the_model`'s.)"""
    linear = _small(activation="prelu", prelu_init=1.0)
    s = apl.summary(linear.graph(), _params(linear))
    assert s["apl"] == 0 and s["nonlinear_units"] == 0 and s["units"] == 2 + 6 * (2 * 1 + 4 * 3 + 8 + 16)
    assert set(_params(linear)["stage2"]["rest"]) >= {"act1", "act2", "act3"}


@pytest.mark.parametrize(
    "override,words",
    [
        (["model.block=bottleneck"], ["model.depth=20", "bottleneck", "50, 101, 152"]),
        (["model.depth=101"], ["model.depth=101", "6n+2"]),  # a bottleneck depth for basic blocks
        (["model.block=wide"], ["model.block", "basic, bottleneck"]),
        (["model.stem=big"], ["model.stem", "cifar", "imagenet"]),
        (["model.stem=imagenet"], ["model.stem", "bottleneck"]),
    ],
)
def test_bad_model_configs_give_one_line(override, words):
    with pytest.raises(UserError) as e:
        load_config(None, overrides=override)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("stem,expected", [("auto", "imagenet"), ("cifar", "cifar")])
def test_config_selects_the_bottleneck_net(stem, expected):
    cfg = load_config(None, overrides=["model.block=bottleneck", "model.depth=50", f"model.stem={stem}"])
    model = nnx.eval_shape(lambda: build_model(cfg["model"], num_classes=10, image_shape=(64, 64, 3), rngs=nnx.Rngs(0)))
    assert isinstance(model, BottleneckResNet) and model.stem == expected and model.stages == (3, 4, 6, 3)
    assert model.widths == [16, 32, 64, 128]  # the default width 16
    basic = nnx.eval_shape(
        lambda: build_model(load_config(None)["model"], num_classes=10, image_shape=(8, 8, 3), rngs=nnx.Rngs(0))
    )
    assert type(basic).__name__ == "ResNet"


def test_experiment_file_loads():
    full = load_config(ROOT / "experiments" / "resnet50_imagenet.py", size="full")
    m, o, t = full["model"], full["optim"], full["train"]
    assert (m["name"], m["block"], m["depth"], m["width"], full["data"]["name"]) == (
        "resnet",
        "bottleneck",
        50,
        64,
        "imagenet2012",
    )
    assert (t["batch_size"], t["epochs"], o["lr"], o["momentum"], o["weight_decay"]) == (256, 90.0, 0.1, 0.9, 1e-4)
    assert o["schedule"] == "step" and [round(90 * f) for f in o["milestones"]] == [30, 60, 80]
    smoke = load_config(ROOT / "experiments" / "resnet50_imagenet.py", size="smoke")
    assert smoke["data"]["name"] == "synthetic" and smoke["data"]["synthetic"]["image_shape"] == [64, 64, 3]


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss():
    """SGD on one fixed batch of tiny images (imagenet stem: the 7x7 stride-2 conv and the pool in
    the backward pass), BN in training mode: the loss falls, and the stacked blocks' BN statistics
    move. Slow: compiling the training step takes seconds on CPU."""
    model = _small(stem="imagenet", width=4, num_classes=4)
    graphdef, params, bstats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = jax.random.normal(jax.random.key(0), (16, 32, 32, 3))
    y = jnp.arange(16) % 4

    @jax.jit
    def step(params, bstats):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, jax.tree.map(lambda v: v, bstats))
            logits = m(x, train=True)
            loss = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, g), new_stats, loss

    before = nnx.to_pure_dict(bstats)
    losses = []
    for _ in range(8):
        params, bstats, loss = step(params, bstats)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    moved = jax.tree.map(
        lambda a, b: bool(np.all(np.any(np.asarray(a) != np.asarray(b), axis=-1))), nnx.to_pure_dict(bstats), before
    )
    assert all(jax.tree.leaves(moved))


@pytest.mark.slow
def test_experiment_smoke_trains(tmp_path):
    """`experiments/resnet50_imagenet.py` at smoke size (ResNet-50, width 4, synthetic 64x64) through
    `normjax.train`, shortened to a few steps."""
    from normjax.training.loop import train

    cfg = load_config(
        ROOT / "experiments" / "resnet50_imagenet.py",
        size="smoke",
        overrides=[
            "train.steps=4",
            "train.steps_per_dispatch=2",
            "train.eval_train_examples=64",
            "data.synthetic.num_test=64",
            "train.eval_batch_size=64",
        ],
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "done" and 0 <= summary["test_accuracy"] <= 1, summary
