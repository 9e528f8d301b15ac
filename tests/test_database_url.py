"""DATABASE_URL, parsed as Django projects write it, and its place in the layers (pure)."""

from __future__ import annotations

import pytest

from velocity_pg.errors import ConfigError
from velocity_pg.postgres import database_url, endpoint
from velocity_pg.settings import Layer, settings_from_layers, settings_from_values


def test_the_templates_url() -> None:
    url = database_url.parse("postgres://postgres:postgres@db:5432/velocity")
    assert (url.host, url.port, url.user, url.password, url.dbname) == (
        "db",
        5432,
        "postgres",
        "postgres",
        "velocity",
    )
    assert url.options == {}
    assert "password=" not in repr(url)


@pytest.mark.parametrize(
    "scheme", ["postgres", "postgresql", "pgsql", "psql", "postgis", "POSTGRES"]
)
def test_every_postgres_scheme_of_django_environ(scheme: str) -> None:
    assert database_url.parse(f"{scheme}://u@h/d").dbname == "d"


@pytest.mark.parametrize(
    "text", ["mysql://u:p@h/d", "sqlite:///db.sqlite3", "db:5432/velocity", "velocity"]
)
def test_other_urls_are_refused_without_quoting_them(text: str) -> None:
    with pytest.raises(ConfigError, match="not a PostgreSQL URL") as caught:
        database_url.parse(text)
    assert "u:p" not in str(caught.value)


def test_percent_encoded_parts_are_decoded() -> None:
    url = database_url.parse("postgres://app%40corp:p%40ss%3Aw%2Frd%25@db/my%20db")
    assert url.user == "app@corp"
    assert url.password == "p@ss:w/rd%"
    assert url.dbname == "my db"


def test_missing_parts_are_none() -> None:
    url = database_url.parse("postgres://db")
    assert (url.host, url.port, url.user, url.password, url.dbname) == (
        "db",
        None,
        None,
        None,
        None,
    )
    only_db = database_url.parse("postgres:///velocity")
    assert (only_db.host, only_db.dbname) == (None, "velocity")
    no_password = database_url.parse("postgres://app@db:6543/x")
    assert (no_password.user, no_password.password, no_password.port) == ("app", None, 6543)
    empty_password = database_url.parse("postgres://app:@db/x")
    assert empty_password.password is None


def test_a_socket_folder_as_host() -> None:
    assert database_url.parse("postgres://%2Frun%2Fpostgresql/app").host == "/run/postgresql"
    url = database_url.parse("postgres:////run/postgresql/app")
    assert (url.host, url.dbname) == ("/run/postgresql", "app")


def test_ipv6_host() -> None:
    url = database_url.parse("postgres://u:p@[::1]:5433/d")
    assert (url.host, url.port) == ("::1", 5433)


def test_query_parameters_are_libpq_options_except_djangos_own() -> None:
    url = database_url.parse(
        "postgres://u:p@db/d?sslmode=require&conn_max_age=600&CONN_HEALTH_CHECKS=true"
        "&connect_timeout=5"
    )
    assert url.options == {"sslmode": "require", "connect_timeout": "5"}
    # A part given as a query parameter, as libpq's URIs allow.
    assert database_url.parse("postgres:///d?host=/tmp&port=5444").host == "/tmp"


@pytest.mark.parametrize("text", ["postgres://u:p@db:99999/d", "postgres://u:p@db:x/d"])
def test_a_bad_port_is_refused_without_the_password(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        database_url.parse(text)
    assert ":p@" not in str(caught.value)


def test_an_unknown_query_parameter_is_refused() -> None:
    settings = settings_from_values({"DATABASE_URL": "postgres://u:p@db/d?no_such_option=1"})
    with pytest.raises(ConfigError, match="'no_such_option'"):
        endpoint.request_for(settings.connection)


def test_it_is_the_lowest_layer_of_connection_settings() -> None:
    url = "postgres://urluser:urlpw@urlhost:6000/urldb?sslmode=require"
    only_url = settings_from_values({"DATABASE_URL": url}).connection
    assert (only_url.host, only_url.port, only_url.user, only_url.dbname) == (
        "urlhost",
        6000,
        "urluser",
        "urldb",
    )
    assert only_url.password == "urlpw"
    # Every PG*/POSTGRES_* name wins, part by part, in any layer, even one below the URL's.
    layers = [
        Layer({"DATABASE_URL": url, "POSTGRES_USER": "envuser"}, "the environment"),
        Layer({"PGHOST": "filehost", "POSTGRES_PASSWORD": "filepw", "POSTGRES_DB": "f"}, ".env"),
    ]
    mixed = settings_from_layers(layers).connection
    assert (mixed.host, mixed.port, mixed.user, mixed.dbname) == ("filehost", 6000, "envuser", "f")
    assert mixed.password == "filepw"
    # Its database comes before the fallback to the database named after POSTGRES_USER.
    user_only = settings_from_values({"DATABASE_URL": url, "POSTGRES_USER": "x"}).connection
    assert user_only.dbname == "urldb"


def test_its_options_go_to_libpq_under_any_pg_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    settings = settings_from_values(
        {"DATABASE_URL": "postgres://u@h/d?sslmode=require&keepalives=1&connect_timeout=3"}
    )
    request = endpoint.request_for(settings.connection)
    assert request.environment["PGSSLMODE"] == "require"
    assert request.parameters["keepalives"] == "1"  # no variable: a parameter
    monkeypatch.setenv("PGSSLMODE", "disable")  # the process environment wins
    assert "PGSSLMODE" not in endpoint.request_for(settings.connection).environment


def test_a_bad_url_is_named_by_where_it_came_from() -> None:
    layers = [Layer({"DATABASE_URL": "mysql://u:secret@h/d"}, "./.env")]
    with pytest.raises(ConfigError, match=r"DATABASE_URL \(in \./\.env\)") as caught:
        settings_from_layers(layers)
    assert "secret" not in str(caught.value)
