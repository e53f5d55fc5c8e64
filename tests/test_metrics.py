"""The in-step metric hooks: the ELR hook's identities on real steps, hooks only on logged steps."""

import json

import jax
import numpy as np
import pytest

from helpers import assert_close, small_config
from normjax import metrics
from normjax.errors import UserError
from normjax.training.inputs import input_for
from normjax.training.loop import dataset_for, program_for, train
from normjax.training.rundir import RunDir

ELR_KEYS = ("w_norm", "g_norm", "base_grad", "layer_lr", "elr", "elr_classic", "rel_step", "cos_gw")


def _plain_sgd_run(tmp_path, model=None, data=None, **optim):
    cfg = small_config(
        model=model or {},
        data=data or {},
        optim={"momentum": 0.0, "weight_decay": 0.0, "lr": 0.2, **optim},
        train={"steps": 12},
        log={"metrics": ["elr"], "dense_steps": 12},
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = list(RunDir(tmp_path / "run").read_metrics())
    layers = json.loads((tmp_path / "run" / "layers.json").read_text())
    return cfg, summary, rows, layers


@pytest.mark.parametrize(
    "model,data",
    [({}, {}), ({"name": "resnet", "depth": 8, "width": 4}, {"name": "mnist1d"})],
    ids=["mlp", "resnet_1d"],
)
def test_elr_hook_identities_on_plain_sgd(tmp_path, model, data):
    """On a BN MLP, and on a 1-D ResNet (1x3 convs, 1x1 projections) on MNIST-1D."""
    cfg, summary, rows, layers = _plain_sgd_run(tmp_path, model, data)
    assert [r["step"] for r in rows] == list(range(12))
    si = np.array([l["scale_invariant"] for l in layers])
    assert si.sum() == len(layers) - 1 and not si[-1]  # hidden layers feed BN; the classifier does not
    m = {k: np.array([r[k] for r in rows], np.float64) for k in ELR_KEYS}
    for k in ELR_KEYS:
        assert m[k].shape == (12, len(layers)), k
    lr = 0.2
    np.testing.assert_allclose(m["layer_lr"], lr, rtol=1e-7)
    np.testing.assert_allclose(m["base_grad"], m["g_norm"] * m["w_norm"], rtol=1e-6)
    np.testing.assert_allclose(m["elr"], lr * m["g_norm"] / m["w_norm"], rtol=1e-6)
    np.testing.assert_allclose(m["elr_classic"], lr / m["w_norm"] ** 2, rtol=1e-6)
    # plain SGD: the step is -lr*g, so the relative step is the relative ELR
    np.testing.assert_allclose(m["rel_step"], m["elr"], rtol=1e-5)
    # scale-invariant layers: gradient orthogonal to the weight, and ||w'||^2 = ||w||^2 + lr^2 ||g||^2
    assert np.abs(m["cos_gw"][:, si]).max() < 1e-4
    assert np.abs(m["cos_gw"][:, ~si]).max() > 1e-2
    w2 = m["w_norm"][:, si] ** 2
    np.testing.assert_allclose(w2[1:], w2[:-1] + lr**2 * m["g_norm"][:-1, si] ** 2, rtol=2e-6)
    e = m["elr"][:, si]
    np.testing.assert_allclose([r["elr_spread"] for r in rows], e.max(1) / e.min(1), rtol=1e-5)
    np.testing.assert_allclose([r["elr_log_std"] for r in rows], np.log10(e).std(1), rtol=1e-4, atol=1e-7)
    assert summary["elr_log_spread"] == pytest.approx(np.mean(np.log10(e.max(1) / e.min(1))), rel=1e-5)
    assert summary["elr_log_spread_early"] == summary["elr_log_spread"]  # every step is inside dense_steps


def test_uniform_elr_run_has_spread_one_and_per_layer_lr(tmp_path):
    _, _, rows, layers = _plain_sgd_run(tmp_path, name="sgd_uniform_elr", elr_position="before_momentum")
    si = np.array([l["scale_invariant"] for l in layers])
    for r in rows:
        np.testing.assert_allclose(np.array(r["elr"])[si], 0.2, rtol=1e-5)
        np.testing.assert_allclose(np.array(r["rel_step"])[si], 0.2, rtol=1e-5)
        assert r["elr_spread"] == pytest.approx(1.0, abs=1e-5)
        assert np.array(r["layer_lr"])[~si] == pytest.approx(0.2)  # the classifier keeps the global LR
    assert np.ptp(np.array(rows[0]["layer_lr"])[si]) > 0  # layers got different LRs


@pytest.mark.cross_program
def test_hooks_run_only_on_logged_slots_and_do_not_change_training():
    cfg = small_config(log={"metrics": ["elr", "layer_norms"]})
    ds = dataset_for(cfg)
    program = program_for(cfg, input_for(cfg))
    images, labels = jax.numpy.asarray(ds.train_images), jax.numpy.asarray(ds.train_labels.astype(np.int32))
    stack = lambda s: jax.tree.map(lambda x: x[None], s)  # noqa: E731
    mask = np.zeros(program.chunk, bool)
    mask[[1, 5]] = True
    ULPS_HOOKS = 8 if jax.default_backend() == "cpu" else 64  # noqa: N806
    s_all, m_all = program.run_chunk(stack(program.init_state(cfg)), images, labels, program.chunk)
    s_some, m_some = program.run_chunk(stack(program.init_state(cfg)), images, labels, program.chunk, mask)
    leaves_all, leaves_some = jax.tree.leaves(s_all), jax.tree.leaves(s_some)
    assert len(leaves_all) == len(leaves_some)
    for a, b in zip(leaves_all, leaves_some, strict=True):
        # Equal up to rounding: the step with hooks on every slot and on some are two programs
        # that XLA fuses differently (a GPU more so: 2.6e-6 relative seen on an H200). A hook
        # that wrote into the state would be far outside.
        assert_close(a, b, ULPS_HOOKS, "state")
    assert_close(m_all["loss"], m_some["loss"], ULPS_HOOKS, "loss")
    for k in ("elr", "w_norm", "elr_spread", "l2_grads"):
        on, off = np.asarray(m_some[k][0, mask]), np.asarray(m_some[k][0, ~mask])
        assert_close(on, np.asarray(m_all[k][0, mask]), ULPS_HOOKS, k)
        assert np.all(off == 0) and np.all(on != 0), k


def test_summaries_come_from_registered_hooks():
    rows = [
        {"step": 0, "elr_spread": 10.0, "elr_spread_main": 100.0},
        {"step": 1, "elr_spread": "inf"},
        {"step": 5, "elr_spread": 1000.0, "elr_spread_main": 1e4},
    ]
    cfg = {"log": {"dense_steps": 2}}
    assert metrics.summarize(["layer_norms", "elr"], rows, cfg) == {
        "elr_log_spread_early": 1.0,
        "elr_log_spread": 2.0,
        "elr_log_spread_main_early": 2.0,
        "elr_log_spread_main": 3.0,
    }
    assert np.isnan(metrics.mean_log_spread([{"step": 0, "elr_spread": "nan"}]))
    with pytest.raises(UserError, match="spread layers 'proj' is unknown; allowed: all, main"):
        metrics.spread_key("proj")


def test_main_path_spread_leaves_out_the_shortcut_projections(tmp_path):
    # A ResNet-8 has two projection convs (stages 2 and 3): the main-path spread is max/min over the
    # other scale-invariant layers, and the all-layers one over all of them, from the logged ELRs.
    cfg = small_config(
        model={"name": "resnet", "depth": 8, "width": 8},
        optim={"momentum": 0.0},
        train={"steps": 4},
        log={"metrics": ["elr"], "dense_steps": 4},
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = list(RunDir(tmp_path / "run").read_metrics())
    layers = json.loads((tmp_path / "run" / "layers.json").read_text())
    proj = np.array([l["projection"] for l in layers])
    si = np.array([l["scale_invariant"] for l in layers])
    assert [l["name"] for l in layers if l["projection"]] == ["s2.b0.proj", "s3.b0.proj"]
    e = np.array([r["elr"] for r in rows], np.float64)
    main = e[:, si & ~proj]
    np.testing.assert_allclose([r["elr_spread_main"] for r in rows], main.max(1) / main.min(1), rtol=1e-6)
    np.testing.assert_allclose([r["elr_spread"] for r in rows], e[:, si].max(1) / e[:, si].min(1), rtol=1e-6)
    np.testing.assert_allclose([r["elr_log_std_main"] for r in rows], np.log10(main).std(1), rtol=1e-4, atol=1e-7)
    assert not np.allclose([r["elr_spread_main"] for r in rows], [r["elr_spread"] for r in rows])
    assert summary["elr_log_spread_main"] == pytest.approx(np.mean(np.log10(main.max(1) / main.min(1))), rel=1e-5)


def test_layer_norms_global_norms_equal_optax_tree_norm():
    import optax

    cfg = small_config(model={"name": "resnet", "depth": 8, "width": 8})
    program = program_for(cfg, input_for(cfg))
    p = program.init_state(cfg).params
    g = jax.tree.map(lambda x: x * 0.5 + 1.0, p)
    u = jax.tree.map(lambda x: x * 0.1, p)
    out = metrics.layer_norms(metrics.StepInfo(p, g, u, None, program.layers))
    for key, tree in (("l2_params", p), ("l2_grads", g), ("l2_updates", u)):
        assert float(out[key]) == pytest.approx(float(optax.tree.norm(tree)), rel=1e-6), key
    assert out["w_norm"].shape == (len(program.layers),)
