"""``velocity-pg entrypoint -- COMMAND...``: the db image's entrypoint, without a shell script.

velocity-pg runs as ``postgres`` and writes in the backup folder. A
``backup-data`` volume made by the Django Velocity template's stock image
belongs to root (that image has no ``/backups`` folder, so the volume's root is
root's), and so do the old scripts' dumps in it. Started as root, this gives
the folder itself to ``postgres`` (mode 0700, what the image makes) when it
belongs to someone else; the files in it are left as they are (postgres can
read them, and may delete them since the folder is its own). Then it becomes
COMMAND (``docker-entrypoint.sh postgres``, the official image's entrypoint)
with :func:`os.execvp`: the same process (PID 1 stays PID 1), the same
arguments, and the signal dispositions a fresh process has, so ``docker
stop``'s signal reaches the server as it would without velocity-pg.

Nothing here reads the backup settings beyond ``BACKUP_DIR`` (default
``/backups``): a typo in another setting must never keep the server from
starting.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from velocity_pg.errors import ConfigError, OperationFailed

OWNER = "postgres"
MODE = 0o700
#: Signals Python itself ignores or handles; an exec keeps an ignored one ignored.
_RESET = ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP")


def needs_handover(info: os.stat_result | None, owner_uid: int, euid: int) -> bool:
    """Whether the folder must change hands (pure): only as root, only a real folder
    (not a symlink, which could point anywhere), only when the owner is another."""
    return (
        euid == 0 and info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid != owner_uid
    )


def hand_over(folder: Path, *, euid: int | None = None) -> str | None:
    """Give ``folder`` to postgres when :func:`needs_handover`; the message to print, or None."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return None  # nothing to do and nothing we could do
    try:
        user = pwd.getpwnam(OWNER)
    except KeyError:
        raise OperationFailed(
            f"there is no user {OWNER!r} here, to give {folder} to; "
            "use velocity-pg entrypoint only in the postgres image"
        ) from None
    try:
        info: os.stat_result | None = folder.lstat()
    except FileNotFoundError:
        info = None
    if not needs_handover(info, user.pw_uid, euid):
        return None
    try:
        os.chown(folder, user.pw_uid, user.pw_gid, follow_symlinks=False)
        folder.chmod(MODE)
    except OSError as exc:
        raise OperationFailed(
            f"cannot give {folder} to {OWNER}: {exc.strerror}; the server was not started"
        ) from exc
    return (
        f"velocity-pg: {folder} now belongs to {OWNER} (mode 0700), so velocity-pg can write there"
    )


def run(command: Sequence[str], folder: Path | None = None) -> None:
    """Hand the backup folder over (as root), then become ``command``; returns only on error."""
    if not command:
        raise ConfigError(
            "entrypoint needs the command to run after it, e.g. "
            "`velocity-pg entrypoint -- docker-entrypoint.sh postgres`"
        )
    if "/" not in command[0] and shutil.which(command[0]) is None:
        raise OperationFailed(f"cannot run {command[0]}: not found on PATH; nothing was started")
    folder = Path(os.environ.get("BACKUP_DIR") or "/backups") if folder is None else folder
    message = hand_over(folder)
    if message is not None:
        print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    for name in _RESET:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        # An argument list, no shell: the command is the image's own entrypoint.
        os.execvp(command[0], list(command))  # noqa: S606
    except OSError as exc:
        raise OperationFailed(f"cannot run {command[0]}: {exc.strerror}") from exc
