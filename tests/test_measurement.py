"""`normjax.studies.elr.measurement` against the training `Program` it reproduces: for a seed, the same
init, the same first batches (data order and normalization), and the same logits, gradients and
per-layer squared gradient norms on them (what `normjax explode` and `normjax critical-lr` measure).

The measurement is a different program from the Program (an eager init, a vmapped gradient over
seeds and `lax.map` over batches), so floats are compared to a few ulps (tests/helpers.py);
integers (PRNG key, example indices, labels) and the exactly initialized BN statistics bitwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import assert_bitwise, assert_close, small_config
from normjax.models import per_layer
from normjax.studies.elr.measurement import measurement_for
from normjax.training.loop import input_for, program_for

pytestmark = pytest.mark.cross_program

# The eager init against the Program's jitted one: the same PRNG bits through the same initializer
# math, compiled apart (measured 0.9 ulps on x86-64 AVX-512).
ULPS_INIT = 4
# Elementwise normalization, and one forward/backward pass of the same model on the same params and
# inputs, traced apart (measured 0 ulps).
ULPS_SAME_MATH = 4
# ||∇_{w_l} L||² from the measurement's own init (ULPS_INIT apart) through the whole net, summed per
# layer in a vmapped `lax.map` (measured up to 6.3 ulps).
ULPS_GRAD_SQ = 16

SEED, BATCH, BATCHES = 3, 32, 3
SYNTHETIC = {"name": "synthetic", "synthetic": {"num_train": 256, "num_test": 16, "image_shape": [8, 8, 3]}}
SETTINGS = {
    "mlp": {"model": {"name": "mlp", "depth": 5, "width": 32}},
    "resnet": {"model": {"name": "resnet", "depth": 8, "width": 4, "shortcut": True}, "data": SYNTHETIC},
}


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.fixture(scope="module", params=list(SETTINGS))
def both(request):
    """The Program of a float32, unaugmented config and its fresh state; the measurement of the same."""
    cfg = small_config(**SETTINGS[request.param], train={"batch_size": BATCH, "seed": SEED})
    assert cfg["train"]["dtype"] == "float32" and not cfg["data"]["crop_padding"] and not cfg["data"]["flip"]
    inp = input_for(cfg)
    prog = program_for(cfg, inp)
    m = measurement_for(cfg, inp.ds, BATCH, BATCHES)
    return prog, prog.init_state(cfg), m, inp.ds


def program_batch(prog, state, ds, t: int):
    """The Program's batch at step `t` of the run `state` starts."""
    n = ds.train_images.shape[0]
    select = jax.jit(lambda s, t, im, lb: prog.select_batch(s.replace(step=t), im, lb, prog.epoch_orders(s, n)))
    return select(state, jnp.int32(t), ds.train_images, ds.train_labels)


def program_grad(prog):
    return jax.jit(jax.grad(lambda p, s, x, y: cross_entropy(prog.apply(p, s, x, train=True)[0], y)))


def test_init_is_the_programs(both):
    prog, state, m, _ = both
    params, rest, key_data = m.init(SEED)
    assert_bitwise(key_data, np.asarray(state.key), "key")
    assert_bitwise(rest, jax.device_get(state.batch_stats), "batch stats")  # ones and zeros
    assert_close(params, jax.device_get(state.params), ULPS_INIT, "params")


def test_first_batches_are_the_programs(both):
    prog, state, m, ds = both
    n = ds.train_images.shape[0]
    perms, first = prog.epoch_orders(state, n)
    order = np.asarray(m.order(jnp.asarray(state.key), n))
    assert int(first) == 0 and order.shape == (BATCHES, BATCH)
    assert_bitwise(order, np.asarray(perms[0])[: BATCHES * BATCH].reshape(BATCHES, BATCH), "data order")
    inputs = jax.jit(m.inputs)
    for t in range(BATCHES):
        x, y = program_batch(prog, state, ds, t)
        assert_bitwise(ds.train_labels[order[t]], np.asarray(y), f"labels, step {t}")
        assert_close(inputs(ds.train_images, order[t]), x, ULPS_SAME_MATH, f"inputs, step {t}")


def test_logits_and_gradients_are_the_programs(both):
    prog, state, m, ds = both
    x, y = program_batch(prog, state, ds, 0)
    p, s = state.params, state.batch_stats
    apply = jax.jit(lambda p, s, x: prog.apply(p, s, x, train=True)[0])
    assert_close(jax.jit(m.logits)(p, s, x), apply(p, s, x), ULPS_SAME_MATH, "logits")
    assert_close(jax.jit(jax.grad(m.loss))(p, s, x, y), program_grad(prog)(p, s, x, y), ULPS_SAME_MATH, "gradients")


def test_gradient_norms_are_the_programs(both):
    """End to end, as `measure_init_gradients` runs it: init, order, inputs and gradient per batch."""
    prog, state, m, ds = both
    one = lambda tree: jax.tree.map(lambda a: jnp.asarray(a)[None], tree)  # noqa: E731
    params, rest, key_data = m.init(SEED)
    grad_sq, w_sq = m.grads(one(params), one(rest), one(key_data), ds.train_images, ds.train_labels)
    grad = program_grad(prog)
    want = [
        per_layer(grad(state.params, state.batch_stats, *program_batch(prog, state, ds, t)), m.layers)
        for t in range(BATCHES)
    ]
    assert_close(grad_sq[0], np.stack(want), ULPS_GRAD_SQ, "grad_sq")
    assert_close(w_sq[0], per_layer(state.params, m.layers), ULPS_INIT, "w_sq")
