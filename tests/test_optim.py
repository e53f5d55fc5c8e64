import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normjax.config import DEFAULTS, merge
from normjax.training.optim import OptimizerContext, make_optimizer, schedule_shape, set_hyperparams

CTX = OptimizerContext(None, None, [])


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"a": jax.random.normal(k1, (4, 3)), "b": {"c": jax.random.normal(k2, (5,))}}


def _run(tx, params, steps=5):
    state = tx.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1)), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _cfg(**kw):
    return merge(DEFAULTS["optim"], kw)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_equals_the_optax_composition(nesterov):
    """Coupled weight decay, momentum, constant LR: exactly optax.chain(add_decayed_weights, sgd)."""
    cfg = _cfg(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=nesterov, schedule="constant")
    ours = _run(make_optimizer(cfg, total_steps=10, context=CTX), _params())
    ref = _run(optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, 0.9, nesterov=nesterov)), _params())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


def test_decoupled_weight_decay_stays_out_of_momentum():
    cfg = _cfg(lr=0.1, momentum=0.9, weight_decay=0.01, decoupled_wd=True, schedule="cosine")
    ours = _run(make_optimizer(cfg, total_steps=10, context=CTX), _params())
    sched = lambda t: 0.1 * schedule_shape(cfg, 10)(t)
    ref = _run(
        optax.chain(optax.trace(0.9), optax.add_decayed_weights(0.01), optax.scale_by_learning_rate(sched)), _params()
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


def test_schedule_shapes():
    t = jnp.arange(100)
    cos = schedule_shape(_cfg(schedule="cosine"), 100)(t)
    assert cos[0] == 1 and abs(float(cos[50]) - 0.5) < 1e-6 and cos[-1] < 1e-3
    step = schedule_shape(_cfg(schedule="step", milestones=[0.5, 0.75], step_factor=0.1), 100)(t)
    np.testing.assert_allclose([step[49], step[50], step[75]], [1, 0.1, 0.01], rtol=1e-6)
    warm = schedule_shape(_cfg(schedule="constant", warmup_steps=10), 100)(t)
    np.testing.assert_allclose(warm[:10], (np.arange(10) + 1) / 10, rtol=1e-6)
    assert np.all(warm[10:] == 1)


def test_hyperparams_are_state_values_under_jit():
    """Changing LR or momentum changes state values, not the compiled function."""
    cfg = _cfg(schedule="constant", weight_decay=0.0, momentum=0.0)
    tx = make_optimizer(cfg, total_steps=10, context=CTX)
    params = _params()
    traces = []

    @jax.jit
    def step(state, params):
        traces.append(1)
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    outs = []
    for lr in (0.1, 0.3):
        state = set_hyperparams(tx.init(params), {"lr": lr})
        outs.append(step(state, params)[0]["a"])
    assert len(traces) == 1
    np.testing.assert_allclose(params["a"] - outs[1], 3 * (params["a"] - outs[0]), rtol=1e-5)


def test_abstract_init_and_stable_state():
    tx = make_optimizer(_cfg(), total_steps=10, context=CTX)
    abstract = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params()))
    concrete = tx.init(_params())
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    _, after = tx.update(_params(), concrete, _params())
    jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail("state changed"), concrete, after)


# ---- optimizers built from normjax.transforms ------------------------------------------------
def _ctx(params):
    mask = {"a": True, "b": {"c": False}}
    return OptimizerContext(mask, {"a": False, "b": {"c": True}}, [], 0)


def test_sgd_uniform_elr_equals_the_optax_lars_composition():
    """Unstacked leaves, relative ELR after momentum: optax's trust ratio (coefficient 1) on the masked kernels."""
    cfg = _cfg(
        name="sgd_uniform_elr", lr=0.05, momentum=0.9, weight_decay=1e-2, schedule="cosine", weight_decay_on="all"
    )
    ours = _run(make_optimizer(cfg, total_steps=10, context=_ctx(_params())), _params())
    sched = lambda t: 0.05 * schedule_shape(cfg, 10)(t)
    ref = _run(
        optax.chain(
            optax.add_decayed_weights(1e-2),
            optax.trace(0.9),
            optax.masked(optax.scale_by_trust_ratio(trust_coefficient=1.0), _ctx(None).scale_invariant_mask),
            optax.scale_by_learning_rate(sched),
        ),
        _params(),
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


def test_sgd_prelu_l1_at_zero_strength_is_sgd_without_decay_on_slopes():
    cfg = _cfg(
        name="sgd_prelu_l1",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-2,
        prelu_l1=0.0,
        prelu_tolerance=0.0,
        schedule="constant",
    )
    ours = _run(make_optimizer(cfg, total_steps=10, context=_ctx(_params())), _params())
    ref = _run(
        optax.chain(optax.add_decayed_weights(1e-2, mask={"a": True, "b": {"c": False}}), optax.sgd(0.05, 0.9)),
        _params(),
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


# ---- which leaves weight decay acts on (optim.weight_decay_on) -------------------------------
@functools.cache
def _prelu_mlp():
    """A PReLU MLP's params (dyadic values: halving and 1 + (α − 1) are exact) and its context, as
    `Program` builds it; hidden layers 1-2 are stacked."""
    from flax import nnx

    from normjax.models import build_model, layer_axes, prelu_mask, scale_invariant_mask

    cfg = merge(DEFAULTS["model"], dict(name="mlp", depth=3, width=2, activation="prelu"))
    model = nnx.eval_shape(lambda: build_model(cfg, num_classes=2, image_shape=(2, 1, 1), rngs=nnx.Rngs(0)))
    abstract = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.integers(1, 32, s.shape) / 16 * rng.choice([-1, 1], s.shape), jnp.float32), abstract
    )
    layers = model.layers()
    return params, OptimizerContext(
        scale_invariant_mask(abstract, layers), prelu_mask(abstract), layers, layer_axes(abstract), 10
    )


_KERNELS = {"hidden/first/dense/kernel", "hidden/rest/dense/kernel", "head/kernel"}
_SLOPES = {"hidden/first/act/slope", "hidden/rest/act/slope"}
_OTHERS = {"hidden/first/bn/scale", "hidden/first/bn/bias", "hidden/rest/bn/scale", "hidden/rest/bn/bias", "head/bias"}
_DECAYED = {
    "kernels": _KERNELS,
    "all_but_prelu": _KERNELS | _OTHERS,
    None: _KERNELS | _OTHERS,
    "all": _KERNELS | _OTHERS | _SLOPES,
}


@pytest.mark.parametrize("name", ["sgd", "sgd_uniform_elr", "sgd_critical_warmup", "sgd_prelu_l1", "sgd_prelu_target"])
@pytest.mark.parametrize("on", ["kernels", "all_but_prelu", "all", None])  # None: the default
def test_weight_decay_acts_on_the_leaves_weight_decay_on_names(name, on):
    """Zero gradient, momentum 0, LR 1, coupled decay 0.5: a decayed leaf halves exactly, any other
    stays bitwise (the PReLU priors at zero strength, no tolerance, leave the slopes as they are)."""
    params, ctx = _prelu_mlp()
    cfg = _cfg(
        name=name,
        lr=1.0,
        momentum=0.0,
        weight_decay=0.5,
        schedule="constant",
        prelu_tolerance=0.0,
        prelu_l1=1e-3 if name == "sgd_prelu_target" else 0.0,  # the controller's target 1.0 keeps it off
        **({} if on is None else {"weight_decay_on": on}),
    )
    tx = make_optimizer(cfg, total_steps=10, context=ctx)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    got = {
        "/".join(str(k.key) for k in path): (w, n)
        for (path, w), (_, n) in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(new), strict=True
        )
    }
    assert set(got) == _KERNELS | _SLOPES | _OTHERS
    for path, (w, n) in got.items():
        if name == "sgd_uniform_elr" and path in _KERNELS - {"head/kernel"}:
            continue  # scale-invariant kernels: decayed under every choice, then rescaled by the uniform ELR
        np.testing.assert_array_equal(n, 0.5 * w if path in _DECAYED[on] else w, err_msg=path)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("weight_decay_on", "bias", "optim.weight_decay_on='bias' is unknown; allowed: kernels, all_but_prelu, all"),
        ("elr_position", "middle", "optim.elr_position='middle' is unknown; allowed: before_momentum, after_momentum"),
        ("elr_definition", "angular", "optim.elr_definition='angular' is unknown"),
        ("prelu_mode", "l0", "optim.prelu_mode='l0' is unknown; allowed: proximal, subgradient"),
        ("prelu_power", 2.0, "optim.prelu_power=2.0 is not supported"),
        ("prelu_tolerance", 1.5, "need prelu_l1 >= 0 and 0 <= prelu_tolerance < 1"),
    ],
)
def test_bad_transform_options_are_one_line_errors(key, value, words):
    from normjax.config import load_config
    from normjax.errors import UserError

    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        load_config(overrides=["optim.name=sgd_uniform_elr", f"optim.{key}={json.dumps(value)}"])
    assert "\n" not in str(e.value)


def test_prelu_prior_needs_a_prelu_model():
    from normjax.config import load_config
    from normjax.errors import UserError

    with pytest.raises(UserError, match="set model.activation=prelu"):
        load_config(overrides=["optim.name=sgd_prelu_l1"])
