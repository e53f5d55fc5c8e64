"""The residual BN MLP (`model.shortcut=true` on mlp): blocks dense-BN-act-dense-BN, + identity, act.

Its plain twin (the default: `auto` is false for mlp, true for resnet) is today's MLP; the
residual one's layers, masks, graph, APL and folding follow its blocks. Folded and graph-evaluated
logits are compared with the model's own eval-mode forward pass on random parameters and BN
statistics (two different programs: float32 rounding apart, relative deviation
max |Δ| / max(1, max |logit|) <= 1e-5).
"""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import small_config
from normjax.analysis import apl
from normjax.analysis.fold import apply_folded, apply_graph, fold, stats
from normjax.analysis.graph import check, nonlinear, subtree
from normjax.config import DEFAULTS, load_config, merge
from normjax.errors import UserError
from normjax.models import MLP, build_model, has_shortcuts, layer_axes, per_layer, prelu_mask, scale_invariant_mask
from normjax.models.structure import get_path
from normjax.sweep.spec import config_hash
from normjax.training.loop import config_diff, read_run, train
from normjax.training.rundir import RunDir

SHAPE = (2, 2, 2)  # 8 input features
WIDTH = 4


def _build(depth=5, shortcut=True, activation="prelu", width=WIDTH, seed=0, **kw):
    cfg = dict(DEFAULTS["model"], name="mlp", depth=depth, width=width, activation=activation, shortcut=shortcut, **kw)
    return build_model(cfg, num_classes=3, image_shape=SHAPE, rngs=nnx.Rngs(seed))


def _trees(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def _randomize(params, stats_, seed=0):
    """Random kernels, BN scales/biases/statistics, head bias, and slopes in [0, 0.5) (nonlinear)."""
    rng = np.random.default_rng(seed)

    def draw(path, a):
        key, shape = jax.tree_util.keystr(path), a.shape
        if key.endswith("['kernel']"):
            return rng.normal(0, np.sqrt(2.0 / shape[-2]), shape).astype(np.float32)
        lo_hi = {
            "['mean']": (-0.5, 0.5),
            "['var']": (0.5, 2.0),
            "['scale']": (0.5, 1.5),
            "['bias']": (-0.5, 0.5),
            "['slope']": (0.0, 0.5),
        }
        ((lo, hi),) = [v for k, v in lo_hi.items() if key.endswith(k)]
        return rng.uniform(lo, hi, shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, params), jax.tree_util.tree_map_with_path(draw, stats_)


def _set_linear(params, graph, channels: dict):
    """`params` with the slopes of `{node name: channels}` set to exactly 1 (`None`: all channels)."""
    params = copy.deepcopy(jax.tree.map(np.array, params))
    for n in graph.nodes:
        if n.name in channels:
            sl = subtree(params, n.slope)["slope"]
            row = sl if n.index is None else sl[n.index]
            row[slice(None) if channels[n.name] is None else list(channels[n.name])] = 1.0
    return params


def _forward(model, params, stats_, x):
    """The model's eval-mode logits with `params` and `stats_` put in (the model itself is left as it is)."""
    graphdef, p, s = nnx.split(model, nnx.Param, nnx.BatchStat)
    p, s = jax.tree.map(lambda v: v, p), jax.tree.map(lambda v: v, s)
    nnx.replace_by_pure_dict(p, jax.tree.map(jnp.asarray, params))
    nnx.replace_by_pure_dict(s, jax.tree.map(jnp.asarray, stats_))
    return nnx.merge(graphdef, p, s)(jnp.asarray(x), train=False)


def _close(out, ref, rtol=1e-5):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape
    dev = np.abs(out - ref).max() / max(1.0, np.abs(ref).max())
    assert dev <= rtol, dev


def _x(n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


# ---- the plain default and the config --------------------------------------------------------


def test_plain_is_the_default_and_unchanged():
    """shortcut=auto (the default) and false build today's MLP: its parameter tree, layers and graph."""
    assert DEFAULTS["model"]["shortcut"] == "auto"
    default = build_model(
        dict(DEFAULTS["model"], name="mlp", depth=4, width=WIDTH, activation="prelu"),
        num_classes=3,
        image_shape=SHAPE,
        rngs=nnx.Rngs(0),
    )
    plain = _build(depth=4, shortcut=False)
    p0, p1 = _trees(default)[0], _trees(plain)[0]
    paths = sorted(jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(p0))
    assert paths == sorted(
        f"['{a}']{b}"
        for a, b in [
            ("head", "['bias']"),
            ("head", "['kernel']"),
            *[
                ("hidden", f"['{s}']['{m}']['{v}']")
                for s in ("first", "rest")
                for m, v in (("act", "slope"), ("bn", "bias"), ("bn", "scale"), ("dense", "kernel"))
            ],
        ]
    )
    jax.tree.map(np.testing.assert_array_equal, p0, p1)
    assert np.shape(p0["hidden"]["rest"]["dense"]["kernel"]) == (3, WIDTH, WIDTH)
    assert [l.name for l in plain.layers()] == ["fc0", "fc1", "fc2", "fc3", "head"]
    assert all(len(n.operands) == 1 for n in plain.graph().nodes[1:])  # no shortcut edge
    x = jnp.asarray(_x())
    np.testing.assert_array_equal(default(x, train=False), plain(x, train=False))


def test_config_opt_in_and_odd_depth():
    cfg = load_config("experiments/mlp_digits.py", overrides=["model.depth=5", "model.shortcut=true"])
    assert cfg["model"]["shortcut"] is True
    with pytest.raises(UserError) as e:
        load_config("experiments/mlp_digits.py", overrides=["model.shortcut=true"])  # depth 6
    msg = str(e.value)
    assert "\n" not in msg and "model.depth=6" in msg and "model.shortcut=true" in msg and "odd" in msg, msg
    load_config("experiments/mlp_digits.py", overrides=["model.shortcut=auto"])  # plain: depth 6 is fine
    with pytest.raises(ValueError, match="odd"):  # the model itself, built without the config
        MLP(depth=4, width=WIDTH, in_features=8, num_classes=3, shortcut=True, rngs=nnx.Rngs(0))


def _from_config(*overrides, path="experiments/mlp_digits.py"):
    cfg = load_config(path, overrides=list(overrides))
    return build_model(cfg["model"], num_classes=3, image_shape=SHAPE, rngs=nnx.Rngs(0))


def test_the_key_is_model_shortcut():
    """`model.shortcut=true` on an mlp builds the residual MLP; `auto` (the default) the plain one,
    its parameters bit for bit those of `false`; a resnet's `auto` keeps its shortcuts."""
    residual = _from_config("model.depth=5", "model.shortcut=true")
    assert isinstance(residual, MLP) and residual.shortcut and residual.blocks == 2
    assert has_shortcuts(
        load_config("experiments/mlp_digits.py", overrides=["model.depth=5", "model.shortcut=true"])["model"]
    )
    auto, false = _from_config("model.depth=5"), _from_config("model.depth=5", "model.shortcut=false")
    assert not auto.shortcut and not false.shortcut and not has_shortcuts(DEFAULTS["model"] | {"name": "mlp"})
    (pa, sa), (pf, sf) = _trees(auto), _trees(false)
    assert jax.tree.structure(pa) == jax.tree.structure(pf) and jax.tree.structure(sa) == jax.tree.structure(sf)
    jax.tree.map(np.testing.assert_array_equal, pa, pf)
    resnet = load_config("experiments/resnet_digits.py")["model"]
    assert resnet["shortcut"] == "auto" and has_shortcuts(resnet)
    for m in (resnet, dict(resnet, block="bottleneck", depth=50)):
        build = lambda m: nnx.eval_shape(
            lambda: build_model(
                m,
                num_classes=3,
                image_shape=(32, 32, 3),  # noqa: E731
                rngs=nnx.Rngs(0),
            )
        )
        assert build(m).shortcut is True and build(dict(m, shortcut=False)).shortcut is False
        assert any(not e.ops for n in build(m).graph().nodes for e in n.operands)  # identity edges


@pytest.mark.parametrize("text, shown", [("maybe", "'maybe'"), ("1", "1"), ("[true]", "[True]"), ("null", "None")])
def test_a_bad_shortcut_is_one_line(text, shown):
    with pytest.raises(UserError) as e:
        load_config("experiments/mlp_digits.py", overrides=[f"model.shortcut={text}"])
    msg = str(e.value)
    assert "\n" not in msg and "model.shortcut" in msg and shown in msg and "allowed: auto, true, false" in msg, msg


def test_run_names_and_stored_configs_keep_their_meaning():
    """Run names hash a resnet's `shortcut: true` (the default every resnet config stored before
    `auto`) as the default, and a stored true compares equal to `auto`; an mlp's true is the
    residual MLP: another name and another config."""
    resnet = load_config("experiments/resnet_digits.py")
    for value, same in ((True, True), (False, False), ("auto", True)):
        cfg = merge(resnet, {"model": {"shortcut": value}})
        assert (config_hash(cfg) == config_hash(resnet)) is same and (config_diff(cfg, resnet) == "") is same
    mlp = load_config("experiments/mlp_digits.py", overrides=["model.depth=5"])
    for value, same in ((False, True), (True, False)):
        cfg = merge(mlp, {"model": {"shortcut": value}})
        assert (config_hash(cfg) == config_hash(mlp)) is same and (config_diff(cfg, mlp) == "") is same


def test_an_old_mlp_run_dir_reads_as_the_plain_mlp_it_trained(tmp_path):
    """An mlp run written while model.shortcut was resnet only stored `shortcut: true` (and, for a
    while, `mlp_shortcut: false`): its graph.json has no identity edge, so it reads as the plain MLP,
    which its checkpoint holds; it is the same run as today's config."""
    cfg = small_config(train={"steps": 8})
    assert train(cfg, tmp_path / "run")["status"] == "done"
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["model"]["shortcut"] == "auto"
    stored["model"] |= {"shortcut": True, "mlp_shortcut": False}
    (tmp_path / "run" / "config.json").write_text(json.dumps(stored))
    assert RunDir(tmp_path / "run").read_config()["model"] == dict(cfg["model"], shortcut=False)
    read, _, program, step, _ = read_run(tmp_path / "run")
    assert step == 8 and read["model"]["shortcut"] is False and not program.graph.nodes[-2].operands[1:]
    assert train(cfg, tmp_path / "run").get("already") is True
    residual = small_config(model={"depth": 3, "shortcut": True}, train={"steps": 8})
    assert train(residual, tmp_path / "residual")["status"] == "done"
    assert RunDir(tmp_path / "residual").read_config()["model"]["shortcut"] is True


# ---- structure: parameters, layers, masks ------------------------------------------------------


def test_blocks_layers_and_masks():
    model = _build(depth=5)
    params, _ = _trees(model)
    rest = params["hidden"]["rest"]
    assert model.blocks == 2 and set(rest) == {"dense1", "bn1", "act1", "dense2", "bn2", "act2"}
    assert np.shape(rest["dense1"]["kernel"]) == (2, WIDTH, WIDTH) and np.shape(rest["act2"]["slope"]) == (2, WIDTH)
    layers = model.layers()
    assert [(l.name, l.depth, l.path[-2], l.index) for l in layers] == [
        ("fc0", 0, "dense", None),
        ("fc1", 1, "dense1", 0),
        ("fc2", 2, "dense2", 0),
        ("fc3", 3, "dense1", 1),
        ("fc4", 4, "dense2", 1),
        ("head", 5, "head", None),
    ]
    got = per_layer(params, layers)  # each layer's own slice of the stacked kernels
    for i, l in enumerate(layers):
        leaf = np.asarray(get_path(params, l.path))
        np.testing.assert_allclose(got[i], np.sum((leaf if l.index is None else leaf[l.index]) ** 2), rtol=1e-6)
    si, pm, axes = scale_invariant_mask(params, layers), prelu_mask(params), layer_axes(params)
    assert si["hidden"]["rest"]["dense1"]["kernel"] and si["hidden"]["rest"]["dense2"]["kernel"]
    assert not si["head"]["kernel"] and not si["hidden"]["rest"]["bn2"]["scale"]
    assert pm["hidden"]["rest"]["act1"]["slope"] and pm["hidden"]["first"]["act"]["slope"]
    assert axes["hidden"]["rest"]["dense2"]["kernel"] == 1 and axes["hidden"]["first"]["dense"]["kernel"] == 0


def test_block_is_the_residual_formula():
    """block(x) = act(x + BN(W2 act(BN(W1 x)))), in training mode (batch statistics) too."""
    model = _build(depth=3, activation="relu")
    x = jnp.asarray(_x(n=16).reshape(16, -1))
    h = model.hidden.first(x, True)
    p = _trees(model)[0]["hidden"]["rest"]
    bn = lambda z, q: (z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-5) * q["scale"][0] + q["bias"][0]  # noqa: E731
    ref = jax.nn.relu(
        h + bn(jax.nn.relu(bn(h @ p["dense1"]["kernel"][0], p["bn1"])) @ p["dense2"]["kernel"][0], p["bn2"])
    )
    _close(model.hidden(x, True), ref, rtol=1e-5)


# ---- graph and APL -------------------------------------------------------------------------------


def test_graph_records_the_identity_shortcuts():
    graph = _build(depth=5).graph()
    check(graph)
    assert graph.names() == ["fc0", "fc1", "fc2", "fc3", "fc4"]
    shortcuts = [(n.name, graph.nodes[e.src].name) for n in graph.nodes for e in n.operands if not e.ops]
    assert shortcuts == [("fc2", "fc0"), ("fc4", "fc2")]
    assert [n.slope for n in graph.nodes[1:-1]] == [("hidden", "first", "act")] + [
        ("hidden", "rest", f"act{k}") for k in (1, 2, 1, 2)
    ]
    assert [n.index for n in graph.nodes[1:-1]] == [None, 0, 0, 1, 1]


def test_apl_by_hand():
    """Normalized APL (the backward walk, ½ each at a block's sum) of depth 5 = fc0 + 2 blocks.

    All ReLU: A(fc0) = 1, A(fc1) = 2, A(fc2) = 1 + (2 + 1)/2 = 2.5, A(fc3) = 3.5,
    A(fc4) = 1 + (3.5 + 2.5)/2 = 4: APL 4 (the plain MLP of depth 5: 5).

    Some units linear (width 4; per channel, nonlinear = 1): fc0 [0, 0, 1, 1], fc1 all linear,
    fc2 [0, 1, 1, 1], fc3 all nonlinear, fc4 [1, 0, 1, 0]:
      A(fc0) = [0, 0, 1, 1] (mean 1/2); A(fc1) = 0 + 1/2 = 1/2 per channel;
      A(fc2) = nl + (1/2 + A(fc0)) / 2 = [0, 1, 1, 1] + [1/4, 1/4, 3/4, 3/4] = [1/4, 5/4, 7/4, 7/4] (mean 5/4);
      A(fc3) = 1 + 5/4 = 9/4; A(fc4) = nl + (9/4 + A(fc2)) / 2 = [1, 0, 1, 0] + [5/4, 7/4, 2, 2]
      = [9/4, 7/4, 3, 2]: APL = mean = 9/4.

    Unnormalized, all ReLU (d = 8 inputs, w = 4): N(fc0) = d, N(fc1) = w d, N(fc2) = (w² + 1) d with
    A(fc2) = 1 + (2 w² + 1)/(w² + 1) = 50/17, and A(fc4) = 1 + A(fc2) + w²/(w² + 1) = 83/17.
    """
    relu = _build(depth=5, activation="relu").graph()
    assert apl.normalized_apl(relu, nonlinear(relu, {})) == 4.0
    assert apl.unnormalized_apl(relu, nonlinear(relu, {})) == pytest.approx(83 / 17, rel=1e-12)
    plain = _build(depth=5, shortcut=False, activation="relu").graph()
    assert apl.normalized_apl(plain, nonlinear(plain, {})) == 5.0

    model = _build(depth=5, prelu_init=0.0)
    graph, (params, _) = model.graph(), _trees(model)
    linear = {"fc0": [0, 1], "fc1": None, "fc2": [0], "fc4": [1, 3]}
    params = _set_linear(params, graph, linear)
    nl = nonlinear(graph, params)
    assert [np.asarray(v).tolist() for v in nl[1:-1]] == [[0, 0, 1, 1], [0] * 4, [0, 1, 1, 1], [1] * 4, [1, 0, 1, 0]]
    assert apl.normalized_apl(graph, nl) == 2.25
    traced = jax.jit(lambda p: apl.normalized_apl(graph, nonlinear(graph, p)))(jax.tree.map(jnp.asarray, params))
    assert float(traced) == pytest.approx(2.25, rel=1e-6)  # the apl metric hook's (traced) path
    s = apl.summary(graph, params)
    assert s["apl"] == 2.25 and s["nonlinear_units"] == 2 + 0 + 3 + 4 + 2 and s["units"] == 20


# ---- evaluation from the graph, folding -------------------------------------------------------------


def test_graph_evaluation_equals_the_model():
    model = _build(depth=7)
    graph, (p0, s0) = model.graph(), _trees(model)
    params, stats_ = _randomize(p0, s0, seed=1)
    x = _x()
    _close(apply_graph(graph, params, stats_, x), _forward(model, params, stats_, x))


@pytest.mark.parametrize("pattern", ["none", "partial", "blocks", "all"])
def test_residual_mlp_folds_exactly(pattern):
    """Folding a residual MLP with some slopes exactly 1 equals the model; every fully linear node
    folds away (dense∘dense and identity edges compose), so an all-linear MLP is one dense layer."""
    model = _build(depth=5)
    graph, (p0, s0) = model.graph(), _trees(model)
    base, stats_ = _randomize(p0, s0, seed=2)
    linear = {
        "none": {},
        "partial": {"fc1": [0, 2], "fc2": [1], "fc4": [3]},
        "blocks": {"fc1": None, "fc2": [0, 1], "fc4": None},
        "all": {f"fc{i}": None for i in range(5)},
    }[pattern]
    params = _set_linear(base, graph, linear)
    folded = fold(graph, params, stats_)
    x = _x()
    ref = _forward(model, params, stats_, x)
    _close(apply_folded(folded, x), ref)
    _close(apply_graph(graph, params, stats_, x), ref)
    gone = sorted(k for k, v in linear.items() if v is None)
    assert sorted(folded.eliminated) == gone
    assert stats(graph, input_shape=SHAPE, params=params)["depth"] == 6  # 5 hidden dense layers + head
    if pattern == "blocks":  # fc1 gone: fc0 -> fc2 is W1 W2 (BN folded) + the identity, one edge
        fc2 = [n for n in folded.nodes if n.name == "fc2"][0]
        assert [(folded.nodes[e.src].name, e.kind) for e in fc2.operands] == [("fc0", "dense")]
        assert [n.name for n in folded.nodes] == ["input", "fc0", "fc2", "fc3", "logits"]
    if pattern == "all":
        (edge,) = folded.nodes[-1].operands
        assert len(folded.nodes) == 2 and edge.pre == "flatten" and edge.kernel.shape == (8, 3)
        assert stats(folded, input_shape=SHAPE)["depth"] == 1


# ---- training through the loop -------------------------------------------------------------------


def test_residual_mlp_trains_with_elr_metrics(tmp_path):
    cfg = small_config(
        model={"depth": 5, "width": 32, "shortcut": True}, train={"steps": 16}, log={"metrics": ["layer_norms", "elr"]}
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "done" and summary["test_accuracy"] > 0.3, summary
    run = tmp_path / "run"
    assert [l["name"] for l in json.loads((run / "layers.json").read_text())] == [
        "fc0",
        "fc1",
        "fc2",
        "fc3",
        "fc4",
        "head",
    ]
    graph = json.loads((run / "graph.json").read_text())
    assert sum(1 for n in graph for e in n["operands"] if not e["ops"]) == 2  # the two identity shortcuts
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows[-1]["w_norm"]) == 6 and len(rows[-1]["elr"]) == 6
    assert np.all(np.isfinite(rows[-1]["elr"]))
