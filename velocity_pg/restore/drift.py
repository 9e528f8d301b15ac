"""The migration drift a restore would bring: the backup's Django migrations (its
manifest's, or a staged copy's own table when that copy is what would be swapped in)
next to the live database's. Read before anything changes; never refuses a restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity_pg.errors import VelocityError
from velocity_pg.postgres import db, endpoint, migrations
from velocity_pg.store import manifest
from velocity_pg.store.migrations import BEHIND, Drift, MigrationState, drift, state_from


@dataclass(frozen=True)
class MigrationDrift:
    """What the restore says about migrations: the drift, or why there is none to show."""

    drift: Drift | None = None
    #: Why no drift is shown (one side is not Django's, or unreadable); "" with a drift.
    note: str = ""
    #: Where the backup's side comes from: "manifest" or "staged copy".
    source: str = "manifest"

    @property
    def direction(self) -> str | None:
        return None if self.drift is None else self.drift.direction

    def lines(self, *, migrate_hint: str = "") -> list[str]:
        if self.drift is None:
            return [f"migrations: {self.note}"] if self.note else []
        out = self.drift.lines()
        if self.source == "staged copy":
            out[0] += " (as the staged copy holds them)"
        if self.drift.direction == BEHIND and migrate_hint:
            out.append(f"migrations: {migrate_hint}")
        return out

    def to_json(self) -> dict[str, Any]:
        if self.drift is None:
            return {"drift": None, "note": self.note or None, "source": self.source}
        return self.drift.to_json() | {"source": self.source, "note": None}


def migrate_hint(command: str, service: str) -> str:
    """What a plain restore says when the backup is behind: which command migrates."""
    return (
        f"after the restore, run the project's migrate on it: `docker compose run --rm "
        f"{service} {command}` (BACKUP_MIGRATE_SERVICE, BACKUP_MIGRATE_COMMAND); "
        "`just db-restore` migrates the staged copy before the swap instead"
    )


def read(where: endpoint.Endpoint, dbname: str) -> MigrationState | None:
    """A database's migration state (None: not Django's); unreadable when unreachable."""
    try:
        with db.connect(where, dbname) as connection:
            return state_from(migrations.read_applied(connection))
    except VelocityError as exc:
        return MigrationState(unreadable=exc.message)


def compare(
    where: endpoint.Endpoint,
    backup: Path,
    live_exists: bool,
    staged: str | None = None,
) -> MigrationDrift | None:
    """The drift of the backup (or of the ``staged`` copy that would be swapped in) from
    the live database ``where.dbname``; None when neither side is a Django database."""
    source = "manifest"
    try:
        record = manifest.read(backup)
    except VelocityError:
        record = None
    ours = record.migrations if record is not None else None
    if staged is not None:
        ours, source = read(where, staged), "staged copy"
    live = read(where, where.dbname) if live_exists else None
    if ours is None and live is None:
        return None
    if ours is None:
        why = (
            "the backup's manifest does not record its migration state (made before "
            "velocity-pg recorded it, or not a Django database)"
            if source == "manifest"
            else "the staged copy has no django_migrations table"
        )
        return MigrationDrift(note=f"not compared: {why}", source=source)
    if not ours.readable:
        return MigrationDrift(note=f"not compared: {source}: {ours.unreadable}", source=source)
    if live is None:
        return MigrationDrift(
            note="not compared: the live database has no django_migrations table"
            if live_exists
            else "not compared: there is no live database yet",
            source=source,
        )
    if not live.readable:
        return MigrationDrift(note=f"not compared: live database: {live.unreadable}", source=source)
    return MigrationDrift(drift=drift(ours, live), source=source)


def staged_database_url(url: str, target: str) -> str:
    """The project's DATABASE_URL (which names the live database ``target``) with the
    staged copy's database in its place: what `just db-restore` gives the project's
    migrate. The URL is never quoted in a message (it holds the password)."""
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    from velocity_pg.errors import ConfigError
    from velocity_pg.postgres import database_url
    from velocity_pg.restore import staging

    text = url.strip()
    if not text:
        raise ConfigError(
            "no DATABASE_URL on the standard input: give the project's DATABASE_URL "
            '(echo "$DATABASE_URL" | velocity-pg restore --staged-url)'
        )
    database_url.parse(text)  # refuses what is not a PostgreSQL URL, without quoting it
    parts = urlsplit(text)
    named = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if named != target:
        raise ConfigError(
            f"the DATABASE_URL given names database {named!r}, not {target!r}, the one "
            "velocity-pg restores (PGDATABASE / POSTGRES_DB): they must be the same database"
        )
    staged = "/" + quote(staging.staging_name(target), safe="")
    return urlunsplit(parts._replace(path=staged))
