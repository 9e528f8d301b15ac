"""Staged restores and rollback points against a real server.

``restore NAME --stage`` builds the copy while the live database serves;
``restore NAME`` then only swaps it in, and only if it is a complete copy of
that very file. The previous contents become the rollback point, which
``restore --undo`` swaps back (and an undo can be undone). Faults are real: a
staging killed with SIGKILL during pg_restore, a file replaced under the same
name, a pg_restore failing halfway.
"""

from __future__ import annotations

import json
import shutil
import uuid

import psycopg
import pytest
from conftest import (
    Target,
    create_database,
    drop_copies_of,
    drop_database,
    load_varied_schema,
    slow_table_sql,
    table_contents,
    wait_for_sleep_in,
)
from psycopg import sql

from velocity_pg.restore import marks, staging
from velocity_pg.store import manifest


def backup(target: Target) -> str:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["name"])


def contents(target: Target, dbname: str | None = None) -> dict[str, list[tuple[object, ...]]]:
    with target.connect(dbname) as conn:
        return table_contents(conn)


def ours(target: Target) -> dict[str, tuple[int, str | None]]:
    """This target's velocity-pg databases: name -> (oid, comment)."""
    names = [
        staging.staging_name(target.dbname),
        staging.aside_name(target.dbname),
        staging.previous_name(target.dbname),
    ]
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname, oid, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = ANY(%s)",
            (names,),
        ).fetchall()
    return {str(r[0]): (int(r[1]), r[2]) for r in rows}


def mark_of(target: Target, name: str) -> marks.Mark | None:
    return marks.parse_comment(ours(target)[name][1])


def write_something(target: Target, note: str) -> None:
    with target.connect() as conn:
        conn.execute("INSERT INTO public.customers (name) VALUES (%s)", (note,))


def run_ok(target: Target, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    result = target.run(*args, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.fixture
def schema(target: Target) -> Target:
    load_varied_schema(target)
    return target


# -- stage, swap, undo, undo again ------------------------------------------------------


def test_stage_write_swap_undo_and_undo_again(schema: Target) -> None:
    target = schema
    restored = contents(target)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
    stg, previous = staging.staging_name(target.dbname), staging.previous_name(target.dbname)
    live_oid = {}

    out, err = run_ok(target, "restore", name, "--stage")
    assert f"Staged {name} for database {target.dbname!r}" in out
    assert f"`velocity-pg restore {name}`" in out
    assert "starting in" not in err  # no countdown: nothing live changes
    mark = mark_of(target, stg)
    assert isinstance(mark, marks.StagedMark)
    assert (mark.backup, mark.database) == (name, target.dbname)
    assert mark.sha256 == manifest.sha256_file(target.backup_dir / name)[0]
    assert mark.by and mark.at
    assert contents(target, stg) == restored

    # The live database serves and takes writes while the copy waits.
    write_something(target, "written while staged")
    live_before = contents(target)
    with target.connect("postgres") as conn:
        row = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = %s", (target.dbname,)
        ).fetchone()
        assert row is not None
        live_oid["before"] = row[0]

    out, err = run_ok(target, "restore", name, "--yes")
    assert "restoring into a new database" not in err  # no pg_restore: only the swap
    assert f"using {stg}, the complete copy of {name}" in err
    assert "by swapping in the copy staged earlier" in out
    assert f"kept as database {previous}" in out
    assert "while the copy was being staged" in out
    assert "restore --undo" in out
    assert contents(target) == restored
    assert contents(target, previous) == live_before  # the write is in the rollback point
    assert ours(target)[previous][0] == live_oid["before"]
    rollback = mark_of(target, previous)
    assert isinstance(rollback, marks.RollbackMark)
    assert (rollback.replaced_by, rollback.backup) == ("restore", name)
    assert stg not in ours(target)

    status = run_ok(target, "status")[0]
    assert f"Rollback point: contents before the restore of {name}" in status
    assert "Staged copy:   none" in status

    out, err = run_ok(target, "restore", "--undo", "--yes")
    assert f"Undone: database {target.dbname!r}" in out
    assert contents(target) == live_before
    assert contents(target, previous) == restored
    undone = mark_of(target, previous)
    assert isinstance(undone, marks.RollbackMark)
    assert undone.replaced_by == "undo"

    run_ok(target, "restore", "--undo", "--yes")  # undo the undo
    assert contents(target) == restored
    assert contents(target, previous) == live_before
    assert set(ours(target)) == {previous}


def test_undo_counts_down_and_checks(schema: Target) -> None:
    target = schema
    name = backup(target)
    refused = target.run("restore", "--undo", "--yes")
    assert refused.returncode == 1
    assert "has no rollback point" in refused.stderr
    run_ok(target, "restore", name, "--yes")
    before = ours(target)
    out, err = run_ok(target, "restore", "--undo", "--check")
    assert "starting in" not in err  # a check starts nothing: no countdown
    assert "Check passed" in out
    assert ours(target) == before
    usage = target.run("restore", name, "--undo")
    assert usage.returncode == 2
    out, err = run_ok(target, "restore", "--undo")  # without --yes: the countdown, then the undo
    assert "starting in 5 s" in err
    assert "Undone" in out


def test_undo_keeps_the_live_database_settings_and_comment(schema: Target) -> None:
    target = schema
    name = backup(target)
    db = sql.Identifier(target.dbname)
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '5MB'").format(db))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the app'").format(db))
    run_ok(target, "restore", name, "--yes")
    run_ok(target, "restore", "--undo", "--yes")
    with target.connect() as conn:
        row = conn.execute(
            "SELECT shobj_description(d.oid, 'pg_database'), s.setconfig FROM pg_database d "
            "LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 "
            "WHERE d.datname = current_database()"
        ).fetchone()
    assert row == ("the app", ["work_mem=5MB"])


# -- a staged copy is used only for the very same file ---------------------------------------


def test_staged_copy_of_another_backup_is_dropped_and_rebuilt(schema: Target) -> None:
    target = schema
    first = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 100")
    wanted = contents(target)
    second = backup(target)
    run_ok(target, "restore", first, "--stage")
    _out, err = run_ok(target, "restore", second, "--yes")
    assert "another backup" in err and first in err
    assert f"dropped {staging.staging_name(target.dbname)}" in err
    assert "restoring into a new database" in err
    assert contents(target) == wanted


def test_staged_copy_of_a_file_changed_since_is_rebuilt(schema: Target) -> None:
    """Same name, other content (and a matching manifest): the SHA-256 tells."""
    target = schema
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 100")
    wanted = contents(target)
    other = backup(target)
    run_ok(target, "restore", name, "--stage")
    folder = target.backup_dir
    shutil.copyfile(folder / other, folder / name)
    shutil.copyfile(manifest.path_for(folder / other), manifest.path_for(folder / name))
    _out, err = run_ok(target, "restore", name, "--yes")
    assert "has changed since it was staged" in err
    assert "restoring into a new database" in err
    assert contents(target) == wanted


def test_staging_killed_during_pg_restore_is_detected_and_rebuilt(schema: Target) -> None:
    target = schema
    with target.connect() as conn:
        conn.execute(slow_table_sql(r"velocity\_pg\_staging\_%"))
    wanted = contents(target)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders")
    live = contents(target)
    proc = target.popen(
        "restore", name, "--stage", env=target.env(PGOPTIONS="-c velocity_test.delay=60")
    )
    try:
        wait_for_sleep_in(target, r"velocity\_pg\_staging\_%")
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    stg = staging.staging_name(target.dbname)
    assert stg in ours(target)
    assert mark_of(target, stg) is None  # never marked complete
    assert contents(target) == live
    status = run_ok(target, "status")[0]
    assert "Staged copy:   unfinished" in status

    _out, err = run_ok(target, "restore", name, "--yes")
    assert f"dropped {stg}, the unfinished copy" in err
    assert "restoring into a new database" in err
    assert contents(target) == wanted


def test_stage_of_an_already_staged_file_does_nothing(schema: Target) -> None:
    target = schema
    name = backup(target)
    run_ok(target, "restore", name, "--stage")
    before = ours(target)
    out, _err = run_ok(target, "restore", name, "--stage", "--yes")
    assert "was already staged" in out
    assert ours(target) == before


def test_failed_staging_changes_nothing(schema: Target) -> None:
    target = schema
    with target.connect() as conn:  # data that does not compress: most of the file
        conn.execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t "
            "FROM generate_series(1, 20000) g"
        )
        # A CHECK that fails in the staging database only (PGOPTIONS reaches pg_restore):
        # a truncated dump no longer gets this far (restore --check reads every block).
        conn.execute(slow_table_sql(r"velocity\_pg\_staging\_%"))
    name = backup(target)
    before = contents(target)
    result = target.run(
        "restore", name, "--stage", env=target.env(PGOPTIONS="-c velocity_test.delay=x")
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "pg_restore failed" in last and "the unfinished copy was dropped" in last, last
    assert contents(target) == before
    assert ours(target) == {}


# -- abort, forget, BACKUP_KEEP_PREVIOUS -----------------------------------------------------


def test_abort_drops_the_staged_copy(schema: Target) -> None:
    target = schema
    name = backup(target)
    before = contents(target)
    run_ok(target, "restore", name, "--stage")
    status = run_ok(target, "status", "--json")[0]
    staged = json.loads(status)["restore"]["staged_copy"]
    assert staged["backup"] == name and staged["size_bytes"] > 0 and staged["age_seconds"] >= 0
    text = run_ok(target, "status")[0]
    assert f"Staged copy:   {name} (" in text

    out, _err = run_ok(target, "restore", "--abort")
    assert f"Dropped the staged copy of database {target.dbname!r}" in out
    assert ours(target) == {}
    assert contents(target) == before
    again = run_ok(target, "restore", "--abort")[0]
    assert "has no staged copy" in again


def test_forget_drops_the_rollback_point(schema: Target) -> None:
    target = schema
    name = backup(target)
    run_ok(target, "restore", name, "--yes")
    previous = staging.previous_name(target.dbname)
    assert previous in ours(target)
    report = json.loads(run_ok(target, "status", "--json")[0])["restore"]
    assert report["rollback_point"]["restored_backup"] == name
    assert report["rollback_point"]["size_bytes"] > 0
    out, _err = run_ok(target, "restore", "--forget")
    assert f"Dropped the rollback point of database {target.dbname!r}, {previous}" in out
    assert ours(target) == {}
    assert target.run("restore", "--undo", "--yes").returncode == 1


@pytest.mark.parametrize("how", ["env", "option"])
def test_keep_previous_false_drops_the_previous_contents(schema: Target, how: str) -> None:
    target = schema
    name = backup(target)
    if how == "env":
        out, _err = run_ok(
            target, "restore", name, "--yes", env=target.env(BACKUP_KEEP_PREVIOUS="false")
        )
    else:
        out, _err = run_ok(target, "restore", name, "--yes", "--no-keep-previous")
    assert "rollback point" not in out
    assert ours(target) == {}


def test_keep_previous_must_be_true_or_false(schema: Target) -> None:
    result = schema.run("restore", "x", "--yes", env=schema.env(BACKUP_KEEP_PREVIOUS="maybe"))
    assert result.returncode == 2
    assert "BACKUP_KEEP_PREVIOUS" in result.stderr


def test_keep_previous_false_leaves_an_older_rollback_point(schema: Target) -> None:
    target = schema
    name = backup(target)
    run_ok(target, "restore", name, "--yes")
    before = ours(target)
    out, _err = run_ok(target, "restore", name, "--yes", "--no-keep-previous")
    assert "is left as it was" in out
    assert ours(target) == before


def test_a_second_restore_replaces_the_rollback_point(schema: Target) -> None:
    target = schema
    name = backup(target)
    previous = staging.previous_name(target.dbname)
    write_something(target, "before the first restore")
    run_ok(target, "restore", name, "--yes")
    first_oid = ours(target)[previous][0]
    write_something(target, "before the second restore")
    live_before = contents(target)
    out, err = run_ok(target, "restore", name, "--yes")
    assert "a database keeps one rollback point" in err
    assert "The older rollback point" in out and "was dropped" in out
    assert set(ours(target)) == {previous}
    assert ours(target)[previous][0] != first_oid
    assert contents(target, previous) == live_before


def test_rollback_point_of_one_database_is_never_touched_by_another(
    schema: Target, postgresql_proc: object
) -> None:
    a = schema
    name_a = backup(a)
    run_ok(a, "restore", name_a, "--yes")
    previous_a = staging.previous_name(a.dbname)
    rollback_a = ours(a)[previous_a]
    contents_a = contents(a, previous_a)

    other = f"vt_other_{uuid.uuid4().hex[:8]}"
    create_database(postgresql_proc, other)
    b = Target(**{**a.__dict__, "dbname": other})
    try:
        load_varied_schema(b)
        name_b = backup(b)
        for args in (
            ("restore", name_b, "--stage"),
            ("restore", name_b, "--yes"),
            ("restore", name_b, "--yes"),
            ("restore", "--undo", "--yes"),
            ("restore", "--forget"),
            ("restore", "--abort"),
        ):
            run_ok(b, *args)
            assert ours(a)[previous_a] == rollback_a, args
            assert contents(a, previous_a) == contents_a
    finally:
        drop_database(postgresql_proc, other)
        drop_copies_of(postgresql_proc, other)


def test_a_restore_running_holds_off_abort_and_forget(schema: Target) -> None:
    target = schema
    with target.connect() as conn:
        conn.execute(slow_table_sql(r"velocity\_pg\_staging\_%"))
    name = backup(target)
    proc = target.popen(
        "restore", name, "--stage", env=target.env(PGOPTIONS="-c velocity_test.delay=60")
    )
    try:
        wait_for_sleep_in(target, r"velocity\_pg\_staging\_%")
        for verb in ("--abort", "--forget"):
            busy = target.run("restore", verb)
            assert busy.returncode == 1, verb
            assert "is running" in busy.stderr, busy.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert ours(target) == {}


def test_abort_and_forget_refuse_a_database_that_only_has_the_name(schema: Target) -> None:
    """Issue 17, item 9: like --undo, --abort and --forget drop only what velocity-pg marked.
    A database under the staged copy's or the rollback point's name without the mark (its
    comment overwritten, or not ours) is refused: one line, exit 1, nothing dropped."""
    target = schema
    stg, previous = staging.staging_name(target.dbname), staging.previous_name(target.dbname)
    other = marks.RollbackMark("someone_else", "restore", "x.dump", marks.now_iso(), "me")
    comments = {stg: None, previous: "our archive of March, do not drop"}
    for name, comment in comments.items():
        with target.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if comment is not None:
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(comment)
                    )
                )
        with target.connect(name) as conn:
            conn.execute("CREATE TABLE precious (x int); INSERT INTO precious VALUES (1)")
    before = ours(target)

    def refused(verb: str, name: str) -> None:
        result = target.run("restore", verb)
        assert result.returncode == 1, result.stdout + result.stderr
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("velocity-pg: error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"database {name} " in errors[0] and "no velocity-pg mark" in errors[0]
        assert errors[0].endswith("nothing was changed")
        assert ours(target) == before
        with target.connect(name) as conn:
            assert conn.execute("SELECT x FROM precious").fetchall() == [(1,)]

    refused("--abort", stg)
    refused("--forget", previous)
    refused("--undo", previous)  # as it always did, in the same words
    status = run_ok(target, "status")[0]
    assert f"Staged copy:   database {stg} " in status
    assert f"Rollback point: database {previous} " in status
    assert status.count("no velocity-pg mark") == 2
    # A mark of another database is no mark of this one's.
    with target.connect("postgres") as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(previous), sql.Literal(marks.rollback_comment(other))
            )
        )
    before = ours(target)
    refused("--forget", previous)
    # velocity-pg's own unfinished copy (a killed --stage) is still dropped by --abort.
    with target.connect("postgres") as conn:
        unfinished = staging.staging_comment(target.dbname, 1, "host")
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(stg), sql.Literal(unfinished)
            )
        )
    assert "Staged copy:   unfinished" in run_ok(target, "status")[0]
    out, _err = run_ok(target, "restore", "--abort")
    assert f"Dropped the staged copy of database {target.dbname!r}, {stg}" in out
    assert set(ours(target)) == {previous}


def test_status_without_a_server_still_reports_the_folder(target: Target) -> None:
    result = target.run("status", env=target.env(PGPORT="1", PGHOST="127.0.0.1"))
    assert result.returncode == 0, result.stderr
    assert "Restore copies: not known" in result.stdout


def test_marks_round_trip_and_garbage() -> None:
    staged = marks.StagedMark("app", "velocity_x.dump", "ab" * 32, 10, marks.now_iso(), "me")
    assert marks.parse_comment(marks.staged_comment(staged)) == staged
    rollback = marks.RollbackMark("app", "restore", "velocity_x.dump", marks.now_iso(), "me")
    assert marks.parse_comment(marks.rollback_comment(rollback)) == rollback
    for junk in (None, "", "hello", "x\nvelocity-pg-mark {", 'x\nvelocity-pg-mark {"kind": 1}'):
        assert marks.parse_comment(junk) is None
    assert psycopg  # the module is imported for the fixtures' connections


def test_drop_later_leaves_the_older_rollback_point_for_tidy(schema: Target) -> None:
    """`just db-restore` swaps with --drop-later and tidies once the app runs again."""
    target = schema
    name = backup(target)
    previous, aside = staging.previous_name(target.dbname), staging.aside_name(target.dbname)
    run_ok(target, "restore", name, "--yes")
    first_oid = ours(target)[previous][0]
    _out, err = run_ok(target, "restore", name, "--yes", "--drop-later")
    assert f"left as database {aside} for `velocity-pg restore --tidy`" in err
    assert ours(target)[aside][0] == first_oid  # the older rollback point, moved aside
    assert ours(target)[previous][0] != first_oid
    out, _err = run_ok(target, "restore", "--tidy")
    assert f"Dropped {aside}" in out
    assert set(ours(target)) == {previous}
    assert "Nothing to tidy" in run_ok(target, "restore", "--tidy")[0]
