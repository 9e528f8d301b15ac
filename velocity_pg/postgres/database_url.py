"""``DATABASE_URL``, as Django projects write it (django-environ, dj-database-url).

The Django Velocity template says where its database is in one line of
``.env``: ``DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/NAME``. velocity-pg
reads the same line as the lowest layer of its connection settings: each part
it has (host, port, user, password, database) is used only where no
``PG*``/``POSTGRES_*`` variable or option gives that part (see
:func:`velocity_pg.settings.settings_from_layers`).

Parsed as django-environ parses it (its ``db_url_config``): the schemes of its
PostgreSQL family, percent-encoded parts decoded, a socket folder as the host
(``postgres://%2Frun%2Fpostgresql/app`` or ``postgres:////run/postgresql/app``),
query parameters as libpq options (``?sslmode=require``), except Django's own
(``conn_max_age``, ...), which mean nothing to a backup. Pure: no libpq here;
:mod:`velocity_pg.postgres.endpoint` checks the option names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from velocity_pg.errors import ConfigError

#: django-environ's PostgreSQL schemes (``Env.POSTGRES_FAMILY``), all of them libpq's.
SCHEMES = frozenset(
    {"postgres", "postgresql", "psql", "pgsql", "postgis", "prometheus_postgresql"}
    | {"prometheus_postgis"}
)
#: Query parameters that configure Django, not the connection (django-environ's
#: ``_DB_BASE_OPTIONS``, and OPTIONS Django's postgres backend takes for itself).
DJANGO_OPTIONS = frozenset(
    {"conn_max_age", "atomic_requests", "autocommit", "disable_server_side_cursors"}
    | {"conn_health_checks", "isolation_level", "assume_role", "server_side_binding", "pool"}
)
#: Query parameters that name a part the URL also has a place for (libpq's URIs allow it).
_PARTS = ("host", "port", "user", "password", "dbname")


@dataclass(frozen=True)
class DatabaseUrl:
    """The parts of a ``DATABASE_URL``; ``None`` where the URL has none."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    #: Other query parameters, for libpq (``sslmode`` -> ``require``).
    options: dict[str, str] = field(default_factory=dict)


def parse(text: str, *, name: str = "DATABASE_URL") -> DatabaseUrl:
    """The parts of ``text``; a URL that is not PostgreSQL's or is malformed is refused.

    Messages never quote the URL (it holds the password); ``name`` is how they
    name the setting (``DATABASE_URL (in ./.env)``).
    """
    scheme, sep, _ = text.strip().partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        shown = f"{scheme}://" if sep else "no scheme"
        raise ConfigError(
            f"{name} is not a PostgreSQL URL ({shown}); write it as "
            "postgres://USER:PASSWORD@HOST:PORT/NAME, or unset it"
        )
    try:
        url = urlsplit(text.strip())
        port_number = url.port
    except ValueError:
        raise ConfigError(
            f"{name} is not a valid URL (a bad port or host); write it as "
            "postgres://USER:PASSWORD@HOST:PORT/NAME (percent-encode @ : / in the password)"
        ) from None
    hostport = url.netloc.rpartition("@")[2]
    host = hostport.rsplit(":", 1)[0] if port_number is not None else hostport
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    path = unquote_plus(url.path[1:]) if url.path.startswith("/") else ""
    if not host and path.startswith("/"):
        # postgres:////run/postgresql/app: the socket folder, then the database.
        host, _, path = path.rpartition("/")
    parts: dict[str, str | None] = {
        "host": unquote(host) or None,
        "port": None if port_number is None else str(port_number),
        "user": None if url.username is None else unquote(url.username) or None,
        "password": None if url.password is None else unquote(url.password) or None,
        "dbname": path or None,
    }
    options: dict[str, str] = {}
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        if key.lower() in DJANGO_OPTIONS:
            continue
        if key in _PARTS:
            parts[key] = value or None
        else:
            options[key] = value
    port = parts["port"]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"{name} has a port that is not between 1 and 65535; fix {name}")
    return DatabaseUrl(
        host=parts["host"],
        port=None if port is None else int(port),
        user=parts["user"],
        password=parts["password"],
        dbname=parts["dbname"],
        options=options,
    )
