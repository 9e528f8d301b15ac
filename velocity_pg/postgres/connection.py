"""The values a connection is made of: what the user asked for, what libpq resolved it to.

:class:`Connection` is the connection part of the settings: :mod:`velocity_pg.settings`
builds it from the command line, the environment, ``.env`` and ``DATABASE_URL``.
:func:`velocity_pg.postgres.endpoint.resolve` turns it into an :class:`Endpoint`, every
libpq parameter spelled out, which :mod:`velocity_pg.postgres.db`, pg_dump and
pg_restore connect with.

Plain values at the bottom of the layers: this module imports nothing of velocity-pg's
(psycopg only inside functions), so the ``postgres/`` modules that take these values
never import the settings, nor each other in a circle (see ``tests/test_layers.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

#: Seconds a server may stop answering before its connection is given up (BACKUP_TCP_TIMEOUT).
DEFAULT_TCP_TIMEOUT = 60
#: Variables that point libpq at a service file: once resolved, children must not re-read one.
_SERVICE_VARIABLES = ("PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR")
#: The libpq parameters that bound how long a dead server goes unnoticed. None has an
#: environment variable: children get them in their ``--dbname`` connection string.
DEAD_PEER_KEYWORDS = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)


@dataclass(frozen=True)
class Connection:
    """Where the user asked to connect; unset fields fall back to libpq's own defaults.

    :func:`velocity_pg.postgres.endpoint.resolve` turns it into the parameters
    libpq actually connects with (service file, conninfo string or URI in
    ``dbname``, defaults), which every verb then uses.
    """

    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    password: str | None = field(default=None, repr=False)
    service: str | None = None
    #: libpq options from DATABASE_URL's query (``sslmode`` -> ``require``): lowest layer.
    url_options: Mapping[str, str] = field(default_factory=dict)
    #: The fields given as command-line options (``--host``, ``-d`` ...): like
    #: psql's options they win over a service file; the others are read as
    #: libpq reads its environment variables, below a service file.
    command_line: frozenset[str] = frozenset()
    #: BACKUP_TCP_TIMEOUT: a server that stops answering over TCP (gone, unplugged,
    #: recreated) is given up after about this many seconds, on every connection of
    #: velocity-pg and of its pg_dump and pg_restore (see ``endpoint.dead_peer_options``).
    tcp_timeout: int = DEFAULT_TCP_TIMEOUT


@dataclass(frozen=True)
class Endpoint:
    """Every libpq parameter of the connection, resolved; the database it reaches."""

    #: keyword -> value for every parameter libpq had a value for (password included).
    options: Mapping[str, str] = field(repr=False)
    #: The database the settings name: ``current_database()`` of a connection.
    dbname: str

    @property
    def host(self) -> str:
        return self.options.get("host", "")

    @property
    def port(self) -> str:
        return self.options.get("port", "")

    @property
    def user(self) -> str:
        return self.options.get("user", "")

    def connect_params(self, dbname: str | None = None) -> dict[str, str]:
        """Keyword arguments for ``psycopg.connect``: all of them, for ``dbname`` (default ours)."""
        params = {key: value for key, value in self.options.items() if key != "service"}
        params["dbname"] = self.dbname if dbname is None else dbname
        return params

    def libpq_env(self, dbname: str | None = None) -> dict[str, str | None]:
        """The environment for pg_dump/pg_restore: exactly these parameters, nothing else.

        ``None`` removes a variable inherited from our environment, so a service
        file or a stray ``PG*`` variable cannot send the child elsewhere.
        """
        env: dict[str, str | None] = dict.fromkeys(_SERVICE_VARIABLES)
        env.update(dict.fromkeys(libpq_variables().values()))
        for key, value in self.connect_params(dbname).items():
            variable = libpq_variables().get(key)
            if variable is not None:
                env[variable] = value
        return env

    def server_keepalives(self) -> str:
        """Startup options that make the server probe this session as we probe it
        (``tcp_keepalives_*``, the same values): a session of ours whose client vanished
        (a network cut) then ends within the bound on the server too, with the locks it
        held (a restore's lock would otherwise refuse the next restore for hours).
        Nothing when keepalives are off; the server ignores them on a Unix socket.
        """
        if self.options.get("keepalives", "1") == "0":
            return ""
        settings = (
            ("tcp_keepalives_idle", "keepalives_idle"),
            ("tcp_keepalives_interval", "keepalives_interval"),
            ("tcp_keepalives_count", "keepalives_count"),
        )
        return " ".join(
            f"-c {name}={self.options[keyword]}"
            for name, keyword in settings
            if self.options.get(keyword, "").isdigit()
        )

    def conninfo(self, dbname: str | None = None) -> str:
        """``--dbname`` for pg_dump/pg_restore: a connection string with the database
        (default ours) and the parameters that have no environment variable (the
        dead-peer bounds, :data:`DEAD_PEER_KEYWORDS`); the rest, password included, is
        in their environment (:meth:`libpq_env`). Nothing secret: it is in their argv.
        """
        from psycopg.conninfo import make_conninfo

        params = {key: value for key, value in self.options.items() if key in DEAD_PEER_KEYWORDS}
        params["dbname"] = self.dbname if dbname is None else dbname
        return make_conninfo("", **params)

    def where(self) -> str:
        """The server, for messages: ``127.0.0.1:5432`` or ``/run/postgresql:5432``."""
        return f"{self.host or 'the local socket'}:{self.port}" if self.port else self.host

    def describe(self, dbname: str | None = None) -> str:
        """Human description without the password."""
        who = f" as {self.user}" if self.user else ""
        return f"database {dbname or self.dbname!r} on {self.where()}{who}"


@cache
def libpq_variables() -> dict[str, str]:
    """libpq keyword -> its environment variable, as this libpq knows them."""
    from psycopg import pq

    return {
        option.keyword.decode(): option.envvar.decode()
        for option in pq.Conninfo.get_defaults()
        if option.envvar
    }
