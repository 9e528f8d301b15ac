"""Coordination between velocity-pg processes that share a BACKUP_DIR.

One lock file, ``BACKUP_DIR/.velocity.lock``, taken with ``flock``:

* readers (``restore``, ``verify``) hold it **shared** while they read a backup;
* ``cleanup`` needs it **exclusive** and never waits: if a reader holds it,
  cleanup fails at once with a clear message instead of deleting a file from
  under a restore, or hanging.

``backup`` takes no folder lock: it writes only its own temporary file, which
it holds locked itself (see :mod:`velocity_pg.verbs.backup`), and cleanup never
touches a temporary file whose writer is alive.

flock locks vanish with the process that held them, so a killed run never
leaves a stale lock behind.

Mixed users (``docker compose exec db`` runs as root, the justfile as
``postgres``): a lock that cannot be taken stops the run with one line naming
the lock file's owner and the fix; it never goes on unlocked. Root, in a
folder that belongs to another user, creates (and repairs) the lock file on
that user's behalf.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from velocity_pg.errors import LockBusy, OperationFailed
from velocity_pg.store import catalog

LOCK_NAME = ".velocity.lock"


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Opened:
    """What opening the lock file gave: its fd, or why there is none."""

    fd: int | None
    #: No lock file and the folder is not writable for us: lock the folder itself.
    folder_fallback: bool = False


def _open_lock_file(folder: Path, purpose: str, name: str = LOCK_NAME) -> _Opened:
    """Open (or create) ``BACKUP_DIR/.velocity.lock`` (or ``name``); a lock that cannot be
    had raises.

    flock needs no write access, so the file is opened read-only: anyone who
    may read it can lock it. A new one is created mode 0600 and, by root in a
    folder that belongs to another user, given to that user (as is an old one
    root made), so root's runs never lock the owner out.
    """
    path = folder / name
    for _attempt in range(5):
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            try:
                fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, catalog.FILE_MODE)
            except FileExistsError:
                continue  # another run created it just now: open that one
            except OSError as exc:
                if exc.errno == errno.EROFS:
                    # A read-only file system: nobody can delete anything here.
                    return _Opened(None)
                if exc.errno in (errno.EACCES, errno.EPERM):
                    return _Opened(None, folder_fallback=True)
                raise OperationFailed(
                    f"cannot {purpose}: cannot create the lock file {path}: {exc.strerror}"
                ) from exc
            try:
                catalog.give_to_folder_owner(fd, folder, name)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            return _Opened(fd)
        except PermissionError:
            raise OperationFailed(_not_ours_message(path, purpose, _what(name))) from None
        except OSError as exc:
            what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise OperationFailed(
                f"cannot {purpose}: the lock file {path} cannot be opened ({what}); "
                "remove it (it holds no data) when no velocity-pg runs"
            ) from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OperationFailed(
                f"cannot {purpose}: the lock file {path} is not a regular file; "
                "remove it (it holds no data) when no velocity-pg runs"
            )
        _repair_owner(fd, folder, info, name)
        return _Opened(fd)
    raise OperationFailed(f"cannot {purpose}: the lock file {path} keeps vanishing")


def _what(name: str) -> str:
    return "run lock" if name == RUN_LOCK_NAME else "folder lock"


def _repair_owner(fd: int, folder: Path, info: os.stat_result, name: str) -> None:
    """As root: give a root-owned lock file in another user's folder back to that user."""
    if os.geteuid() != 0 or info.st_uid != 0:
        return
    # If that fails root can still lock it; the owner's runs will say what to do.
    with contextlib.suppress(OperationFailed):
        catalog.give_to_folder_owner(fd, folder, name)


def _not_ours_message(path: Path, purpose: str, what: str) -> str:
    me = catalog.user_name(os.geteuid())
    repairs = "`velocity-pg schedule --once`" if what == "run lock" else "any velocity-pg command"
    try:
        info = path.lstat()
        owner = catalog.user_name(info.st_uid)
        mode = f"mode {stat.S_IMODE(info.st_mode):04o}"
        folder_owner = catalog.user_name(path.parent.stat().st_uid)
    except OSError:
        owner, mode, folder_owner = "another user", "unknown mode", me
    return (
        f"cannot {purpose}: the {what} {path} belongs to {owner} ({mode}), so user {me} "
        f"cannot take it and nothing was done; give it to the folder's owner as root "
        f"(`chown {folder_owner} {path}`, or run {repairs} as root once), "
        f"or run velocity-pg as {owner}"
    )


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
    """Take the lock file, and the folder itself where needed, or raise.

    A reader that may not create the lock file (a folder it cannot write)
    locks the folder instead; a cleanup always locks both, so it also sees
    those readers. Only on a read-only file system, where nothing can be
    deleted, is there nothing to lock.
    """
    opened = _open_lock_file(folder, purpose)
    fds: list[int] = [] if opened.fd is None else [opened.fd]
    try:
        if opened.folder_fallback or (mode == fcntl.LOCK_EX and opened.fd is not None):
            fds.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for fd in fds:
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
            except OSError as exc:
                raise OperationFailed(
                    f"cannot {purpose}: cannot lock {folder / LOCK_NAME}: {exc.strerror}"
                ) from exc
        yield
    finally:
        for fd in fds:
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

    Its file is made, and repaired, as the folder lock's is: by root on the folder
    owner's behalf, so a ``schedule --once`` as root never locks the service out. A
    lock that cannot be had (a missing or read-only folder, a lock file of another
    user's) raises :class:`OperationFailed` with the fix: a run never goes on unlocked.
    """
    purpose = "start the scheduled run"
    catalog.require_dir(folder, writable=True)
    opened = _open_lock_file(folder, purpose, RUN_LOCK_NAME)
    if opened.fd is None:
        why = (
            f"user {catalog.user_name(os.geteuid())} may not create files there"
            if opened.folder_fallback
            else "the file system is read-only"
        )
        raise OperationFailed(
            f"cannot {purpose}: its lock {folder / RUN_LOCK_NAME} cannot be created ({why}); "
            "nothing was done"
        )
    fd = opened.fd
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            raise OperationFailed(
                f"cannot {purpose}: cannot lock {folder / RUN_LOCK_NAME}: {exc.strerror}"
            ) from exc
        yield True
    finally:
        os.close(fd)
