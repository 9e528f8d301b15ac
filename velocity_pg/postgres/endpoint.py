"""Where velocity-pg connects: the one place the user's connection settings are resolved.

libpq decides where a connection goes from several sources, highest first:
the parameters given to it (velocity-pg's command-line options, and a
conninfo string or ``postgresql://`` URI given as the database name), a
service file (``PGSERVICE``, ``PGSERVICEFILE``), its environment variables
(velocity-pg's other settings, from the environment or ``.env``, are read as
such), then its defaults (the OS user, the database named after the user).

:func:`resolve` asks libpq itself for the outcome (``PQconnectStart`` then
``PQconninfo``: the same code path as any connection), reaches the server
once to confirm the database (``current_database()``) and to pin the host
that answered, and returns an :class:`Endpoint`: every parameter spelled
out. Every connection of every verb, and every pg_dump/pg_restore (through
its environment, password included, never argv), then uses exactly those
parameters, so the database that is backed up, checked or replaced is the
one libpq connects to, and never a name guessed from the settings.

Every connection also notices a server that stops answering over TCP (a
container stopped or recreated mid-dump, a cable pulled) within a bounded
time, ``BACKUP_TCP_TIMEOUT`` seconds: see :func:`dead_peer_options`. Those
libpq parameters have no environment variables, so pg_dump and pg_restore get
them in the connection string of their ``--dbname`` (:meth:`Endpoint.conninfo`),
which never holds the password.

The values themselves, :class:`~velocity_pg.postgres.connection.Connection` (the
settings' part that says where to connect) and :class:`Endpoint`, are defined in
:mod:`velocity_pg.postgres.connection`, below this module and :mod:`velocity_pg.postgres.db`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from velocity_pg.errors import ConfigError
from velocity_pg.postgres.connection import Connection, libpq_variables

# Also known by this module's name (``endpoint.Endpoint``), where it is made.
from velocity_pg.postgres.connection import Endpoint as Endpoint

if TYPE_CHECKING:
    from velocity_pg.postgres.db import Conn

APPLICATION_NAME = "velocity-pg"
URI_PREFIXES = ("postgresql://", "postgres://")
#: Settings of a :class:`Connection` and the libpq keyword and variable they stand for.
_FIELDS = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "service": "PGSERVICE",
}
#: Keepalive probes sent to a silent server before its connection is given up.
KEEPALIVE_PROBES = 3


def dead_peer_options(seconds: int) -> dict[str, str]:
    """libpq parameters under which a server that stops answering over TCP is given up
    after about ``seconds`` (``BACKUP_TCP_TIMEOUT``), whatever the connection is doing (pure).

    * Waiting for the server (pg_dump waiting for rows, a session waiting for a lock or a
      long CREATE INDEX): TCP keepalive. After ``idle`` seconds without a packet from the
      server the kernel sends a probe, then one every ``interval``; the server's kernel
      answers them however busy PostgreSQL is, so only a dead or unreachable server
      misses them, and after :data:`KEEPALIVE_PROBES` missed the connection fails:
      ``idle + 3 * interval = seconds`` (for ``seconds`` of 6 and more).
    * Sending to it (pg_restore's COPY data, a query): ``tcp_user_timeout``, the most
      time sent data may stay unacknowledged, ``seconds`` too (in milliseconds).

    Over a Unix socket libpq ignores them all.
    """
    interval = max(1, seconds // (2 * KEEPALIVE_PROBES))
    idle = max(1, seconds - KEEPALIVE_PROBES * interval)
    return {
        "keepalives": "1",
        "keepalives_idle": str(idle),
        "keepalives_interval": str(interval),
        "keepalives_count": str(KEEPALIVE_PROBES),
        "tcp_user_timeout": str(seconds * 1000),
    }


def is_conninfo(text: str) -> bool:
    """A database name that is really a connection string, as libpq's ``expand_dbname`` says."""
    return "=" in text or text.startswith(URI_PREFIXES)


@dataclass(frozen=True)
class Request:
    """The connection asked for, in libpq's terms (pure, see :func:`request_for`)."""

    #: Parameters libpq is given: they win over a service file.
    parameters: dict[str, str] = field(repr=False)
    #: Variables libpq reads as its environment: below a service file.
    environment: dict[str, str] = field(repr=False)


def request_for(connection: Connection) -> Request:
    """Split the settings into libpq parameters and libpq environment variables.

    A conninfo string or URI in ``dbname`` is expanded into parameters, from
    whichever layer it came (libpq would take ``PGDATABASE`` literally).
    Command-line options win over it; the other settings are environment.
    """
    values: dict[str, str | None] = {
        "host": connection.host,
        "port": None if connection.port is None else str(connection.port),
        "user": connection.user,
        "password": connection.password,
        "dbname": connection.dbname,
        "service": connection.service,
    }
    parameters: dict[str, str] = {"application_name": APPLICATION_NAME}
    dbname = values["dbname"]
    if dbname is not None and is_conninfo(dbname):
        parameters.update(expand(dbname))
        # Its sessions are known by this name (a restore never ends another one's admin).
        parameters["application_name"] = APPLICATION_NAME
        values["dbname"] = None
    environment: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in connection.command_line:
            parameters[key] = value
        else:
            environment[_FIELDS[key]] = value
    for key, value in url_options(connection.url_options).items():
        variable = libpq_variables().get(key)
        if variable is None:
            parameters.setdefault(key, value)  # no variable: only as a parameter
        elif variable not in environment and variable not in os.environ:
            environment[variable] = value  # the lowest layer: any PG* variable wins
    return Request(parameters=parameters, environment=environment)


def url_options(options: Mapping[str, str]) -> dict[str, str]:
    """DATABASE_URL's query parameters, each a libpq option; any other is refused."""
    from psycopg import pq

    known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    for key in options:
        if key not in known:
            raise ConfigError(
                f"DATABASE_URL has the query parameter {key!r}, which is not a libpq "
                "connection option (sslmode, connect_timeout, ...); remove it from DATABASE_URL"
            )
    return dict(options)


def expand(conninfo: str) -> dict[str, str]:
    """The parameters of a conninfo string or URI; a malformed one is a usage error."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.ProgrammingError as exc:
        # libpq's message quotes no part of the string, so no password leaks into it.
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"the database given with -d/PGDATABASE is not a valid connection string: {reason}"
        ) from None


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Our process environment with ``variables`` set, for libpq to read; restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def libpq_options(request: Request) -> dict[str, str]:
    """What libpq makes of the request: service file, environment and defaults applied.

    ``PQconnectStart`` processes the options exactly as a connection does (it
    also starts connecting, which is abandoned at once); ``PQconninfo`` then
    lists every parameter with its value.
    """
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    conninfo = make_conninfo("", **request.parameters)
    with environment(request.environment):
        pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        if not pgconn.db:
            # The options themselves are wrong (a service that is not defined, ...).
            reason = " ".join(pgconn.error_message.decode(errors="replace").split())
            raise ConfigError(f"cannot use the connection settings: {reason}")
        return {
            option.keyword.decode(): option.val.decode(errors="replace")
            for option in pgconn.info
            if option.val
        }
    finally:
        pgconn.finish()


#: A socket folder that cannot exist: the host of a request that must not reach a server.
_NOWHERE = "/nonexistent/velocity-pg"


def database_name(connection: Connection) -> str | None:
    """The database libpq would connect to with these settings, without reaching the server.

    None when nothing names a database (no database setting, service, or
    connection string): then libpq's default, the user name, is no choice of
    the user's. The host is replaced by a socket folder that cannot exist, so
    the connection libpq starts ends at once, with no network and no DNS; the
    database does not depend on the host.
    """
    if connection.dbname is None and connection.service is None:
        return None
    request = request_for(connection)
    nowhere = Request(
        parameters={**request.parameters, "host": _NOWHERE, "hostaddr": ""},
        environment=request.environment,
    )
    return libpq_options(nowhere).get("dbname") or None


def resolve(connection: Connection) -> Endpoint:
    """The endpoint the settings lead to; see the module docstring.

    The database itself is reached when it can be; one that cannot (it does
    not exist yet, as before a restore onto a fresh server, or does not accept
    connections) is resolved through a maintenance database on the same server.
    Raises :class:`~velocity_pg.postgres.db.ConnectFailed` with the reason the
    database could not be reached when the server cannot be reached at all.
    """
    from velocity_pg.postgres import db

    options = libpq_options(request_for(connection))
    options.pop("service", None)
    # Below everything the user set (DATABASE_URL's query, a connection string, a
    # service file): libpq has no default of its own for these.
    for key, value in dead_peer_options(connection.tcp_timeout).items():
        options.setdefault(key, value)
    endpoint = Endpoint(options=options, dbname=options.get("dbname", ""))
    try:
        with db.connect(endpoint) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
            assert row is not None
            return pinned(endpoint, conn, str(row[0]))
    except db.ConnectFailed as exc:
        # libpq gives no SQLSTATE for a refused connection: try the server itself.
        failure = exc
    try:
        with db.connect_maintenance(endpoint, avoid=endpoint.dbname) as conn:
            return pinned(endpoint, conn, endpoint.dbname)
    except db.ConnectFailed:
        raise failure from None


def pinned(endpoint: Endpoint, conn: Conn, dbname: str) -> Endpoint:
    """The endpoint with the host and port that answered (of a host list, after DNS)."""
    info = conn.info
    options = dict(endpoint.options)
    options["host"] = info.host
    options["port"] = str(info.port)
    if not info.host.startswith("/") and info.hostaddr:
        options["hostaddr"] = info.hostaddr
    return Endpoint(options=options, dbname=dbname)
