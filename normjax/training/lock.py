"""One lock file per run, so two processes (two shards, a re-launched job) never train one run,
and so readers (`normjax results`) tell a live run from a dead one.

The lock is created with O_EXCL and names its owner (host, pid). It is *stale* when its owner
is a dead process on this host, or when its heartbeat (the file's mtime, touched every
`HEARTBEAT_S` while the run trains) is older than `STALE_S` (an owner on another host that
died). A stale lock is taken over by an atomic rename, so only one process can win it.

On a remote store (`gs://...`) there is no atomic create: the lock is written if absent (or
stale) and read back, which two processes starting within the same moment can both pass. Give
the processes of a sweep disjoint `--shard`s there; the heartbeat still tells live from dead.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from normjax.errors import UserError
from normjax.paths import is_remote
from normjax.training.rundir import RunDir

HEARTBEAT_S = 30.0
STALE_S = 600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Example:
    >>> lock = RunLock(Path("runs/sweep/a"))  # doctest: +SKIP
    >>> if lock.acquire():  # doctest: +SKIP
    ...     try: ...
    ...     finally: lock.release()
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = RunDir(run_dir).lock_path
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def owner_text(self) -> str:
        """`host:pid` of the lock's current owner ("unknown" when unreadable)."""
        try:
            info = json.loads(self.path.read_text())
            return f"{info['host']}:{info['pid']}"
        except (OSError, ValueError, KeyError):
            return "unknown"

    def live(self) -> bool:
        """Whether a live process holds this lock (the run is training now)."""
        return self.path.exists() and not self._stale()

    def busy_message(self) -> str:
        """The one line that refuses a run another process trains now."""
        return (
            f"workdir {str(self.path.parent)!r} is being trained by another process ({self.owner_text()}); "
            "wait for it or give another --workdir"
        )

    def check_free(self) -> None:
        """Refuse at once a run that a live process trains, before anything slow (importing the
        training stack, loading data, compiling) or written. It only reads: `acquire` still
        decides between two processes that start together.

        Raises:
          UserError: (one line) a live process holds the lock.
        """
        if self.live():
            raise UserError(self.busy_message())

    def _stale(self) -> bool:
        try:
            info = json.loads(self.path.read_text())
            age = time.time() - self.path.stat().mtime
        except (OSError, ValueError):
            return True  # vanished or torn: a writer died between create and write
        if info.get("host") == self.owner["host"]:
            return not _alive(int(info.get("pid", -1)))
        return age > STALE_S

    def acquire(self) -> bool:
        """Take the lock (True), or False when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if is_remote(self.path):
            return self._acquire_remote()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                try:  # take over: exactly one contender's rename succeeds
                    stale = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
                    os.rename(self.path, stale)
                    os.unlink(stale)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner | {"time": time.time()}, f)
            return True
        return False

    def _acquire_remote(self) -> bool:
        if self.path.exists() and not self._stale():
            return False
        self.path.write_text(json.dumps(self.owner | {"time": time.time()}))
        return json.loads(self.path.read_text()).get("pid") == self.owner["pid"]

    def touch(self) -> None:
        try:
            if is_remote(self.path):  # no utime on object stores: rewriting renews the mtime
                self.path.write_text(self.path.read_text())
            else:
                os.utime(self.path)
        except (FileNotFoundError, OSError):
            pass

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.owner["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass


class Heartbeat:
    """Touches locks every HEARTBEAT_S from a daemon thread while a block of work runs."""

    def __init__(self, locks: list[RunLock]):
        self.locks, self.stop = locks, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            for lock in self.locks:
                lock.touch()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
