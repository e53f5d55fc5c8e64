"""Periodic, atomic checkpoints of named pytrees; the only module that touches Orbax.

Orbax's API churns between releases, so the rest of normjax talks to `Checkpointer` only.

Each item (e.g. 'params', 'opt_state') is stored as a flat dict of its leaves keyed by
their escaped key path ('dense.kernel', 'mu.0.count', ...) and rebuilt on restore with
the template's own treedef. That sidesteps Orbax's trouble with NamedTuple nodes, empty
subtrees (`optax.EmptyState()`, `()`, `{}`) and numpy scalars, while a template whose
structure differs from the saved one still fails loudly (missing/extra keys).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from types import TracebackType
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

log = logging.getLogger(__name__)

# Reserved flat-dict keys. quote() writes '%' only as '%XX' with hex digits, so an escaped
# key path can never start with '%r' or '%n'.
_ROOT_KEY = '%root'
_EMPTY_KEY = '%none'
# Orbax keeps these item names for itself; item names are also directory names, and the
# step directory's own files start with '_' or contain '.'.
_RESERVED_ITEMS = frozenset({'metrics', 'metadata'})
_ITEM_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_-]*')
_SCALARS = (bool, int, float, complex, np.generic)


class _DropOrbaxInfo(logging.Filter):
    """Drops Orbax's chatter from absl's logger: INFO (dozens of lines per save) and the
    warning that a read-only manager is read-only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f'{os.sep}orbax{os.sep}' not in record.pathname:
            return True
        if record.levelno < logging.WARNING:
            return False
        return not str(record.msg).startswith('Given directory is read only')


def _quiet_orbax() -> None:
    # Orbax logs through absl, i.e. the 'absl' stdlib logger; other absl users keep their INFO.
    absl_logger = logging.getLogger('absl')
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
        parts.append(urllib.parse.quote(str(part), safe='').replace('.', '%2E'))
    return '.'.join(parts) or _ROOT_KEY


def _flat_leaves(item: str, tree: PyTree) -> tuple[list[str], list[Any], Any]:
    """Key names, leaves and treedef of `tree`; raises on key paths that escape to the same name."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [_key_name(path) for path, _ in path_leaves]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f'item {item!r}: distinct keys map to the same checkpoint key(s) {dupes}')
    return names, [leaf for _, leaf in path_leaves], treedef


def _to_saveable(item: str, name: str, leaf: Any) -> Any:
    if isinstance(leaf, (jax.Array, np.ndarray)):
        return leaf
    if isinstance(leaf, _SCALARS):
        # Orbax's Standard handler refuses numpy scalars on restore; 0-d arrays round-trip exactly.
        return np.asarray(leaf)
    raise TypeError(f'item {item!r}, leaf {name!r}: cannot checkpoint a {type(leaf).__name__}')


def _to_restore_target(item: str, name: str, leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        # Orbax places the array by the template's sharding, else as it was saved: a jax.Array
        # with the saved sharding, or numpy (64-bit dtypes stay exact with jax_enable_x64 off).
        return leaf
    return _to_saveable(item, name, leaf)


def _from_restored(item: str, name: str, template: Any, value: Any) -> Any:
    # Orbax does not check shapes of numpy targets, so check every leaf here.
    if np.shape(value) != np.shape(template):
        raise ValueError(
            f'item {item!r}, leaf {name!r}: checkpoint has shape {np.shape(value)}, '
            f'template has {np.shape(template)}'
        )
    if isinstance(template, np.generic):
        return np.asarray(value, dtype=template.dtype)[()]
    if isinstance(template, _SCALARS):
        return type(template)(np.asarray(value).item())
    return value


class Checkpointer:
    """Periodic checkpoints of named pytrees in `directory` (made absolute); keeps the last `keep`.

    Saves are synchronous and atomic: Orbax writes into `<step>.orbax-checkpoint-tmp` and
    renames it to `<step>` when complete, so a killed save never looks like a checkpoint.
    `read_only=True` never creates, deletes or cleans anything (for readers of another
    run's directory while that run may still be writing).

    Example:
      >>> with Checkpointer('/tmp/run/ckpt', keep=2) as ckpt:
      ...     ckpt.save(100, {'params': params, 'opt_state': opt_state})
      ...     step, items = ckpt.restore({'params': params})
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, read_only: bool = False):
        if keep < 1:
            raise ValueError(f'keep must be >= 1, got {keep}')
        _quiet_orbax()
        self.directory = os.path.abspath(os.fspath(directory))
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
                # Checkpointer is the directory's only writer.
                cleanup_tmp_directories=True,
            )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._closed = False

    def save(self, step: int, items: dict[str, PyTree]) -> None:
        """Writes `items` as checkpoint `step`, returning once it is final; existing steps are kept.

        Example:
          >>> ckpt.save(10, {'params': params, 'meta': {'step': np.int64(10), 'rng': key_data}})
        """
        if self.read_only:
            raise RuntimeError(f'checkpointer for {self.directory} is read-only')
        step = int(step)
        if step in self._manager.all_steps():
            return
        if not items:
            raise ValueError('items must name at least one pytree to save')
        args = {}
        for item, tree in items.items():
            _check_item_name(item)
            names, leaves, _ = _flat_leaves(item, tree)
            flat = {n: _to_saveable(item, n, leaf) for n, leaf in zip(names, leaves)}
            # Orbax rejects a leafless item ("Found empty item"), yet `{}` batch stats are normal.
            args[item] = ocp.args.StandardSave(flat or {_EMPTY_KEY: np.zeros((), np.uint8)})
        # force=True: Orbax would otherwise skip any step <= its latest one, e.g. every save after
        # falling back from a corrupt newest checkpoint to an older one.
        self._manager.save(step, args=ocp.args.Composite(**args), force=True)

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, ascending.

        Example:
          >>> ckpt.steps()
          [200, 300, 400]
        """
        if self.read_only:
            self._manager.reload()  # another process may be writing this directory
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Newest complete checkpoint step, or None when there is none.

        Example:
          >>> ckpt.latest_step()
          400
        """
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(
        self, templates: dict[str, PyTree], step: int | None = None, *, drop_broken: bool = False
    ) -> tuple[int, dict[str, PyTree]] | None:
        """Restores only the items named in `templates` as `(step, items)`.

        Template leaves may be arrays, scalars or `jax.ShapeDtypeStruct`s; each restored leaf
        has the template's type, dtype and sharding (a ShapeDtypeStruct without a sharding
        comes back as saved: a jax.Array with the saved sharding, or numpy). With `step=None`
        the newest checkpoint that restores cleanly is used, each failure logged as a warning;
        None when there is none. An explicit `step` raises instead. `drop_broken=True` deletes
        the unrestorable steps newer than the one restored, so that a resumed run writes them
        anew (saving an existing step is a no-op); use it only with templates known to fit.

        Example:
          >>> sds = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
          >>> step, items = ckpt.restore({'params': jax.tree.map(sds, params)})
        """
        if not templates:
            raise ValueError('templates must name at least one item to restore')
        if step is not None:
            if int(step) not in self.steps():
                raise FileNotFoundError(
                    f'no checkpoint for step {step} in {self.directory}; have {self.steps()}'
                )
            return int(step), self._restore_step(int(step), templates)
        steps = self.steps()
        broken = []
        for candidate in reversed(steps):
            try:
                items = self._restore_step(candidate, templates)
                if drop_broken and not self.read_only:
                    for bad in broken:
                        self._manager.delete(bad)
                return candidate, items
            except Exception as e:  # noqa: BLE001 - any failure means "try the older one"
                first_line = (str(e).strip().splitlines() or [''])[0][:300]
                log.warning(
                    'checkpoint step %d in %s is not restorable (%s: %s); trying an older one',
                    candidate, self.directory, type(e).__name__, first_line,
                )
                broken.append(candidate)
        if steps:
            log.warning('no restorable checkpoint in %s among steps %s', self.directory, steps)
        return None

    def _restore_step(self, step: int, templates: dict[str, PyTree]) -> dict[str, PyTree]:
        flats = {}
        args = {}
        for item, tree in templates.items():
            _check_item_name(item)
            names, leaves, treedef = _flat_leaves(item, tree)
            target = {n: _to_restore_target(item, n, leaf) for n, leaf in zip(names, leaves)}
            flats[item] = (names, leaves, treedef)
            args[item] = ocp.args.StandardRestore(target or {_EMPTY_KEY: np.zeros((), np.uint8)})
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        out = {}
        for item, (names, leaves, treedef) in flats.items():
            values = restored[item]
            # Looked up by name, so Orbax's dict ordering cannot scramble leaves.
            new = [_from_restored(item, n, leaf, values[n]) for n, leaf in zip(names, leaves)]
            out[item] = jax.tree_util.tree_unflatten(treedef, new)
        return out

    def close(self) -> None:
        """Releases Orbax's resources; idempotent.

        Example:
          >>> ckpt.close()
        """
        if not self._closed:
            self._closed = True
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


def _check_item_name(item: Any) -> None:
    if not isinstance(item, str) or not _ITEM_NAME.fullmatch(item) or item in _RESERVED_ITEMS:
        raise ValueError(
            f'checkpoint item name {item!r} is not allowed; use letters, digits, _ and - '
            f'(starting with a letter or digit), except {sorted(_RESERVED_ITEMS)}'
        )


def read_latest_items(
    directory: str | os.PathLike, templates: dict[str, PyTree]
) -> tuple[int, dict[str, PyTree]] | None:
    """Newest restorable `(step, items)` for `templates` in `directory`, or None; writes nothing.

    Example:
      >>> step, items = read_latest_items('/runs/a/ckpt', {'params': params, 'batch_stats': stats})
    """
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, read_only=True) as ckpt:
        return ckpt.restore(templates)
