"""``velocity-pg push``: copy local backups off-site, each checked before it counts.

The upload of one backup and its checks are the machinery's
(:func:`velocity_pg.store.offsite.push_backup`); this verb chooses the backups, holds
the folder lock shared (an off-site cleanup never cuts an upload) and reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from velocity_pg.errors import ManifestUnreadable, OperationFailed
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, lock, manifest, remote
from velocity_pg.store.offsite import Context, Meter, PushResult, copy_problem, prepare, push_backup
from velocity_pg.store.remote import RemoteManifest
from velocity_pg.verbs import Failure


def select_for_push(
    ctx: Context,
    folder: Path,
    backups: list[catalog.Backup],
    names: list[str],
    everything: bool,
    database: str | None,
) -> list[Path]:
    """The named backups, every one of ``backups`` not yet off-site (--all), or the newest
    of ``database``."""
    if names:
        return [catalog.resolve_backup(folder, name) for name in names]
    if not everything:
        newest = catalog.newest_of(backups, database)
        return [newest.path] if newest is not None else []
    listing = remote.list_backups(ctx.store)
    copies = {b.name: b.record for b in listing.backups}
    return [b.path for b in reversed(backups) if not counts_off_site(ctx, b, copies, listing)]


def counts_off_site(
    ctx: Context,
    backup: catalog.Backup,
    copies: dict[str, RemoteManifest | None],
    listing: remote.Listing,
) -> bool:
    """True when the listing holds a copy that counts as this local backup's (by its
    checksums, object and encryption, never by its name alone)."""
    record = copies.get(backup.name)
    if record is None:
        # Not off-site, or a damaged manifest: push_backup says which.
        return False
    try:
        local = manifest.read(backup.path)
    except ManifestUnreadable:
        return False  # push_backup reports it
    if local is None or remote.not_describing(record, backup.name) is not None:
        return False
    obj = listing.objects.get(record.object_key)
    return copy_problem(record, obj, local, ctx.recipients) is None


@dataclass
class PushReport:
    """What ``push`` did: each backup's line was said as it went (see :func:`push`)."""

    backup_dir: Path
    results: list[PushResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    local_backups: int = 0  # in the folder (of every database)

    def lines(self) -> list[str]:
        if self.results or self.failures:
            return []
        if not self.local_backups:
            return [
                f"Nothing to push: no backups in {self.backup_dir} yet. "
                "Create one with `velocity-pg backup`."
            ]
        return ["Nothing to push: every local backup is off-site already."]

    def failure(self) -> Failure | None:
        if not self.failures:
            return None
        return Failure(
            stderr=f"velocity-pg: error: {len(self.failures)} backup(s) were not copied "
            "off-site (they are safe locally); retry with `velocity-pg push "
            f"{' '.join(n for n, _ in self.failures)}`",
            notify="; ".join(f"{name}: {problem}" for name, problem in self.failures[:3])
            + f" ({len(self.failures)} backup(s) not copied off-site; they are safe locally)",
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.failures,
            "backups": [r.to_json() for r in self.results]
            + [{"name": n, "status": "failed", "problem": p} for n, p in self.failures],
        }


def push(
    settings: Settings,
    names: list[str],
    *,
    everything: bool = False,
    meter: Meter | None = None,
    report: Callable[[str], None] | None = None,
) -> PushReport:
    """``velocity-pg push``: upload the selected local backups not yet off-site; each
    one's line goes to ``report`` as it is done."""
    ctx = prepare(settings)
    folder = settings.backup_dir
    result = PushReport(folder)
    with lock.shared(folder, "push"):
        backups = catalog.list_backups(folder)
        result.local_backups = len(backups)
        dumps = select_for_push(ctx, folder, backups, names, everything, settings.database)
        for dump in dumps:
            try:
                pushed = push_backup(ctx, dump, meter)
            except OperationFailed as exc:
                result.failures.append((dump.name, exc.message))
                if report is not None:
                    report(f"{'FAILED':<16} {dump.name}: {exc.message}")
                continue
            result.results.append(pushed)
            if report is not None:
                report(pushed.line())
    return result
