"""The pure readers of tests/test_roles.py's machinery: the owners and grantees of a restore
script (pg_restore --schema-only), pg_dumpall --roles-only filtered to the roles a backup
needs, its parse, the statements that create missing roles, and the ACL filter of
``restore --owner``. No server: text as pg_dump, pg_restore and pg_dumpall print it."""

from __future__ import annotations

from pathlib import Path

from velocity_pg.postgres import roles as pgroles
from velocity_pg.restore import roles as restore_roles

SCRIPT = """
--
-- PostgreSQL database dump
--
\\restrict abc123
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE public.items (
    id integer NOT NULL,
    label text DEFAULT 'ALTER TABLE x OWNER TO nobody;'
);

ALTER TABLE public.items OWNER TO app;
ALTER TABLE public."Odd ""x"" t" OWNER TO "App Admin";
CREATE FUNCTION public.f() RETURNS text
    LANGUAGE sql
    AS $$SELECT 'GRANT ALL ON t TO ghost'$$;
ALTER FUNCTION public.f() OWNER TO app;
ALTER SCHEMA public OWNER TO pg_database_owner;
CREATE POLICY p ON public.items FOR SELECT TO reader, "Web Role" USING ((id > 0));
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT SELECT ON TABLE public.items TO reader;
GRANT SELECT,INSERT ON TABLE public.items TO writer WITH GRANT OPTION;
SET SESSION AUTHORIZATION grantor;
GRANT SELECT ON TABLE public.items TO viewer;
RESET SESSION AUTHORIZATION;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO auditor;
\\unrestrict abc123
"""


def test_owners_and_grantees_of_a_restore_script() -> None:
    found = pgroles.script_roles(SCRIPT)
    assert found.owners == {"app", "App Admin"}  # pg_database_owner is predefined
    assert found.grantees == {
        "reader",
        "Web Role",
        "writer",
        "grantor",
        "viewer",
        "app",
        "auditor",
    }
    assert "public" not in found.all and "nobody" not in found.all


def test_statements_keep_quoted_semicolons_and_skip_meta_commands() -> None:
    got = list(pgroles.statements("\\connect x\nCOMMENT ON ROLE a IS 'x; y''s';\nSELECT 1;"))
    assert got == ["COMMENT ON ROLE a IS 'x; y''s'", "SELECT 1"]


DUMPALL = """
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:abc' VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE base;
ALTER ROLE base WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE top;
ALTER ROLE top WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "Other Team";
ALTER ROLE "Other Team" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE app IS 'the app; its role';
ALTER ROLE app SET search_path TO 'app', 'public';

--
-- Role memberships
--

GRANT base TO app GRANTED BY postgres;
GRANT top TO base WITH ADMIN OPTION GRANTED BY postgres;
GRANT top TO "Other Team" GRANTED BY postgres;
"""  # noqa: E501 (pg_dumpall's lines are long)


def test_the_filter_keeps_the_needed_roles_and_what_they_are_members_of() -> None:
    body, kept = pgroles.filter_dumpall(DUMPALL, ["app", "ghost"])
    assert kept == ["app", "base", "top"]  # ghost: not on the server, left out
    assert "Other Team" not in body and "CREATE ROLE postgres" not in body
    assert "SET client_encoding" not in body
    assert "GRANT base TO app GRANTED BY postgres;" in body
    assert "GRANT top TO base WITH ADMIN OPTION GRANTED BY postgres;" in body
    assert "COMMENT ON ROLE app IS 'the app; its role';" in body
    assert "ALTER ROLE app SET search_path TO 'app', 'public';" in body
    assert pgroles.has_password(body)
    parsed = pgroles.parse_dumpall(body)
    assert set(parsed.roles) == {"app", "base", "top"}
    app = parsed.roles["app"]
    assert app.login and app.connection_limit == 5
    assert app.password == "SCRAM-SHA-256$4096:abc"
    assert app.valid_until == "2030-01-01 00:00:00+00"
    assert pgroles.Membership("top", "base", admin=True) in parsed.memberships


def test_a_quoted_role_is_kept_by_its_exact_name() -> None:
    _, kept = pgroles.filter_dumpall(DUMPALL, ["Other Team"])
    assert kept == ["Other Team", "top"]


def test_created_roles_are_nologin_unless_the_passwords_were_kept() -> None:
    parsed = pgroles.parse_dumpall(pgroles.filter_dumpall(DUMPALL, ["app"])[0])
    plain = [s.as_string(None) for s in pgroles.create_statements(["app"], parsed, passwords=False)]
    assert plain == [
        'CREATE ROLE "app" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOREPLICATION '
        "NOBYPASSRLS NOLOGIN CONNECTION LIMIT 5"
    ]
    kept = pgroles.create_statements(["app"], parsed, passwords=True)[0].as_string(None)
    assert " LOGIN " in kept and "PASSWORD 'SCRAM-SHA-256$4096:abc'" in kept
    unknown = pgroles.create_statements(['we"ird'], parsed, passwords=False)[0]
    assert unknown.as_string(None) == 'CREATE ROLE "we""ird" WITH NOLOGIN'
    grants, granted = pgroles.membership_statements(["app", "base"], parsed, {"app", "base", "top"})
    assert [g.as_string(None) for g in grants] == [
        'GRANT "base" TO "app"',
        'GRANT "top" TO "base" WITH ADMIN OPTION',
    ]
    assert len(granted) == 2


ACLS = """
SET statement_timeout = 0;
GRANT SELECT ON TABLE public.items TO reader;
GRANT SELECT ON TABLE public.items TO kept;
REVOKE ALL ON TABLE public.items FROM app;
SET SESSION AUTHORIZATION grantor;
GRANT UPDATE ON TABLE public.items TO kept;
RESET SESSION AUTHORIZATION;
ALTER DEFAULT PRIVILEGES FOR ROLE other IN SCHEMA public GRANT SELECT ON TABLES TO kept;
ALTER DEFAULT PRIVILEGES FOR ROLE staging_app GRANT SELECT ON TABLES TO kept;
"""


def test_owner_mode_leaves_out_the_privileges_of_missing_roles() -> None:
    kept, dropped = restore_roles.acl_statements(ACLS, ["reader", "app"], "staging_app")
    assert kept == [
        "SET statement_timeout = 0",
        "GRANT SELECT ON TABLE public.items TO kept",
        "GRANT UPDATE ON TABLE public.items TO kept",
        "ALTER DEFAULT PRIVILEGES FOR ROLE staging_app GRANT SELECT ON TABLES TO kept",
    ]
    assert dropped == 3  # reader's, app's, and other's default privileges


def test_a_roles_file_goes_with_its_dump(tmp_path: Path) -> None:
    from velocity_pg.store import catalog
    from velocity_pg.verbs import cleanup

    name = "velocity_2026-05-01_120000.dump"
    roles_name = name + ".roles.sql"
    assert not catalog.is_backup_name(roles_name)
    (tmp_path / roles_name).write_text("-- roles\n")
    assert cleanup.is_leftover_name(tmp_path, roles_name)  # its dump is gone: an orphan
    (tmp_path / name).write_bytes(b"PGDMP")
    assert not cleanup.is_leftover_name(tmp_path, roles_name)
    backup = catalog.list_backups(tmp_path)[0]
    assert tmp_path / roles_name in cleanup.backup_files(backup)  # deleted with it
