"""``velocity-pg backup`` against a real server: success, and every failure losing nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import (
    PASSWORD,
    Target,
    create_database,
    drop_database,
    load_varied_schema,
    snapshot_dir,
    table_contents,
)

from velocity_pg.store import catalog, manifest

OLD_BACKUP = "velocity_2026-01-01_000000.dump"


def seed_old_backup(target: Target) -> dict[str, bytes]:
    """An existing backup (and an unrelated file) that no failure may touch."""
    (target.backup_dir / OLD_BACKUP).write_bytes(b"PGDMP old backup bytes")
    (target.backup_dir / "notes.txt").write_text("keep me")
    return snapshot_dir(target.backup_dir)


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


def pg_restore_into(target: Target, archive: Path, dbname: str) -> None:
    env = target.env(PGDATABASE=dbname)
    subprocess.run(
        ["pg_restore", "--exit-on-error", "--no-owner", f"--dbname={dbname}", str(archive)],
        env=env,
        check=True,
        capture_output=True,
    )


def test_backup_round_trip(target: Target, postgresql_proc: object) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)

    result = target.run("backup")
    assert result.returncode == 0, result.stderr
    names = backups_in(target.backup_dir)
    assert len(names) == 1
    name = names[0]
    assert name in result.stdout
    created = catalog.parse_name(name)
    assert created is not None
    assert abs((datetime.now(UTC) - created).total_seconds()) < 120
    # Named as the template's backup.sh named it: after the database dumped.
    assert name.startswith(f"{target.dbname}_")
    assert catalog.database_of(name) == target.dbname
    path = target.backup_dir / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes()[:5] == b"PGDMP"
    # The dump, its manifest and its roles file, nothing else (no temporary files).
    assert sorted(p.name for p in target.backup_dir.iterdir()) == [
        name,
        name + ".json",
        name + ".roles.sql",
    ]
    record = manifest.read(path)
    assert record is not None
    assert (record.sha256, record.size_bytes) == manifest.sha256_file(path)
    assert record.database == target.dbname
    assert record.toc_entries > 10
    assert record.last_verification is None
    assert stat.S_IMODE(manifest.path_for(path).stat().st_mode) == 0o600

    restored = target.dbname + "_restored"
    create_database(postgresql_proc, restored)
    try:
        pg_restore_into(target, path, restored)
        with target.connect(restored) as conn:
            assert table_contents(conn) == expected
    finally:
        drop_database(postgresql_proc, restored)


def test_backup_is_custom_format_with_max_compression(target: Target) -> None:
    load_varied_schema(target)
    assert target.run("backup").returncode == 0
    (name,) = backups_in(target.backup_dir)
    toc = subprocess.run(
        ["pg_restore", "--list", str(target.backup_dir / name)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Format: CUSTOM" in toc
    assert "Compression: 9" in toc or "Compression: gzip" in toc


def test_backup_json(target: Target) -> None:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == backups_in(target.backup_dir)[0]
    assert data["size_bytes"] == (target.backup_dir / data["name"]).stat().st_size
    assert data["database"] == target.dbname
    assert data["duration_seconds"] >= 0


def assert_failed_cleanly(
    result: subprocess.CompletedProcess[str],
    target: Target,
    before: dict[str, bytes],
    *needles: str,
) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("velocity-pg: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert snapshot_dir(target.backup_dir) == before


def test_server_down(target: Target) -> None:
    before = seed_old_backup(target)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    result = target.run("backup", env=target.env(PGPORT=str(free_port)))
    assert_failed_cleanly(result, target, before, "cannot connect", "Connection refused")


def test_wrong_password(target: Target) -> None:
    before = seed_old_backup(target)
    result = target.run("backup", env=target.env(PGPASSWORD="wrong-password"))
    assert_failed_cleanly(result, target, before, "password authentication failed")


def test_missing_database(target: Target) -> None:
    before = seed_old_backup(target)
    result = target.run("backup", env=target.env(PGDATABASE="no_such_db"))
    assert_failed_cleanly(result, target, before, "no_such_db", "does not exist")


def test_backup_dir_missing(target: Target) -> None:
    missing = target.backup_dir / "nope"
    result = target.run("backup", env=target.env(BACKUP_DIR=str(missing)))
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert not missing.exists()


def test_backup_dir_is_a_file(target: Target) -> None:
    file = target.backup_dir / "afile"
    file.write_text("x")
    result = target.run("backup", env=target.env(BACKUP_DIR=str(file)))
    assert result.returncode == 2
    assert "not a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_backup_dir_read_only(target: Target) -> None:
    before = seed_old_backup(target)
    target.backup_dir.chmod(0o500)
    try:
        result = target.run("backup")
    finally:
        target.backup_dir.chmod(0o700)
    assert_failed_cleanly(result, target, before, "not writable")


def _unshare_works() -> bool:
    probe = (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
        if Path("/usr/bin/unshare").exists()
        else None
    )
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user namespaces (unshare -rm)")
def test_disk_full(target: Target, tmp_path: Path) -> None:
    """A real full disk: a 256 KiB tmpfs mounted in a private mount namespace."""
    with target.connect() as conn:
        # Random text does not compress: the dump is far larger than the disk.
        conn.execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t "
            "FROM generate_series(1, 40000) g"
        )
    script = tmp_path / "inside.sh"
    script.write_text(
        f"""set -u
mount -t tmpfs -o size=256k tmpfs "$BACKUP_DIR"
printf 'PGDMP old backup bytes' > "$BACKUP_DIR/{OLD_BACKUP}"
"$PYTHON" -m velocity_pg backup
echo "rc=$?"
ls -A "$BACKUP_DIR"
sha256sum "$BACKUP_DIR/{OLD_BACKUP}"
"""
    )
    import sys

    env = target.env(PYTHON=sys.executable)
    result = subprocess.run(
        ["unshare", "-rm", "sh", str(script)],
        env=env,
        cwd=target.workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    out = result.stdout.splitlines()
    assert "rc=1" in out, (result.stdout, result.stderr)
    listing = out[out.index("rc=1") + 1 : -1]
    assert listing == [OLD_BACKUP]  # no temporary file, no new backup
    import hashlib

    assert out[-1].split()[0] == hashlib.sha256(b"PGDMP old backup bytes").hexdigest()
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, result.stderr
    assert "No space left on device" in errors[0]
    assert "no backup was written" in errors[0]


def hold_table_lock(target: Target, table: str) -> psycopg.Connection:
    """Hold an ACCESS EXCLUSIVE lock so pg_dump waits (a slow dump on demand)."""
    conn = target.connect(autocommit=False)
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


def wait_for_pg_dump(parent: int, timeout: float = 30) -> tuple[int, list[str]]:
    """The pg_dump started by velocity-pg process ``parent``: (pid, argv)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
                ppid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            # The dump itself, not the `pg_dump --version` probe run just before it.
            complete = any(a.startswith(b"--file=") for a in argv)
            if ppid == parent and argv and argv[0].endswith(b"pg_dump") and complete:
                return int(pid_dir.name), [a.decode() for a in argv if a]
        time.sleep(0.05)
    raise AssertionError("pg_dump did not start")


def all_cmdlines() -> list[bytes]:
    lines = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((pid_dir / "cmdline").read_bytes())
    return lines


def test_password_never_in_argv_or_output(target: Target) -> None:
    load_varied_schema(target)
    locker = hold_table_lock(target, "shop.orders")
    try:
        proc = target.popen("backup")
        wait_for_pg_dump(proc.pid)
        # pg_dump is now running (waiting for the lock): look at every process's argv.
        assert not [c for c in all_cmdlines() if PASSWORD.encode() in c]
    finally:
        locker.rollback()
        locker.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert PASSWORD not in out + err


def test_pg_dump_killed(target: Target) -> None:
    load_varied_schema(target)
    before = seed_old_backup(target)
    locker = hold_table_lock(target, "shop.orders")
    try:
        proc = target.popen("backup")
        pid, argv = wait_for_pg_dump(proc.pid)
        temp = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--file=")))
        assert temp.exists()
        assert not catalog.is_backup_name(temp.name)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        locker.rollback()
        locker.close()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_failed_cleanly(result, target, before, "pg_dump failed", "SIGKILL")


def test_interrupted_backup_leaves_nothing(target: Target) -> None:
    """Ctrl+C (SIGINT) or SIGTERM to velocity-pg: pg_dump stopped, temp file gone, exit 130."""
    load_varied_schema(target)
    before = seed_old_backup(target)
    for sig in (signal.SIGINT, signal.SIGTERM):
        locker = hold_table_lock(target, "shop.orders")
        try:
            proc = target.popen("backup")
            pid, _argv = wait_for_pg_dump(proc.pid)
            proc.send_signal(sig)
            _out, err = proc.communicate(timeout=60)
        finally:
            locker.rollback()
            locker.close()
        assert proc.returncode == 130, err
        word = "interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)"
        assert err.strip().splitlines()[-1] == f"velocity-pg: {word}; no backup was written"
        assert snapshot_dir(target.backup_dir) == before
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"pg_dump" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )


def test_same_second_backups_do_not_collide(target: Target) -> None:
    """Two backups started together: two files, both in the pattern, neither overwritten."""
    load_varied_schema(target)
    procs = [target.popen("backup", "--json") for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    names = {json.loads(out)["name"] for out, _ in results}
    assert len(names) == 3
    assert backups_in(target.backup_dir) == sorted(names)
    for name in names:
        assert (target.backup_dir / name).read_bytes()[:5] == b"PGDMP"


def test_fixed_clock_collision_uses_next_second(target: Target) -> None:
    from velocity_pg.settings import load_settings
    from velocity_pg.verbs.backup import create_backup

    settings = load_settings(environ=target.env())
    moment = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    first = create_backup(settings, now=lambda: moment)
    second = create_backup(settings, now=lambda: moment)
    assert first.name == f"{target.dbname}_2026-05-01_120000.dump"
    assert second.name == f"{target.dbname}_2026-05-01_120001.dump"
    assert first.path.read_bytes()[:5] == second.path.read_bytes()[:5] == b"PGDMP"


def test_backup_does_not_block_writers(target: Target) -> None:
    """Reads and writes go on while a backup runs."""
    with target.connect() as conn:
        conn.execute(
            "CREATE TABLE events AS SELECT g AS id, md5(g::text) AS payload "
            "FROM generate_series(1, 300000) g"
        )
        conn.execute("CREATE TABLE writes (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with target.connect() as conn:
                while not stop.is_set():
                    t0 = time.monotonic()
                    conn.execute("INSERT INTO writes DEFAULT VALUES")
                    conn.execute("UPDATE events SET payload = 'x' WHERE id = 1")
                    conn.execute("SELECT count(*) FROM writes").fetchone()
                    latencies.append(time.monotonic() - t0)
                    time.sleep(0.005)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        started = len(latencies)
        result = target.run("backup")
        during = len(latencies) - started
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert not errors
    assert during > 10, f"only {during} write rounds completed during the backup"
    assert max(latencies) < 2.0
