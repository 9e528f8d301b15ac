"""``velocity-pg verify``: is a backup intact, and would it restore?

Checks, in order, for each backup:

1. **checksum**: the dump's size and SHA-256 match its manifest (a backup
   without a manifest, e.g. made by the old bash scripts, skips this check and
   says so);
2. **archive**: ``pg_restore --list`` reads the table of contents, and the
   number of entries matches the manifest;
3. with ``--restore``: the archive is restored into a throwaway database on
   the same server (never the live one), every table of the archive must be
   there, and the throwaway database is dropped whatever happens.

The result is recorded in the manifest (``last_verification``) so ``list``
and ``status`` can show when a backup was last proven good. Recording is not
a check: when the manifest cannot be rewritten (a read-only or full folder, a
file-size limit), the backup's result is still reported, the old manifest
stays as it was, a warning names the backup and the reason, and the exit
status depends on the checks alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from velocity_pg.errors import CommandFailed, ManifestUnreadable, VelocityError
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import pgtools
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, lock, manifest


@dataclass
class Outcome:
    """What verifying one backup found."""

    name: str
    ok: bool = True
    checks: list[str] = field(default_factory=list)
    problem: str = ""
    #: Why the result could not be recorded in the manifest ("" when it was, or none exists).
    warning: str = ""

    def fail(self, problem: str) -> Outcome:
        self.ok = False
        self.problem = problem
        return self

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "checks": self.checks,
            "problem": self.problem,
            "warning": self.warning or None,
        }

    def warning_line(self) -> str:
        return f"velocity-pg: warning: {self.name}: {self.warning}" if self.warning else ""

    def line(self) -> str:
        if self.ok:
            return f"ok      {self.name} ({', '.join(self.checks)})"
        return f"FAILED  {self.name}: {self.problem}"


def select(
    folder: Path, names: list[str], everything: bool, database: str | None = None
) -> list[Path]:
    """The backups to verify: the named ones, all (of every database), or else the newest
    of ``database`` (of any database when it is None)."""
    if names:
        # Unreadable files are reported one by one (verify_one), not as an error for all.
        return [catalog.resolve_backup(folder, name, readable=False) for name in names]
    backups = catalog.list_backups(folder)
    if everything:
        return [b.path for b in backups]
    newest = catalog.newest_of(backups, database)
    return [newest.path] if newest is not None else []


def check_checksum(dump: Path, record: manifest.Manifest | None, outcome: Outcome) -> bool:
    if record is None:
        outcome.checks.append("no manifest: checksum not checked")
        return True
    digest, size = manifest.sha256_file(dump)
    if size != record.size_bytes:
        outcome.fail(
            f"size is {size} bytes, the manifest says {record.size_bytes}: the file changed"
        )
        return False
    if digest != record.sha256:
        outcome.fail("SHA-256 does not match the manifest: the file is damaged")
        return False
    outcome.checks.append("checksum")
    return True


def check_archive(
    dump: Path, record: manifest.Manifest | None, pg_restore: Path, outcome: Outcome
) -> str | None:
    """The archive's listing if ``pg_restore --list`` reads it (and it matches the manifest)."""
    try:
        listing = pgtools.capture(pgtools.pg_restore_list_cmd(pg_restore, dump))
    except CommandFailed as exc:
        outcome.fail(f"not a readable archive ({exc.message})")
        return None
    entries = pgtools.count_toc_entries(listing)
    if record is not None and entries != record.toc_entries:
        outcome.fail(f"{entries} archive entries, the manifest says {record.toc_entries}")
        return None
    if record is None:
        # No checksum to compare with, and --list reads only the table of contents at
        # the start: read and decompress every data block, or a cut dump passes.
        try:
            pgtools.count_output(pgtools.pg_restore_data_cmd(pg_restore, dump))
        except CommandFailed as exc:
            outcome.fail(f"truncated or damaged: its data cannot be read ({exc.message})")
            return None
        outcome.checks.append(f"archive ({entries} entries, every data block read)")
        return listing
    outcome.checks.append(f"archive ({entries} entries)")
    return listing


RestoreCheck = Callable[[Path, str, Outcome], None]


def check_compression(
    record: manifest.Manifest | None, reader: pgtools.Program | None, outcome: Outcome
) -> bool:
    """Whether the local pg_restore can read the dump's compression (from its manifest)."""
    if record is None or reader is None:
        return True
    problem = compressions.restore_problem(record.compression_method, reader.major, reader.version)
    if problem is not None:
        outcome.fail(problem)
        return False
    return True


def verify_one(
    dump: Path,
    pg_restore: Path,
    restore_check: RestoreCheck | None,
    now: Callable[[], datetime],
    reader: pgtools.Program | None = None,
) -> Outcome:
    outcome = Outcome(name=dump.name)
    try:
        catalog.check_readable(dump)
        record = manifest.read(dump)
    except (ManifestUnreadable, catalog.UnreadableFile) as exc:
        return outcome.fail(exc.message)
    try:
        if check_checksum(dump, record, outcome) and check_compression(record, reader, outcome):
            listing = check_archive(dump, record, pg_restore, outcome)
            if listing is not None and restore_check is not None:
                restore_check(dump, listing, outcome)
    except catalog.UnreadableFile as exc:
        outcome.fail(exc.message)
    except OSError as exc:
        outcome.fail(f"cannot read it: {exc.strerror}")
    if record is not None:
        method = "restore" if restore_check is not None else "checksum"
        check = manifest.Verification(
            at=manifest.now_iso(now()),
            method=method,
            ok=outcome.ok,
            detail=outcome.problem or ", ".join(outcome.checks),
        )
        try:
            manifest.replace_manifest(dump, record.with_verification(check))
        except VelocityError as exc:
            outcome.warning = (
                f"the result was not recorded in its manifest ({exc.message}); "
                "the manifest is unchanged"
            )
    return outcome


def verify(
    settings: Settings,
    names: list[str],
    *,
    everything: bool = False,
    restore_check: RestoreCheck | None = None,
    pg_restore: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Verify the selected backups, reporting each as it is done."""
    folder = settings.backup_dir
    with lock.shared(folder, "verify"):
        dumps = select(folder, names, everything, settings.database)
        reader: pgtools.Program | None = None
        if pg_restore is None:
            reader = pgtools.find_program("pg_restore")
            pg_restore = reader.path
        outcomes = []
        for dump in dumps:
            outcome = verify_one(dump, pg_restore, restore_check, now, reader)
            if report is not None:
                report(outcome)
            outcomes.append(outcome)
    return outcomes


def restore_drill(settings: Settings) -> RestoreCheck:
    """The ``--restore`` check: restore into a throwaway database and look at it."""
    from velocity_pg.postgres import endpoint
    from velocity_pg.restore import drill

    resolved: list[endpoint.Endpoint] = []

    def check(dump: Path, listing: str, outcome: Outcome) -> None:
        if not resolved:  # once, when the first backup gets this far
            resolved.append(endpoint.resolve(settings.connection))
        problem, detail = drill.run_drill(resolved[0], dump, listing)
        if problem is not None:
            outcome.fail(problem)
        else:
            outcome.checks.append(detail)

    return check
