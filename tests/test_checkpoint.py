"""Tests for normjax.training.checkpoint: round trips, retention, fallback and atomicity."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from etils import epath

from normjax.errors import UserError
from normjax.paths import as_path, is_remote
from normjax.training import checkpoint as checkpoint_lib
from normjax.training.checkpoint import (
    Checkpointer,
    CheckpointMismatch,
    CorruptCheckpoint,
    read_latest_items,
)

LOGGER = "normjax.training.checkpoint"


def make_state(seed: int) -> dict[str, Any]:
    """A state shaped like a real training state, with values that differ per seed."""
    rng = np.random.default_rng(seed)
    params = {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(4, 5)), jnp.bfloat16),
            "bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
        },
        "embed": [jnp.asarray(rng.integers(-9, 9, size=(3,)), jnp.int32)],
    }
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    opt_state = tx.init(params)
    # Non-zero momentum so a wrong restore cannot pass by accident.
    trace = jax.tree.map(lambda p: (p * 2 + seed).astype(p.dtype), params)
    opt_state = opt_state._replace(inner_state=(optax.TraceState(trace=trace),) + tuple(opt_state.inner_state[1:]))
    return {
        "params": params,
        "batch_stats": {"bn": {"mean": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}},
        "opt_state": opt_state,
        "meta": {
            "step": np.int64(1000 + seed),
            "rng": jax.random.key_data(jax.random.key(seed)),
            "epoch": seed,
            "elapsed": np.float64(seed / 3),
            "diverged": jnp.bool_(False),
            "extra": (optax.EmptyState(), (), {}),
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
    mesh = jax.make_mesh((1,), ("data",))
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


@pytest.mark.parametrize("template", [zeros_like, abstract, replicated])
def test_round_trip_is_bitwise_with_same_structure(tmp_path: Path, template: Any) -> None:
    state = make_state(1)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(7, state)
    templates = template(state)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        step, restored = ckpt.restore(templates)
    assert step == 7
    assert set(restored) == set(state)
    assert_bitwise_equal(restored, state)
    assert isinstance(restored["opt_state"], optax.InjectStatefulHyperparamsState)
    assert isinstance(restored["opt_state"].inner_state[0], optax.TraceState)
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


def test_relative_directory_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Checkpointer("rel/ckpt") as ckpt:
        ckpt.save(1, {"params": {"w": jnp.ones(2)}})
        assert isinstance(ckpt.directory, epath.Path)
        assert str(ckpt.directory) == str(tmp_path / "rel" / "ckpt")
    assert (tmp_path / "rel" / "ckpt" / "1").is_dir()


def test_url_directory_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    class FakeManager:  # no bucket offline: check what Orbax would be handed
        def __init__(self, directory: Any, options: Any) -> None:
            seen.append(directory)

        def close(self) -> None:
            pass

    monkeypatch.setattr(ocp, "CheckpointManager", FakeManager)
    with Checkpointer("gs://bucket/run/checkpoints") as ckpt:
        assert str(ckpt.directory) == "gs://bucket/run/checkpoints"
        assert str(ckpt.directory / "20") == "gs://bucket/run/checkpoints/20"
    assert [str(d) for d in seen] == ["gs://bucket/run/checkpoints"]
    assert isinstance(seen[0], epath.Path)


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert str(as_path("gs://bucket/run")) == "gs://bucket/run"
    assert str(as_path("s3://bucket/a/b") / "c") == "s3://bucket/a/b/c"
    assert str(as_path(epath.Path("gs://bucket/run") / "checkpoints")) == "gs://bucket/run/checkpoints"
    assert str(as_path("rel/run")) == str(tmp_path / "rel" / "run")
    assert str(as_path(Path("rel"))) == str(tmp_path / "rel")
    assert str(as_path("~/runs")) == str(tmp_path / "home" / "runs")
    assert str(as_path("/abs/../run")) == "/run"
    assert isinstance(as_path("rel"), epath.Path) and isinstance(as_path("gs://b"), epath.Path)
    assert is_remote("gs://bucket/run") and is_remote(as_path("az://c/run"))
    assert not is_remote("runs/gs://x") and not is_remote(tmp_path) and not is_remote("gs:/b/run")
    with pytest.raises(UserError, match=r"^path 'http://host/run': URL scheme 'http' is not supported;"):
        as_path("http://host/run")


def test_keeps_last_k_and_never_overwrites(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=2) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, {"params": {"w": jnp.full((2,), step, jnp.float32)}})
        assert ckpt.steps() == [4, 5]
        assert ckpt.latest_step() == 5
        with pytest.raises(FileExistsError, match=f"^checkpoint step 5 exists already in {directory}$"):
            ckpt.save(5, {"params": {"w": jnp.full((2,), -1.0, jnp.float32)}})
        _, items = ckpt.restore({"params": {"w": jnp.zeros(2)}})
        np.testing.assert_array_equal(items["params"]["w"], [5.0, 5.0])
        step, items = ckpt.restore({"params": {"w": jnp.zeros(2)}}, step=4)
        assert step == 4
        np.testing.assert_array_equal(items["params"]["w"], [4.0, 4.0])
        with pytest.raises(FileNotFoundError):
            ckpt.restore({"params": {"w": jnp.zeros(2)}}, step=1)
    assert sorted(p.name for p in directory.iterdir()) == ["4", "5"]


def test_partial_restore_ignores_other_items(tmp_path: Path) -> None:
    state = make_state(2)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(3, state)
    # A warm start with another optimizer: only params and batch stats are wanted.
    templates = {
        "params": zeros_like(state["params"]),
        "batch_stats": abstract(state["batch_stats"]),
    }
    step, items = read_latest_items(tmp_path / "ckpt", templates)
    assert step == 3
    assert set(items) == {"params", "batch_stats"}
    assert_bitwise_equal(items["params"], state["params"])
    assert_bitwise_equal(items["batch_stats"], state["batch_stats"])


def test_mismatched_template_raises_for_explicit_step(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, {"meta": {"hist": np.arange(3)}})
        with pytest.raises(
            CheckpointMismatch,
            match=(
                rf"^checkpoint step 1 in {directory}, item 'meta', leaf 'hist': "
                r"checkpoint has shape \(3,\), template has \(4,\)$"
            ),
        ):
            ckpt.restore({"meta": {"hist": np.zeros(4, np.int64)}}, step=1)
        with pytest.raises(
            CheckpointMismatch,
            match=(r"item 'meta': keys only in the checkpoint \['hist'\], only in the template \['other'\]$"),
        ):
            ckpt.restore({"meta": {"other": np.zeros(3, np.int64)}}, step=1)
        with pytest.raises(CheckpointMismatch, match=r"has no item 'params'; it has \['meta'\]$"):
            ckpt.restore({"params": {"w": np.zeros(3)}}, step=1)


CORRUPTIONS = ["truncate", "garbage", "delete", "item_metadata", "item_dir", "empty"]


def _corrupt(step_dir: Path, how: str) -> None:
    """Breaks a step the ways a disk or a person can: its data files, metadata or directories."""
    if how == "item_metadata":
        for p in step_dir.glob("*/_METADATA"):
            p.write_bytes(b'{"tree_metadata": \xff')
        return
    if how == "item_dir":
        shutil.rmtree(step_dir / "params")
        return
    if how == "empty":
        for p in step_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    data = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data, f"no data files under {step_dir}"
    for p in data:
        if how == "truncate":
            with open(p, "r+b") as f:
                f.truncate(p.stat().st_size // 2)
        elif how == "garbage":
            noise = np.random.default_rng(0).integers(0, 256, p.stat().st_size, np.uint8)
            p.write_bytes(noise.tobytes())
        else:
            p.unlink()


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `directory` with its size and mtime."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_latest_falls_back_to_previous(tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    directory = tmp_path / "ckpt"
    old, new = make_state(3), make_state(4)
    with Checkpointer(directory) as ckpt:
        ckpt.save(10, old)
        ckpt.save(20, new)
    _corrupt(directory / "20", how)
    before = snapshot(directory)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(directory) as ckpt:
        step, items = ckpt.restore(zeros_like(old))
        with pytest.raises(CorruptCheckpoint, match=f"^checkpoint step 20 in {directory} is corrupt: "):
            ckpt.restore(zeros_like(old), step=20)
    assert step == 10
    assert_bitwise_equal(items, old)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(f"checkpoint step 20 in {directory} is corrupt (")
    assert "\n" not in warnings[0].getMessage()
    assert snapshot(directory) == before  # restore never moves or deletes


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_resume_moves_only_the_corrupt_newer_steps_aside(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "ckpt"
    states = {s: {"params": {"w": jnp.full((3,), s, jnp.float32)}, "meta": {"step": np.int64(s)}} for s in (10, 20, 30)}
    with Checkpointer(directory) as ckpt:
        for s, state in states.items():
            ckpt.save(s, state)
    _corrupt(directory / "20", how)
    _corrupt(directory / "30", "truncate")
    kept = snapshot(directory / "10")
    with Checkpointer(directory) as ckpt:
        resumed = ckpt.resume(zeros_like(states[10]))
        assert resumed.step == 10 and resumed.corrupt == (20, 30)
        assert_bitwise_equal(resumed.items, states[10])
        assert resumed.moved_to == epath.Path(tmp_path / "ckpt.corrupt")
        assert resumed.message == (
            f"checkpoints 20, 30 in {directory} are corrupt; moved to {directory}.corrupt; resuming from step 10"
        )
        assert ckpt.steps() == [10]
        ckpt.save(20, states[30])  # the run writes the moved steps anew
        assert ckpt.steps() == [10, 20]
        _, items = ckpt.restore(zeros_like(states[10]), step=20)
        assert_bitwise_equal(items, states[30])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "ckpt.corrupt"]
    assert sorted(p.name for p in directory.iterdir()) == ["10", "20"]
    assert sorted(p.name for p in (tmp_path / "ckpt.corrupt").iterdir()) == ["20", "30"]
    assert snapshot(directory / "10") == kept


def test_resume_without_corruption(tmp_path: Path) -> None:
    state = {"params": {"w": jnp.arange(3.0)}}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        fresh = ckpt.resume(state)
        assert (fresh.step, fresh.items, fresh.corrupt, fresh.moved_to, fresh.message) == (None, None, (), None, None)
        ckpt.save(4, state)
        resumed = ckpt.resume(zeros_like(state))
    assert (resumed.step, resumed.corrupt, resumed.message) == (4, (), None)
    assert_bitwise_equal(resumed.items, state)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["4"]


@pytest.mark.parametrize(
    "template",
    [
        {"params": {"w": jnp.zeros(4)}},  # other shape
        {"params": {"w": jnp.zeros(3), "b": jnp.zeros(1)}},  # other keys
        {"params": {"w": jnp.zeros(3)}, "ema": {"w": jnp.zeros(3)}},  # an item never saved
    ],
)
def test_template_mismatch_raises_and_moves_nothing(tmp_path: Path, template: Any) -> None:
    directory = tmp_path / "ckpt"
    with Checkpointer(directory) as ckpt:
        ckpt.save(10, {"params": {"w": jnp.arange(3.0)}})
        ckpt.save(20, {"params": {"w": jnp.arange(3.0)}})
    _corrupt(directory / "20", "delete")  # even next to a corrupt step nothing moves
    before = snapshot(directory)
    with Checkpointer(directory) as ckpt:
        with pytest.raises(CheckpointMismatch, match=f"^checkpoint step (10|20) in {directory}") as e:
            ckpt.resume(template)
        assert "\n" not in str(e.value) and isinstance(e.value, UserError)
        assert ckpt.steps() == [10, 20]
    with pytest.raises(CheckpointMismatch):
        read_latest_items(directory, template)
    assert snapshot(directory) == before


def _raise_eio() -> None:
    raise OSError(errno.EIO, "Input/output error")


def _raise_wrapped_memory_error() -> None:
    # How Orbax reports any failure reading a shard: a plain Exception from the original.
    try:
        raise MemoryError()
    except BaseException as e:
        raise Exception("Encountered error while reading array index") from e


def _raise_eio_while_handling_a_missing_file() -> None:
    try:
        raise FileNotFoundError("cache entry")
    except FileNotFoundError:
        raise OSError(errno.EIO, "Input/output error")  # noqa: B904 - its own error


@pytest.mark.parametrize(
    "fail, expected",
    [
        (_raise_eio, OSError),
        (_raise_eio_while_handling_a_missing_file, OSError),
        (lambda: (_ for _ in ()).throw(MemoryError()), MemoryError),
        (lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")), PermissionError),
        (lambda: (_ for _ in ()).throw(ValueError("UNAVAILABLE: connection reset")), ValueError),
        (_raise_wrapped_memory_error, Exception),
    ],
)
def test_other_errors_raise_and_move_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: Any, expected: type
) -> None:
    directory = tmp_path / "ckpt"
    state = {"params": {"w": jnp.arange(3.0)}}
    with Checkpointer(directory) as ckpt:
        ckpt.save(10, state)
        ckpt.save(20, state)
    _corrupt(directory / "20", "garbage")
    before = snapshot(directory)
    calls = []

    def restore(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        fail()

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "restore", restore)
    with Checkpointer(directory) as ckpt:
        # Step 20 is corrupt and skipped; the error restoring 10 is not corruption.
        with pytest.raises(expected) as e:
            ckpt.resume(state)
        assert type(e.value) is expected
        assert [epath.Path(c).parent.name for c in calls] == ["10"]
        with pytest.raises(expected):
            ckpt.restore(state)
        assert ckpt.steps() == [10, 20]
    assert snapshot(directory) == before


def test_all_corrupt_are_moved_aside_and_their_steps_reused(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    state = {"params": {"w": jnp.arange(4.0)}}
    for _round in (1, 2):
        with Checkpointer(directory) as ckpt:
            ckpt.save(1, state)
            ckpt.save(2, state)
        for step in ("1", "2"):
            _corrupt(directory / step, "garbage")
        with Checkpointer(directory) as ckpt:
            resumed = ckpt.resume(state)
            assert (resumed.step, resumed.items, resumed.corrupt) == (None, None, (1, 2))
            assert resumed.message == (
                f"checkpoints 1, 2 in {directory} are corrupt; moved to "
                f"{directory}.corrupt; none is left, starting from step 0"
            )
            assert ckpt.steps() == []
        assert list(directory.iterdir()) == []
    # A second time the same step numbers get a suffix; nothing set aside is overwritten.
    assert sorted(p.name for p in (tmp_path / "ckpt.corrupt").iterdir()) == ["1", "1.2", "2", "2.2"]
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, state)
        assert ckpt.restore(zeros_like(state))[0] == 1


def test_nothing_restorable_returns_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "ckpt"
    state = {"params": {"w": jnp.arange(4.0)}}
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    for step in ("1", "2"):
        _corrupt(directory / step, "delete")
    before = snapshot(directory)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert read_latest_items(directory, state) is None
    assert sum(r.name == LOGGER for r in caplog.records) == 3  # one per step, one summary
    with Checkpointer(directory, read_only=True) as reader:
        assert reader.restore(state) is None
        with pytest.raises(RuntimeError, match="read-only"):
            reader.resume(state)
    assert snapshot(directory) == before  # readers never move or delete


def test_step_removed_while_reading_is_skipped_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "ckpt"
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, {"params": {"w": jnp.arange(2.0)}})
        ckpt.save(2, {"params": {"w": jnp.arange(2.0) + 2}})
    real = ocp.StandardCheckpointHandler.restore

    def restore(self: Any, directory_: Any, *args: Any, **kwargs: Any) -> Any:
        if epath.Path(directory_).parent.name == "2":  # its writer moves it away meanwhile
            shutil.rmtree(directory / "2")
            raise FileNotFoundError(directory_)
        return real(self, directory_, *args, **kwargs)

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "restore", restore)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        step, items = read_latest_items(directory, {"params": {"w": jnp.zeros(2)}})
    assert step == 1
    np.testing.assert_array_equal(items["params"]["w"], [0.0, 1.0])
    assert [r for r in caplog.records if r.name == LOGGER] == []


@pytest.mark.parametrize("copy", [False, True])
def test_move_tree(tmp_path: Path, copy: bool) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top").write_bytes(b"1")
    (src / "a" / "b" / "deep").write_bytes(b"22")
    (src / "empty").mkdir()
    # copy=True is what object stores get; epath's copy and rmtree behave alike there.
    checkpoint_lib._move_tree(epath.Path(src), epath.Path(tmp_path / "dst"), copy=copy)
    assert not src.exists()
    assert (tmp_path / "dst" / "top").read_bytes() == b"1"
    assert (tmp_path / "dst" / "a" / "b" / "deep").read_bytes() == b"22"
    assert (tmp_path / "dst" / "empty").is_dir()


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    state = {"params": {"w": jnp.arange(4.0)}, "meta": {"step": np.int64(2)}}
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    # What a save of step 9 killed mid-write leaves: Orbax's tmp directory, never renamed,
    # with part of the data and no commit marker.
    partial = directory / "9.orbax-checkpoint-tmp"
    shutil.copytree(directory / "2", partial)
    for p in partial.rglob("commit_success.txt"):
        p.unlink()
    _corrupt(partial, "truncate")

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
    mesh = jax.make_mesh((1,), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = {"params": {"w": jnp.arange(8.0).reshape(4, 2), "b": jnp.arange(3, dtype=jnp.bfloat16)}}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, state)
        templates = {
            "params": {
                "w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=split),
                "b": jax.ShapeDtypeStruct((3,), jnp.bfloat16, sharding=replicated),
            }
        }
        _, items = ckpt.restore(templates)
    assert items["params"]["w"].sharding == split
    assert items["params"]["b"].sharding == replicated
    assert_bitwise_equal(items, state)


def test_empty_directory_returns_none(tmp_path: Path) -> None:
    assert read_latest_items(tmp_path / "missing", {"params": {"w": jnp.zeros(2)}}) is None
    assert not (tmp_path / "missing").exists()
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.steps() == []
        assert ckpt.latest_step() is None
        assert ckpt.restore({"params": {"w": jnp.zeros(2)}}) is None
    assert read_latest_items(tmp_path / "ckpt", {"params": {"w": jnp.zeros(2)}}) is None


def test_orbax_info_logging_is_silenced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, {"params": {"w": jnp.zeros(2)}})
        ckpt.restore({"params": {"w": jnp.zeros(2)}})
    noisy = [r for r in caplog.records if f"{os.sep}orbax{os.sep}" in r.pathname]
    assert noisy == []


def test_rejects_bad_item_names_and_leaves(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        with pytest.raises(ValueError, match="metrics"):
            ckpt.save(1, {"metrics": {"loss": jnp.zeros(())}})
        with pytest.raises(TypeError, match="name"):
            ckpt.save(1, {"meta": {"name": "resnet"}})
        assert ckpt.steps() == []


# Two JAX processes on CPU (gloo collectives), two devices each, as `jax.distributed` runs them.
TWO_PROCESSES = textwrap.dedent("""
    import errno, json, pathlib, sys

    import jax

    pid, port, root = int(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=pid)

    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec as P

    from normjax.training.checkpoint import Checkpointer

    mesh = jax.make_mesh((4,), ('data',))
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
    rows = np.arange(16.0, dtype=np.float32).reshape(8, 2)


    def state(v):
        w = jax.make_array_from_callback((8, 2), split, lambda i: rows[i] * v)
        b = jax.make_array_from_callback((3,), rep, lambda i: np.full(3, v, np.float32)[i])
        return {'params': {'w': w, 'b': b}, 'meta': {'step': np.int64(v)}}


    tmpl = {'params': {'w': jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=split),
                       'b': jax.ShapeDtypeStruct((3,), jnp.float32, sharding=rep)},
            'meta': {'step': np.int64(0)}}
    real_restore = ocp.StandardCheckpointHandler.restore


    def fail_on(step, exc):
        def restore(self, directory, *args, **kwargs):
            if directory.parent.name == str(step):
                raise exc
            return real_restore(self, directory, *args, **kwargs)
        return restore


    d, out = root / 'ckpt', {}
    with Checkpointer(d) as ckpt:
        for s in (1, 2, 3):
            ckpt.save(s, state(float(s)))
        multihost_utils.sync_global_devices('saved')
        if pid == 0:  # step 3 is corrupt for every process
            for p in (d / '3' / 'params' / 'd').iterdir():
                p.write_bytes(bytes(7))
        if pid == 1:  # step 2 is corrupt only where process 1 reads (a shard of its own)
            ocp.StandardCheckpointHandler.restore = fail_on(2, ValueError('DATA_LOSS: shard'))
        multihost_utils.sync_global_devices('corrupted')
        r = ckpt.resume(tmpl)
        ocp.StandardCheckpointHandler.restore = real_restore
        out['resume'] = [r.step, list(r.corrupt), r.message]
        shards = r.items['params']['w'].addressable_shards
        out['w_local'] = sorted(float(np.asarray(s.data).sum()) for s in shards)
        out['steps'] = ckpt.steps()
        ckpt.save(2, state(20.0))
        ckpt.save(3, state(30.0))
        out['steps2'] = ckpt.steps()
    with Checkpointer(d, read_only=True) as reader:
        if pid == 1:  # as if it listed the directory before step 3 was complete
            reader.steps = lambda: [1, 2]
        step, items = reader.restore(tmpl)
        out['reread'] = [step, float(np.asarray(items['params']['b'].addressable_shards[0].data)[0])]
        if pid == 1:  # a transient error on one process only
            ocp.StandardCheckpointHandler.restore = fail_on(3, OSError(errno.EIO, 'I/O error'))
        try:
            reader.restore(tmpl)
        except Exception as e:
            out['transient'] = type(e).__name__
    multihost_utils.sync_global_devices('done')
    out['listing'] = [sorted(p.name for p in folder.iterdir()) for folder in (d, root / 'ckpt.corrupt')]
    print('RESULT', json.dumps(out), flush=True)
""")


def test_two_processes_agree_and_only_process_0_moves(tmp_path: Path) -> None:
    script = tmp_path / "two_processes.py"
    script.write_text(TWO_PROCESSES)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    results = []
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    directory = tmp_path / "ckpt"
    for r in results:
        # Step 3 is corrupt on disk, step 2 only where process 1 reads: both fall back to 1.
        assert r["resume"] == [
            1,
            [2, 3],
            f"checkpoints 2, 3 in {directory} are corrupt; moved to {directory}.corrupt; resuming from step 1",
        ]
        assert (r["steps"], r["steps2"], r["reread"]) == ([1], [1, 2, 3], [3, 30.0])
        assert r["listing"] == [["1", "2", "3"], ["2", "3"]]
    # Each process holds its own rows of the split array: rows 0-3 on process 0, 4-7 on 1.
    assert [r["w_local"] for r in results] == [[6.0, 22.0], [38.0, 54.0]]
    # Both read the step process 0 listed; an error on one process only is raised on both
    # rather than leaving one waiting.
    assert [r["transient"] for r in results] == ["RuntimeError", "OSError"]
