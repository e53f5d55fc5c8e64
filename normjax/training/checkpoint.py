"""Periodic, atomic checkpoints of named pytrees; the only module that touches Orbax.

Orbax's API churns between releases, so the rest of normjax talks to `Checkpointer` only.

Each item (e.g. 'params', 'opt_state') is stored as a flat dict of its leaves keyed by
their escaped key path ('dense.kernel', 'mu.0.count', ...) and rebuilt on restore with
the template's own treedef. That sidesteps Orbax's trouble with NamedTuple nodes, empty
subtrees (`optax.EmptyState()`, `()`, `{}`) and numpy scalars, while a template whose
structure differs from the saved one still fails loudly (missing/extra keys).

Restoring tells three kinds of failure apart, and only the first changes anything:
- a *corrupt* checkpoint, whose own files are missing, truncated or undecodable: readers
  skip it for an older one; the run's writer (`Checkpointer.resume`) moves it aside into
  the sibling folder `<directory>.corrupt/`, so the resumed run writes that step anew;
- a template that does not fit the saved items, keys or shapes: `CheckpointMismatch`;
- anything else (an I/O error that is not "missing or broken", memory, an interrupt): raised.

Directories may be local or URLs (`gs://bucket/run/checkpoints`, see `normjax.paths`).

With several JAX processes (`jax.distributed`), every process constructs the Checkpointer
and calls the same methods with the same arguments, arrays sharded over a mesh that spans
them: Orbax has each process write its shards and process 0 write metadata and delete old
steps; here the processes agree on the outcome of every restore attempt, and only process 0
moves corrupt steps while the others wait.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import urllib.parse
from types import TracebackType
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from normjax.errors import UserError, missing_extra

try:
    import orbax.checkpoint as ocp
    from etils import epath
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

from normjax.paths import as_path, is_remote

PyTree = Any

log = logging.getLogger(__name__)

# Reserved flat-dict keys. quote() writes '%' only as '%XX' with hex digits, so an escaped
# key path can never start with '%r' or '%n'.
_ROOT_KEY = "%root"
_EMPTY_KEY = "%none"
# Orbax keeps these item names for itself; item names are also directory names, and the
# step directory's own files start with '_' or contain '.'.
_RESERVED_ITEMS = frozenset({"metrics", "metadata"})
_ITEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SCALARS = (bool, int, float, complex, np.generic)
# Orbax's per-step file naming the saved items (JSON with an 'item_handlers' dict).
_STEP_METADATA = "_CHECKPOINT_METADATA"
# Corrupt steps go to the sibling `<directory>.corrupt/`, not inside `<directory>`: on GCS
# Orbax takes any folder there without its commit file for a killed save and deletes it.
CORRUPT_SUFFIX = ".corrupt"
# tensorstore's status codes for a missing file, a read past a file's end and undecodable
# bytes. Transient ones (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) differ.
_CORRUPT_STATUS = re.compile(r"(NOT_FOUND|OUT_OF_RANGE|DATA_LOSS): ")
# Outcomes of one restore attempt, in increasing precedence across processes.
_OK, _VANISHED, _CORRUPT, _FAILED = 0, 1, 2, 3


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint that does not fit the template: other items, keys or shapes.

    Example:
      >>> raise CheckpointMismatch("checkpoint step 20 in /r/ckpt has no item 'ema'")
      Traceback (most recent call last):
      ...
      normjax.training.checkpoint.CheckpointMismatch: checkpoint step 20 in /r/ckpt has no item 'ema'
    """


class CorruptCheckpoint(UserError):
    """A checkpoint whose own files are missing, truncated or undecodable.

    Example:
      >>> raise CorruptCheckpoint('checkpoint step 20 in /r/ckpt is corrupt: DATA_LOSS: ...')
      Traceback (most recent call last):
      ...
      normjax.training.checkpoint.CorruptCheckpoint: checkpoint step 20 in /r/ckpt is corrupt: DATA_LOSS: ...
    """


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What `Checkpointer.resume` found.

    Attributes:
      directory: the checkpoint directory.
      step: the restored step, or None when no checkpoint is left.
      items: the restored items, or None.
      corrupt: the corrupt steps that were moved aside, ascending.
      moved_to: the folder they were moved into, or None.

    Example:
      >>> Resumed(epath.Path('/r/ckpt'), None, None, (8, 16), epath.Path('/r/ckpt.corrupt')).message
      'checkpoints 8, 16 in /r/ckpt are corrupt; moved to /r/ckpt.corrupt; none is left, starting from step 0'
    """

    directory: epath.Path
    step: int | None
    items: dict[str, PyTree] | None
    corrupt: tuple[int, ...] = ()
    moved_to: epath.Path | None = None

    @property
    def message(self) -> str | None:
        """One line for the user about the corrupt checkpoints, or None when there were none."""
        if not self.corrupt:
            return None
        plural = len(self.corrupt) > 1
        then = f"resuming from step {self.step}" if self.step is not None else "none is left, starting from step 0"
        return (
            f"checkpoint{'s' if plural else ''} {', '.join(map(str, self.corrupt))} in "
            f"{self.directory} {'are' if plural else 'is'} corrupt; moved to {self.moved_to}; {then}"
        )


class _DropOrbaxInfo(logging.Filter):
    """Drops Orbax's chatter from absl's logger: INFO (dozens of lines per save) and the
    warning that a read-only manager is read-only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if record.levelno < logging.WARNING:
            return False
        return not str(record.msg).startswith("Given directory is read only")


def _quiet_orbax() -> None:
    # Orbax logs through absl, i.e. the 'absl' stdlib logger; other absl users keep their INFO.
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_DropOrbaxInfo())


def _key_name(path: tuple[Any, ...]) -> str:
    """Escaped, '.'-joined key path of a leaf, e.g. ('mu', 0, 'count') -> 'mu.0.count'."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            part = entry.key
        elif isinstance(entry, jax.tree_util.SequenceKey):
            part = entry.idx
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            part = entry.name
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            part = entry.key
        else:
            part = entry
        # Escaping '.' keeps the join unambiguous; '/' would otherwise become a path separator.
        parts.append(urllib.parse.quote(str(part), safe="").replace(".", "%2E"))
    return ".".join(parts) or _ROOT_KEY


def _flat_leaves(item: str, tree: PyTree) -> tuple[list[str], list[Any], Any]:
    """Key names, leaves and treedef of `tree`; raises on key paths that escape to the same name."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [_key_name(path) for path, _ in path_leaves]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"item {item!r}: distinct keys map to the same checkpoint key(s) {dupes}")
    return names, [leaf for _, leaf in path_leaves], treedef


def _to_saveable(item: str, name: str, leaf: Any) -> Any:
    if isinstance(leaf, (jax.Array, np.ndarray)):
        return leaf
    if isinstance(leaf, _SCALARS):
        # Orbax's Standard handler refuses numpy scalars on restore; 0-d arrays round-trip exactly.
        return np.asarray(leaf)
    raise TypeError(f"item {item!r}, leaf {name!r}: cannot checkpoint a {type(leaf).__name__}")


def _to_restore_target(item: str, name: str, leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        # Orbax places the array by the template's sharding, else as it was saved: a jax.Array
        # with the saved sharding, or numpy (64-bit dtypes stay exact with jax_enable_x64 off).
        return leaf
    return _to_saveable(item, name, leaf)


def _from_restored(item: str, name: str, template: Any, value: Any) -> Any:
    # Orbax does not check shapes of numpy targets, so check every leaf here.
    if np.shape(value) != np.shape(template):
        raise CheckpointMismatch(
            f"item {item!r}, leaf {name!r}: checkpoint has shape {np.shape(value)}, template has {np.shape(template)}"
        )
    if isinstance(template, np.generic):
        return np.asarray(value, dtype=template.dtype)[()]
    if isinstance(template, _SCALARS):
        return type(template)(np.asarray(value).item())
    return value


class Checkpointer:
    """Periodic checkpoints of named pytrees in `directory`; keeps the last `keep`.

    `directory` is a local path (made absolute) or a URL such as `gs://bucket/run/ckpt`.
    Saves are synchronous and atomic: Orbax writes into `<step>.orbax-checkpoint-tmp` and
    renames it to `<step>` when complete (on GCS it writes a commit file last instead), so
    a killed save never looks like a checkpoint. `read_only=True` never
    creates, moves, deletes or cleans anything (for readers of another run's directory
    while that run may still be writing). With several JAX processes every process
    constructs it and makes the same calls.

    Example:
      >>> with Checkpointer('/tmp/run/ckpt', keep=2) as ckpt:  # doctest: +SKIP
      ...     resumed = ckpt.resume({'params': params, 'opt_state': opt_state})
      ...     ckpt.save(100, {'params': params, 'opt_state': opt_state})
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, read_only: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        _quiet_orbax()
        self.directory: epath.Path = as_path(directory)
        self.keep = keep
        self.read_only = read_only
        if read_only:
            # Orbax warns about every writer option it has to switch off, so pass none.
            options = ocp.CheckpointManagerOptions(
                read_only=True,
                create=False,
                save_interval_steps=0,
                enable_async_checkpointing=False,
            )
        else:
            options = ocp.CheckpointManagerOptions(
                create=True,
                # `max_to_keep` is deprecated in 0.12.x in favour of preservation policies.
                preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
                # Blocking saves: when save() returns, the step directory is final.
                enable_async_checkpointing=False,
                # Remove `*.orbax-checkpoint-tmp` leftovers of a killed run; safe since this
                # Checkpointer is the directory's only writer (Orbax does it on process 0).
                cleanup_tmp_directories=True,
            )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        # Restores go through the item handler, not the manager: the manager's restore ends
        # in a barrier that a process whose read failed never reaches (see `_agree`).
        self._handler = ocp.StandardCheckpointHandler()
        self._closed = False

    def save(self, step: int, items: dict[str, PyTree]) -> None:
        """Writes `items` as checkpoint `step`, returning once it is final.

        Steps are never overwritten: after `resume` the run's next steps are free, since
        corrupt newer ones were moved aside.

        Args:
          step: the step number; must not exist yet.
          items: item name -> pytree of arrays and scalars.

        Raises:
          FileExistsError: `step` exists already.

        Example:
          >>> ckpt.save(10, {'params': params, 'meta': {'step': np.int64(10), 'rng': key_data}})  # doctest: +SKIP
        """
        if self.read_only:
            raise RuntimeError(f"checkpointer for {self.directory} is read-only")
        step = int(step)
        if step in self._manager.all_steps():
            raise FileExistsError(f"checkpoint step {step} exists already in {self.directory}")
        if not items:
            raise ValueError("items must name at least one pytree to save")
        args = {}
        for item, tree in items.items():
            _check_item_name(item)
            names, leaves, _ = _flat_leaves(item, tree)
            flat = {n: _to_saveable(item, n, leaf) for n, leaf in zip(names, leaves)}
            # Orbax rejects a leafless item ("Found empty item"), yet `{}` batch stats are normal.
            args[item] = ocp.args.StandardSave(flat or {_EMPTY_KEY: np.zeros((), np.uint8)})
        # force=True: Orbax would otherwise skip any step <= its latest one, e.g. a step
        # below one restored explicitly.
        self._manager.save(step, args=ocp.args.Composite(**args), force=True)

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, ascending.

        Returns:
          The step numbers; a read-only checkpointer lists the directory anew each time.

        Example:
          >>> ckpt.steps()  # doctest: +SKIP
          [200, 300, 400]
        """
        if self.read_only:
            self._manager.reload()  # another process may be writing this directory
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest complete checkpoint step, or None when there is none.

        Returns:
          The step number or None.

        Example:
          >>> ckpt.latest_step()  # doctest: +SKIP
          400
        """
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(self, templates: dict[str, PyTree], step: int | None = None) -> tuple[int, dict[str, PyTree]] | None:
        """Restores only the items named in `templates`; never changes the directory.

        Template leaves may be arrays, scalars or `jax.ShapeDtypeStruct`s; each restored leaf
        has the template's type, dtype and sharding (a ShapeDtypeStruct without a sharding
        comes back as saved: a jax.Array with the saved sharding, or numpy). With `step=None`
        the newest checkpoint that is not corrupt is used, each corrupt one skipped with a
        warning. A run's writer resuming calls `resume` instead, which moves corrupt ones aside.

        Args:
          templates: item name -> pytree shaped like the saved one.
          step: the step to restore; None for the newest that restores.

        Returns:
          `(step, items)`, or None when `step=None` and no checkpoint restores.

        Raises:
          FileNotFoundError: an explicit `step` does not exist.
          CorruptCheckpoint: an explicit `step` is corrupt.
          CheckpointMismatch: the templates do not fit the checkpoint.

        Example:
          >>> sds = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)  # doctest: +SKIP
          >>> step, items = ckpt.restore({'params': jax.tree.map(sds, params)})  # doctest: +SKIP
        """
        if not templates:
            raise ValueError("templates must name at least one item to restore")
        if step is None:
            found, items, corrupt = self._restore_latest(templates, warn=True)
            if found is None and corrupt:
                log.warning("no restorable checkpoint in %s among steps %s", self.directory, corrupt)
            return None if found is None else (found, items)
        step = int(step)
        steps = self._agreed_steps()
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; have {steps}")
        outcome, items, exc = self._attempt(step, templates)
        worst = self._agree(outcome, step, exc)
        if worst == _CORRUPT:
            raise CorruptCheckpoint(
                f"checkpoint step {step} in {self.directory} is corrupt: {_first_line(exc)}"
            ) from exc
        if worst == _VANISHED:
            raise FileNotFoundError(f"checkpoint step {step} in {self.directory} was removed while restoring")
        return step, items

    def resume(self, templates: dict[str, PyTree]) -> Resumed:
        """Restores the newest checkpoint for the run that writes this directory.

        Like `restore(templates)`, but the corrupt steps newer than the one restored (all of
        them when none restores) are moved into `<directory>.corrupt/` rather than skipped,
        so the run writes those steps anew instead of mixing old and new. Logs nothing:
        the caller reports `Resumed.message`.

        Args:
          templates: item name -> pytree shaped like the saved one.

        Returns:
          A `Resumed` with the step and items (None when none is left), the corrupt steps
          and where they went.

        Raises:
          CheckpointMismatch: the templates do not fit a checkpoint; nothing is moved.
          Any other error restoring a step (I/O, memory) as is; nothing is moved.

        Example:
          >>> resumed = ckpt.resume(templates)  # doctest: +SKIP
          >>> if resumed.message:  # doctest: +SKIP
          ...     print(resumed.message, file=sys.stderr)
          >>> state = init() if resumed.step is None else from_items(resumed.items)  # doctest: +SKIP
        """
        if self.read_only:
            raise RuntimeError(f"checkpointer for {self.directory} is read-only; resume moves corrupt steps")
        if not templates:
            raise ValueError("templates must name at least one item to restore")
        step, items, corrupt = self._restore_latest(templates, warn=False)
        if not corrupt:
            return Resumed(self.directory, step, items)
        moved_to = self._set_aside(corrupt)
        return Resumed(self.directory, step, items, tuple(sorted(corrupt)), moved_to)

    def _restore_latest(
        self, templates: dict[str, PyTree], *, warn: bool
    ) -> tuple[int | None, dict[str, PyTree] | None, list[int]]:
        """Newest restorable `(step, items)` (None, None when none) and the corrupt steps above it."""
        corrupt = []
        for candidate in reversed(self._agreed_steps()):
            outcome, items, exc = self._attempt(candidate, templates)
            worst = self._agree(outcome, candidate, exc)
            if worst == _OK:
                return candidate, items, corrupt
            if worst == _CORRUPT:
                corrupt.append(candidate)
                if warn:
                    log.warning(
                        "checkpoint step %d in %s is corrupt (%s); trying an older one",
                        candidate,
                        self.directory,
                        _first_line(exc),
                    )
            # _VANISHED: its writer removed it meanwhile (an old step or a corrupt one).
        return None, None, corrupt

    def _attempt(
        self, step: int, templates: dict[str, PyTree]
    ) -> tuple[int, dict[str, PyTree] | None, Exception | None]:
        """Restores `step` on this process: (outcome, items or None, the error or None)."""
        try:
            return _OK, self._restore_step(step, templates), None
        except Exception as e:  # noqa: BLE001 - classified here, re-raised by _agree
            try:
                if not _is_corrupt(e):
                    return _FAILED, None, e
                return (_CORRUPT if self._step_dir(step).exists() else _VANISHED), None, e
            except Exception as e2:  # noqa: BLE001 - e.g. the exists() check failing
                return _FAILED, None, e2

    def _agree(self, outcome: int, step: int, exc: Exception | None) -> int:
        """The outcome of one restore attempt on all processes: the worst of their outcomes.

        Every process calls this once per attempt, whatever happened, so none is left waiting;
        a failure anywhere raises everywhere (the failing process its own error).
        """
        codes = _gather(outcome)
        worst = int(codes.max())
        if worst == _FAILED:
            if outcome == _FAILED:
                raise exc
            failed = [i for i, c in enumerate(codes) if c == _FAILED]
            raise RuntimeError(
                f"restoring checkpoint step {step} in {self.directory} failed on process(es) {failed}; see their error"
            )
        return worst

    def _agreed_steps(self) -> list[int]:
        """`steps()` as process 0 sees it, so that all processes try the same steps."""
        steps = self.steps()
        if jax.process_count() == 1:
            return steps
        # int32: what a jax array holds with jax_enable_x64 off.
        n = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
        mine = np.zeros(n, np.int32)
        if jax.process_index() == 0:
            mine[:] = steps
        return [int(s) for s in np.asarray(multihost_utils.broadcast_one_to_all(mine))]

    def _set_aside(self, steps: list[int]) -> epath.Path:
        """Moves `steps` into `<directory>.corrupt/` (on process 0) and returns that folder."""
        dest = self.directory.parent / f"{self.directory.name}{CORRUPT_SUFFIX}"
        error = None
        if jax.process_index() == 0:
            try:
                if not self.directory.name or str(self.directory.parent).endswith("://"):
                    raise UserError(
                        f"cannot move corrupt checkpoints {steps} out of {self.directory}, "
                        "a file system or bucket root; keep checkpoints in a subfolder"
                    )
                dest.mkdir(parents=True, exist_ok=True)
                for step in sorted(steps):
                    _move_tree(self._step_dir(step), _free_name(dest, str(step)))
            except Exception as e:  # noqa: BLE001 - re-raised once the others know
                error = e
        # Also the barrier: the others list the directory only after process 0 is done.
        codes = _gather(_FAILED if error is not None else _OK)
        if error is not None:
            raise error
        if codes.max() == _FAILED:
            raise RuntimeError(f"moving corrupt checkpoints {steps} in {self.directory} aside failed on process 0")
        self._manager.reload()
        return dest

    def _step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)  # Orbax's default step naming: the bare number

    def _restore_step(self, step: int, templates: dict[str, PyTree]) -> dict[str, PyTree]:
        step_dir = self._step_dir(step)
        flats = {}
        for item, tree in templates.items():
            _check_item_name(item)
            flats[item] = _flat_leaves(item, tree)
        self._check_fits(step, step_dir, flats)
        out = {}
        for item, (names, leaves, treedef) in flats.items():
            target = {n: _to_restore_target(item, n, leaf) for n, leaf in zip(names, leaves)}
            args = ocp.args.StandardRestore(target or {_EMPTY_KEY: np.zeros((), np.uint8)})
            values = self._handler.restore(step_dir / item, args=args)
            # Looked up by name, so Orbax's dict ordering cannot scramble leaves.
            new = [_from_restored(item, n, leaf, values[n]) for n, leaf in zip(names, leaves)]
            out[item] = jax.tree_util.tree_unflatten(treedef, new)
        return out

    def _check_fits(self, step: int, step_dir: epath.Path, flats: dict[str, Any]) -> None:
        """Raises CheckpointMismatch unless the saved items have the templates' keys and shapes.

        Reads only metadata, so a mismatch is told from corrupt data before any array is read;
        metadata that is missing or broken raises what `_is_corrupt` recognizes.
        """
        where = f"checkpoint step {step} in {self.directory}"
        for item, (names, leaves, _) in flats.items():
            if not (step_dir / item).exists():
                saved_items = _saved_items(step_dir)
                if saved_items is not None and item not in saved_items:
                    raise CheckpointMismatch(f"{where} has no item {item!r}; it has {sorted(saved_items)}")
                raise CorruptCheckpoint(f"{where}: the files of item {item!r} are missing")
            tree = self._handler.metadata(step_dir / item).tree
            saved = {k: tuple(getattr(v, "shape", ())) for k, v in tree.items()}
            wanted = {n: _shape(leaf) for n, leaf in zip(names, leaves)} or {_EMPTY_KEY: ()}
            if saved.keys() != wanted.keys():
                only_saved, only_wanted = saved.keys() - wanted.keys(), wanted.keys() - saved.keys()
                raise CheckpointMismatch(
                    f"{where}, item {item!r}: keys only in the checkpoint "
                    f"{_few(only_saved)}, only in the template {_few(only_wanted)}"
                )
            for name, shape in wanted.items():
                if saved[name] != shape:
                    raise CheckpointMismatch(
                        f"{where}, item {item!r}, leaf {name!r}: checkpoint has "
                        f"shape {saved[name]}, template has {shape}"
                    )

    def close(self) -> None:
        """Releases Orbax's resources; idempotent.

        Example:
          >>> ckpt.close()  # doctest: +SKIP
        """
        if not self._closed:
            self._closed = True
            self._handler.close()
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_corrupt(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the checkpoint's own files are
    missing, truncated or undecodable."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (CorruptCheckpoint, FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError)):
            return True
        if isinstance(e, ValueError) and _CORRUPT_STATUS.match(str(e)):
            return True
        # Orbax re-raises a failed read from a plain Exception; not __context__: an error
        # raised while handling another (say MemoryError) is its own.
        e = e.__cause__
    return False


def _saved_items(step_dir: epath.Path) -> set[str] | None:
    """Item names the step's metadata lists, or None when it is missing or unreadable."""
    try:
        return set(json.loads((step_dir / _STEP_METADATA).read_text())["item_handlers"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(leaf.shape) if isinstance(leaf, jax.ShapeDtypeStruct) else np.shape(leaf)


def _few(keys: Any, n: int = 3) -> str:
    keys = sorted(keys)
    return str(keys[:n])[:-1] + (", ...]" if len(keys) > n else "]")


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "seen by another process"
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}"


def _gather(code: int) -> np.ndarray:
    """`code` of every process (just this one's without jax.distributed)."""
    if jax.process_count() == 1:
        return np.array([code])
    return np.asarray(multihost_utils.process_allgather(np.array([code], np.int32))).reshape(-1)


def _free_name(folder: epath.Path, name: str) -> epath.Path:
    """`folder/name`, or `folder/name.2`, `.3`, ... when taken (a step set aside before)."""
    path, i = folder / name, 1
    while path.exists():
        i += 1
        path = folder / f"{name}.{i}"
    return path


def _move_tree(src: epath.Path, dst: epath.Path, *, copy: bool | None = None) -> None:
    """Moves directory `src` to `dst`: one atomic rename locally; object stores have no
    directory rename (epath's differs by backend), so there (`copy=None` and a URL, or
    `copy=True`) each file is copied and then `src` deleted."""
    if not (is_remote(src) if copy is None else copy):
        src.rename(dst)
        return
    _copy_tree(src, dst)
    src.rmtree()


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_dir():
            _copy_tree(p, dst / p.name)
        else:
            p.copy(dst / p.name)


def _check_item_name(item: Any) -> None:
    if not isinstance(item, str) or not _ITEM_NAME.fullmatch(item) or item in _RESERVED_ITEMS:
        raise ValueError(
            f"checkpoint item name {item!r} is not allowed; use letters, digits, _ and - "
            f"(starting with a letter or digit), except {sorted(_RESERVED_ITEMS)}"
        )


def read_latest_items(
    directory: str | os.PathLike, templates: dict[str, PyTree]
) -> tuple[int, dict[str, PyTree]] | None:
    """Newest restorable `(step, items)` for `templates` in `directory`, or None; writes nothing.

    Args:
      directory: a checkpoint directory (local or URL); it may be missing.
      templates: item name -> pytree shaped like the saved one (a subset of the items).

    Returns:
      `(step, items)`, or None when there is no checkpoint or every one is corrupt.

    Raises:
      CheckpointMismatch: the templates do not fit the newest checkpoint.

    Example:
      >>> step, items = read_latest_items('/runs/a/ckpt', {'params': params, 'batch_stats': stats})  # doctest: +SKIP
    """
    if not as_path(directory).is_dir():
        return None
    with Checkpointer(directory, read_only=True) as ckpt:
        return ckpt.restore(templates)
