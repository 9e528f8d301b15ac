"""Coordination between velocity-pg processes that share a BACKUP_DIR.

One lock file, ``BACKUP_DIR/.velocity.lock``, taken with ``flock``:

* readers (``restore``, ``verify``) hold it **shared** while they read a backup;
* ``cleanup`` needs it **exclusive** and never waits: if a reader holds it,
  cleanup fails at once with a clear message instead of deleting a file from
  under a restore, or hanging.

``backup`` takes no folder lock: it writes only its own temporary file, which
it holds locked itself (see :mod:`velocity_pg.backup`), and cleanup never
touches a temporary file whose writer is alive.

flock locks vanish with the process that held them, so a killed run never
leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from velocity_pg.errors import LockBusy, OperationFailed

LOCK_NAME = ".velocity.lock"


def _open_lock_file(folder: Path) -> int | None:
    path = folder / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except PermissionError:
        pass
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise OperationFailed(f"cannot open the lock file {path}: {exc.strerror}") from exc
    # A read-only folder: an existing lock file can still be locked; if there is
    # none, nobody can delete anything here either.
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None


@contextmanager
def shared(folder: Path, purpose: str) -> Iterator[None]:
    """Hold the folder lock shared (several readers at once), without waiting."""
    with _locked(folder, fcntl.LOCK_SH, purpose):
        yield


@contextmanager
def exclusive(folder: Path, purpose: str) -> Iterator[None]:
    """Hold the folder lock exclusively, without waiting."""
    with _locked(folder, fcntl.LOCK_EX, purpose):
        yield


@contextmanager
def _locked(folder: Path, mode: int, purpose: str) -> Iterator[None]:
    fd = _open_lock_file(folder)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (
                "a cleanup is changing"
                if mode == fcntl.LOCK_SH
                else "a restore, verify or another cleanup is using"
            )
            raise LockBusy(
                f"cannot {purpose}: {holder} the backups in {folder} right now "
                f"(lock {folder / LOCK_NAME}); try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


def temp_file_is_abandoned(path: Path) -> bool:
    """True if no live backup holds this temporary file (its writer died).

    A running backup holds an exclusive flock on its temporary file; if we
    can take one, nobody is writing it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


#: Held by a ``velocity-pg schedule`` run from start to end, so two schedulers
#: (a service and a ``schedule --once`` from cron, two replicas) never run at once.
RUN_LOCK_NAME = ".velocity-schedule.lock"


@contextmanager
def scheduled_run(folder: Path) -> Iterator[bool]:
    """Hold the scheduled-run lock without waiting; yields False if another run holds it.

    A folder where the lock file cannot be made (missing, read-only) yields
    True: the run then fails at its backup step with the real reason.
    """
    try:
        fd = os.open(
            folder / RUN_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
