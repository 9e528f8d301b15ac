"""``velocity-pg pin NAME [--reason TEXT]`` and ``velocity-pg unpin NAME``.

A pinned backup is never deleted by ``cleanup``, locally or off-site, whatever the
retention rules say (see :mod:`velocity_pg.store.retention`, rule 6). The pin lives in
the backup's manifest (``pin``: when, why, and whether a person or velocity-pg set it)
and travels with its off-site copy, in the copy's manifest.

Order of work:

1. the name is checked, and with BACKUP_S3_URL set the off-site settings (exit 2,
   before anything is written);
2. a local backup's manifest is rewritten (temporary name, fsync, rename, its mode
   kept) under the folder lock, held exclusively so that no ``verify`` rewrites the
   same manifest meanwhile and no ``cleanup`` runs; a backup with no manifest, or
   one that cannot be read, cannot be pinned (exit 1, nothing changed);
3. with BACKUP_S3_URL set, the off-site manifest of the backup's copy, when there is
   one, is rewritten (manifest object only, conditionally, read back; the copy's
   checksums are untouched). A backup that is only off-site is pinned there alone.
   When that fails, the local pin stands and the verb says the off-site copy is not
   pinned yet and how to retry (exit 1).

Pinning a pinned backup again updates its reason (without ``--reason``, the reason
stays); unpinning an unpinned one says so and succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from velocity_pg.errors import ConfigError, ManifestUnreadable, OperationFailed, VelocityError
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog, lock, manifest, remote
from velocity_pg.store.manifest import Pin
from velocity_pg.store.offsite import described_record, prepare, set_remote_pin
from velocity_pg.store.remote import RemoteStore
from velocity_pg.verbs import Failure

#: What happened to the pin in one place (the folder, or off-site).
PINNED = "pinned"
UPDATED = "reason updated"
ALREADY = "already pinned"
UNPINNED = "unpinned"
NOT_PINNED = "was not pinned"
ABSENT = "not there"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PinResult:
    """What ``pin`` or ``unpin`` did, in the folder and off-site."""

    name: str
    pinning: bool
    #: The pin as it now stands (None after an unpin).
    pin: Pin | None
    backup_dir: Path
    #: What happened in the folder (:data:`PINNED` ...), :data:`ABSENT` when not there.
    local: str
    #: What happened off-site; "" when off-site copies are not configured.
    offsite: str = ""
    where: str = ""
    #: Why the off-site copy could not be updated ("" when it was, or needed nothing).
    offsite_problem: str = ""
    #: The reason before an update.
    previous: str = ""

    @property
    def verb(self) -> str:
        return "pin" if self.pinning else "unpin"

    def lines(self) -> list[str]:
        lines = []
        if self.local != ABSENT:
            lines.append(self._line(self.local, f"in {self.backup_dir}"))
        if self.offsite and self.offsite != ABSENT and not self.offsite_problem:
            lines.append(self._line(self.offsite, f"off-site in {self.where}"))
        elif self.offsite == ABSENT and self.local != ABSENT:
            lines.append(f"{self.name} has no off-site copy in {self.where}.")
        return lines

    def _line(self, what: str, where: str) -> str:
        if what in (PINNED, ALREADY) and self.pin is not None:
            return f"{self.name} {what} {where}: {self.pin.describe()}"
        if what == UPDATED and self.pin is not None:
            was = f"; it was: {self.previous}" if self.previous else ""
            return f"{self.name} was already pinned {where}; {self.pin.describe()}{was}"
        return f"{self.name} {what} {where}."

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "action": self.verb,
            "pin": None if self.pin is None else self.pin.to_json(),
            "local": None if self.local == ABSENT else self.local,
            "offsite": None
            if not self.offsite
            else {
                "where": self.where,
                "status": "failed"
                if self.offsite_problem
                else (None if self.offsite == ABSENT else self.offsite),
                "problem": self.offsite_problem or None,
            },
        }

    def failure(self) -> Failure | None:
        if not self.offsite_problem:
            return None
        done = "pinned" if self.pinning else "unpinned"
        retry = f"velocity-pg {self.verb} {self.name}"
        return Failure.error(
            f"{self.name} is {done} in {self.backup_dir}, but its off-site copy in "
            f"{self.where} is NOT {done} yet: {self.offsite_problem}; retry with `{retry}`",
            offsite=True,
        )


def check_reason(reason: str | None) -> None:
    """A reason that cannot be recorded is bad usage (exit 2, before anything runs)."""
    if reason is not None and (problem := manifest.reason_problem(reason)) is not None:
        raise ConfigError(f"the pin's reason cannot be recorded: {problem}")


def pin(
    settings: Settings,
    name: str,
    reason: str | None = None,
    *,
    now: Callable[[], datetime] = utcnow,
) -> PinResult:
    """``velocity-pg pin``: pin backup ``name`` (``reason`` None: keep a pinned one's)."""
    check_reason(reason)
    at = manifest.now_iso(now())

    def change(current: Pin | None) -> tuple[Pin | None, str]:
        if current is None:
            return Pin(at=at, reason=reason or ""), PINNED
        if current.auto or (reason is not None and reason != current.reason):
            # A person's pin replaces an automatic one: only a person releases it now.
            return Pin(at=at, reason=current.reason if reason is None else reason), UPDATED
        return current, ALREADY

    return apply_pin(settings, name, True, change)


@dataclass(frozen=True)
class AutoPin:
    """The automatic pin of the last good backup before an anomaly (``backup``, ``verify``):
    what was done, or why it could not be."""

    #: The good backup (``Suspect.compared_with``).
    name: str
    #: The pin as it now stands in the folder (a person's stays as it was); None when
    #: pinning failed.
    pin: Pin | None = None
    #: What happened in the folder (:data:`PINNED`, :data:`ALREADY`), "" when it failed.
    local: str = ""
    #: Why the good backup is not pinned (locally); "" when it is.
    problem: str = ""
    #: Why its off-site copy is not pinned (the local pin stands); "" when it is or
    #: there is none.
    offsite_problem: str = ""
    #: Whether its off-site copy is pinned (False: none, or not configured, or failed).
    offsite: bool = False

    @property
    def ok(self) -> bool:
        return not self.problem and not self.offsite_problem

    def sentence(self) -> str:
        """For the suspect WARNING, the scheduler's log and the suspect message."""
        retry = f"pin it with `velocity-pg pin {self.name}`"
        if self.problem:
            return f"the last good backup {self.name} is NOT pinned ({self.problem}); {retry}"
        assert self.pin is not None
        there = " here and off-site" if self.offsite else ""
        if self.local == ALREADY and not self.pin.auto:
            said = f"the last good backup {self.name} stays {self.pin.describe()}{there}"
        elif self.local == ALREADY:
            said = f"the last good backup {self.name} is already pinned automatically{there}"
        else:
            said = f"the last good backup {self.name} is now pinned automatically{there}"
        if self.offsite_problem:
            said += f", but its off-site copy is NOT pinned ({self.offsite_problem}); {retry} again"
        return said

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pinned": not self.problem,
            "pin": None if self.pin is None else self.pin.to_json(),
            "offsite": self.offsite,
            "problem": self.problem or None,
            "offsite_problem": self.offsite_problem or None,
        }


def pin_before_anomaly(
    settings: Settings, suspect: manifest.Suspect, *, now: Callable[[], datetime] = utcnow
) -> AutoPin:
    """Pin the good backup ``suspect`` was compared with, automatically, here and off-site
    when it has a copy; a pin already there (a person's above all) is left as it is. Never
    raises for a failure: the backup that found the anomaly succeeded, and the result
    says what could not be pinned."""
    good = suspect.compared_with
    auto = Pin(at=manifest.now_iso(now()), reason=anomaly.pin_reason(suspect), auto=True)

    def change(current: Pin | None) -> tuple[Pin | None, str]:
        return (auto, PINNED) if current is None else (current, ALREADY)

    try:
        result = apply_pin(settings, good, True, change)
    except VelocityError as exc:
        return AutoPin(good, problem=exc.message)
    if result.local == ABSENT:  # only off-site (it was cleaned up here meanwhile)
        return AutoPin(good, problem=f"it is no longer in {result.backup_dir}")
    return AutoPin(
        good,
        pin=result.pin,
        local=result.local,
        offsite_problem=result.offsite_problem,
        offsite=bool(result.offsite) and result.offsite not in (ABSENT, "failed"),
    )


def unpin(settings: Settings, name: str) -> PinResult:
    """``velocity-pg unpin``: release backup ``name``'s pin (a person's or an automatic one)."""

    def change(current: Pin | None) -> tuple[Pin | None, str]:
        return None, (NOT_PINNED if current is None else UNPINNED)

    return apply_pin(settings, name, False, change)


Change = Callable[[Pin | None], tuple[Pin | None, str]]


def apply_pin(settings: Settings, name: str, pinning: bool, change: Change) -> PinResult:
    if not catalog.is_backup_name(name):
        raise ConfigError(f"{name!r} is not a backup name; run `velocity-pg list` to see them")
    verb = "pin" if pinning else "unpin"
    ctx = prepare(settings, for_upload=False) if settings.offsite is not None else None
    folder = settings.backup_dir
    dump = folder / name
    local = ABSENT
    previous = ""
    desired: Pin | None = None
    sha256: str | None = None
    if dump.exists() or dump.is_symlink():
        with lock.exclusive(folder, f"{verb} {name}"):
            record = read_local(dump, verb)
            desired, local = change(record.pin)
            previous = record.pin.describe() if record.pin is not None else ""
            sha256 = record.sha256
            if desired != record.pin:
                try:
                    manifest.replace_manifest(dump, record.with_pin(desired))
                except OperationFailed as exc:
                    raise OperationFailed(
                        f"cannot {verb} {name}: {exc.message}; nothing was changed"
                    ) from exc
    if ctx is None:
        if local == ABSENT:
            raise OperationFailed(
                f"there is no backup {name} in {folder}; run `velocity-pg list` to see them"
            )
        return PinResult(name, pinning, desired, folder, local, previous=previous)
    where = ctx.store.describe()
    offsite = ABSENT
    try:
        if local != ABSENT:
            found = set_remote_pin(ctx.store, name, desired, sha256)
            if found is not None:
                offsite = _status(found[0].pin, desired, local)
        else:
            # Only off-site: the copy's manifest alone says whether it is pinned.
            only = _remote_only(ctx.store, name, change)
            if only is not None:
                offsite, desired, previous = only
    except OperationFailed as exc:
        if local == ABSENT:
            raise OperationFailed(f"cannot {verb} {name} off-site: {exc.message}") from exc
        return PinResult(
            name, pinning, desired, folder, local, "failed", where, exc.message, previous
        )
    if local == ABSENT and offsite == ABSENT:
        raise OperationFailed(
            f"there is no backup {name} in {folder} nor off-site in {where}; "
            "run `velocity-pg list` or `velocity-pg list --remote` to see them"
        )
    return PinResult(name, pinning, desired, folder, local, offsite, where, previous=previous)


def read_local(dump: Path, verb: str) -> manifest.Manifest:
    """The manifest of a local backup, or OperationFailed: a pin needs one."""
    try:
        record = manifest.read(dump)
    except ManifestUnreadable as exc:
        raise OperationFailed(f"cannot {verb} {dump.name}: {exc.message}") from exc
    if record is None:
        raise OperationFailed(
            f"cannot {verb} {dump.name}: it has no manifest (it was not made by velocity-pg), "
            "and the pin is kept in the manifest"
        )
    return record


def _status(before: Pin | None, after: Pin | None, local: str) -> str:
    """What happened off-site, said like the folder's part."""
    if before == after:
        return local if local in (ALREADY, NOT_PINNED) else (ALREADY if after else NOT_PINNED)
    if after is None:
        return UNPINNED
    return PINNED if before is None else UPDATED


def _remote_only(
    store: RemoteStore, name: str, change: Change
) -> tuple[str, Pin | None, str] | None:
    """Pin or unpin a backup that is only off-site: (what happened, the pin now, the pin
    before), or None when it is not off-site either."""
    if store.head(remote.manifest_key(name)) is None:
        return None
    record = described_record(store, name)
    desired, status = change(record.pin)
    set_remote_pin(store, name, desired, record.dump.sha256)
    return status, desired, record.pin.describe() if record.pin is not None else ""
