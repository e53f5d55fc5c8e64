"""normjax.transforms.alias and .masks: the studies' optimizers as optax aliases, and masks chosen by
the params' paths. Every alias keeps the optax conventions (jit, inject_hyperparams with the LR and
momentum injected, abstract init, a schedule as LR, finite updates, shapes and dtypes kept), is the
optax composition it names, and the masks equal the ones normjax's models give."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normjax.transforms as njt


def _params(seed=0):
    """A params tree as normjax stores it: a conv, BN, PReLU slopes, 2 dense layers stacked, a head."""
    k = jax.random.split(jax.random.key(seed), 5)
    return {
        "conv": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4))},
        "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
        "act": {"slope": jax.random.uniform(k[1], (4,), minval=0.5, maxval=1.2)},
        "rest": {"kernel": jax.random.normal(k[2], (2, 4, 4)) * jnp.array([0.1, 10.0])[:, None, None]},
        "head": {"kernel": jax.random.normal(k[3], (4, 3)), "bias": jax.random.normal(k[4], (3,))},
    }


def _grads(t, params):
    return jax.tree.map(lambda p: jnp.cos(2.0 * p + t), params)


PARAMS = _params()
SCALE_INVARIANT = njt.kernel_mask(PARAMS, exclude=("head",))
SLOPES = njt.prelu_slope_mask(PARAMS)
NOT_SLOPES = jax.tree.map(lambda m: not m, SLOPES)
AXES = njt.path_mask(PARAMS, lambda path, _: path[0] == "rest")  # True == 1 stacked axis
AXES = jax.tree.map(int, AXES)

# Each alias with its masks bound, the rest left to the call (a partial keeps the alias's signature,
# which optax.inject_hyperparams reads).
ALIASES = {
    "sgd": functools.partial(njt.sgd, weight_decay_mask=NOT_SLOPES),
    "sgd_nesterov_decoupled": functools.partial(njt.sgd, nesterov=True, decoupled_weight_decay=True),
    "sgd_uniform_elr": functools.partial(njt.sgd_uniform_elr, scale_invariant_mask=SCALE_INVARIANT, layer_axes=AXES),
    "sgd_uniform_elr_before_geomean": functools.partial(
        njt.sgd_uniform_elr,
        scale_invariant_mask=SCALE_INVARIANT,
        layer_axes=AXES,
        position="before_momentum",
        reference="geometric_mean",
    ),
    "sgd_critical_warmup": functools.partial(
        njt.sgd_critical_warmup, scale_invariant_mask=SCALE_INVARIANT, layer_axes=AXES
    ),
    "sgd_prelu_l1": functools.partial(
        njt.sgd_prelu_l1, prelu_mask=SLOPES, strength=0.5, tolerance=0.05, weight_decay_mask=NOT_SLOPES
    ),
    "sgd_prelu_l1_sqrt_subgradient": functools.partial(
        njt.sgd_prelu_l1, prelu_mask=SLOPES, strength=0.5, mode="subgradient", power=0.5
    ),
    "sgd_prelu_target": functools.partial(
        njt.sgd_prelu_target, prelu_mask=SLOPES, target=0.5, init_strength=0.1, gain=0.5, weight_decay_mask=NOT_SLOPES
    ),
}
HYPER = dict(learning_rate=0.05, momentum=0.9, weight_decay=1e-3)


def _steps(tx, params=PARAMS, n=3, jit=True):
    update = jax.jit(tx.update) if jit else tx.update
    state, out = tx.init(params), []
    for t in range(n):
        updates, state = update(_grads(t, params), state, params)
        out.append(updates)
        params = optax.apply_updates(params, updates)
    return params, state, out


def _spec(tree):
    return jax.tree.structure(tree), [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_conventions(name):
    tx = ALIASES[name](**HYPER)
    p_jit, s_jit, updates = _steps(tx)
    p_eager, _, _ = _steps(tx, jit=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_jit, p_eager)
    for u in updates:  # finite, shapes and dtypes kept, and the optimizer moved every leaf group
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(u))
        assert _spec(u) == _spec(PARAMS)
    assert np.any(np.asarray(p_jit["conv"]["kernel"] != PARAMS["conv"]["kernel"]))
    # abstract init (ShapeDtypeStruct params, as orbax restores into), stable state
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    assert _spec(jax.eval_shape(tx.init, abstract)) == _spec(tx.init(PARAMS)) == _spec(s_jit)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_inject_hyperparams_with_lr_and_momentum_compiles_once(name):
    """The LR and momentum injected (traced state values): a sweep over them compiles once, and a
    run equals the alias built with the numbers."""
    # a number that picks the computation (power=0.5) is named static, as its docstring says
    static = tuple(k for k in ("power", "layer_axes") if isinstance(ALIASES[name].keywords.get(k), int | float))
    injected = optax.inject_hyperparams(ALIASES[name], static_args=static)
    traces = []

    @jax.jit
    def step(state, params, t):
        traces.append(1)
        tx = injected(learning_rate=0.0, momentum=0.0)  # the values come from the state
        updates, state = tx.update(_grads(t, params), state, params)
        return optax.apply_updates(params, updates), state

    outs = []
    for lr, momentum in ((0.05, 0.9), (0.2, 0.5)):
        state = injected(learning_rate=lr, momentum=momentum).init(PARAMS)
        assert {"learning_rate", "momentum"} <= set(state.hyperparams)
        params, state = step(state, PARAMS, 0.0)
        params, state = step(state, params, 1.0)
        outs.append(params)
        ref, _, _ = _steps(ALIASES[name](learning_rate=lr, momentum=momentum), n=2)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref)
    assert len(traces) == 1
    assert not np.allclose(outs[0]["conv"]["kernel"], outs[1]["conv"]["kernel"])


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_a_schedule_is_accepted_as_learning_rate(name):
    constant, _, _ = _steps(ALIASES[name](**HYPER))
    scheduled, _, _ = _steps(ALIASES[name](**HYPER | {"learning_rate": optax.constant_schedule(0.05)}))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), scheduled, constant)
    # a peak LR times a multiplier's shape is the schedule of their product
    shape = optax.linear_schedule(1.0, 0.2, 3)
    split, _, _ = _steps(ALIASES[name](**HYPER | {"learning_rate": 0.05, "lr_multiplier": shape}))
    product, _, _ = _steps(ALIASES[name](**HYPER | {"learning_rate": lambda t: 0.05 * shape(t)}))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), split, product)
    assert not np.allclose(split["conv"]["kernel"], constant["conv"]["kernel"])


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("decoupled", [False, True])
def test_sgd_is_the_optax_composition(nesterov, decoupled):
    ours = njt.sgd(0.05, 0.9, 1e-2, nesterov=nesterov, decoupled_weight_decay=decoupled, weight_decay_mask=NOT_SLOPES)
    decay = optax.add_decayed_weights(1e-2, mask=NOT_SLOPES)
    if decoupled:
        ref = optax.chain(optax.trace(0.9, nesterov=nesterov), decay, optax.scale_by_learning_rate(0.05))
    else:
        ref = optax.chain(decay, optax.sgd(0.05, 0.9, nesterov=nesterov))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), _steps(ours)[0], _steps(ref)[0])


def test_sgd_uniform_elr_gives_every_scale_invariant_layer_the_lr_as_relative_step():
    lr = 0.01
    updates = _steps(ALIASES["sgd_uniform_elr"](learning_rate=lr, momentum=0.9), n=1)[2][0]
    layers = lambda tree: [tree["conv"]["kernel"], tree["rest"]["kernel"][0], tree["rest"]["kernel"][1]]
    steps = [float(jnp.linalg.norm(u) / jnp.linalg.norm(w)) for u, w in zip(layers(updates), layers(PARAMS))]
    np.testing.assert_allclose(steps, lr, rtol=2e-6)  # stacked layers each on their own
    g = _grads(0, PARAMS)["head"]["kernel"]  # the head keeps the global LR
    np.testing.assert_allclose(updates["head"]["kernel"], -lr * g, rtol=1e-6)


def test_sgd_critical_warmup_caps_the_lr_at_the_critical_lr():
    tx = ALIASES["sgd_critical_warmup"](learning_rate=1e3, momentum=0.9, weight_decay=0.0)
    updates, state = tx.update(_grads(0, PARAMS), tx.init(PARAMS), PARAMS)
    crit = njt.critical_lr(_grads(0, PARAMS), PARAMS, SCALE_INVARIANT, AXES)  # on the first buffer: g
    assert float(optax.tree_utils.tree_get(state, "applied_lr")) == float(crit) < 1e3
    np.testing.assert_allclose(updates["head"]["bias"], -float(crit) * _grads(0, PARAMS)["head"]["bias"], rtol=1e-6)


@pytest.mark.parametrize("name, threshold", [("sgd_prelu_l1", 0.1 * 0.5), ("sgd_prelu_target", 0.1 * 0.1)])
def test_prelu_aliases_move_slopes_toward_one_and_keep_decay_off_them(name, threshold):
    """Zero gradient, momentum 0, LR 0.1, decay 0.5 off the slopes: the kernels shrink by 5%, the
    slopes do not decay but move by lr * strength toward 1 (the prior's first step)."""
    tx = ALIASES[name](learning_rate=0.1, momentum=0.0, weight_decay=0.5)
    slopes = jnp.array([0.5, 0.99, 1.2, 1.003])
    params = PARAMS | {"act": {"slope": slopes}}
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["conv"]["kernel"], 0.95 * params["conv"]["kernel"], rtol=1e-6)  # decayed
    d = np.asarray(slopes) - 1
    expected = np.where(np.abs(d) > threshold, 1 + d - np.sign(d) * threshold, 1.0)
    np.testing.assert_allclose(new["act"]["slope"], expected, rtol=0, atol=1e-6)
    assert int(optax.tree_utils.tree_get(state, "num_frozen")) == int(np.sum(new["act"]["slope"] == 1.0)) == 2


@pytest.mark.parametrize(
    "make, words",
    [
        (
            lambda: njt.sgd_uniform_elr(0.1, scale_invariant_mask=SCALE_INVARIANT, position="middle"),
            "position='middle' is unknown; allowed: before_momentum, after_momentum",
        ),
        (
            lambda: njt.sgd_prelu_l1(0.1, prelu_mask=SLOPES, strength=-1.0),
            "strength=-1.0 is not allowed; allowed: a number >= 0",
        ),
        (
            lambda: njt.sgd_prelu_target(0.1, prelu_mask=SLOPES, target=1.5),
            "target=1.5 is not allowed; allowed: a fraction in [0, 1]",
        ),
        (
            lambda: optax.inject_hyperparams(njt.sgd_prelu_l1)(0.1, prelu_mask=SLOPES, strength=1.0, power=0.5).init(
                PARAMS
            ),
            "power is an array (ArrayImpl); it picks the computation, not a value: give a Python number "
            "(under optax.inject_hyperparams, name 'power' in static_args)",
        ),
        (
            lambda: optax.inject_hyperparams(njt.sgd_critical_warmup)(
                0.1, scale_invariant_mask=SCALE_INVARIANT, layer_axes=1
            ).init(PARAMS),
            "layer_axes is an array",
        ),
    ],
)
def test_bad_arguments_are_one_line_value_errors(make, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        make()
    assert "\n" not in str(e.value)


def test_structural_numbers_pass_through_inject_hyperparams_as_static_args():
    tx = optax.inject_hyperparams(njt.sgd_prelu_l1, static_args=("power",))(
        0.1, prelu_mask=SLOPES, strength=1.0, power=0.5
    )
    assert "power" not in tx.init(PARAMS).hyperparams
    _steps(tx)


# ---- masks -----------------------------------------------------------------------------------
def test_masks_select_by_path_on_concrete_and_abstract_params():
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    assert njt.kernel_mask(abstract, exclude=("head",)) == SCALE_INVARIANT
    assert SCALE_INVARIANT == {
        "act": {"slope": False},
        "bn": {"bias": False, "scale": False},
        "conv": {"kernel": True},
        "head": {"bias": False, "kernel": False},
        "rest": {"kernel": True},
    }
    assert njt.kernel_mask(PARAMS, exclude=())["head"]["kernel"] is True
    assert [k for k, v in SLOPES.items() if v.get("slope")] == ["act"]
    assert njt.prelu_slope_mask({"a": {"alpha": 1.0}}, name="alpha") == {"a": {"alpha": True}}
    # sequence indices and attribute names are path keys too
    tree = {"blocks": [{"kernel": 1.0}, {"kernel": 2.0}], "head": optax.ScaleByScheduleState(count=3)}
    paths = njt.path_mask(tree, lambda path, _: path in {("blocks", "1", "kernel"), ("head", "count")})
    assert paths == {"blocks": [{"kernel": False}, {"kernel": True}], "head": optax.ScaleByScheduleState(True)}
    with pytest.raises(ValueError, match=r"exclude='head' is a string; allowed: a tuple of keys, e.g. \('head',\)"):
        njt.kernel_mask(PARAMS, exclude="head")


@pytest.mark.parametrize(
    "model",
    [
        dict(name="resnet", depth=8, width=4, activation="prelu"),
        dict(name="resnet", depth=8, width=4, shortcut=False),
        dict(name="resnet", depth=50, block="bottleneck", width=2),
        dict(name="mlp", depth=3, width=4, activation="prelu"),
        dict(name="mlp", depth=5, width=4, shortcut=True),
        dict(name="plain_cnn", depth=4, width=4, activation="prelu"),
    ],
    ids=lambda m: "-".join(str(v) for v in m.values()),
)
def test_masks_equal_what_normjax_models_say(model):
    """On normjax's models the path rule (kernels, the classifier `head` excluded) is the mask the
    model's layer list gives (`scale_invariant`: the kernel feeds a BatchNorm)."""
    from flax import nnx

    from normjax.config import DEFAULTS, merge
    from normjax.models import build_model, prelu_mask, scale_invariant_mask

    cfg = merge(DEFAULTS["model"], model)
    m = nnx.eval_shape(lambda: build_model(cfg, num_classes=3, image_shape=(32, 32, 3), rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    assert njt.kernel_mask(params, exclude=("head",)) == scale_invariant_mask(params, m.layers())
    assert njt.prelu_slope_mask(params) == prelu_mask(params)
    assert any(jax.tree.leaves(njt.prelu_slope_mask(params))) == (cfg["activation"] == "prelu")
