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

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from velocity_pg.errors import (
    CommandFailed,
    ConfigError,
    Interrupted,
    ManifestUnreadable,
    OperationFailed,
    VelocityError,
)
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import pgtools
from velocity_pg.settings import Settings
from velocity_pg.store import age, anomaly, catalog, lock, manifest, remote, roles_offsite
from velocity_pg.store import roles as backup_roles
from velocity_pg.store.migrations import MigrationState
from velocity_pg.store.offsite import (
    Context,
    Fetched,
    Meter,
    fetch,
    fetch_problem,
    newest_remote,
    prepare,
    read_record,
    temp_file,
    utcnow,
)
from velocity_pg.store.remote import RemoteBackup, RemoteManifest, RemoteStore
from velocity_pg.verbs import Failure, Say
from velocity_pg.verbs.pin import AutoPin, pin_before_anomaly


@dataclass
class Outcome:
    """What verifying one backup found."""

    name: str
    ok: bool = True
    checks: list[str] = field(default_factory=list)
    problem: str = ""
    #: Why the result could not be recorded in the manifest ("" when it was, or none exists).
    warning: str = ""
    #: Set when the backup looks wrong next to the previous good one (store/anomaly.py).
    suspect: manifest.Suspect | None = None
    #: The restore drill's exact rows of each table restored (None without a drill).
    restored_rows: dict[str, int] | None = None
    #: Whether this verify marked it suspect (it was not before).
    marked: bool = False
    #: A backup this verify marked suspect: the automatic pin of the good one before it.
    autopin: AutoPin | None = None
    #: The Django migration state its manifest records (None: none recorded).
    migrations: MigrationState | None = None

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
            "suspect": anomaly.to_json(self.suspect),
            "autopin": None if self.autopin is None else self.autopin.to_json(),
            "migrations": None if self.migrations is None else self.migrations.to_json(),
        }

    def warning_line(self) -> str:
        return f"velocity-pg: warning: {self.name}: {self.warning}" if self.warning else ""

    def suspect_line(self) -> str:
        """A suspect backup's WARNING (its checks decide the exit status, not this)."""
        if self.suspect is None:
            return ""
        return (
            f"velocity-pg: WARNING: backup {self.name} looks wrong: "
            f"{anomaly.describe(self.suspect)}; check the database"
            + ("" if self.autopin is None else f"; {self.autopin.sentence()}")
            + f" (`velocity-pg accept {self.name}` if the change was intended)"
        )

    def line(self) -> str:
        if self.ok:
            shown = "" if self.migrations is None else f"; migrations: {self.migrations.summary()}"
            return f"ok      {self.name} ({', '.join(self.checks)}){shown}"
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
    if record.roles is not None:  # the roles file beside it (store/roles.py)
        problem = backup_roles.file_problem(backup_roles.path_for(dump), record.roles)
        if problem is not None:
            outcome.fail(f"the roles file {problem}")
            return False
        outcome.checks.append("roles file")
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
#: The contents check: a backup's suspect mark (existing or new) next to the previous good
#: one, and what to say of it.
ContentsCheck = Callable[[Path, manifest.Manifest], tuple[manifest.Suspect | None, str]]


def contents_check(folder: Path, rule: anomaly.Rule, now: Callable[[], datetime]) -> ContentsCheck:
    """Compare each backup's statistics with the previous good backup's (of the same
    database, made before it). A mark once made stays (only ``accept`` will lift it)."""

    def check(dump: Path, record: manifest.Manifest) -> tuple[manifest.Suspect | None, str]:
        if record.statistics is None:
            return None, "no statistics"
        if record.suspect is not None:
            if not anomaly.is_suspect(record):
                return None, "suspect once, accepted"
            return record.suspect, "SUSPECT"
        backups = catalog.list_backups(folder)
        this = next((b for b in backups if b.name == dump.name), None)
        if this is None:
            return None, "contents not compared"
        previous = anomaly.previous_good(backups, this.database, this.created, skip=this.name)
        if previous is None:
            return None, "no earlier statistics to compare with"
        mark = anomaly.judge(record.statistics, previous, manifest.now_iso(now()), rule)
        return mark, "SUSPECT" if mark is not None else f"not suspect next to {previous.name}"

    return check


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
    contents: ContentsCheck | None = None,
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
        outcome.migrations = record.migrations
        if contents is not None and outcome.ok:
            try:
                outcome.suspect, said = contents(dump, record)
            except OSError as exc:
                said = f"contents not compared ({exc.strerror})"
            outcome.checks.append(said)
        method = "restore" if restore_check is not None else "checksum"
        check = manifest.Verification(
            at=manifest.now_iso(now()),
            method=method,
            ok=outcome.ok,
            detail=outcome.problem or ", ".join(outcome.checks),
            restored_rows=outcome.restored_rows,
        )
        try:
            updated = record.with_verification(check)
            if record.suspect is None and outcome.suspect is not None:
                updated = updated.with_suspect(outcome.suspect)
            manifest.replace_manifest(dump, updated)
            outcome.marked = updated.suspect is not None and record.suspect is None
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
    rule = anomaly.Rule(min_rows=settings.anomaly_min_rows, drop=settings.anomaly_drop)
    contents = contents_check(folder, rule, now)
    with lock.shared(folder, "verify"):
        dumps = select(folder, names, everything, settings.database)
        reader: pgtools.Program | None = None
        if pg_restore is None:
            reader = pgtools.find_program("pg_restore")
            pg_restore = reader.path
        outcomes = []
        for dump in dumps:
            outcome = verify_one(dump, pg_restore, restore_check, now, reader, contents)
            if report is not None:
                report(outcome)
            outcomes.append(outcome)
    # Out of the shared lock (a pin takes it exclusively): the good backup before each
    # backup this verify marked suspect is pinned automatically.
    for outcome in outcomes:
        if outcome.marked and outcome.suspect is not None:
            outcome.autopin = pin_before_anomaly(settings, outcome.suspect, now=now)
    return outcomes


def restore_drill(settings: Settings) -> RestoreCheck:
    """The ``--restore`` check: restore into a throwaway database and look at it."""
    from velocity_pg.postgres import endpoint
    from velocity_pg.restore import drill

    resolved: list[endpoint.Endpoint] = []

    def check(dump: Path, listing: str, outcome: Outcome) -> None:
        if not resolved:  # once, when the first backup gets this far
            resolved.append(endpoint.resolve(settings.connection))
        counts: dict[str, int] = {}
        problem, detail = drill.run_drill(resolved[0], dump, listing, counts)
        if problem is None:
            outcome.restored_rows = counts
        if problem is not None:
            outcome.fail(problem)
        else:
            outcome.checks.append(detail)

    return check


# -- verify --remote: the off-site copies --------------------------------------------------


@dataclass
class RemoteOutcome:
    name: str
    ok: bool = True
    checks: list[str] = field(default_factory=list)
    problem: str = ""

    def fail(self, problem: str) -> RemoteOutcome:
        self.ok, self.problem = False, problem
        return self

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "checks": self.checks, "problem": self.problem}

    def line(self) -> str:
        if self.ok:
            return f"ok      {self.name} (off-site: {', '.join(self.checks)})"
        return f"FAILED  {self.name} (off-site): {self.problem}"


def verify_remote(
    settings: Settings,
    names: list[str],
    *,
    everything: bool = False,
    drill: bool = False,
    meter: Meter | None = None,
    report: Callable[[RemoteOutcome], None] | None = None,
    now: Callable[[], datetime] = utcnow,
) -> list[RemoteOutcome]:
    """Read each selected off-site copy end to end and check it; record the verdict."""
    meter = meter or Meter()
    ctx = prepare(settings, for_upload=False)
    identity = ctx.offsite.identity_file
    if identity is not None:
        identity = age.identity_for(ctx.offsite, "an off-site copy")
    if drill:
        catalog.require_dir(settings.backup_dir, writable=True)
    listing = remote.list_backups(ctx.store)
    if names:
        for name in names:
            read_record(ctx.store, name)  # says clearly when one is not off-site
        chosen = [b for b in listing.backups if b.name in set(names)]
    elif everything:
        chosen = listing.backups
    else:
        chosen = newest_remote(listing.backups, settings.database)[:1]
    outcomes = []
    for backup in chosen:
        try:
            outcome = verify_one_remote(settings, ctx, backup, identity, drill, meter)
        except (KeyboardInterrupt, pgtools.Terminated) as exc:
            # A stop is no verdict: the copy's manifest is left as it was.
            raise Interrupted(
                f"{pgtools.stop_word(exc)} while {backup.name} was being verified off-site; "
                "no verdict was recorded for it"
            ) from None
        if backup.record is not None:
            try:
                record_verdict(
                    ctx.store, backup, outcome, "restore" if drill else "checksum", now()
                )
            except (KeyboardInterrupt, pgtools.Terminated) as exc:
                verdict = "ok" if outcome.ok else f"FAILED: {outcome.problem}"
                raise Interrupted(
                    f"{pgtools.stop_word(exc)} while the verdict on {backup.name} ({verdict}) "
                    "was being written into its off-site manifest; it may or may not be there"
                ) from None
        if report is not None:
            report(outcome)
        outcomes.append(outcome)
    return outcomes


def verify_one_remote(
    settings: Settings,
    ctx: Context,
    backup: RemoteBackup,
    identity: Path | None,
    drill: bool,
    meter: Meter,
) -> RemoteOutcome:
    """Read one copy end to end and check it (its verdict is recorded by the caller)."""
    outcome = RemoteOutcome(backup.name)
    record = backup.record
    if record is None:
        return outcome.fail(backup.problem)
    if record.encrypted and identity is None and drill:
        raise ConfigError(
            "verify --remote --restore of an encrypted copy needs BACKUP_AGE_IDENTITY_FILE"
        )
    try:
        if drill:
            with temp_file(settings.backup_dir) as (fd, temp):
                with os.fdopen(os.dup(fd), "wb") as sink:
                    found = fetch(ctx.store, record, sink, identity, meter, "verifying")
                problem = fetch_problem(record, found)
                if problem is not None:
                    outcome.fail(problem)
                else:
                    outcome.checks += checks_done(record, found)
                    drill_check(settings, temp, record, outcome)
        else:
            found = fetch(ctx.store, record, None, identity, meter, "verifying")
            problem = fetch_problem(record, found)
            if problem is not None:
                outcome.fail(problem)
            else:
                outcome.checks += checks_done(record, found)
        if outcome.ok:  # the roles file that goes with it (store/roles_offsite.py)
            done = roles_offsite.check(
                ctx.store, record.name, record.dump, record.encrypted, identity
            )
            if done is not None:
                outcome.checks.append(done)
    except OperationFailed as exc:
        outcome.fail(exc.message)
    return outcome


def record_verdict(
    store: RemoteStore, backup: RemoteBackup, outcome: RemoteOutcome, method: str, at: datetime
) -> None:
    """Write the verdict into the very manifest that was read, and only while it is still
    there: a copy deleted meanwhile (an off-site cleanup deletes the manifest first) gets
    no verdict, and no manifest comes back to life without its object. The verdict is
    reported either way."""
    record = backup.record
    assert record is not None
    key = remote.manifest_key(record.name)
    gone = (
        f"{record.name} was deleted from {store.describe()} while it was being verified "
        "(an off-site cleanup?); no verdict was written"
    )
    try:
        current = store.head(key)
        found = store.head(record.object_key) if outcome.ok and current is not None else None
    except OperationFailed:
        return
    if current is None:
        outcome.fail(gone)
        return
    if outcome.ok and (found is None or found.size != record.object_size):
        outcome.fail(f"its object {record.object_key} vanished or changed while it was verified")
    verdict = manifest.Verification(
        at=manifest.now_iso(at),
        method=method,
        ok=outcome.ok,
        detail=outcome.problem or ", ".join(outcome.checks),
    )
    try:
        store.put_bytes(
            key,
            remote.dumps(record.with_verification(verdict)),
            if_match=backup.manifest_object.etag or current.etag,
        )
    except remote.Changed:
        try:
            vanished = store.head(key) is None
        except OperationFailed:
            vanished = False
        if vanished:
            outcome.fail(gone)
            return
        # A push replaced it meanwhile: the copy verified is not the one there now.
        note = "no verdict was written: its manifest changed meanwhile"
        if outcome.ok:
            outcome.checks.append(note)
        else:
            outcome.problem += f"; {note}"
    except OperationFailed:
        pass


def checks_done(record: RemoteManifest, found: Fetched) -> list[str]:
    if not record.encrypted:
        return ["checksum"]
    if found.dump_sha256 is None:
        return ["checksum of the encrypted object (set BACKUP_AGE_IDENTITY_FILE to check the dump)"]
    return ["checksum of the encrypted object", "decrypted dump checksum"]


def drill_check(
    settings: Settings, dump: Path, record: RemoteManifest, outcome: RemoteOutcome
) -> None:
    from velocity_pg.restore import drill

    program = pgtools.find_program("pg_restore")
    try:
        listing = pgtools.capture(pgtools.pg_restore_list_cmd(program.path, dump))
    except CommandFailed as exc:
        outcome.fail(f"not a readable archive ({exc.message})")
        return
    entries = pgtools.count_toc_entries(listing)
    if entries != record.dump.toc_entries:
        outcome.fail(f"{entries} archive entries, the manifest says {record.dump.toc_entries}")
        return
    outcome.checks.append(f"archive ({entries} entries)")
    from velocity_pg.postgres import endpoint

    problem, detail = drill.run_drill(endpoint.resolve(settings.connection), dump, listing)
    if problem is not None:
        outcome.fail(problem)
    else:
        outcome.checks.append(detail)


# -- the verb -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What ``verify`` (or ``verify --remote``) found; each backup's line was said as it
    was done. ``nothing`` says why there was nothing to verify, if there was not."""

    outcomes: list[Outcome] | list[RemoteOutcome]
    remote: bool
    nothing: str

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def lines(self) -> list[str]:
        return []

    def to_json(self) -> dict[str, object]:
        return {
            # An off-site verify that found nothing is not ok; a local one says so on stderr.
            "ok": (bool(self.outcomes) or not self.remote) and self.ok,
            "backups": [o.to_json() for o in self.outcomes],
        }

    def failure(self) -> Failure | None:
        if not self.outcomes:
            # A nightly verify that finds nothing to check must not look like success.
            return Failure(stderr=f"velocity-pg: verify: {self.nothing}", notify=self.nothing)
        if not self.ok:
            return Failure(notify=failed_checks(self.outcomes))
        return None


def failed_checks(outcomes: list[Outcome] | list[RemoteOutcome]) -> str:
    """The backups that failed their checks, for a message: name and problem, a few."""
    bad = [o for o in outcomes if not o.ok]
    shown = "; ".join(f"{o.name}: {o.problem or 'failed'}" for o in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return shown + more


def run(
    settings: Settings,
    names: list[str],
    *,
    everything: bool,
    drill: bool,
    remote: bool,
    say: Say | None,
    warn: Say,
) -> Verified:
    """``velocity-pg verify``: each backup's line goes to ``say`` as it is done, a warning
    (its result could not be recorded) to ``warn``."""
    if remote:
        remote_outcomes = verify_remote(
            settings,
            names,
            everything=everything,
            drill=drill,
            report=None if say is None else lambda outcome: say(outcome.line()),
        )
        return Verified(remote_outcomes, True, "no off-site backups to verify")

    def report(outcome: Outcome) -> None:
        if say is not None:
            say(outcome.line())
        if outcome.warning:
            warn(outcome.warning_line())

    outcomes = verify(
        settings,
        names,
        everything=everything,
        restore_check=restore_drill(settings) if drill else None,
        report=report,
    )
    for outcome in outcomes:  # after the automatic pins, which the WARNING names
        if outcome.suspect is not None:
            warn(outcome.suspect_line())
    database = settings.database
    of = (
        ""
        if everything or database is None
        else f" (none of database {database!r}; --all verifies every database's)"
    )
    return Verified(outcomes, False, f"no backups to verify in {settings.backup_dir}{of}")
