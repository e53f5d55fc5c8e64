"""Average path length: the paper's values, brute-force path enumeration, the in-step hook."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from normjax.analysis import apl
from normjax.analysis.graph import Edge, Graph, Node, Op, check, linearize, nonlinear
from normjax.config import DEFAULTS
from normjax.models import build_model
from normjax.models.structure import get_path

DENSE = (Op("dense", ("w",)),)


def model_graph(name: str, depth: int, shortcut: bool = True, width: int = 16):
    cfg = dict(DEFAULTS["model"], name=name, depth=depth, shortcut=shortcut, activation="prelu", width=width)
    model = nnx.eval_shape(lambda: build_model(cfg, num_classes=10, image_shape=(32, 32, 3), rngs=nnx.Rngs(0)))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return model.graph(), params


@pytest.mark.parametrize("shortcut,expected", [(True, 14.5), (False, 19.0)])
def test_resnet20_apl_nothing_linearized(shortcut, expected):
    g, params = model_graph("resnet", 20, shortcut)
    check(g)
    s = apl.summary(g, params)
    assert s["apl"] == expected  # stem 1 + 9 blocks x 1.5 (residual) or x 2 (plain)
    assert s["units"] == 16 * 7 + 32 * 6 + 64 * 6 and s["nonlinear_units"] == s["units"]
    assert s["nonlinear_layers"] == 19 and s["effective_width"] == pytest.approx(s["units"] / 19)
    # Unnormalized: a plain net's every path meets one unit per layer; with shortcuts, more paths
    # skip blocks than go through them, but the wide ones dominate the count.
    assert (
        s["apl_unnormalized"] == pytest.approx(19.0, rel=1e-12) if not shortcut else 14.5 < s["apl_unnormalized"] < 19
    )


def test_all_linear_is_zero_and_relu_ignores_slopes():
    g, params = model_graph("resnet", 20)
    ones = linearize(g, jax.tree.map(lambda x: x + 0.995, params))  # every slope within 0.01 of 1
    s = apl.summary(g, ones)
    assert s["apl"] == 0 and s["apl_unnormalized"] == 0 and s["nonlinear_units"] == 0
    assert s["effective_width"] == 0 and s["profile"] == [0.0] * 19
    # A ReLU model has no slopes: every unit is nonlinear.
    cfg = dict(DEFAULTS["model"], depth=20)
    relu = nnx.eval_shape(lambda: build_model(cfg, num_classes=10, image_shape=(32, 32, 3), rngs=nnx.Rngs(0)))
    assert float(apl.normalized_apl(relu.graph(), nonlinear(relu.graph(), {}))) == 14.5


def test_resnet110_is_fast_and_matches_the_recursion():
    g, params = model_graph("resnet", 110)
    apl.summary(g, params)
    t = time.perf_counter()
    s = apl.summary(g, params)
    assert time.perf_counter() - t < 1.0
    assert s["apl"] == 1 + 54 * 1.5 and np.isfinite(s["apl_unnormalized"])


# ---- brute force: enumerate every channel path of small graphs -----------------------------------


def enumerate_paths(g: Graph, nl: list[np.ndarray]):
    """(probability under the backward random walk, nonlinear count) of every input→logit path."""
    out = []
    n_out = g.nodes[-1].channels

    def walk(v, c, prob, count):
        count += float(nl[v][c])
        node = g.nodes[v]
        if not node.operands:
            out.append((prob, count))
            return
        for e in node.operands:
            p = prob / len(node.operands)
            if e.full:
                for c2 in range(g.nodes[e.src].channels):
                    walk(e.src, c2, p / g.nodes[e.src].channels, count)
            else:
                walk(e.src, c, p, count)

    for c in range(n_out):
        walk(len(g.nodes) - 1, c, 1.0 / n_out, 0.0)
    return out


def random_graph(rng: np.random.Generator, kind: str) -> Graph:
    """A small random MLP, or a residual graph with identity and projection shortcuts."""
    nodes = [Node("in", int(rng.integers(1, 4)), "input", ())]
    for i in range(int(rng.integers(2, 5))):
        prev = len(nodes) - 1
        width = int(rng.integers(1, 4))
        operands = [Edge(prev, DENSE)]
        if kind == "residual" and prev > 0:
            skip = int(rng.integers(0, prev))  # a long skip: a projection (full) edge
            same = nodes[prev].channels == width
            operands.append(Edge(prev, ()) if same and rng.random() < 0.7 else Edge(skip, DENSE))
            if rng.random() < 0.5:
                operands.append(Edge(int(rng.integers(0, prev + 1)), DENSE))
        nodes.append(Node(f"h{i}", width, "prelu", tuple(operands), (f"h{i}",)))
    nodes.append(Node("out", int(rng.integers(1, 3)), "output", (Edge(len(nodes) - 1, DENSE),)))
    g = Graph(tuple(nodes))
    check(g)
    return g


@pytest.mark.parametrize("kind", ["mlp", "residual"])
def test_both_apls_equal_brute_force_enumeration(kind):
    rng = np.random.default_rng(0 if kind == "mlp" else 1)
    for _ in range(25):
        g = random_graph(rng, kind)
        params = {n.slope[0]: {"slope": rng.choice([0.0, 0.3, 1.0], n.channels)} for n in g.nodes if n.slope}
        nl = nonlinear(g, params)
        paths = enumerate_paths(g, nl)
        assert len(paths) > 0 and sum(p for p, _ in paths) == pytest.approx(1.0)
        normalized = sum(p * c for p, c in paths)
        unnormalized = np.mean([c for _, c in paths])  # every logit has the same paths count
        assert float(apl.normalized_apl(g, nl)) == pytest.approx(normalized, rel=1e-12, abs=1e-12)
        assert float(apl.unnormalized_apl(g, nl)) == pytest.approx(unnormalized, rel=1e-12, abs=1e-12)
        # The log path count of the logits is the number of enumerated paths per logit.
        logn, _ = apl.path_counts(g, nl)
        assert np.exp(logn[-1]) == pytest.approx(np.full(g.nodes[-1].channels, len(paths) / g.nodes[-1].channels))
        # Traced (the hook's path) equals the host computation.
        traced = jax.jit(lambda p: (apl.normalized_apl(g, nonlinear(g, p)), apl.unnormalized_apl(g, nonlinear(g, p))))(
            jax.tree.map(jnp.asarray, params)
        )
        assert float(traced[0]) == pytest.approx(normalized, rel=1e-5)
        assert float(traced[1]) == pytest.approx(unnormalized, rel=1e-5)


def test_identity_shortcut_keeps_channels_apart():
    """An identity edge links channel c to c only: a channel whose own chain is linear is shallower."""
    g = Graph(
        (
            Node("in", 2, "input", ()),
            Node("a", 2, "prelu", (Edge(0, DENSE),), ("a",)),
            Node("b", 2, "prelu", (Edge(1, ()),), ("b",)),
            Node("out", 1, "output", (Edge(2, DENSE),)),
        )
    )
    nl = nonlinear(g, {"a": {"slope": np.array([0.0, 1.0])}, "b": {"slope": np.array([0.0, 1.0])}})
    assert float(apl.normalized_apl(g, nl)) == 1.0  # channel 0: 2 units, channel 1: 0; mean 1
    assert [int(x) for x in apl.layer_counts(g, nl)] == [1, 1]
    assert float(apl.effective_width(g, nl)) == 1.0


def test_effective_width_skips_layers_without_nonlinear_units():
    g = Graph(
        (Node("in", 1, "input", ()),)
        + tuple(Node(f"h{i}", 4, "prelu", (Edge(i, DENSE),), (f"h{i}",)) for i in range(3))
        + (Node("out", 1, "output", (Edge(3, DENSE),)),)
    )
    params = {
        "h0": {"slope": np.array([0, 0, 1, 1.0])},
        "h1": {"slope": np.ones(4)},
        "h2": {"slope": np.array([0, 1, 1, 1.0])},
    }
    nl = nonlinear(g, params)
    assert float(apl.effective_width(g, nl)) == 1.5
    assert [float(x) for x in apl.core_profile(g, nl)] == [0.5, 0.0, 0.25]
    assert float(apl.normalized_apl(g, nl)) == 0.75


def test_graph_json_round_trip_and_check_rejects_bad_graphs():
    g, _ = model_graph("resnet", 8)
    assert Graph.from_json(g.to_json()) == g
    bad = Graph(
        (Node("in", 2, "input", ()), Node("a", 3, "relu", (Edge(0, ()),)), Node("out", 1, "output", (Edge(1, DENSE),)))
    )
    with pytest.raises(ValueError, match="identity operand"):
        check(bad)


def test_import_analysis_loads_no_training_stack():
    import subprocess
    import sys

    code = (
        "import sys, normjax.analysis; print(' '.join(m for m in ('flax', 'optax', 'orbax', 'tensorflow_datasets', "
        "'matplotlib', 'normjax.training', 'normjax.models', 'normjax.metrics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_1d_resnet8_graph_and_apls_worked_by_hand():
    """A 1-D ResNet-8 of width 2 on MNIST-1D-shaped signals (1 x 40 x 1): its graph node by node,
    and both APLs with one unit of s1.b0.act1 and all of s2.b0.act2 linear, computed by hand."""
    cfg = dict(DEFAULTS["model"], name="resnet", depth=8, width=2, activation="prelu")
    model = nnx.eval_shape(lambda: build_model(cfg, num_classes=10, image_shape=(1, 40, 1), rngs=nnx.Rngs(0)))
    g = model.graph()
    check(g)
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    # the nodes, their channels and operands: (source, weight ops as (kind, stride), identity when empty)
    got = [
        (
            n.name,
            n.channels,
            [(g.nodes[e.src].name, [(o.kind, o.stride) for o in e.ops if o.kind != "bn"]) for e in n.operands],
        )
        for n in g.nodes
    ]
    assert got == [
        ("input", 1, []),
        ("stem", 2, [("input", [("conv", 1)])]),
        ("s1.b0.act1", 2, [("stem", [("conv", 1)])]),
        ("s1.b0.act2", 2, [("s1.b0.act1", [("conv", 1)]), ("stem", [])]),
        ("s2.b0.act1", 4, [("s1.b0.act2", [("conv", 2)])]),
        ("s2.b0.act2", 4, [("s2.b0.act1", [("conv", 1)]), ("s1.b0.act2", [("conv", 2)])]),
        ("s3.b0.act1", 8, [("s2.b0.act2", [("conv", 2)])]),
        ("s3.b0.act2", 8, [("s3.b0.act1", [("conv", 1)]), ("s2.b0.act2", [("conv", 2)])]),
        ("logits", 10, [("s3.b0.act2", [("avgpool", 1), ("dense", 1)])]),
    ]
    # 1 x 3 convs along the signal, 1 x 1 projections
    shapes = {l.name: get_path(params, l.path).shape[:2] for l in model.layers()}
    assert shapes == {"stem": (1, 3)} | {f"s{s}.b0.conv{i}": (1, 3) for s in (1, 2, 3) for i in (1, 2)} | {
        "s2.b0.proj": (1, 1),
        "s3.b0.proj": (1, 1),
        "head": (8, 10),
    }
    params["stage1"]["first"]["act1"]["slope"][:] = [1.0, 0.0]  # channel 0 linear
    params["stage2"]["first"]["act2"]["slope"][:] = 1.0  # the whole node linear
    nl = nonlinear(g, params)
    # Normalized, per channel A(v) = nl(v) + mean over operands (a full edge: the mean of A(u)):
    # stem 1; s1.b0.act1 [0, 1] + 1 = [1, 2]; s1.b0.act2 1 + (1.5 + 1) / 2 = 2.25;
    # s2.b0.act1 3.25; s2.b0.act2 0 + (3.25 + 2.25) / 2 = 2.75; s3.b0.act1 3.75;
    # s3.b0.act2 1 + (3.75 + 2.75) / 2 = 4.25 = the logits'.
    assert float(apl.normalized_apl(g, nl)) == 4.25
    # Unnormalized: path counts N (a full edge sums N over the source's channels) and mean counts:
    # stem N 1, A 1; s1.b0.act1 N 2, A [1, 2]; s1.b0.act2 N 4 + 1 = 5, A 1 + (2 + 4 + 1) / 5 = 2.4;
    # s2.b0.act1 N 10, A 3.4; s2.b0.act2 N 40 + 10 = 50, A (40 x 3.4 + 10 x 2.4) / 50 = 3.2;
    # s3.b0.act1 N 200, A 4.2; s3.b0.act2 N 1600 + 200, A 1 + (1600 x 4.2 + 200 x 3.2) / 1800 = 229 / 45.
    assert float(apl.unnormalized_apl(g, nl)) == pytest.approx(229 / 45, rel=1e-12)
    assert [int(x) for x in apl.layer_counts(g, nl)] == [2, 1, 2, 4, 0, 8, 8]


@pytest.mark.parametrize("optim", [{"name": "sgd"}, {"name": "sgd_prelu_l1", "prelu_l1": 0.0}])
def test_the_hook_counts_linear_units_by_the_runs_tolerance(tmp_path, optim):
    """One rule for "linear" everywhere: the in-step hook reads `optim.prelu_tolerance` (traced
    where the optimizer injects it, else from the config), as `normjax apl` and eval do. Slopes
    start at 0.95: linear within a tolerance of 0.1, nonlinear within the default 0.01."""
    from helpers import small_config
    from normjax.studies.apl.nonlinear_units import run_apl
    from normjax.training.loop import train
    from normjax.training.rundir import RunDir

    model = {"depth": 2, "width": 8, "activation": "prelu", "prelu_init": 0.95}
    for tol, linear in ((0.1, True), (0.01, False)):
        cfg = small_config(
            model=model,
            optim=optim | {"lr": 1e-4, "momentum": 0.0, "prelu_tolerance": tol},
            train={"steps": 2, "steps_per_dispatch": 2},
            log={"metrics": ["apl"], "dense_steps": 2},
        )
        run = tmp_path / f"{optim['name']}-{tol}"
        train(cfg, run, progress=False)
        last = list(RunDir(run).read_metrics())[-1]
        assert last["nonlinear_units"] == (0 if linear else 16), (tol, last["nonlinear_units"])
        assert last["nonlinear_units"] == run_apl(run)["nonlinear_units"]
