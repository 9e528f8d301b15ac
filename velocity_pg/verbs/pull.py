"""``velocity-pg pull NAME``: download an off-site backup into BACKUP_DIR, checked.

Pull follows only a manifest that describes the backup asked for, and streams the
object back (through ``age --decrypt -i FILE``) into a temporary file in
BACKUP_DIR, checks both SHA-256s (object and dump) and only then gives it its
name, with its manifest: from then on it is an ordinary local backup. A restore of
a backup that is only off-site pulls it first (:func:`needs_pull`), and its
``--check`` reads the off-site manifest only (:func:`check_remote`).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from velocity_pg.errors import Interrupted, OperationFailed
from velocity_pg.postgres import pgtools
from velocity_pg.settings import Settings
from velocity_pg.store import age, catalog, manifest, roles_offsite
from velocity_pg.store.offsite import (
    Meter,
    described_record,
    fetch,
    fetch_problem,
    prepare,
    temp_file,
)
from velocity_pg.store.remote import RemoteManifest


@dataclass(frozen=True)
class Pulled:
    """A backup pulled into the backup folder."""

    path: Path
    backup_dir: Path

    def lines(self) -> list[str]:
        return [f"Pulled {self.path.name} into {self.backup_dir} (checksums match its manifest)"]

    def to_json(self) -> dict[str, object]:
        return {"name": self.path.name, "path": str(self.path)}


def pull(settings: Settings, name: str, meter: Meter | None = None) -> Pulled:
    """``velocity-pg pull NAME``: download, decrypt, check, then name it; see the docstring."""
    meter = meter or Meter()
    folder = settings.backup_dir
    catalog.require_dir(folder, writable=True)
    ctx = prepare(settings, for_upload=False)
    record = described_record(ctx.store, name)
    identity = age.identity_for(ctx.offsite, name) if record.encrypted else None
    if (folder / name).exists():
        raise OperationFailed(f"{name} is already in {folder}; nothing was downloaded")
    side: Path | None = None
    roles_temp: Path | None = None
    named: list[Path] = []  # the backup's name, once it has one
    try:
        with temp_file(folder) as (fd, temp):
            with os.fdopen(os.dup(fd), "wb") as sink:
                found = fetch(ctx.store, record, sink, identity, meter)
                sink.flush()
                os.fsync(sink.fileno())
            problem = fetch_problem(record, found)
            if problem is not None:
                raise OperationFailed(f"{name}: {problem}; nothing was written")
            # The roles file, checked by the dump's manifest (none for older backups).
            try:
                roles_data = roles_offsite.fetch(
                    ctx.store, name, record.dump, record.encrypted, identity
                )
            except OperationFailed as exc:
                raise OperationFailed(f"{exc.message}; nothing was written") from exc
            extras: tuple[tuple[Path, str], ...] = ()
            if roles_data is not None:
                # A roles file of this name without its dump (the dump and manifest removed
                # by hand, a killed run) is a leftover: the checked copy takes its place.
                if not (folder / name).exists():
                    (folder / (name + roles_offsite.SUFFIX)).unlink(missing_ok=True)
                roles_fd, roles_temp = roles_offsite.write_temp(folder, roles_data)
                os.close(roles_fd)
                extras = ((roles_temp, roles_offsite.SUFFIX),)
            side_fd, side = manifest.write_temp(folder, record.dump)
            try:
                fcntl.flock(side_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                final = catalog.publish(
                    temp, folder, iter([name]), side, named.append, extras=extras
                )
            finally:
                os.close(side_fd)
    except OSError as exc:
        if named:  # it has its name: only the folder's fsync failed
            raise OperationFailed(
                catalog.unsynced(
                    named[0], f"the folder could not be synced ({exc.strerror or exc})"
                )
            ) from exc
        raise OperationFailed(
            f"cannot write {name} into {folder}: {exc.strerror}; nothing was written"
        ) from exc
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        word = pgtools.stop_word(exc)
        if named:
            stopped = catalog.unsynced(named[0], "the stop came")
            raise Interrupted(f"{word}: {stopped}") from None
        raise Interrupted(f"{word}; nothing was written") from None
    finally:
        if side is not None:
            side.unlink(missing_ok=True)
        if roles_temp is not None:
            roles_temp.unlink(missing_ok=True)
    return Pulled(final, folder)


@dataclass(frozen=True)
class RemoteCheck:
    """``restore NAME --check`` of a backup that is only off-site: its manifest, read
    without downloading the dump."""

    name: str
    where: str
    record: RemoteManifest

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "name": self.name,
            "where": self.where,
            "checked": "the off-site manifest and the object's size (nothing was downloaded)",
            "not_checked": [
                "the object's and the dump's SHA-256",
                "the archive",
                "the target database",
            ],
            "database": self.record.dump.database,
            "archive_entries": self.record.dump.toc_entries,
            "size_bytes": self.record.object_size,
            "encrypted": self.record.encrypted,
            # As the backup recorded it; the drift from the live database needs the pull.
            "migrations": None
            if self.record.dump.migrations is None
            else self.record.dump.migrations.to_json(),
        }

    def lines(self) -> list[str]:
        how = "encrypted" if self.record.encrypted else "not encrypted"
        state = self.record.dump.migrations
        recorded = (
            []
            if state is None
            else [
                f"Its migrations: {state.summary()} (the drift from the live database is "
                "shown once it is pulled)."
            ]
        )
        return [
            f"Check of the off-site copy only (nothing was downloaded): {self.name} is in "
            f"{self.where} ({catalog.human_size(self.record.object_size)}, {how}), a backup of "
            f"database {self.record.dump.database!r} with {self.record.dump.toc_entries} "
            "archive entries; its manifest describes it and its object has the size the "
            "manifest gives.",
            *recorded,
            "Not checked without downloading it: the checksums (`velocity-pg verify --remote "
            f"{self.name}`), the archive and the target database (`velocity-pg pull "
            f"{self.name}`, then `velocity-pg restore --check {self.name}`). Nothing was "
            "changed.",
        ]


def check_remote(settings: Settings, name: str) -> RemoteCheck:
    """Check an off-site-only backup for ``restore --check``, from its manifest only."""
    ctx = prepare(settings, for_upload=False)
    record = described_record(ctx.store, name)
    if record.encrypted:
        age.identity_for(ctx.offsite, name)  # the restore would need it: say so now
    found = ctx.store.head(record.object_key)
    if found is None or found.size != record.object_size:
        what = "is missing" if found is None else f"is {found.size} bytes, not {record.object_size}"
        raise OperationFailed(
            f"the off-site copy of {name} cannot be restored: its object {record.object_key} "
            f"{what} in {ctx.store.describe()}"
        )
    return RemoteCheck(name, ctx.store.describe(), record)


def needs_pull(settings: Settings, name: str) -> bool:
    """True when ``restore NAME`` must download the backup first (off-site only)."""
    return (
        settings.offsite is not None
        and catalog.is_backup_name(name)
        and "/" not in name
        and not (settings.backup_dir / name).exists()
    )
