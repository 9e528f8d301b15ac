"""Read a Django database's ``django_migrations`` table (what ``migrate`` applied).

Never fatal: a database without the table is not Django's (None), and a table that
cannot be read (no SELECT privilege, a damaged table) gives why, as a string.
:func:`velocity_pg.store.migrations.state_from` makes the state of what it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from velocity_pg.postgres import db

if TYPE_CHECKING:
    import psycopg

TABLE = "django_migrations"
#: The most rows read (a large project has a few thousand migrations).
MAX_ROWS = 100_000

#: (app, name) rows in applied order; why the table is unreadable; None: no table.
Applied = list[tuple[str, str]] | str | None


def read_applied(connection: psycopg.Connection[tuple[object, ...]]) -> Applied:
    """The applied migrations as (app, name) rows in applied order, None when the database
    has no ``django_migrations`` table on its search path, or why it is unreadable.
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
            return f"user {current_user(connection)!r} may not read {TABLE} (no SELECT privilege)"
        rows = connection.execute(
            "SELECT app, name FROM django_migrations ORDER BY applied, id LIMIT %s",
            (MAX_ROWS + 1,),
        ).fetchall()
    except psycopg.Error as exc:
        return f"{TABLE} could not be read ({db.one_line(exc)})"
    if len(rows) > MAX_ROWS:
        return f"{TABLE} holds more than {MAX_ROWS} rows"
    return [(str(app), str(name)) for app, name in rows]


def current_user(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    row = connection.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"
