"""``velocity-pg cleanup``: apply the retention plan, oldest first, and say what happened.

Order of work, so that nothing that must be kept is ever removed:

1. validate the settings (done by the CLI: a bad value stops everything, exit 2);
2. take the folder lock **exclusively**, without waiting: a ``restore`` or
   ``verify`` holding it shared (or another cleanup) makes cleanup fail at
   once, having deleted nothing (a dry run takes no lock and deletes nothing);
3. list the backups of every database (only regular files named
   ``<database>_YYYY-MM-DD_HHMMSS.dump``), read their pins and suspect marks from
   their manifests (a pinned backup, or one whose manifest cannot be read, is kept; a
   suspect one does not count towards the floor or the count) and make the plan
   (:func:`velocity_pg.store.retention.plan`, each database's backups on their
   own) under the lock;
4. delete the planned backups oldest first. Just before each deletion the file
   is checked again: one that vanished, is no longer a regular file, or was
   modified since it was listed is left alone and reported. A deletion that
   fails is reported and the rest still runs; the run then ends with exit 1;
5. remove abandoned temporary files of dead backups (see :func:`temp_decision`);
6. fsync the folder, so the deletions survive a crash.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from velocity_pg.errors import ManifestUnreadable, OperationFailed
from velocity_pg.settings import OffSite, Settings
from velocity_pg.store import anomaly, catalog, lock, manifest, remote, retention
from velocity_pg.store import roles as backup_roles
from velocity_pg.store.offsite import (
    RemoteDeletion,
    delete_remote,
    foreign_warning,
    leftovers,
    leftovers_lock,
    prepare,
    split_owned,
)
from velocity_pg.store.remote import RemoteBackup
from velocity_pg.store.retention import Decision, Plan, Policy
from velocity_pg.verbs import Failure, Say

#: A temporary file is only considered abandoned when nobody holds its lock AND
#: it has not been modified for this long. A backup locks its temporary file the
#: moment it creates it and pg_dump keeps writing to it, so an hour of silence
#: plus no lock leaves no doubt; probing only such old files also means cleanup
#: never competes with a starting backup for that lock.
TEMP_MIN_AGE = timedelta(hours=1)


class Status(StrEnum):
    """What happened to a backup planned for deletion."""

    DELETED = "deleted"
    WOULD_DELETE = "would delete"  # dry run
    VANISHED = "vanished"  # already gone when its turn came
    CHANGED = "changed"  # modified or replaced since it was listed: left alone
    FAILED = "failed"  # the deletion itself failed


class TempStatus(StrEnum):
    """What happened to a temporary file (``.velocity-tmp-*.partial``)."""

    REMOVED = "removed"
    WOULD_REMOVE = "would remove"  # dry run
    IN_USE = "in use"  # a live backup holds its lock: never touched
    RECENT = "recent"  # modified within TEMP_MIN_AGE: left alone
    VANISHED = "vanished"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    status: Status
    detail: str
    bytes_freed: int = 0

    @property
    def done(self) -> bool:
        return self.status in (Status.DELETED, Status.WOULD_DELETE)

    def to_json(self) -> dict[str, object]:
        return self.decision.to_json() | {"status": str(self.status), "detail": self.detail}


@dataclass(frozen=True)
class TempFile:
    name: str
    path: Path
    mtime: datetime
    size: int


@dataclass(frozen=True)
class TempOutcome:
    temp: TempFile
    status: TempStatus
    detail: str
    bytes_freed: int = 0

    @property
    def failed(self) -> bool:
        return self.status is TempStatus.FAILED

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.temp.name,
            "size_bytes": self.temp.size,
            "modified_at": self.temp.mtime.isoformat(),
            "status": str(self.status),
            "detail": self.detail,
        }


@dataclass
class CleanupResult:
    backup_dir: Path
    plan: Plan
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)
    temps: list[TempOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def deleted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is Status.DELETED]

    @property
    def not_deleted(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.done]

    @property
    def bytes_freed(self) -> int:
        return sum(o.bytes_freed for o in self.outcomes)

    @property
    def partial(self) -> bool:
        """True when something cleanup set out to do did not happen."""
        return bool(self.not_deleted or self.problems or any(t.failed for t in self.temps))

    def partial_message(self) -> str:
        parts = []
        if self.not_deleted:
            parts.append(
                f"{len(self.not_deleted)} of {len(self.outcomes)} planned deletion(s) "
                "did not happen"
            )
        failed_temps = [t for t in self.temps if t.failed]
        if failed_temps:
            parts.append(f"{len(failed_temps)} abandoned temporary file(s) were not removed")
        parts.extend(self.problems)
        return (
            f"cleanup of {self.backup_dir} was partial: {'; '.join(parts)} "
            "(see the output above); everything else was done as planned"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "backup_dir": str(self.backup_dir),
            "dry_run": self.dry_run,
            "now": self.plan.now.isoformat(),
            "policy": self.plan.policy.to_json(),
            "groups": [group.to_json() for group in self.plan.groups],
            "keep": [d.to_json() for d in self.plan.keep],
            "delete": [o.to_json() for o in self.outcomes],
            "temp_files": [t.to_json() for t in self.temps],
            "problems": list(self.problems),
            "summary": {
                "kept": len(self.plan.keep),
                "planned_deletions": len(self.plan.delete),
                "deleted": len(self.deleted),
                "not_deleted": len(self.not_deleted),
                "bytes_freed": self.bytes_freed,
                "bytes_to_free": self.plan.bytes_to_free,
                "temp_files_removed": sum(1 for t in self.temps if t.status is TempStatus.REMOVED),
                "temp_bytes_freed": sum(t.bytes_freed for t in self.temps),
                "partial": self.partial,
            },
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        max_age_days=settings.max_age_days,
        max_count=settings.max_count,
        min_keep=settings.min_keep,
        tiers=settings.tiers,
    )


def run_cleanup(
    settings: Settings,
    *,
    dry_run: bool = False,
    now: Callable[[], datetime] = utcnow,
    on_plan: Callable[[Plan], None] | None = None,
    on_outcome: Callable[[Outcome | TempOutcome], None] | None = None,
) -> CleanupResult:
    """Plan and (unless ``dry_run``) apply the retention policy; see the module docstring.

    ``on_plan`` is called once with the plan before anything is deleted;
    ``on_outcome`` after each backup or temporary file is dealt with, so a
    caller can print progress as it happens.
    """
    folder = settings.backup_dir
    catalog.require_dir(folder)
    policy = policy_of(settings)
    if dry_run:
        return _clean(folder, policy, now, dry_run=True, on_plan=on_plan, on_outcome=on_outcome)
    with lock.exclusive(folder, "clean up"):
        return _clean(folder, policy, now, dry_run=False, on_plan=on_plan, on_outcome=on_outcome)


def _clean(
    folder: Path,
    policy: Policy,
    now: Callable[[], datetime],
    *,
    dry_run: bool,
    on_plan: Callable[[Plan], None] | None,
    on_outcome: Callable[[Outcome | TempOutcome], None] | None,
) -> CleanupResult:
    backups = catalog.list_backups(folder)
    temps = find_temp_files(folder)
    pins, unknown, suspects = read_marks(backups)
    moment = now()
    the_plan = retention.plan(
        backups, policy, moment, pins=pins, pin_unknown=unknown, suspects=suspects
    )
    stale_temps = [t for t in temps if temp_decision(t, moment) is None]
    if not dry_run and (the_plan.delete or stale_temps):
        catalog.require_dir(folder, writable=True)  # fail before deleting anything
    if on_plan is not None:
        on_plan(the_plan)
    result = CleanupResult(backup_dir=folder, plan=the_plan, dry_run=dry_run)
    report = on_outcome or (lambda _outcome: None)
    try:
        for decision in the_plan.delete:
            outcome = (
                Outcome(decision, Status.WOULD_DELETE, decision.reason)
                if dry_run
                else delete_backup(decision)
            )
            result.outcomes.append(outcome)
            report(outcome)
        for temp in temps:
            temp_outcome = handle_temp_file(temp, moment, dry_run=dry_run)
            result.temps.append(temp_outcome)
            report(temp_outcome)
    finally:
        if not dry_run and (result.outcomes or result.temps):
            try:
                catalog.fsync_path(folder)
            except OSError as exc:
                result.problems.append(f"cannot fsync the folder {folder}: {exc.strerror}")
    return result


# -- backups ---------------------------------------------------------------------


def read_marks(
    backups: list[catalog.Backup],
) -> tuple[dict[str, manifest.Pin], dict[str, str], dict[str, str]]:
    """The pins of the backups (from their manifests), why the pin of a backup whose
    manifest cannot be read is unknown, and why the suspect ones are suspect; by name."""
    pins: dict[str, manifest.Pin] = {}
    unknown: dict[str, str] = {}
    suspects: dict[str, str] = {}
    for backup in backups:
        try:
            record = manifest.read(backup.path)
        except ManifestUnreadable as exc:
            unknown[backup.name] = exc.message
            continue
        if record is not None and record.pin is not None:
            pins[backup.name] = record.pin
        if (why := anomaly.suspect_reason(record)) is not None:
            suspects[backup.name] = why
    return pins, unknown, suspects


def backup_files(backup: catalog.Backup) -> list[Path]:
    """The files that make up one backup, the dump first, then its manifest and roles file.

    The dump is removed first, so an interruption can leave at worst a stray
    manifest (removed by a later cleanup, see :func:`find_temp_files`), never a
    dump without its manifest.
    """
    return [backup.path, manifest.path_for(backup.path), backup_roles.path_for(backup.path)]


def delete_backup(decision: Decision) -> Outcome:
    """Delete one planned backup, after checking it is still the file that was planned."""
    backup = decision.backup
    try:
        info = backup.path.lstat()
    except FileNotFoundError:
        return Outcome(decision, Status.VANISHED, "was already gone when its turn came")
    except OSError as exc:
        return Outcome(decision, Status.FAILED, f"cannot be examined: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return Outcome(decision, Status.CHANGED, "is no longer a regular file; left alone")
    if info.st_size != backup.size or datetime.fromtimestamp(info.st_mtime, UTC) != backup.mtime:
        return Outcome(
            decision,
            Status.CHANGED,
            "was modified after cleanup listed it; left alone (run cleanup again)",
        )
    freed = 0
    for index, path in enumerate(backup_files(backup)):
        try:
            size = path.lstat().st_size
            path.unlink()
        except FileNotFoundError:
            if index == 0:
                return Outcome(decision, Status.VANISHED, "was already gone when its turn came")
            continue
        except OSError as exc:
            what = "cannot delete it" if index == 0 else f"deleted, but not {path.name}"
            return Outcome(decision, Status.FAILED, f"{what}: {exc.strerror}", freed)
        freed += size
    return Outcome(decision, Status.DELETED, decision.reason, freed)


# -- temporary files ---------------------------------------------------------------


def is_leftover_name(folder: Path, name: str) -> bool:
    """A backup's temporary file, or a manifest whose dump is gone (an orphan)."""
    if name.startswith(catalog.TEMP_PREFIX) and name.endswith(catalog.TEMP_SUFFIX):
        return True
    if backup_roles.is_roles_name(name):
        return not (folder / name[: -len(backup_roles.SUFFIX)]).exists()
    return manifest.is_manifest_name(name) and not (folder / name[: -len(manifest.SUFFIX)]).exists()


def find_temp_files(folder: Path) -> list[TempFile]:
    """Leftovers of backups: temporary files (``.velocity-tmp-*.partial``) and orphan manifests.

    An orphan manifest is either a backup being published this very moment (its
    writer holds the file's lock) or the remains of one that died or whose dump
    was removed by hand: the same age-and-lock rule as temporary files decides.
    """
    found = [
        TempFile(
            name=path.name,
            path=path,
            mtime=datetime.fromtimestamp(info.st_mtime, UTC),
            size=info.st_size,
        )
        for path, info in catalog.scan_files(folder, lambda name: is_leftover_name(folder, name))
    ]
    found.sort(key=lambda t: t.name)
    return found


def temp_decision(temp: TempFile, now: datetime) -> str | None:
    """Why a temporary file is left alone without looking at its lock; None if it may go.

    Pure: a temporary file is a candidate only when not modified for more than
    :data:`TEMP_MIN_AGE`. Whether its writer is alive is checked next, by its lock.
    """
    age = now - temp.mtime
    if age <= TEMP_MIN_AGE:
        hours = int(TEMP_MIN_AGE.total_seconds() // 3600)
        return (
            f"modified {catalog.human_age(age)} ago, within the last {hours} h "
            "(it may belong to a running backup)"
        )
    return None


def handle_temp_file(temp: TempFile, now: datetime, *, dry_run: bool) -> TempOutcome:
    """Remove a temporary file only if it is old enough AND no live backup holds its lock."""
    why_not = temp_decision(temp, now)
    if why_not is not None:
        return TempOutcome(temp, TempStatus.RECENT, why_not)
    if not lock.temp_file_is_abandoned(temp.path):
        if not temp.path.exists():
            return TempOutcome(temp, TempStatus.VANISHED, "was already gone when its turn came")
        return TempOutcome(
            temp,
            TempStatus.IN_USE,
            "a running backup is writing it (it holds its lock)",
        )
    age = catalog.human_age(now - temp.mtime)
    what = (
        "manifest whose dump is gone"
        if manifest.is_manifest_name(temp.name)
        else "abandoned temporary file of a backup that died"
    )
    reason = f"{what} (no lock; modified {age} ago)"
    if dry_run:
        return TempOutcome(temp, TempStatus.WOULD_REMOVE, reason)
    try:
        temp.path.unlink()
    except FileNotFoundError:
        return TempOutcome(temp, TempStatus.VANISHED, "was already gone when its turn came")
    except OSError as exc:
        return TempOutcome(temp, TempStatus.FAILED, f"cannot remove it: {exc.strerror}")
    return TempOutcome(temp, TempStatus.REMOVED, reason, temp.size)


# -- text output -----------------------------------------------------------------

_ACTION_WIDTH = 12


def _line(action: str, name: str, size: int, text: str) -> str:
    return f"{action:<{_ACTION_WIDTH}} {name}  {catalog.human_size(size):>9}  {text}"


def format_plan_header(plan: Plan, folder: Path, *, dry_run: bool) -> list[str]:
    """The policy line, then per database a heading and one line per kept backup,
    newest first."""
    lines = [
        ("Dry run (nothing is deleted): " if dry_run else "")
        + f"cleanup of {folder}: {plan.policy.describe()}, for each database's backups."
    ]
    for group in plan.groups:
        lines.append(
            f"database {group.database!r}: {len(group.keep) + len(group.delete)} backup(s), "
            f"keep {len(group.keep)}, {'would delete' if dry_run else 'delete'} "
            f"{len(group.delete)}"
        )
        lines.extend(_line("keep", d.backup.name, d.backup.size, d.reason) for d in group.keep)
    return lines


def format_outcome(outcome: Outcome | TempOutcome) -> str:
    if isinstance(outcome, TempOutcome):
        action = {
            TempStatus.REMOVED: "removed",
            TempStatus.WOULD_REMOVE: "would remove",
            TempStatus.FAILED: "NOT REMOVED",
            TempStatus.VANISHED: "gone",
        }.get(outcome.status, "left alone")
        return _line(action, outcome.temp.name, outcome.temp.size, outcome.detail)
    action = {
        Status.DELETED: "deleted",
        Status.WOULD_DELETE: "would delete",
    }.get(outcome.status, "NOT DELETED")
    backup = outcome.decision.backup
    text = outcome.detail
    if not outcome.done:
        text += f" (planned: {outcome.decision.reason})"
    return _line(action, backup.name, backup.size, text)


def format_summary(result: CleanupResult) -> str:
    plan = result.plan
    if not plan.keep and not plan.delete:
        text = f"No backups in {result.backup_dir}; nothing to delete."
    elif result.dry_run:
        text = (
            f"Dry run: would keep {len(plan.keep)} backup(s) and delete {len(plan.delete)}, "
            f"freeing {catalog.human_size(plan.bytes_to_free)} ({plan.bytes_to_free} bytes); "
            "nothing was deleted."
        )
    else:
        deleted = len(result.deleted)
        planned = len(result.outcomes)
        count = f"{deleted}" if deleted == planned else f"{deleted} of {planned} planned"
        text = (
            f"Kept {len(plan.keep)} backup(s), deleted {count}, freed "
            f"{catalog.human_size(result.bytes_freed)} ({result.bytes_freed} bytes)."
        )
    removed = [t for t in result.temps if t.status is TempStatus.REMOVED]
    if removed:
        freed = sum(t.bytes_freed for t in removed)
        text += (
            f" Removed {len(removed)} abandoned temporary file(s) ({catalog.human_size(freed)})."
        )
    return text


# -- off-site -------------------------------------------------------------------------------


@dataclass
class RemoteCleanup:
    where: str
    plan: retention.Plan
    dry_run: bool
    deletions: list[RemoteDeletion] = field(default_factory=list)
    leftovers: list[RemoteDeletion] = field(default_factory=list)
    damaged: list[RemoteBackup] = field(default_factory=list)
    #: (name, owner) of the copies that are not this folder's: never counted or deleted.
    foreign: list[tuple[str, str]] = field(default_factory=list)
    #: Why the unfinished uploads were not looked at this time ("" when they were).
    leftovers_skipped: str = ""

    def warning(self) -> str | None:
        return foreign_warning(self.where, self.foreign)

    @property
    def failed(self) -> list[RemoteDeletion]:
        return [d for d in [*self.deletions, *self.leftovers] if not d.done]

    def to_json(self) -> dict[str, object]:
        return {
            "where": self.where,
            "dry_run": self.dry_run,
            "policy": self.plan.policy.to_json(),
            "keep": [d.to_json() for d in self.plan.keep],
            "delete": [d.to_json() for d in self.deletions],
            "leftovers": [d.to_json() for d in self.leftovers],
            "damaged": [b.name for b in self.damaged],
            "foreign": [{"name": n, "owner": o} for n, o in self.foreign],
            "leftovers_skipped": self.leftovers_skipped or None,
            "partial": bool(self.failed),
        }


def remote_policy(offsite: OffSite) -> retention.Policy:
    return retention.Policy(
        max_age_days=offsite.max_age_days,
        max_count=offsite.max_count,
        min_keep=offsite.min_keep,
        settings_prefix="BACKUP_S3_",
        tiers=offsite.tiers,
    )


def cleanup_remote(
    settings: Settings,
    *,
    dry_run: bool = False,
    now: Callable[[], datetime] = utcnow,
    on_plan: Callable[[RemoteCleanup], None] | None = None,
    on_outcome: Callable[[RemoteDeletion], None] | None = None,
) -> RemoteCleanup:
    """Apply the off-site retention plan to this folder's copies only: the backups' own
    times, the floor always kept; another folder's copies are named, never deleted."""
    ctx = prepare(settings, for_upload=False)
    store = ctx.store
    listing = remote.list_backups(store)
    good, foreign = split_owned(settings.backup_dir, listing.backups)
    by_name = {b.name: b for b in good}
    moment = now()
    pins = {b.name: b.record.pin for b in good if b.record is not None and b.record.pin}
    suspects = {
        b.name: why
        for b in good
        if b.record is not None and (why := anomaly.suspect_reason(b.record.dump)) is not None
    }
    plan = retention.plan(
        [b.as_catalog_backup() for b in good],
        remote_policy(ctx.offsite),
        moment,
        pins=pins,
        suspects=suspects,
    )
    result = RemoteCleanup(
        where=store.describe(),
        plan=plan,
        dry_run=dry_run,
        damaged=[b for b in listing.backups if b.record is None],
        foreign=foreign,
    )
    if on_plan is not None:
        on_plan(result)
    report = on_outcome or (lambda _d: None)
    for decision in plan.delete:
        backup = by_name[decision.backup.name]
        assert backup.record is not None
        deletion = (
            RemoteDeletion(backup.name, backup.record.object_size, "would delete", decision.reason)
            if dry_run
            else delete_remote(store, backup.record, decision.reason, backup.manifest_object.etag)
        )
        result.deletions.append(deletion)
        report(deletion)
    with leftovers_lock(settings.backup_dir, dry_run) as busy:
        result.leftovers_skipped = busy
        for leftover in [] if busy else leftovers(store, listing, moment):
            outcome = leftover(dry_run)
            result.leftovers.append(outcome)
            report(outcome)
    return result


def format_remote_plan(result: RemoteCleanup) -> list[str]:
    lines = [
        ("Dry run (nothing is deleted): " if result.dry_run else "")
        + f"off-site cleanup of {result.where}: {result.plan.policy.describe()} "
        "(ages from each backup's own time)."
    ]
    lines += [
        f"{'keep':<12} {d.backup.name}  {catalog.human_size(d.backup.size):>9}  {d.reason}"
        for d in result.plan.keep
    ]
    lines += [f"{'left alone':<12} {b.name}  {'':>9}  {b.problem}" for b in result.damaged]
    if result.leftovers_skipped:
        lines.append(f"Note: {result.leftovers_skipped}.")
    return lines


def format_remote_outcome(d: RemoteDeletion) -> str:
    action = {
        "deleted": "deleted",
        "would delete": "would delete",
        "vanished": "gone",
        "changed": "left alone",
    }.get(d.status, "NOT DELETED")
    return f"{action:<12} {d.name}  {catalog.human_size(d.size):>9}  {d.detail}"


def format_remote_summary(result: RemoteCleanup) -> str:
    plan = result.plan
    if result.dry_run:
        return (
            f"Dry run off-site: would keep {len(plan.keep)} backup(s) and delete "
            f"{len(plan.delete)}; nothing was deleted."
        )
    deleted = sum(1 for d in result.deletions if d.status == "deleted")
    return f"Off-site: kept {len(plan.keep)} backup(s), deleted {deleted} of {len(plan.delete)}."


# -- the verb -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    """``velocity-pg cleanup``: the local cleanup, and the off-site one when configured.

    Its lines were said as it went (each deletion as it happened); :meth:`lines` is
    the last block, not yet said.
    """

    local: CleanupResult
    remote: RemoteCleanup | None = None
    #: Why the off-site cleanup failed as a whole ("" when it ran).
    remote_problem: str = ""
    tail: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return list(self.tail)

    def to_json(self) -> dict[str, object]:
        payload = self.local.to_json()
        if self.remote_problem:
            payload["offsite"] = {"problem": self.remote_problem}
        elif self.remote is not None:
            payload["offsite"] = self.remote.to_json()
        return payload

    def failure(self) -> Failure | None:
        if self.remote_problem:
            return Failure.error(
                f"off-site cleanup failed: {self.remote_problem} (the local cleanup was done)",
                offsite=True,
            )
        if self.local.partial:
            return Failure.error(self.local.partial_message())
        if self.remote is not None and self.remote.failed:
            return Failure.error(
                f"off-site cleanup was partial: {len(self.remote.failed)} deletion(s) failed "
                "(see the output above); everything else was done as planned",
                offsite=True,
            )
        return None


def run(settings: Settings, *, dry_run: bool, say: Say | None, warn: Say) -> Cleaned:
    """Clean up BACKUP_DIR, then the off-site copies when configured. A real run says
    each deletion as it happens; a dry run (which can list thousands of lines at once)
    says them in one write. A warning about the off-site copies goes to ``warn``."""
    folder = settings.backup_dir
    pending: list[str] = []

    def show_outcome(outcome: Outcome | TempOutcome) -> None:
        assert say is not None
        pending.append(format_outcome(outcome))
        if not dry_run:
            say(pending.pop())

    result = run_cleanup(
        settings,
        dry_run=dry_run,
        on_plan=None
        if say is None
        else lambda plan: say("\n".join(format_plan_header(plan, folder, dry_run=dry_run))),
        on_outcome=None if say is None else show_outcome,
    )
    if settings.offsite is None:
        return Cleaned(result, tail=("\n".join([*pending, format_summary(result)]),))
    if say is not None:
        say("\n".join([*pending, format_summary(result)]))
    remote_pending: list[str] = []

    def show_remote(outcome: RemoteDeletion) -> None:
        assert say is not None
        remote_pending.append(format_remote_outcome(outcome))
        if not dry_run:
            say(remote_pending.pop())

    try:
        remote_result = cleanup_remote(
            settings,
            dry_run=dry_run,
            on_plan=None if say is None else lambda r: say("\n".join(format_remote_plan(r))),
            on_outcome=None if say is None else show_remote,
        )
    except OperationFailed as exc:
        return Cleaned(result, remote_problem=exc.message)
    if say is not None:
        say("\n".join([*remote_pending, format_remote_summary(remote_result)]))
    if (warning := remote_result.warning()) is not None:
        warn(f"velocity-pg: warning: {warning}")
    return Cleaned(result, remote_result)
