"""The restore's pure parts, without a server: names, plans, parsing, the countdown."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from velocity_pg.postgres import pgtools
from velocity_pg.restore import staging
from velocity_pg.restore.console import Console, countdown
from velocity_pg.restore.plan import refuse_target
from velocity_pg.restore.progress import RestoreProgress, parse_toc
from velocity_pg.restore.properties import (
    DatabaseProps,
    Grant,
    RoleSetting,
    create_database_sql,
    ordered_grants,
    property_statements,
    setting_assignment,
    split_guc_list,
)

NAMES = ["app", "App", 'my "quoted" db', "o'brien db", "dash-ed", "x" * 63, "Ünïcødé ✓"]


@pytest.mark.parametrize("target", NAMES)
def test_staging_names_are_plain_fixed_and_recognizable(target: str) -> None:
    for name in (staging.staging_name(target), staging.aside_name(target)):
        # Never needs quoting, never read as a conninfo string, fits NAMEDATALEN.
        assert re.fullmatch(r"[a-z0-9_]+", name)
        assert len(name.encode()) <= 63
        assert staging.is_internal_name(name)
    assert staging.staging_name(target) == staging.staging_name(target)
    assert staging.staging_name(target) != staging.aside_name(target)
    assert not staging.is_internal_name(target)


def test_staging_names_differ_per_target() -> None:
    assert len({staging.staging_name(t) for t in NAMES}) == len(NAMES)
    assert len({staging.lock_key(t) for t in NAMES}) == len(NAMES)
    for target in NAMES:
        assert -(2**63) <= staging.lock_key(target) < 2**63


def test_refuses_system_and_internal_targets() -> None:
    from velocity_pg.errors import ConfigError

    for name in ("template0", "template1", staging.staging_name("app")):
        with pytest.raises(ConfigError):
            refuse_target(name)
    refuse_target("postgres")  # allowed: restored through template1


def test_pg_restore_argv() -> None:
    cmd = pgtools.pg_restore_cmd("pg_restore", Path("/b/x.dump"), "stg", jobs=4, verbose=True)
    assert cmd == shlex.split(
        "pg_restore --exit-on-error --no-password --dbname=stg --jobs=4 --verbose /b/x.dump"
    )
    assert pgtools.pg_restore_list_cmd("pg_restore", Path("/b/x.dump")) == shlex.split(
        "pg_restore --list /b/x.dump"
    )


LISTING = """\
;
; Archive created at 2026-11-25 16:26:38 UTC
;     dbname: src
;     TOC Entries: 24
;     Compression: 9
;     Format: CUSTOM
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;
; Selected TOC Entries:
;
6; 2615 16387 SCHEMA - shop postgres
216; 1259 16389 TABLE public customers postgres
3358; 0 16389 TABLE DATA public customers postgres
3362; 0 0 BLOBS - BLOBS
3208; 1259 16397 INDEX public customers_name_idx postgres
"""


def test_parse_toc() -> None:
    toc = parse_toc(LISTING)
    assert toc.entries == 5
    assert toc.entry_ids == {6, 216, 3358, 3362, 3208}
    assert toc.dbname == "src"
    assert toc.format == "CUSTOM"
    assert toc.dumped_from == "15.18 (Debian 15.18-0+deb12u1)"
    assert toc.created_at == "2026-11-25 16:26:38 UTC"
    assert parse_toc("").entries == 0


SERIAL = """\
pg_restore: connecting to database for restore
pg_restore: creating SCHEMA "shop"
pg_restore: creating TABLE "public.customers"
pg_restore: processing data for table "public.customers"
pg_restore: processing BLOBS
pg_restore: restoring large object with OID 16413
pg_restore: restored 1 large object
pg_restore: creating INDEX "public.customers_name_idx"
"""

PARALLEL = """\
pg_restore: connecting to database for restore
pg_restore: processing item 3365 ENCODING ENCODING
pg_restore: processing item 3368 DATABASE src
pg_restore: processing item 6 SCHEMA shop
pg_restore: creating SCHEMA "shop"
pg_restore: processing item 216 TABLE customers
pg_restore: creating TABLE "public.customers"
pg_restore: entering main parallel loop
pg_restore: launching item 3358 TABLE DATA customers
pg_restore: processing data for table "public.customers"
pg_restore: finished item 3358 TABLE DATA customers
pg_restore: launching item 3362 BLOBS BLOBS
pg_restore: processing BLOBS
pg_restore: finished item 3362 BLOBS BLOBS
pg_restore: launching item 3208 INDEX customers_name_idx
pg_restore: creating INDEX "public.customers_name_idx"
pg_restore: finished item 3208 INDEX customers_name_idx
pg_restore: finished main parallel loop
"""


@pytest.mark.parametrize("output", [SERIAL, PARALLEL], ids=["serial", "parallel"])
def test_progress_counts_objects_of_the_listing(output: str) -> None:
    toc = parse_toc(LISTING)
    progress = RestoreProgress(total=toc.entries, entry_ids=toc.entry_ids)
    seen = []
    for line in output.splitlines(keepends=True):
        if progress.feed(line):
            seen.append(progress.done)
    assert seen == sorted(seen)  # only ever goes up
    assert progress.done == 5
    assert progress.describe() == "5/5 objects (100%)"


def test_progress_is_capped_and_finishes() -> None:
    progress = RestoreProgress(total=2)
    for _ in range(5):
        progress.feed('pg_restore: creating TABLE "a"\n')
    assert progress.done == 2
    fresh = RestoreProgress(total=7)
    fresh.feed("pg_restore: connecting to database for restore\n")
    assert fresh.describe() == "0/7 objects (0%)"
    fresh.finish()
    assert fresh.done == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public", ["public"]),
        ('public, "my schema"', ["public", "my schema"]),
        ('"$user", public', ["$user", "public"]),
        ('""', [""]),
        ("", []),
        ('"a""b", c', ['a"b', "c"]),
        ('"x,y" ,  z', ["x,y", "z"]),
        ("Upper", ["Upper"]),  # no downcasing
        ('"unterminated', None),
        ("a b", None),
        ("a,", None),
    ],
)
def test_split_guc_list_matches_postgres(text: str, expected: list[str] | None) -> None:
    assert split_guc_list(text) == expected


@pytest.mark.parametrize(
    ("entry", "sql"),
    [
        ("work_mem=7MB", "\"work_mem\" = '7MB'"),
        ('search_path=public, "my schema"', "\"search_path\" = 'public', 'my schema'"),
        ('search_path=""', "\"search_path\" = ''"),
        ("myapp.flag=it's", "\"myapp.flag\" = 'it''s'"),
        ("statement_timeout=5s", "\"statement_timeout\" = '5s'"),
        ("TimeZone=Europe/Paris", "\"TimeZone\" = 'Europe/Paris'"),
    ],
)
def test_setting_assignment_like_pg_dump(entry: str, sql: str) -> None:
    assert setting_assignment(entry).as_string(None) == sql


def test_setting_assignment_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a setting"):
        setting_assignment("no equals sign")


OLD = DatabaseProps(
    oid=1,
    name="app db",
    owner="app owner",
    encoding="UTF8",
    collate="C.UTF-8",
    ctype="C.UTF-8",
    tablespace="pg_default",
    conn_limit=42,
    comment="the app's db",
    acl=(
        Grant("app owner", "app owner", "CONNECT", False),
        Grant("helper", "reader", "CONNECT", False),
        Grant("app owner", "helper", "CONNECT", True),
        Grant("app owner", None, "TEMPORARY", False),
    ),
    settings=(
        RoleSetting(None, ("work_mem=7MB",)),
        RoleSetting("reader", ("statement_timeout=5s",)),
    ),
)


def test_property_statements_plan() -> None:
    stmts = [s.as_string(None) for s in property_statements("x", OLD, owner="me", as_grantors=True)]
    assert stmts == [
        'ALTER DATABASE "x" OWNER TO "app owner"',
        'ALTER DATABASE "x" WITH CONNECTION LIMIT 42',
        'ALTER DATABASE "x" SET "work_mem" = \'7MB\'',
        'ALTER ROLE "reader" IN DATABASE "x" SET "statement_timeout" = \'5s\'',
        'REVOKE ALL ON DATABASE "x" FROM PUBLIC',
        'REVOKE ALL ON DATABASE "x" FROM "app owner"',
        'GRANT CONNECT ON DATABASE "x" TO "app owner"',
        'GRANT CONNECT ON DATABASE "x" TO "helper" WITH GRANT OPTION',
        'GRANT TEMPORARY ON DATABASE "x" TO PUBLIC',
        'SET ROLE "helper"',
        'GRANT CONNECT ON DATABASE "x" TO "reader"',
        "RESET ROLE",
        "COMMENT ON DATABASE \"x\" IS 'the app''s db'",
    ]


def test_property_statements_for_defaults_only_reset_the_comment() -> None:
    plain = DatabaseProps(
        oid=1, name="a", owner="me", encoding="UTF8", collate="C", ctype="C", tablespace="t"
    )
    stmts = property_statements("a", plain, owner="me", as_grantors=False)
    assert [s.as_string(None) for s in stmts] == ['COMMENT ON DATABASE "a" IS NULL']


def test_ordered_grants_puts_grant_options_first() -> None:
    ordered = ordered_grants(OLD.acl or (), "app owner")
    helper_gets = ordered.index(Grant("app owner", "helper", "CONNECT", True))
    helper_gives = ordered.index(Grant("helper", "reader", "CONNECT", False))
    assert helper_gets < helper_gives
    assert sorted(ordered, key=repr) == sorted(OLD.acl or (), key=repr)


def test_create_database_sql_names_only_a_non_default_tablespace() -> None:
    plain = DatabaseProps(
        oid=1, name="a", owner="o", encoding="UTF8", collate="C", ctype="C", tablespace="pg_default"
    )
    assert create_database_sql("stg", plain).as_string(None) == (
        'CREATE DATABASE "stg" TEMPLATE template0 OWNER "o" ENCODING \'UTF8\' '
        "LC_COLLATE 'C' LC_CTYPE 'C'"
    )


def test_create_database_sql() -> None:
    assert create_database_sql("stg", None).as_string(None) == (
        'CREATE DATABASE "stg" TEMPLATE template0'
    )
    icu = DatabaseProps(
        oid=1,
        name="a",
        owner="o",
        encoding="UTF8",
        collate="en_US.UTF-8",
        ctype="en_US.UTF-8",
        tablespace="fast disk",
        locale_provider="i",
        locale="und-x-icu",
    )
    assert create_database_sql("stg", icu).as_string(None) == (
        'CREATE DATABASE "stg" TEMPLATE template0 OWNER "o" ENCODING \'UTF8\' '
        "LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' TABLESPACE \"fast disk\" "
        "LOCALE_PROVIDER icu ICU_LOCALE 'und-x-icu'"
    )


def test_countdown_prints_one_line_a_second() -> None:
    out = io.StringIO()
    naps: list[float] = []
    countdown(Console(out, tty=False), 5, sleep=naps.append)
    assert naps == [1, 1, 1, 1, 1]
    assert out.getvalue().splitlines() == [
        "velocity-pg: starting in 5 s; press Ctrl+C to cancel",
        "velocity-pg: 4...",
        "velocity-pg: 3...",
        "velocity-pg: 2...",
        "velocity-pg: 1...",
    ]


def test_progress_line_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    Console(quiet, tty=False).progress("restoring: 1/2 objects (50%)", force=True)
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    console = Console(loud, tty=True)
    console.progress("restoring: 1/2 objects (50%)", force=True)
    console.say("done")
    assert loud.getvalue() == (
        "\r\033[Kvelocity-pg: restoring: 1/2 objects (50%)\nvelocity-pg: done\n"
    )


def test_archive_entries_tables_and_matching() -> None:
    from velocity_pg.restore.archive import missing_tables, parse_entries, use_list

    listing = """;
; Archive created at 2026-11-25 16:00:00 UTC
;
6; 2615 16403 SCHEMA - DATA postgres
215; 1259 16386 TABLE public customers postgres
216; 1259 16390 TABLE shop my orders app owner
221; 1259 16404 TABLE DATA x postgres
218; 1259 16388 TABLE public ev_2026 postgres
219; 1259 16397 TABLE public new line postgres
217; 1259 16400 SEQUENCE public customers_id_seq postgres
223; 1259 16411 MATERIALIZED VIEW DATA mv postgres
3237; 0 0 TABLE ATTACH public ev_2026 postgres
3300; 0 16386 TABLE DATA public customers postgres
3392; 0 16411 MATERIALIZED VIEW DATA public mv postgres
"""
    entries = parse_entries(listing)
    assert [e.dump_id for e in entries if e.is_table] == [215, 216, 221, 218, 219]
    assert [e.dump_id for e in entries if e.is_matview_data] == [3392]
    assert [e.shown_name() for e in entries if e.is_matview_data] == ["public mv"]
    present = [
        ("public", "customers"),
        ("shop", "my orders"),
        ("DATA", "x"),  # a schema named DATA: a table, not table data
        ("public", "ev_2026"),
        ("public", "new\nline"),  # printed with a space for the newline
    ]
    assert missing_tables(entries, present) == []
    assert missing_tables(entries, present[1:]) == ["public customers"]
    assert missing_tables(entries, [("public", "customer"), *present[1:]]) == ["public customers"]
    # Two archive tables, one catalog name that could match either: by count.
    twins = parse_entries("1; 1259 1 TABLE s a b o\n2; 1259 2 TABLE s a o\n")
    assert missing_tables(twins, [("s", "a")]) == ["1 of 2 (by count)"]
    assert use_list([e for e in entries if not e.is_matview_data]).splitlines()[:3] == [
        "6",
        "215",
        "216",
    ]


def test_drill_names_are_internal() -> None:
    from velocity_pg.restore import staging

    name = staging.drill_name("0123456789abcdef")
    assert name == "velocity_pg_verify_0123456789abcdef"
    assert staging.is_internal_name(name)
    assert staging.drill_lock_key(name) != staging.lock_key(name)


@pytest.mark.parametrize("target", NAMES)
def test_unfinished_copy_comments_are_recognized_for_their_target_only(target: str) -> None:
    running = staging.staging_comment(target, 123, "host")
    failed = staging.failed_comment(target, "disk full")
    for comment in (running, failed):
        assert staging.is_unfinished_copy_of(comment, target)
        assert not staging.is_unfinished_copy_of(comment, target + "x")
    for other in (None, "", "our archive", staging.kept_comment(target)):
        assert not staging.is_unfinished_copy_of(other, target)


def test_status_lines_for_unmarked_copies_and_slots_on_the_rollback_point() -> None:
    from datetime import UTC, datetime

    from velocity_pg.restore import marks
    from velocity_pg.restore.copies import Copy, Report

    now = datetime.now(UTC)
    unmarked = Report(
        database="app",
        staged=Copy("velocity_pg_staging_x", 1024, None, None),
        rollback=Copy("velocity_pg_previous_x", 2048, "mine", None),
    )
    staged_line, rollback_line = unmarked.lines(now)
    assert staged_line.startswith("Staged copy:   database velocity_pg_staging_x (1.0 KiB)")
    assert rollback_line.startswith("Rollback point: database velocity_pg_previous_x (2.0 KiB)")
    for line in (staged_line, rollback_line):
        assert "no velocity-pg mark" in line and "--abort" not in line and "--forget" not in line
    mark = marks.RollbackMark("app", "restore", "x.dump", marks.now_iso(now), "me")
    rollback = Copy("velocity_pg_previous_x", 2048, marks.rollback_comment(mark), mark)
    with_slots = Report(
        database="app",
        rollback=rollback,
        rollback_slots=(("sub_a", 3 * 1024 * 1024), ("sub_b", None)),
    )
    lines = with_slots.lines(now)
    assert "keeps 3.0 MiB of WAL from being removed" in lines[2]
    assert "SELECT pg_drop_replication_slot('sub_a')" in lines[2]
    assert "sub_b" in lines[3] and "reserves no WAL yet" in lines[3]
    slots = with_slots.to_json(now)["rollback_point"]
    assert slots["replication_slots"] == [  # type: ignore[index]
        {"name": "sub_a", "retained_wal_bytes": 3 * 1024 * 1024},
        {"name": "sub_b", "retained_wal_bytes": None},
    ]
