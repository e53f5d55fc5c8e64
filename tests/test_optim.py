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
    ref = _run(optax.chain(optax.trace(0.9), optax.add_decayed_weights(0.01), optax.scale_by_learning_rate(sched)),
               _params())
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
    cfg = _cfg(name="sgd_uniform_elr", lr=0.05, momentum=0.9, weight_decay=1e-2, schedule="cosine")
    ours = _run(make_optimizer(cfg, total_steps=10, context=_ctx(_params())), _params())
    sched = lambda t: 0.05 * schedule_shape(cfg, 10)(t)
    ref = _run(optax.chain(optax.add_decayed_weights(1e-2), optax.trace(0.9),
                           optax.masked(optax.scale_by_trust_ratio(trust_coefficient=1.0), _ctx(None).scale_invariant_mask),
                           optax.scale_by_learning_rate(sched)), _params())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


def test_sgd_prelu_l1_at_zero_strength_is_sgd_without_decay_on_slopes():
    cfg = _cfg(name="sgd_prelu_l1", lr=0.05, momentum=0.9, weight_decay=1e-2, prelu_l1=0.0, prelu_tolerance=0.0,
               schedule="constant")
    ours = _run(make_optimizer(cfg, total_steps=10, context=_ctx(_params())), _params())
    ref = _run(optax.chain(optax.add_decayed_weights(1e-2, mask={"a": True, "b": {"c": False}}),
                           optax.sgd(0.05, 0.9)), _params())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


@pytest.mark.parametrize("key, value, words", [
    ("elr_position", "middle", "optim.elr_position='middle' is unknown; allowed: before_momentum, after_momentum"),
    ("elr_definition", "angular", "optim.elr_definition='angular' is unknown"),
    ("prelu_mode", "l0", "optim.prelu_mode='l0' is unknown; allowed: proximal, subgradient"),
    ("prelu_power", 2.0, "optim.prelu_power=2.0 is not supported"),
    ("prelu_tolerance", 1.5, "need prelu_l1 >= 0 and 0 <= prelu_tolerance < 1"),
])
def test_bad_transform_options_are_one_line_errors(key, value, words):
    from normjax.config import load_config
    from normjax.errors import UserError

    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        load_config(overrides=[f"optim.name=sgd_uniform_elr", f"optim.{key}={json.dumps(value)}"])
    assert "\n" not in str(e.value)


def test_prelu_prior_needs_a_prelu_model():
    from normjax.config import load_config
    from normjax.errors import UserError

    with pytest.raises(UserError, match="set model.activation=prelu"):
        load_config(overrides=["optim.name=sgd_prelu_l1"])
