"""Backup names as the template's backup.sh made them, across every verb, on the real server.

``<database>_YYYY-MM-DD_HHMMSS.dump`` for any database (the pure mapping is in
test_catalog.py); here: backup names its file after the database it dumped, and
list, verify, status, restore and cleanup work with any database's backups in
one folder, the old scripts' ones included.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import Target, load_varied_schema, table_contents
from test_restore import extra_database

from velocity_pg.store import catalog

#: A database name with everything a file name cannot hold as it is (a leading dot, a
#: slash, a percent sign) and what it can (a space, underscores, even a timestamp).
AWKWARD = ".my app/50%_2026-01-01_000000"


def test_awkward_database_name_backup_list_verify_restore_cleanup(
    target: Target, postgresql_proc: object
) -> None:
    with extra_database(target, postgresql_proc, AWKWARD) as odd:
        load_varied_schema(odd)
        with odd.connect() as conn:
            expected = table_contents(conn)
        result = odd.run("backup", "--json")
        assert result.returncode == 0, result.stderr
        name = json.loads(result.stdout)["name"]
        assert name.startswith("%2Emy app%2F50%25_2026-01-01_000000_")
        assert catalog.database_of(name) == AWKWARD
        assert (odd.backup_dir / name).is_file()

        listed = json.loads(odd.run("list", "--json").stdout)["backups"]
        assert [(b["name"], b["database"]) for b in listed] == [(name, AWKWARD)]
        text = odd.run("list").stdout
        assert f"{name}  {AWKWARD}" in text

        verified = odd.run("verify")  # the newest of the configured database: this one
        assert verified.returncode == 0, verified.stderr
        assert name in verified.stdout

        status = json.loads(odd.run("status", "--json").stdout)
        assert (status["database"], status["newest"]["name"]) == (AWKWARD, name)

        with odd.connect() as conn:
            conn.execute("DELETE FROM shop.orders")
        restored = odd.run("restore", name, "--yes")
        assert restored.returncode == 0, restored.stderr
        with odd.connect() as conn:
            assert table_contents(conn) == expected

        cleaned = odd.run("cleanup", "--max-count", "1", "--json")
        assert cleaned.returncode == 0, cleaned.stderr
        assert [g["database"] for g in json.loads(cleaned.stdout)["groups"]] == [AWKWARD]
        assert (odd.backup_dir / name).is_file()


def test_two_databases_in_one_folder(target: Target, postgresql_proc: object) -> None:
    """verify/status pick the configured database's newest; --all and cleanup see both;
    an old script's backup (plain pg_dump -Fc, no manifest) of the other counts as its own."""
    load_varied_schema(target)
    mine = json.loads(target.run("backup", "--json").stdout)["name"]
    with extra_database(target, postgresql_proc, "my_app") as other:
        with other.connect() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        time.sleep(1.1)  # a later second: the other database's backup is the folder's newest
        theirs = json.loads(other.run("backup", "--json").stdout)["name"]
        assert theirs.startswith("my_app_")
        legacy = "my_app_2025-06-01_020304.dump"  # as backup.sh named it
        subprocess.run(
            ["pg_dump", "-Fc", "-Z9", "-f", str(target.backup_dir / legacy)],
            env=other.env(),
            check=True,
            capture_output=True,
        )
        old = time.time() - 90 * 86400
        os.utime(target.backup_dir / legacy, (old, old))

        result = target.run("verify", "--json")
        assert result.returncode == 0, result.stderr
        assert [b["name"] for b in json.loads(result.stdout)["backups"]] == [mine]
        result = other.run("verify", "--json")
        assert [b["name"] for b in json.loads(result.stdout)["backups"]] == [theirs]
        result = target.run("verify", "--all", "--json")
        assert result.returncode == 0, result.stderr
        assert sorted(b["name"] for b in json.loads(result.stdout)["backups"]) == sorted(
            [mine, theirs, legacy]
        )
        status = json.loads(target.run("status", "--json").stdout)
        assert status["newest"]["name"] == mine
        assert [o["newest"] for o in status["other_databases"]] == [theirs]

        # The old script's backup of my_app restores into my_app.
        restored = other.run("restore", legacy, "--yes")
        assert restored.returncode == 0, restored.stderr

        # Count 1 per database: each keeps its newest; only my_app's old one goes.
        cleaned = target.run("cleanup", "--max-count", "1", "--json")
        assert cleaned.returncode == 0, cleaned.stderr
        data = json.loads(cleaned.stdout)
        assert [(d["name"], d["status"]) for d in data["delete"]] == [(legacy, "deleted")]
        left = sorted(b.name for b in catalog.list_backups(target.backup_dir))
        assert left == sorted([mine, theirs])
