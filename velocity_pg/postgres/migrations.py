"""Read a Django database's ``django_migrations`` table (what ``migrate`` applied).

Never fatal: a database without the table is not Django's (None), and a table that
cannot be read (no SELECT privilege, a damaged table) gives a state that says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velocity_pg.postgres import db
from velocity_pg.store.migrations import MAX_MIGRATIONS, MigrationState

if TYPE_CHECKING:
    import psycopg

TABLE = "django_migrations"


def read_state(connection: psycopg.Connection[tuple[object, ...]]) -> MigrationState | None:
    """The applied migrations (per app, in applied order), None when the database has no
    ``django_migrations`` table on its search path, or a state saying why it is unreadable.
    The connection is in autocommit (the callers' case): a failure leaves it usable."""
    import psycopg

    try:
        row = connection.execute(
            "SELECT c.oid IS NOT NULL, "
            "CASE WHEN c.oid IS NULL THEN false ELSE has_table_privilege(c.oid, 'SELECT') END "
            "FROM (SELECT to_regclass(%s)::oid AS oid) AS c",
            (TABLE,),
        ).fetchone()
        if row is None or not row[0]:
            return None
        if not row[1]:
            return MigrationState(
                unreadable=f"user {current_user(connection)!r} may not read {TABLE} "
                "(no SELECT privilege)"
            )
        rows = connection.execute(
            "SELECT app, name FROM django_migrations ORDER BY applied, id LIMIT %s",
            (MAX_MIGRATIONS + 1,),
        ).fetchall()
    except psycopg.Error as exc:
        return MigrationState(unreadable=f"{TABLE} could not be read ({db.one_line(exc)})")
    if len(rows) > MAX_MIGRATIONS:
        return MigrationState(unreadable=f"{TABLE} holds more than {MAX_MIGRATIONS} rows")
    return MigrationState.from_rows((str(app), str(name)) for app, name in rows)


def current_user(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    row = connection.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"
