"""The backup folder's identity: which off-site copies are this folder's own.

Two hosts may share one bucket and prefix (and a database name). Off-site
cleanup and ``status --remote-max-age`` must count only the copies this folder
pushed, never delete another host's. So each backup folder gets an identity,
made once by its first ``push`` and kept in ``BACKUP_DIR/.velocity-folder-id``
(32 hex digits, mode 0600, owned like the folder's other velocity-pg files; it
is never a backup). Every off-site manifest records the identity of the
folder that pushed it (``origin``).

A copy pushed before identities existed has no ``origin``: it counts as this
folder's only while a local manifest with the same name and dump SHA-256 is in
the folder (:func:`velocity_pg.store.offsite.owner_of`); otherwise its owner is unknown
and nothing deletes it automatically.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

from velocity_pg.errors import OperationFailed
from velocity_pg.store import catalog, manifest

NAME = ".velocity-folder-id"
PATTERN = re.compile(r"\A[0-9a-f]{32}\Z")
#: How many characters of an identity ``list --remote`` and the warnings show.
SHORT = 8
_MAX_BYTES = 256


def short(identity: str) -> str:
    return identity[:SHORT]


def read(folder: Path) -> str | None:
    """This folder's identity, None when it has none yet; OperationFailed when damaged."""
    path = folder / NAME
    try:
        fd = catalog.open_regular(path, f"the folder identity {NAME}")
    except FileNotFoundError:
        return None
    except catalog.UnreadableFile as exc:
        raise OperationFailed(exc.message) from exc
    try:
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as exc:
        raise OperationFailed(f"cannot read the folder identity {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    value = data.decode("ascii", "replace").strip()
    if len(data) > _MAX_BYTES or not PATTERN.match(value):
        raise OperationFailed(
            f"the folder identity {path} is damaged (not 32 hex digits); restore it from a "
            "copy of the folder, or, if this folder never pushed, remove it (a new one is made)"
        )
    return value


def ensure(folder: Path) -> str:
    """This folder's identity, made now (atomically, never replacing one) if it has none."""
    existing = read(folder)
    if existing is not None:
        return existing
    path = folder / NAME
    try:
        fd, temp = catalog.temp_path_for(folder)  # mode 0600, the folder owner's
    except OSError as exc:
        raise OperationFailed(
            f"cannot create the folder identity {path}: {exc.strerror}; nothing was pushed"
        ) from exc
    try:
        try:
            manifest.write_all(fd, (uuid.uuid4().hex + "\n").encode())
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another run made one just now: it wins
            os.link(temp, path)
        catalog.fsync_path(folder)
    except OSError as exc:
        raise OperationFailed(
            f"cannot create the folder identity {path}: {exc.strerror}; nothing was pushed"
        ) from exc
    finally:
        temp.unlink(missing_ok=True)
    made = read(folder)
    assert made is not None
    return made
