"""Tests for normjax.training.checkpoint: round trips, retention, fallback and atomicity."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from normjax.training.checkpoint import Checkpointer, read_latest_items

LOGGER = 'normjax.training.checkpoint'


def make_state(seed: int) -> dict[str, Any]:
    """A state shaped like a real training state, with values that differ per seed."""
    rng = np.random.default_rng(seed)
    params = {
        'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
        'dense': {
            'kernel': jnp.asarray(rng.normal(size=(4, 5)), jnp.bfloat16),
            'bias': jnp.asarray(rng.normal(size=(5,)), jnp.float32),
        },
        'embed': [jnp.asarray(rng.integers(-9, 9, size=(3,)), jnp.int32)],
    }
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt_state = tx.init(params)
    # Non-zero momentum so a wrong restore cannot pass by accident.
    trace = jax.tree.map(lambda p: (p * 2 + seed).astype(p.dtype), params)
    opt_state = opt_state._replace(
        inner_state=(optax.TraceState(trace=trace),) + tuple(opt_state.inner_state[1:])
    )
    return {
        'params': params,
        'batch_stats': {'bn': {'mean': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}},
        'opt_state': opt_state,
        'meta': {
            'step': np.int64(1000 + seed),
            'rng': jax.random.key_data(jax.random.key(seed)),
            'epoch': seed,
            'elapsed': np.float64(seed / 3),
            'diverged': jnp.bool_(False),
            'extra': (optax.EmptyState(), (), {}),
        },
    }


def zeros_like(tree: Any) -> Any:
    """Concrete template with the same structure, types and dtypes but other values."""

    def zero(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jnp.zeros_like(x)
        if isinstance(x, np.generic):
            return x.dtype.type(0)
        return type(x)(0)

    return jax.tree.map(zero, tree)


def abstract(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """ShapeDtypeStruct template for every array and numpy scalar; python scalars stay concrete."""

    def sds(x: Any) -> Any:
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
        return x

    return jax.tree.map(sds, tree)


def replicated(tree: Any) -> Any:
    """Like a program's abstract state: every JAX array replicated over the mesh."""
    mesh = jax.make_mesh((1,), ('data',))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.tree.map(lambda x: abstract(x, sharding) if isinstance(x, jax.Array) else x, tree)


def assert_bitwise_equal(got: Any, want: Any) -> None:
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g_arr, w_arr = np.asarray(g), np.asarray(w)
        assert g_arr.dtype == w_arr.dtype and g_arr.shape == w_arr.shape
        assert g_arr.tobytes() == w_arr.tobytes()


def leaf_kind(x: Any) -> type:
    return jax.Array if isinstance(x, jax.Array) else type(x)


@pytest.mark.parametrize('template', [zeros_like, abstract, replicated])
def test_round_trip_is_bitwise_with_same_structure(tmp_path: Path, template: Any) -> None:
    state = make_state(1)
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        ckpt.save(7, state)
    templates = template(state)
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        step, restored = ckpt.restore(templates)
    assert step == 7
    assert set(restored) == set(state)
    assert_bitwise_equal(restored, state)
    assert isinstance(restored['opt_state'], optax.InjectStatefulHyperparamsState)
    assert isinstance(restored['opt_state'].inner_state[0], optax.TraceState)
    # Concrete template leaves keep their type; a ShapeDtypeStruct gives a jax.Array with its
    # sharding, or without one whatever was saved (numpy for numpy, so float64 stays exact).
    saved = jax.tree.leaves(state)
    for got, want, orig in zip(jax.tree.leaves(restored), jax.tree.leaves(templates), saved):
        if not isinstance(want, jax.ShapeDtypeStruct):
            assert leaf_kind(got) is leaf_kind(want)
        elif want.sharding is not None:
            assert isinstance(got, jax.Array) and got.sharding == want.sharding
        else:
            assert leaf_kind(got) is (jax.Array if isinstance(orig, jax.Array) else np.ndarray)


def test_relative_directory_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Checkpointer('rel/ckpt') as ckpt:
        ckpt.save(1, {'params': {'w': jnp.ones(2)}})
        assert ckpt.directory == str(tmp_path / 'rel' / 'ckpt')
    assert (tmp_path / 'rel' / 'ckpt' / '1').is_dir()


def test_keeps_last_k_and_resave_is_noop(tmp_path: Path) -> None:
    directory = tmp_path / 'ckpt'
    with Checkpointer(directory, keep=2) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, {'params': {'w': jnp.full((2,), step, jnp.float32)}})
        assert ckpt.steps() == [4, 5]
        assert ckpt.latest_step() == 5
        ckpt.save(5, {'params': {'w': jnp.full((2,), -1.0, jnp.float32)}})
        _, items = ckpt.restore({'params': {'w': jnp.zeros(2)}})
        np.testing.assert_array_equal(items['params']['w'], [5.0, 5.0])
        step, items = ckpt.restore({'params': {'w': jnp.zeros(2)}}, step=4)
        assert step == 4
        np.testing.assert_array_equal(items['params']['w'], [4.0, 4.0])
        with pytest.raises(FileNotFoundError):
            ckpt.restore({'params': {'w': jnp.zeros(2)}}, step=1)
    assert sorted(p.name for p in directory.iterdir()) == ['4', '5']


def test_partial_restore_ignores_other_items(tmp_path: Path) -> None:
    state = make_state(2)
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        ckpt.save(3, state)
    # A warm start with another optimizer: only params and batch stats are wanted.
    templates = {
        'params': zeros_like(state['params']),
        'batch_stats': abstract(state['batch_stats']),
    }
    step, items = read_latest_items(tmp_path / 'ckpt', templates)
    assert step == 3
    assert set(items) == {'params', 'batch_stats'}
    assert_bitwise_equal(items['params'], state['params'])
    assert_bitwise_equal(items['batch_stats'], state['batch_stats'])


def test_mismatched_template_raises_for_explicit_step(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        ckpt.save(1, {'meta': {'hist': np.arange(3)}})
        with pytest.raises(ValueError, match='shape'):
            ckpt.restore({'meta': {'hist': np.zeros(4, np.int64)}}, step=1)
        with pytest.raises(ValueError):
            ckpt.restore({'meta': {'other': np.zeros(3, np.int64)}}, step=1)


def _corrupt(step_dir: Path, how: str) -> None:
    data = [p for p in step_dir.rglob('*') if p.is_file() and p.parent.name == 'd']
    assert data, f'no data files under {step_dir}'
    for p in data:
        if how == 'truncate':
            with open(p, 'r+b') as f:
                f.truncate(p.stat().st_size // 2)
        elif how == 'garbage':
            noise = np.random.default_rng(0).integers(0, 256, p.stat().st_size, np.uint8)
            p.write_bytes(noise.tobytes())
        else:
            p.unlink()


@pytest.mark.parametrize('how', ['truncate', 'garbage', 'delete'])
def test_corrupt_latest_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    directory = tmp_path / 'ckpt'
    old, new = make_state(3), make_state(4)
    with Checkpointer(directory) as ckpt:
        ckpt.save(10, old)
        ckpt.save(20, new)
    _corrupt(directory / '20', how)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(directory) as ckpt:
        step, items = ckpt.restore(zeros_like(old))
    assert step == 10
    assert_bitwise_equal(items, old)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'step 20' in warnings[0].getMessage()
    assert '\n' not in warnings[0].getMessage()


def test_nothing_restorable_returns_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / 'ckpt'
    state = {'params': {'w': jnp.arange(4.0)}}
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    for step in ('1', '2'):
        _corrupt(directory / step, 'delete')
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert read_latest_items(directory, state) is None
    assert sum(r.name == LOGGER for r in caplog.records) == 3  # one per step, one summary


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / 'ckpt'
    state = {'params': {'w': jnp.arange(4.0)}, 'meta': {'step': np.int64(2)}}
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    # What a save of step 9 killed mid-write leaves: Orbax's tmp directory, never renamed,
    # with part of the data and no commit marker.
    partial = directory / '9.orbax-checkpoint-tmp'
    shutil.copytree(directory / '2', partial)
    for p in partial.rglob('commit_success.txt'):
        p.unlink()
    _corrupt(partial, 'truncate')

    with Checkpointer(directory, read_only=True) as reader:
        assert reader.steps() == [1, 2]
        assert reader.restore(zeros_like(state))[0] == 2
    assert read_latest_items(directory, zeros_like(state))[0] == 2
    assert partial.exists()  # readers never delete

    # The next writer of the directory clears the leftover.
    with Checkpointer(directory) as ckpt:
        assert ckpt.latest_step() == 2
        ckpt.save(3, state)
        assert ckpt.steps() == [1, 2, 3]
    assert not partial.exists()


def test_restore_places_arrays_like_sharded_templates(tmp_path: Path) -> None:
    mesh = jax.make_mesh((1,), ('data',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    state = {'params': {'w': jnp.arange(8.0).reshape(4, 2), 'b': jnp.arange(3, dtype=jnp.bfloat16)}}
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        ckpt.save(1, state)
        templates = {
            'params': {
                'w': jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=split),
                'b': jax.ShapeDtypeStruct((3,), jnp.bfloat16, sharding=replicated),
            }
        }
        _, items = ckpt.restore(templates)
    assert items['params']['w'].sharding == split
    assert items['params']['b'].sharding == replicated
    assert_bitwise_equal(items, state)


def test_empty_directory_returns_none(tmp_path: Path) -> None:
    assert read_latest_items(tmp_path / 'missing', {'params': {'w': jnp.zeros(2)}}) is None
    assert not (tmp_path / 'missing').exists()
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        assert ckpt.steps() == []
        assert ckpt.latest_step() is None
        assert ckpt.restore({'params': {'w': jnp.zeros(2)}}) is None
    assert read_latest_items(tmp_path / 'ckpt', {'params': {'w': jnp.zeros(2)}}) is None


def test_orbax_info_logging_is_silenced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), Checkpointer(tmp_path / 'ckpt') as ckpt:
        ckpt.save(1, {'params': {'w': jnp.zeros(2)}})
        ckpt.restore({'params': {'w': jnp.zeros(2)}})
    noisy = [r for r in caplog.records if f'{os.sep}orbax{os.sep}' in r.pathname]
    assert noisy == []


def test_rejects_bad_item_names_and_leaves(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / 'ckpt') as ckpt:
        with pytest.raises(ValueError, match='metrics'):
            ckpt.save(1, {'metrics': {'loss': jnp.zeros(())}})
        with pytest.raises(TypeError, match='name'):
            ckpt.save(1, {'meta': {'name': 'resnet'}})
        assert ckpt.steps() == []
