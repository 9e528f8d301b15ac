"""psycopg administration work: connecting, versions, and database-level DDL.

Names always go through :class:`psycopg.sql.Identifier`, values as parameters.
psycopg is imported here only, so commands that need no server start fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import OperationFailed

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.postgres.endpoint import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]

MAINTENANCE_DBS = ("postgres", "template1")


def one_line(exc: BaseException) -> str:
    """psycopg's message on one line (libpq messages span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


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
    try:
        return psycopg.connect(make_conninfo("", **params), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        target = endpoint.describe(dbname)
        raise ConnectFailed(f"cannot connect to {target}: {one_line(exc)}", exc.sqlstate) from exc


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
    with open_connection(conn, dbname, autocommit=autocommit) as connection:
        yield connection


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
    with connection:
        yield connection


def server_version_num(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    return int(connection.info.server_version)
