"""psycopg administration work: connecting, versions, and database-level DDL.

Names always go through :class:`psycopg.sql.Identifier`, values as parameters.
psycopg is imported here only, so commands that need no server start fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import OperationFailed

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.postgres.connection import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]

MAINTENANCE_DBS = ("postgres", "template1")

#: Timeouts a role or database may set (``ALTER ROLE ... SET statement_timeout``) that
#: would cancel velocity-pg's own long work (ANALYZE, a refresh, the lock a restore holds
#: while pg_restore runs), with the first server version that knows each. velocity-pg's
#: sessions and its pg_restore runs set them to 0; the swap sets its own lock timeout.
UNTIMED_SETTINGS: tuple[tuple[str, int], ...] = (
    ("statement_timeout", 0),
    ("lock_timeout", 0),
    ("idle_in_transaction_session_timeout", 0),
    ("idle_session_timeout", 140000),
    ("transaction_timeout", 170000),
)


def one_line(exc: BaseException) -> str:
    """psycopg's message on one line (libpq messages span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def untimed_options(server_num: int | None = None, theirs: str | None = None) -> str:
    """``-c name=0`` for each timeout of :data:`UNTIMED_SETTINGS` the server knows, after
    the user's own ``PGOPTIONS`` (the last ``-c`` wins; client options beat role settings).

    Without ``server_num`` (before connecting) only the settings every server knows.
    ``theirs`` is the user's options (the endpoint's), by default ``PGOPTIONS``.
    """
    ours = " ".join(
        f"-c {name}=0"
        for name, since in UNTIMED_SETTINGS
        if since == 0 or (server_num is not None and server_num >= since)
    )
    theirs = (os.environ.get("PGOPTIONS", "") if theirs is None else theirs).strip()
    return f"{theirs} {ours}" if theirs else ours


def untimed_env(server_num: int, endpoint: Endpoint | None = None) -> dict[str, str]:
    """``PGOPTIONS`` for a client program (pg_restore) that must not be cut short, after
    the endpoint's own options."""
    theirs = None if endpoint is None else endpoint.options.get("options", "")
    return {"PGOPTIONS": untimed_options(server_num, theirs)}


#: What to do when the server asks for a password and no setting gives one.
ASK_FOR_IT = (
    "the server asks for a password and none is set; set POSTGRES_PASSWORD "
    "(or PGPASSWORD) in .env or the environment, or put it in DATABASE_URL"
)


def open_connection(
    endpoint: Endpoint, dbname: str | None = None, *, autocommit: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    """Connect (autocommit by default), turning connection failures into one clear line.

    ``dbname`` defaults to the endpoint's database; every other parameter is
    the endpoint's, so every connection goes to the same server as the same user.
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = endpoint.connect_params(dbname)
    params.setdefault("connect_timeout", "10")
    # The server's keepalives first: the user's own options (PGOPTIONS) win over them.
    theirs = f"{endpoint.server_keepalives()} {endpoint.options.get('options', '')}".strip()
    params["options"] = untimed_options(theirs=theirs)
    try:
        connection = psycopg.connect(make_conninfo("", **params), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        target = endpoint.describe(dbname)
        if getattr(exc.pgconn, "needs_password", False):
            # libpq asked for a password and had none (no SQLSTATE: it never sent one).
            raise ConnectFailed(f"cannot connect to {target}: {ASK_FOR_IT}", None) from exc
        raise ConnectFailed(f"cannot connect to {target}: {one_line(exc)}", exc.sqlstate) from exc
    try:
        untime_newer_settings(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def untime_newer_settings(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """The timeouts of newer servers, which a startup option could not name safely."""
    from psycopg import sql

    version = server_version_num(connection)
    for name, since in UNTIMED_SETTINGS:
        if since and version >= since:
            connection.execute(sql.SQL("SET {} = 0").format(sql.Identifier(name)))
    if not connection.autocommit:
        connection.commit()


class ConnectFailed(OperationFailed):
    """The server could not be reached or refused us; ``sqlstate`` says why when known."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@contextmanager
def connect(
    conn: Endpoint, dbname: str | None = None, *, autocommit: bool = True
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection closed on exit."""
    connection = open_connection(conn, dbname, autocommit=autocommit)
    with abandoned_on_error(connection):
        yield connection


@contextmanager
def abandoned_on_error(
    connection: psycopg.Connection[tuple[object, ...]],
) -> Iterator[None]:
    """Close ``connection`` on exit: committed (psycopg's own exit) on success; on an error
    or a signal, its running query cancelled and the connection closed without the
    rollback psycopg would try (and log about: "error ignored in rollback") on a session
    that is still busy. Closing the session rolls back any transaction anyway."""
    import contextlib

    try:
        yield
    except BaseException:
        if not connection.closed:
            try:
                with contextlib.suppress(Exception):
                    cancel(connection)
            finally:  # a second signal during the cancel still closes the session
                connection.close()
        raise
    with connection:
        pass


def cancel(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Ask the server to cancel the session's running query (psycopg 3.2+: safely)."""
    cancel_safe = getattr(connection, "cancel_safe", None)
    if cancel_safe is not None:
        cancel_safe(timeout=5)
    else:  # pragma: no cover - psycopg 3.1
        connection.cancel()


@contextmanager
def connect_maintenance(
    conn: Endpoint, *, avoid: str | None = None
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Connect to a maintenance database (postgres, else template1), autocommit.

    ``avoid`` names a database not to connect to: one cannot rename a database
    while connected to it, so a restore into ``postgres`` goes through ``template1``.
    """
    names = [name for name in MAINTENANCE_DBS if name != avoid]
    connection = None
    failure: ConnectFailed | None = None
    for name in names:
        try:
            connection = open_connection(conn, name)
            break
        except ConnectFailed as exc:
            # libpq reports no SQLSTATE for a refused connection: try the next one.
            failure = failure or exc
    if connection is None:
        assert failure is not None
        raise failure
    with abandoned_on_error(connection):
        yield connection


def server_version_num(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    return int(connection.info.server_version)


#: Each ordinary table of the database (partitions included, partitioned parents, the
#: catalogs and tables an extension creates left out) with the server's estimate of its
#: rows and its size on disk: read from the catalogs and the statistics, never a scan.
#: ``reltuples`` is -1 on PostgreSQL 14+ for a table never analyzed or vacuumed (0 with
#: no pages before 14): then the statistics system's live-row count stands in.
#: The size is the pages VACUUM and ANALYZE counted (the table's, its TOAST table's and
#: its indexes'), not ``pg_total_relation_size``: that one locks the table, and would
#: wait behind a migration's lock before pg_dump even starts.
TABLE_STATISTICS_SQL = """
SELECT n.nspname, c.relname, c.reltuples, c.relpages, s.n_live_tup,
       (c.relpages::bigint
        + COALESCE((SELECT t.relpages FROM pg_class t WHERE t.oid = c.reltoastrelid), 0)
        + COALESCE((SELECT sum(i.relpages) FROM pg_index x
                    JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), 0))
       * current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
ORDER BY n.nspname, c.relname
"""

#: (schema, table, estimated rows, size in bytes, where the rows come from).
TableRow = tuple[str, str, int, int, str]


def table_statistics(
    connection: psycopg.Connection[tuple[object, ...]],
) -> tuple[int, list[TableRow]]:
    """(the database's size in bytes, each table's statistics), from the server's
    statistics: cheap, whatever the database's size. psycopg.Error when refused."""
    version = server_version_num(connection)
    row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    database_bytes = int(row[0]) if row is not None and row[0] is not None else 0  # type: ignore[call-overload]
    tables: list[TableRow] = []
    for schema, name, reltuples, relpages, live, size in connection.execute(TABLE_STATISTICS_SQL):
        estimate = float(reltuples)  # type: ignore[arg-type]
        never_analyzed = estimate < 0 or (version < 140000 and estimate == 0 and relpages == 0)
        if never_analyzed:
            rows, source = int(live or 0), "n_live_tup"  # type: ignore[call-overload]
        else:
            rows, source = round(estimate), "reltuples"
        tables.append((str(schema), str(name), max(rows, 0), int(size or 0), source))  # type: ignore[call-overload]
    return database_bytes, tables
