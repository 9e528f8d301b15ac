"""``velocity-pg accept NAME``: a suspect backup's new state is intended.

A backup is suspect when it looks wrong next to the previous good one (see
:mod:`velocity_pg.store.anomaly`); the good one was then pinned automatically. When a
person says the change was intended (the table was emptied on purpose):

1. the name is checked, and with BACKUP_S3_URL set the off-site settings (exit 2,
   before anything is written);
2. under the folder lock (exclusive), the backup's manifest records the acceptance
   (``accepted``: when, by whom; the suspect mark stays, as a record), and so does every
   other suspect backup of the same database that was compared with the same good
   backup (the same anomaly: the backups made since it looked wrong in the same way).
   From then on :func:`anomaly.is_suspect` is False for them: they count as good for
   ``list``, ``status``, ``status --max-age``, retention and the next comparison;
3. the automatic pin made for that anomaly on the good backup is released, here and
   off-site (a pin a person made stays);
4. with BACKUP_S3_URL set, the off-site manifest of each accepted backup's copy, when
   there is one, records the acceptance too (manifest object only, conditionally, read
   back). When that fails the local acceptance stands and the verb says how to retry
   (exit 1).

Accepting a backup that is not suspect (or is accepted already) says so and succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from velocity_pg.errors import ConfigError, OperationFailed, VelocityError
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog, lock, manifest
from velocity_pg.store.offsite import prepare, update_remote_dump
from velocity_pg.verbs import Failure
from velocity_pg.verbs.pin import ALREADY, UNPINNED, Change, PinResult, apply_pin, read_local


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AcceptResult:
    """What ``accept`` did."""

    name: str
    backup_dir: Path
    #: The acceptance recorded (or found); None when the backup was not suspect.
    accepted: manifest.Accepted | None = None
    #: Whether it was accepted before this run.
    already: bool = False
    #: The other suspect backups of the same anomaly accepted with it, newest first.
    also: list[str] = field(default_factory=list)
    #: The good backup the anomaly was found next to ("" when not suspect).
    good: str = ""
    #: What became of the good backup's pin (a PinResult), None when nothing was done.
    unpinned: PinResult | None = None
    #: The good backup's pin stays: a person's ("" when nothing stays).
    pin_stays: str = ""
    #: Why the good backup's automatic pin could not be released ("" when it was).
    unpin_problem: str = ""
    where: str = ""
    #: The accepted backups whose off-site copy now says so.
    offsite: list[str] = field(default_factory=list)
    offsite_problem: str = ""

    def lines(self) -> list[str]:
        if self.accepted is None:
            return [f"{self.name} is not suspect; there is nothing to accept."]
        if self.already:
            return [f"{self.name} was already {self.accepted.describe()}."]
        lines = [
            f"{self.name} accepted in {self.backup_dir}: its new state is intended; it "
            "counts as a good backup from now on."
        ]
        if self.also:
            lines.append(
                f"Accepted with it (the same anomaly, next to {self.good}): " + ", ".join(self.also)
            )
        if self.unpinned is not None:
            lines.append(
                f"The automatic pin of {self.good} is released"
                + (" here and off-site." if self.unpinned.offsite == UNPINNED else ".")
            )
        if self.pin_stays:
            lines.append(f"{self.good} stays {self.pin_stays} (a person's pin: `unpin` it).")
        if self.offsite:
            lines.append(f"Off-site in {self.where}: {', '.join(self.offsite)} accepted too.")
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "suspect": self.accepted is not None and not self.already,
            "accepted": None if self.accepted is None else self.accepted.__dict__,
            "already": self.already,
            "also": self.also,
            "good": self.good or None,
            "auto_pin_released": self.unpinned is not None,
            "pin_stays": self.pin_stays or None,
            "unpin_problem": self.unpin_problem or None,
            "offsite": None
            if not self.where
            else {
                "where": self.where,
                "accepted": self.offsite,
                "problem": self.offsite_problem or None,
            },
        }

    def failure(self) -> Failure | None:
        if self.unpin_problem:
            return Failure.error(
                f"{self.name} is accepted, but the automatic pin of {self.good} is NOT "
                f"released: {self.unpin_problem}; release it with `velocity-pg unpin "
                f"{self.good}`",
                offsite="off-site" in self.unpin_problem,
            )
        if self.offsite_problem:
            return Failure.error(
                f"{self.name} is accepted in {self.backup_dir}, but not in its off-site copy "
                f"in {self.where}: {self.offsite_problem}; retry with "
                f"`velocity-pg accept {self.name}`",
                offsite=True,
            )
        return None


def accept(settings: Settings, name: str, *, now: Callable[[], datetime] = utcnow) -> AcceptResult:
    """``velocity-pg accept``: see the module docstring."""
    if not catalog.is_backup_name(name):
        raise ConfigError(f"{name!r} is not a backup name; run `velocity-pg list` to see them")
    ctx = prepare(settings, for_upload=False) if settings.offsite is not None else None
    folder = settings.backup_dir
    dump = folder / name
    if not (dump.exists() or dump.is_symlink()):
        raise OperationFailed(
            f"there is no backup {name} in {folder}; run `velocity-pg list` to see them"
        )
    result = AcceptResult(name, folder)
    mark = manifest.Accepted(at=manifest.now_iso(now()), by=catalog.user_name(os.geteuid()))
    changed: list[tuple[str, str]] = []  # (name, sha256) of the manifests rewritten
    with lock.exclusive(folder, f"accept {name}"):
        record = read_local(dump, "accept")
        if record.suspect is None:
            return result
        result.good = record.suspect.compared_with
        if record.accepted is not None:
            result.accepted, result.already = record.accepted, True
        else:
            result.accepted = mark
            for backup in same_anomaly(folder, name, record):
                other = manifest.read(backup.path)
                assert other is not None  # same_anomaly read it
                try:
                    manifest.replace_manifest(backup.path, other.with_accepted(mark))
                except OperationFailed as exc:
                    if backup.name == name:
                        raise OperationFailed(
                            f"cannot accept {name}: {exc.message}; nothing was changed"
                        ) from exc
                    continue  # the others can be accepted on their own
                changed.append((backup.name, other.sha256))
                if backup.name != name:
                    result.also.append(backup.name)
    if result.already:
        return result
    release(settings, result)
    if ctx is None:
        return result
    result.where = ctx.store.describe()
    for accepted, sha256 in changed:
        try:
            found = update_remote_dump(
                ctx.store, accepted, lambda dump: dump.with_accepted(mark), sha256
            )
        except OperationFailed as exc:
            result.offsite_problem = f"{accepted}: {exc.message}"
            break
        if found is not None:
            result.offsite.append(accepted)
    return result


def same_anomaly(folder: Path, name: str, record: manifest.Manifest) -> list[catalog.Backup]:
    """``name`` and the other suspect (not accepted) backups of its database compared with
    the same good backup (``name`` first, then newest first); a manifest that cannot be
    read is passed over."""
    assert record.suspect is not None
    good = record.suspect.compared_with
    found = []
    for backup in catalog.list_backups(folder, record.database):
        try:
            other = manifest.read(backup.path)
        except VelocityError:
            continue
        if backup.name == name or (
            anomaly.is_suspect(other)
            and other is not None
            and other.suspect is not None
            and other.suspect.compared_with == good
        ):
            found.append(backup)
    # NAME first: when its manifest cannot be rewritten, nothing else is.
    return sorted(found, key=lambda b: b.name != name)


def release(settings: Settings, result: AcceptResult) -> None:
    """Release the automatic pin of the good backup (here and off-site); a person's stays."""

    def change(current: manifest.Pin | None) -> tuple[manifest.Pin | None, str]:
        if current is not None and current.auto:
            return None, UNPINNED
        return current, ALREADY

    release_change: Change = change
    if not (settings.backup_dir / result.good).exists():
        return  # cleaned up long ago: nothing to release here (nor to keep off-site)
    try:
        before = manifest.read(settings.backup_dir / result.good)
    except VelocityError as exc:
        result.unpin_problem = exc.message
        return
    if before is None or before.pin is None:
        return
    if not before.pin.auto:
        result.pin_stays = before.pin.describe()
        return
    try:
        done = apply_pin(settings, result.good, False, release_change)
    except VelocityError as exc:
        result.unpin_problem = exc.message
        return
    if done.offsite_problem:
        result.unpin_problem = f"its off-site copy is still pinned: {done.offsite_problem}"
    result.unpinned = done
