"""A Django database's migration state (its ``django_migrations`` table), as a manifest
records it, and the drift between a backup's state and the live database's.

Pure: no database here (:mod:`velocity_pg.postgres.migrations` reads the table). A
manifest holds, when the database had the table::

    "migrations": {
      "fingerprint": "3f1c0a9b2d4e",          # sha256 of the sorted app/name set, 12 hex
      "apps": {"notes": ["0001_initial", "0002_note_pinned"]},   # in applied order
      "counts": {"notes": 2},
      "latest": {"notes": "0002_note_pinned"}
    }

or ``{"unreadable": "why"}`` when the table exists but could not be read (a backup never
fails for it). The shape stays within the manifest's nesting limit (off-site manifest,
manifest, migrations, apps, names: 5 levels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The most migrations a manifest records (a large project has a few thousand).
MAX_MIGRATIONS = 100_000
_MAX_NAME = 1024

#: Drift directions, per app and overall.
SAME = "same"
BEHIND = "behind"  # the live database has migrations the backup lacks: migrate forwards
AHEAD = "ahead"  # the backup has migrations the live database lacks: the code may not know them
MIXED = "mixed"  # both: treated like ahead (loud, never migrated automatically)


@dataclass(frozen=True)
class MigrationState:
    """Per app, its applied migrations in applied order; or why they could not be read."""

    apps: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unreadable: str = ""

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str]]) -> MigrationState:
        """From ``(app, name)`` rows in applied order (duplicates kept once)."""
        apps: dict[str, list[str]] = {}
        for app, name in rows:
            names = apps.setdefault(app, [])
            if name not in names:
                names.append(name)
        return cls(apps=tuple((app, tuple(names)) for app, names in sorted(apps.items())))

    @property
    def readable(self) -> bool:
        return not self.unreadable

    def names(self) -> dict[str, tuple[str, ...]]:
        return dict(self.apps)

    def pairs(self) -> set[tuple[str, str]]:
        return {(app, name) for app, names in self.apps for name in names}

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the SHA-256 of the sorted ``app/name`` lines."""
        lines = sorted(f"{app}/{name}" for app, name in self.pairs())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]

    @property
    def total(self) -> int:
        return sum(len(names) for _, names in self.apps)

    def summary(self) -> str:
        """``12 migrations in 3 apps (fingerprint 3f1c0a9b2d4e)``, or why unreadable."""
        if self.unreadable:
            return f"not recorded: {self.unreadable}"
        return (
            f"{self.total} migration{'s' if self.total != 1 else ''} in {len(self.apps)} "
            f"app{'s' if len(self.apps) != 1 else ''} (fingerprint {self.fingerprint})"
        )

    def to_json(self) -> dict[str, Any]:
        if self.unreadable:
            return {"unreadable": self.unreadable}
        return {
            "fingerprint": self.fingerprint,
            "apps": {app: list(names) for app, names in self.apps},
            "counts": {app: len(names) for app, names in self.apps},
            "latest": {app: names[-1] for app, names in self.apps if names},
        }


def state_from(applied: list[tuple[str, str]] | str | None) -> MigrationState | None:
    """The state of what :func:`velocity_pg.postgres.migrations.read_applied` read."""
    if applied is None:
        return None
    if isinstance(applied, str):
        return MigrationState(unreadable=applied)
    return MigrationState.from_rows(applied)


def from_json(raw: object, where: str = "migrations") -> MigrationState:
    """A manifest's ``migrations``, validated (the fingerprint and counts are recomputed
    from the names; ones that disagree mean a damaged manifest); ValueError says why."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not an object")
    if "unreadable" in raw:
        why = raw["unreadable"]
        if not isinstance(why, str) or not why or len(why) > 64 * 1024:
            raise ValueError(f"{where}.unreadable is not a reason")
        return MigrationState(unreadable=why)
    apps = raw.get("apps")
    if not isinstance(apps, dict):
        raise ValueError(f"{where}.apps is not an object")
    parsed: list[tuple[str, tuple[str, ...]]] = []
    total = 0
    for app, names in apps.items():
        if not isinstance(names, list) or not all(
            isinstance(n, str) and 0 < len(n) <= _MAX_NAME for n in names
        ):
            raise ValueError(f"{where}.apps.{app} is not a list of migration names")
        if not app or len(app) > _MAX_NAME or len(set(names)) != len(names):
            raise ValueError(f"{where}.apps.{app} is not a valid app")
        total += len(names)
        if total > MAX_MIGRATIONS:
            raise ValueError(f"{where} holds more than {MAX_MIGRATIONS} migrations")
        parsed.append((app, tuple(names)))
    state = MigrationState(apps=tuple(sorted(parsed)))
    if raw.get("fingerprint") != state.fingerprint:
        raise ValueError(f"{where}.fingerprint does not match its migrations")
    counts = raw.get("counts", {})
    if not isinstance(counts, dict) or any(
        counts.get(app) != len(names) for app, names in state.apps
    ):
        raise ValueError(f"{where}.counts do not match its migrations")
    return state


@dataclass(frozen=True)
class AppDrift:
    """One app's drift: the backup's migrations next to the live database's."""

    app: str
    direction: str  # SAME, BEHIND, AHEAD, MIXED
    #: Migrations the live database has and the backup lacks (a restore loses them).
    missing: tuple[str, ...] = ()
    #: Migrations the backup has and the live database lacks.
    extra: tuple[str, ...] = ()
    backup_latest: str | None = None
    live_latest: str | None = None

    def describe(self) -> str:
        """``notes: behind by 3 (0004_x → 0007_y)``, ``ahead by 1``, ``same``, ..."""
        if self.direction == SAME:
            return f"{self.app}: same ({self.live_latest})"
        if self.direction == BEHIND:
            if self.backup_latest is None:
                return (
                    f"{self.app}: only in the live database, behind by {len(self.missing)} "
                    f"(none → {self.live_latest})"
                )
            return (
                f"{self.app}: behind by {len(self.missing)} "
                f"({self.backup_latest} → {self.live_latest})"
            )
        if self.direction == AHEAD:
            if self.live_latest is None:
                return (
                    f"{self.app}: only in the backup, ahead by {len(self.extra)} "
                    f"(up to {self.backup_latest})"
                )
            return (
                f"{self.app}: ahead by {len(self.extra)} "
                f"({self.live_latest} → {self.backup_latest})"
            )
        return (
            f"{self.app}: diverged: {len(self.extra)} only in the backup "
            f"({', '.join(self.extra[:3])}{', ...' if len(self.extra) > 3 else ''}), "
            f"{len(self.missing)} only in the live database"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "drift": self.direction,
            "behind_by": len(self.missing),
            "ahead_by": len(self.extra),
            "backup_latest": self.backup_latest,
            "live_latest": self.live_latest,
            "only_in_live": list(self.missing),
            "only_in_backup": list(self.extra),
        }


@dataclass(frozen=True)
class Drift:
    """The drift of a backup's migration state from the live database's, app by app."""

    apps: tuple[AppDrift, ...]
    backup_fingerprint: str
    live_fingerprint: str

    @property
    def direction(self) -> str:
        """SAME, BEHIND (migrate forwards), AHEAD or MIXED (never migrated automatically)."""
        seen = {a.direction for a in self.apps} - {SAME}
        if not seen:
            return SAME
        if seen == {BEHIND}:
            return BEHIND
        if seen == {AHEAD}:
            return AHEAD
        return MIXED

    @property
    def loud(self) -> bool:
        return self.direction in (AHEAD, MIXED)

    def lines(self) -> list[str]:
        """What the restore says, before anything changes (one line, then one per app
        that differs)."""
        direction = self.direction
        if direction == SAME:
            return [
                f"migrations: the backup is at the live database's migration state "
                f"(fingerprint {self.live_fingerprint})"
            ]
        if direction == BEHIND:
            head = (
                "migrations: the backup is BEHIND the live database (taken before later "
                "migrations): after the restore the database needs `migrate`"
            )
        else:
            head = (
                "WARNING: migrations: the backup is AHEAD of the live database: it holds "
                "migrations the running code may not know (the schema may not match the "
                "app); it is never migrated backwards automatically"
            )
        return [head] + [f"migrations:   {a.describe()}" for a in self.apps if a.direction != SAME]

    def to_json(self) -> dict[str, Any]:
        return {
            "drift": self.direction,
            "backup_fingerprint": self.backup_fingerprint,
            "live_fingerprint": self.live_fingerprint,
            "apps": [a.to_json() for a in self.apps],
        }


def drift(backup: MigrationState, live: MigrationState) -> Drift:
    """Compare the backup's state with the live database's, per app (both readable)."""
    ours: Mapping[str, tuple[str, ...]] = backup.names()
    theirs: Mapping[str, tuple[str, ...]] = live.names()
    apps = []
    for app in sorted(set(ours) | set(theirs)):
        b, lv = ours.get(app, ()), theirs.get(app, ())
        missing = tuple(n for n in lv if n not in set(b))
        extra = tuple(n for n in b if n not in set(lv))
        if not missing and not extra:
            direction = SAME
        elif not extra:
            direction = BEHIND
        elif not missing:
            direction = AHEAD
        else:
            direction = MIXED
        apps.append(
            AppDrift(
                app=app,
                direction=direction,
                missing=missing,
                extra=extra,
                backup_latest=b[-1] if b else None,
                live_latest=lv[-1] if lv else None,
            )
        )
    return Drift(
        apps=tuple(apps),
        backup_fingerprint=backup.fingerprint,
        live_fingerprint=live.fingerprint,
    )
