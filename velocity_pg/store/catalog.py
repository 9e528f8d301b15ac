"""Backup files: their names, the folder that holds them, and safe placement.

A backup is a file named ``<database>_YYYY-MM-DD_HHMMSS.dump`` (UTC) in
BACKUP_DIR, as the Django Velocity template's ``backup.sh`` named them
(``velocity_...`` for its default database ``velocity``). Anything else in the
folder (temporary files of a running backup, manifests, notes, sub-folders) is
not a backup and is never listed, pruned or restored.

**The database part of a name.** A database name is written as it is, except
for the characters that cannot (or should not) appear in a file name: ``/``,
``%`` itself, a leading ``.`` (a hidden file), and every character that is not
printable (NUL, newline, other control characters). Each of those is written as
``%XX`` for each byte of its UTF-8 encoding, upper-case hex: the database
``a/b`` gives ``a%2Fb_2026-01-01_000000.dump``, ``50%`` gives ``50%25_...``.
The mapping is reversible and one-to-one: a name is recognized only in exactly
the form :func:`format_name` writes (no needless or lower-case ``%xx``), so no
other file can be taken for a backup, and every backup has one database. The
timestamp is matched from the end, so ``my_app_2026-01-01_000000.dump`` is a
backup of ``my_app``. A database whose file name would pass the file-name limit
of 255 bytes (impossible with PostgreSQL's 63-byte names) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from velocity_pg.errors import ConfigError, OperationFailed

#: The template's default database; backups of it are ``velocity_...``.
DEFAULT_DATABASE = "velocity"
SUFFIX = ".dump"
TIME_FORMAT = "_%Y-%m-%d_%H%M%S.dump"
#: The shape shown in messages.
NAME_PATTERN = "<database>_YYYY-MM-DD_HHMMSS.dump"
NAME_RE = re.compile(
    r"\A(?P<database>.+)_(\d{4})-(\d{2})-(\d{2})_(\d{2})(\d{2})(\d{2})\.dump\Z",
    re.ASCII | re.DOTALL,
)
#: A file name may be at most this many bytes (ext4, xfs, btrfs, tmpfs, overlayfs);
#: the manifest's name (``NAME.json``) must fit too.
NAME_MAX = 255
_MANIFEST_SUFFIX = ".json"
_ESCAPE_RE = re.compile(r"%([0-9A-F]{2})")
#: Temporary files start with a dot and end in ``.partial``: never a backup's name.
TEMP_PREFIX = ".velocity-tmp-"
TEMP_SUFFIX = ".partial"
FILE_MODE = 0o600


@dataclass(frozen=True)
class Backup:
    """A complete backup file in BACKUP_DIR."""

    name: str
    path: Path
    created: datetime  # from the name, UTC
    mtime: datetime  # file modification time, UTC
    size: int
    #: The database it is a backup of, from its name (filled in from ``name`` when omitted).
    database: str = ""

    def __post_init__(self) -> None:
        if not self.database:
            parsed = parse_backup_name(self.name)
            if parsed is not None:
                object.__setattr__(self, "database", parsed[0])


def _needs_escape(char: str, first: bool) -> bool:
    return char in "%/" or not char.isprintable() or (first and char == ".")


def encode_database(database: str) -> str:
    """The database's part of a file name (see the module docstring); pure."""
    if not database:
        raise ConfigError("the database name is empty; set PGDATABASE (or POSTGRES_DB)")
    parts = []
    for index, char in enumerate(database):
        if _needs_escape(char, index == 0):
            try:
                raw = char.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"the database name {database!r} is not valid UTF-8 text; "
                    "velocity-pg cannot name a backup after it"
                ) from None
            parts.append("".join(f"%{byte:02X}" for byte in raw))
        else:
            parts.append(char)
    return "".join(parts)


def decode_database(part: str) -> str | None:
    """The database a name's part stands for; None unless it is exactly what
    :func:`encode_database` writes for that database (one name, one database)."""
    out: list[str] = []
    pending = bytearray()
    index = 0
    try:
        while index < len(part):
            match = _ESCAPE_RE.match(part, index)
            if match is not None:
                pending.append(int(match.group(1), 16))
                index = match.end()
                continue
            if part[index] == "%":  # a lone or lower-case escape: not ours
                return None
            if pending:
                out.append(pending.decode("utf-8"))
                pending.clear()
            out.append(part[index])
            index += 1
        if pending:
            out.append(pending.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    database = "".join(out)
    if not database or encode_database_or_none(database) != part:
        return None
    return database


def encode_database_or_none(database: str) -> str | None:
    try:
        return encode_database(database)
    except ConfigError:
        return None


def format_name(moment: datetime, database: str = DEFAULT_DATABASE) -> str:
    """The backup file name for a database at a moment (converted to UTC).

    Refuses (ConfigError) a database whose name cannot make a file name.
    """
    if moment.tzinfo is None:
        raise ValueError("format_name needs an aware datetime")
    name = encode_database(database) + moment.astimezone(UTC).strftime(TIME_FORMAT)
    if len((name + _MANIFEST_SUFFIX).encode("utf-8")) > NAME_MAX:
        raise ConfigError(
            f"the database name {database!r} is too long for a backup file name "
            f"({NAME_MAX} bytes at most, with the date and .dump.json); "
            "back it up under a shorter name"
        )
    return name


def parse_backup_name(name: str) -> tuple[str, datetime] | None:
    """(database, UTC creation time) from a backup name, or None if it is not one."""
    match = NAME_RE.match(name)
    if match is None:
        return None
    # Plain ints, not strptime: this runs once per file and listing 10,000 backups
    # with strptime took a noticeable part of a second.
    try:
        year, month, day, hour, minute, second = map(int, match.groups()[1:])
        created = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # e.g. month 13: matches the shape, is no date
        return None
    part = match.group("database")
    database = decode_database(part) if "%" in part or not _plain(part) else part
    if database is None:
        return None
    return database, created


def _plain(part: str) -> bool:
    """True when the part needs no escape at all (the common, fast case)."""
    return part.isprintable() and not part.startswith(".") and "/" not in part


def parse_name(name: str) -> datetime | None:
    """The UTC creation time encoded in a backup name, or None if it is not one."""
    parsed = parse_backup_name(name)
    return None if parsed is None else parsed[1]


def database_of(name: str) -> str | None:
    """The database a backup name is of, or None if it is not a backup name."""
    parsed = parse_backup_name(name)
    return None if parsed is None else parsed[0]


def is_backup_name(name: str) -> bool:
    """True for names in the backup pattern (and nothing else)."""
    return parse_backup_name(name) is not None


def candidate_names(
    start: datetime, database: str = DEFAULT_DATABASE, tries: int = 3600
) -> Iterator[str]:
    """Names to try for a backup of ``database`` started at ``start``: that second, then the
    next ones.

    Two backups started in the same second get consecutive seconds, so both
    names stay in the documented pattern and neither overwrites the other.
    """
    base = start.astimezone(UTC).replace(microsecond=0)
    for offset in range(tries):
        yield format_name(base + timedelta(seconds=offset), database)


def require_dir(folder: Path, *, writable: bool = False) -> None:
    """Fail clearly when BACKUP_DIR is missing, not a folder, or not usable."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        raise OperationFailed(
            f"backup folder {folder} does not exist; create it or set BACKUP_DIR"
        ) from None
    except PermissionError:
        raise OperationFailed(
            f"backup folder {folder} cannot be accessed: permission denied"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"BACKUP_DIR {folder} is not a directory; point BACKUP_DIR at a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise OperationFailed(f"backup folder {folder} cannot be read: permission denied")
    if writable and not os.access(folder, os.W_OK | os.X_OK):
        raise OperationFailed(
            f"backup folder {folder} is not writable by this user; fix its permissions"
        )


def scan_files(folder: Path, wanted: Callable[[str], bool]) -> list[tuple[Path, os.stat_result]]:
    """Regular files directly in ``folder`` (no links, no folders) whose names pass ``wanted``."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise OperationFailed(f"cannot list backup folder {folder}: {exc.strerror}") from exc
    found = []
    for entry in entries:
        if not wanted(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while we looked
            continue
        found.append((folder / entry.name, info))
    return found


def list_backups(folder: Path, database: str | None = None) -> list[Backup]:
    """The complete backups in ``folder`` (of every database, or of ``database`` only),
    newest first by the time in their name (ties: by name, the later first)."""
    require_dir(folder)
    backups: list[Backup] = []
    for path, info in scan_files(folder, is_backup_name):
        parsed = parse_backup_name(path.name)
        assert parsed is not None  # is_backup_name said so
        if database is not None and parsed[0] != database:
            continue
        backups.append(
            Backup(
                name=path.name,
                path=path,
                created=parsed[1],
                mtime=datetime.fromtimestamp(info.st_mtime, UTC),
                size=info.st_size,
                database=parsed[0],
            )
        )
    backups.sort(key=lambda b: (b.created, b.name), reverse=True)
    return backups


def newest_of(backups: list[Backup], database: str | None) -> Backup | None:
    """The newest backup (by the time in its name) of ``database``, or of any database when
    ``database`` is None; ``backups`` as :func:`list_backups` returns them."""
    for backup in backups:
        if database is None or backup.database == database:
            return backup
    return None


def resolve_backup(folder: Path, name: str, *, readable: bool = True) -> Path:
    """The path of an existing backup given its name (or a path to a file in ``folder``).

    Refuses anything that resolves outside ``folder`` (``..``, absolute paths
    elsewhere, symlinks leading out), anything not named like a backup, and
    anything that is not a regular file; with ``readable``, also a file this
    user cannot open (:class:`UnreadableFile`, naming the owner and the fix).
    """
    require_dir(folder)
    if not name or "\x00" in name:
        raise ConfigError("no backup name given; run `velocity-pg list` to see the backups")
    root = folder.resolve()
    given = Path(name)
    # A bare name is a file in the folder; a path (`backups/velocity_...dump`, as a
    # shell completes it) means what it means to the shell: from the current folder.
    candidate = given if "/" in name else (folder / given)
    # A bare name must not climb; a path must lead inside the folder.
    resolved = candidate.resolve()
    if resolved.parent != root:
        raise ConfigError(
            f"{name!r} is not a file in the backup folder {folder}; "
            "give a backup name as `velocity-pg list` shows it"
        )
    if not is_backup_name(resolved.name) or not is_backup_name(candidate.name):
        raise ConfigError(
            f"{name!r} is not a backup name ({NAME_PATTERN}); "
            "run `velocity-pg list` to see the backups"
        )
    try:
        info = resolved.lstat()
    except FileNotFoundError:
        raise OperationFailed(
            f"backup {resolved.name} does not exist in {folder}; run `velocity-pg list`"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise OperationFailed(f"{resolved.name} in {folder} is not a regular file")
    if readable:
        check_readable(resolved)
    return resolved


class UnreadableFile(OperationFailed):
    """A file velocity-pg must read cannot be opened, or is not a regular file."""


def user_name(uid: int) -> str:
    """A user's login name, else ``uid N``."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def open_regular(path: Path, what: str = "") -> int:
    """Open ``path`` for reading, but only if it is a regular file; returns the fd.

    ``O_NONBLOCK`` keeps a FIFO (or a device) from blocking the open, ``O_NOFOLLOW``
    refuses a symlink, and the fstat after the open judges the very file opened,
    so nothing that is not a regular file is ever read. Errors are
    :class:`UnreadableFile` with a line that names the file and the fix.
    """
    label = what or path.name
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise  # the caller knows whether a missing file is an error
    except PermissionError:
        raise UnreadableFile(_permission_message(path, label)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableFile(f"{label} is a symbolic link, not a regular file") from None
        raise UnreadableFile(f"cannot read {label}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(
                f"{label} is not a regular file (a {_kind(info.st_mode)}); "
                f"move it out of {path.parent}"
            )
        # Back to blocking reads (a regular file never blocks anyway).
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _permission_message(path: Path, label: str) -> str:
    me = user_name(os.geteuid())
    try:
        info = path.lstat()
    except OSError:
        return (
            f"cannot read {label}: permission denied to user {me}; "
            f"make {path.parent} readable by {me} or run velocity-pg as its owner"
        )
    owner = user_name(info.st_uid)
    mode = stat.S_IMODE(info.st_mode)
    fix = (
        f"`chmod u+r {path}`"
        if info.st_uid == os.geteuid()
        else f"run velocity-pg as {owner}, or give it to {me} with `chown {me} {path}`"
    )
    return (
        f"cannot read {label}: permission denied (owned by {owner}, mode {mode:04o}; "
        f"this run is user {me}); {fix}"
    )


def check_readable(path: Path, what: str = "") -> None:
    """Fail with :class:`UnreadableFile` unless ``path`` is a regular file we can read."""
    os.close(open_regular(path, what))


def temp_path_for(folder: Path) -> tuple[int, Path]:
    """Create a new private temporary file in ``folder``; returns (fd, path).

    Its name starts with a dot and ends in ``.partial``, so it can never be
    taken for a backup, and it embeds our pid so a leftover can be traced.
    """
    import tempfile

    fd, name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX, dir=folder
    )
    try:
        os.fchmod(fd, FILE_MODE)
        give_to_folder_owner(fd, folder, Path(name).name)
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


def give_to_folder_owner(fd: int, folder: Path, label: str) -> None:
    """Run as root in a folder that belongs to another user: make a new file theirs.

    ``docker compose exec db velocity-pg ...`` runs as root by default, while
    the folder (and every other run) belongs to ``postgres``: a root-owned 0600
    file there could not be read, locked or rewritten by the owner. So root
    works on the folder owner's behalf: its new files get the folder's owner
    and group. Where that is impossible (a root-squashing or id-mapped mount),
    it refuses rather than leave a file the owner cannot use.
    """
    if os.geteuid() != 0:
        return
    info = folder.stat()
    if info.st_uid == 0:
        return
    try:
        current = os.fstat(fd)
        if (current.st_uid, current.st_gid) != (info.st_uid, info.st_gid):
            os.fchown(fd, info.st_uid, info.st_gid)
    except OSError as exc:
        owner = user_name(info.st_uid)
        raise OperationFailed(
            f"running as root in {folder}, which belongs to {owner}: cannot give {label} "
            f"to {owner} ({exc.strerror}); run velocity-pg as {owner} "
            f"(e.g. `docker compose exec -u {owner} db velocity-pg ...`)"
        ) from exc


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_whole(path: Path, data: bytes, prepare: Callable[[int], None] | None = None) -> None:
    """``data`` as ``path``, whole or not at all: a temporary file beside it (mode 0600),
    every byte written, fsynced, ``prepare(fd)`` (e.g. its owner), renamed, the folder
    fsynced (best effort). Raises OSError; the temporary file never outlives a failure."""
    folder = path.parent if str(path.parent) else Path()
    hidden = "" if path.name.startswith(".") else "."
    temp = folder / f"{hidden}{path.name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if prepare is not None:
                prepare(fd)
        finally:
            os.close(fd)
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    with contextlib.suppress(OSError):
        fsync_path(folder)


def publish(
    temp: Path,
    folder: Path,
    names: Iterator[str],
    sidecar: Path | None = None,
    on_named: Callable[[Path], None] | None = None,
    extras: tuple[tuple[Path, str], ...] = (),
) -> Path:
    """Give a complete, fsynced temporary file the first free backup name.

    Uses link-then-unlink so an existing backup is never overwritten, even by a
    concurrent run that picked the same name. With a ``sidecar`` (the
    manifest), it is linked to ``NAME.json`` first, so a named dump always has
    its manifest; a name whose dump or manifest is taken is skipped. The folder
    is fsynced afterwards so the new names survive a crash.

    ``on_named`` is called with the new name's path as soon as the dump has it:
    whatever fails or stops after that (the folder's fsync) happened to a backup
    that exists, and the caller must say so.
    """
    for name in names:
        final = folder / name
        side_final = folder / (name + ".json")
        if final.exists() or not _link_extras(extras, folder, name):
            continue
        extra_finals = [folder / (name + suffix) for _, suffix in extras]
        if sidecar is not None and not _link_no_replace(sidecar, side_final):
            for path in extra_finals:
                path.unlink(missing_ok=True)
            continue
        if not _link_no_replace(temp, final):
            if sidecar is not None:
                side_final.unlink(missing_ok=True)
            for path in extra_finals:
                path.unlink(missing_ok=True)
            continue
        if on_named is not None:
            on_named(final)
        temp.unlink(missing_ok=True)
        if sidecar is not None:
            sidecar.unlink(missing_ok=True)
        for source, _ in extras:
            source.unlink(missing_ok=True)
        fsync_path(folder)
        return final
    raise OperationFailed(f"no free backup name left in {folder}")


def _link_extras(extras: tuple[tuple[Path, str], ...], folder: Path, name: str) -> bool:
    """Link the files that go with a backup (its roles file) to ``NAME<suffix>``, before
    its manifest; all of them or none (True when all are linked)."""
    done: list[Path] = []
    for source, suffix in extras:
        target = folder / (name + suffix)
        if not _link_no_replace(source, target):
            for path in done:
                path.unlink(missing_ok=True)
            return False
        done.append(target)
    return True


def unsynced(final: Path, what: str) -> str:
    """The truth about a backup that got its name (with its manifest) when ``what``
    ("the folder could not be synced (EIO)", "terminated (SIGTERM)") happened before
    the folder's fsync finished."""
    return (
        f"{final.name} was written into {final.parent} with its manifest, but {what} before "
        "the folder was synced to disk: until it is, a crash of the machine could lose it; "
        f"`velocity-pg verify {final.name}` checks it and syncs the folder"
    )


def _link_no_replace(source: Path, target: Path) -> bool:
    """Give ``source`` the extra name ``target`` unless it exists; True on success."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # Filesystems without hard links: copy-free rename after checking the name is free.
        if target.exists():
            return False
        source.rename(target)
    return True


def human_size(size: float) -> str:
    """Bytes in human units (1024-based): ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(delta: timedelta) -> str:
    """A duration as a short human string: ``3d 4h``, ``5h 12m``, ``42s``."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in the future"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
