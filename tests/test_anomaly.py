"""A backup that looks wrong, against the real server: statistics in the manifest, the
suspect mark, its WARNING, and what ``list``, ``status`` and ``verify`` say of it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Target
from test_anomaly_rules import put, record, stats
from test_status import run

from velocity_pg.store import catalog, manifest


def backup(target: Target, *args: str) -> tuple[Path, str, dict[str, object]]:
    """(the new backup, stderr, its --json)."""
    result = target.run("backup", "--json", *args)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    return Path(payload["path"]), result.stderr, payload


def read(dump: Path) -> manifest.Manifest:
    record = manifest.read(dump)
    assert record is not None
    return record


def fill(target: Target, table: str, rows: int) -> None:
    with target.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        conn.execute(
            f"INSERT INTO {table} SELECT g, repeat('x', 50) FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(f"ANALYZE {table}")


def test_an_emptied_table_makes_the_backup_suspect(target: Target) -> None:
    fill(target, "orders", 5000)
    fill(target, "notes", 10)
    first, stderr, payload = backup(target)
    assert "WARNING" not in stderr and payload["suspect"] is None
    stats_ = read(first).statistics
    assert stats_ is not None and stats_.database_bytes > 0
    by_name = {t.name: t for t in stats_.tables}
    assert set(by_name) == {"orders", "notes"}
    assert by_name["orders"].rows == 5000 and by_name["orders"].rows_source == "reltuples"
    assert by_name["orders"].size_bytes > 0

    # A normal second backup: a few rows more, the small table emptied.
    with target.connect() as conn:
        conn.execute("INSERT INTO orders VALUES (5001, 'y')")
        conn.execute("DELETE FROM notes")
        conn.execute("ANALYZE")
    second, stderr, payload = backup(target)
    assert "WARNING" not in stderr, stderr
    assert payload["suspect"] is None and read(second).suspect is None

    with target.connect() as conn:
        conn.execute("DELETE FROM orders")
        conn.execute("ANALYZE orders")
    third, stderr, payload = backup(target)
    mark = read(third).suspect
    assert mark is not None
    # The rows are ANALYZE's estimate: 5,001 on PostgreSQL 15, 5,000 seen on 17.
    before = {t.name: t.rows for t in read(second).statistics.tables}["orders"]  # type: ignore[union-attr]
    assert 4900 <= before <= 5001
    reason = f"table public.orders {before:,} -> 0 rows"
    assert mark.reasons == (reason,)
    assert mark.compared_with == second.name
    assert f"velocity-pg: WARNING: backup {third.name} looks wrong: table public.orders" in stderr
    assert payload["suspect"] == {
        "at": mark.at,
        "compared_with": second.name,
        "reasons": [reason],
    }
    # Text output too: the backup line on stdout, the WARNING on stderr, exit 0.
    with target.connect() as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'z')")
    result = target.run("backup")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Backup created: ")
    # The fourth is compared with the second (the third is suspect): still suspect.
    assert "WARNING" in result.stderr and f"(next to {second.name})" in result.stderr

    listed = target.run("list")
    assert listed.returncode == 0, listed.stderr
    assert "CONTENTS" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith(third.name))
    assert re.search(r" SUSPECT +not yet$", row), row  # CONTENTS, then VERIFIED
    first_row = next(line for line in listed.stdout.splitlines() if line.startswith(first.name))
    assert re.search(r" ok +not yet$", first_row), first_row
    assert f"SUSPECT {third.name}: {reason}" in listed.stdout
    items = {b["name"]: b for b in json.loads(target.run("list", "--json").stdout)["backups"]}
    assert items[third.name]["suspect"]["reasons"] == [reason]
    assert items[first.name]["suspect"] is None and items[first.name]["has_statistics"] is True

    status = target.run("status")
    assert status.returncode == 0, status.stderr
    assert "Contents:      SUSPECT: table public.orders" in status.stdout
    assert f"Newest good:   {second.name}" in status.stdout
    assert "Suspect:       2 backup(s) look wrong" in status.stdout
    payload = json.loads(target.run("status", "--json").stdout)
    assert payload["suspect_count"] == 2
    assert payload["newest"]["suspect"]["compared_with"] == second.name
    assert payload["newest_good"]["name"] == second.name
    # The good one is minutes old: a generous limit is met.
    assert target.run("status", "--max-age", "1h").returncode == 0


def test_a_dropped_table_makes_the_backup_suspect(target: Target) -> None:
    fill(target, "keep", 10)
    fill(target, "gone", 20)
    backup(target)
    with target.connect() as conn:
        conn.execute("DROP TABLE gone")
    dump, stderr, _payload = backup(target)
    mark = read(dump).suspect
    assert mark is not None and mark.reasons == ("table public.gone is gone (it had 20 rows)",)
    assert "table public.gone is gone" in stderr


def test_a_table_never_analyzed_is_counted_by_the_statistics_system(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("CREATE TABLE fresh (id int)")
        conn.execute("INSERT INTO fresh SELECT generate_series(1, 1500)")
    with target.connect() as conn:
        reltuples = conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'fresh'")
        analyzed = float(reltuples.fetchone()[0]) >= 0  # type: ignore[index]
    dump, _stderr, _payload = backup(target)
    stats_ = read(dump).statistics
    assert stats_ is not None
    (fresh,) = stats_.tables
    if not analyzed:  # autovacuum may have been quicker
        assert fresh.rows_source == "n_live_tup"
    assert fresh.rows == 1500


def test_older_manifests_without_statistics(target: Target) -> None:
    fill(target, "orders", 3000)
    old, _stderr, _payload = backup(target)
    # As written before velocity-pg recorded statistics.
    data = json.loads(manifest.path_for(old).read_text())
    del data["statistics"]
    manifest.path_for(old).write_text(json.dumps(data))
    assert read(old).statistics is None
    with target.connect() as conn:
        conn.execute("DELETE FROM orders")
        conn.execute("ANALYZE orders")
    new, stderr, payload = backup(target)
    assert payload["suspect"] is None and "WARNING" not in stderr  # nothing to compare with
    result = target.run("verify", old.name)
    assert result.returncode == 0, result.stderr
    assert "no statistics" in result.stdout
    assert read(old).suspect is None
    result = target.run("verify", new.name)
    assert result.returncode == 0, result.stderr
    assert "no earlier statistics to compare with" in result.stdout
    listed = target.run("list").stdout
    row = next(ln for ln in listed.splitlines() if ln.startswith(old.name))
    assert "  no statistics  " in row
    assert "Contents:      not suspect" in target.run("status").stdout


def test_verify_marks_a_backup_that_was_not_marked(target: Target) -> None:
    fill(target, "orders", 3000)
    backup(target)
    with target.connect() as conn:
        conn.execute("TRUNCATE orders")
        conn.execute("ANALYZE orders")
    dump, _stderr, _payload = backup(target)
    # As if the backup had been made before velocity-pg judged new backups.
    data = json.loads(manifest.path_for(dump).read_text())
    del data["suspect"]
    manifest.path_for(dump).write_text(json.dumps(data))
    manifest.path_for(dump).chmod(0o600)
    result = target.run("verify", "--json")
    assert result.returncode == 0, result.stderr
    assert f"WARNING: backup {dump.name} looks wrong: table public.orders 3,000 -> 0" in (
        result.stderr
    )
    (outcome,) = json.loads(result.stdout)["backups"]
    assert outcome["ok"] is True and outcome["suspect"]["reasons"]
    record_ = read(dump)
    assert record_.suspect is not None and record_.last_verification is not None
    assert manifest.path_for(dump).stat().st_mode & 0o777 == 0o600


# -- status --max-age over files alone (no server) ------------------------------------------


def test_max_age_is_not_fooled_by_a_suspect_backup(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    good = put(tmp_path, now - timedelta(days=2), record(statistics=stats(t=5000)))
    mark = manifest.Suspect(at=now.isoformat(), compared_with=good.name, reasons=("r",))
    fresh = put(tmp_path, now - timedelta(hours=1), record(statistics=stats(t=0), suspect=mark))
    for path in (good, fresh):  # the manifests' sizes are the files'
        rec = read(path)
        sha, size = manifest.sha256_file(path)
        manifest.path_for(path).write_bytes(
            manifest.dumps(manifest.Manifest(**{**vars(rec), "sha256": sha, "size_bytes": size}))
        )
    result = run("status", "--max-age", "1d", folder=tmp_path, PGDATABASE="app")
    assert result.returncode == 1
    assert f"the newest backup of database 'app', {fresh.name}, looks wrong (r (next to" in (
        result.stderr
    )
    assert f"the newest good one is older than 1d: {good.name}" in result.stderr
    assert run("status", "--max-age", "3d", folder=tmp_path, PGDATABASE="app").returncode == 0
    manifest.path_for(good).unlink()  # no manifest: not suspect, so it is good
    assert run("status", "--max-age", "3d", folder=tmp_path, PGDATABASE="app").returncode == 0
    good.unlink()
    result = run("status", "--max-age", "3d", folder=tmp_path, PGDATABASE="app")
    assert result.returncode == 1 and "no other backup is good" in result.stderr
    assert catalog.list_backups(tmp_path)[0].name == fresh.name


def test_a_restore_drill_records_the_exact_rows_it_restored(target: Target) -> None:
    fill(target, "orders", 3000)
    fill(target, "notes", 7)
    dump, _stderr, _payload = backup(target)
    result = target.run("verify", "--restore")
    assert result.returncode == 0, result.stderr
    check = read(dump).last_verification
    assert check is not None and check.method == "restore"
    assert check.restored_rows == {"public.notes": 7, "public.orders": 3000}
    listed = json.loads(target.run("list", "--json").stdout)["backups"][0]
    assert listed["last_verification"]["restored_rows"]["public.orders"] == 3000
    assert target.run("verify").returncode == 0  # a checksum verification has none
    check = read(dump).last_verification
    assert check is not None and check.restored_rows is None
