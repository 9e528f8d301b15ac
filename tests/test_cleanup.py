"""``velocity-pg cleanup`` on real files with set mtimes, run as a real process.

Cleanup needs no database, so these tests use a light fixture (a backup folder
and a clean environment) instead of ``target``; only the test with a backup
really running uses the server.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Target, clean_env, load_varied_schema
from test_backup import hold_table_lock, wait_for_pg_dump

from velocity_pg.settings import load_settings
from velocity_pg.store import catalog, lock, retention
from velocity_pg.verbs import cleanup

DAY = 86400.0
#: The policy's tiers in --json when none is set (docs/retention.md, Retention).
NO_TIERS = {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, "keep_yearly": 0}
HOUR = 3600.0


@dataclass
class Folder:
    """A backup folder, a working directory without .env, and how to run velocity-pg."""

    backup_dir: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env()
        env["BACKUP_DIR"] = str(self.backup_dir)
        env.update(extra)
        return env

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "velocity_pg", *args],
            env=self.env(**extra_env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    def add_backup(self, age_days: float, size: int = 1000, database: str = "velocity") -> Path:
        """A backup of ``database`` modified ``age_days`` ago, named after the minute before."""
        mtime = time.time() - age_days * DAY
        name = catalog.format_name(datetime.fromtimestamp(mtime - 60, UTC), database)
        path = self.backup_dir / name
        path.write_bytes(os.urandom(size))
        os.utime(path, (mtime, mtime))
        return path

    def backups(self) -> list[str]:
        """The names of the backups (regular files named like one)."""
        return sorted(b.name for b in catalog.list_backups(self.backup_dir))

    def plan(self, **policy: int) -> retention.Plan:
        """What the plan says now (mtimes are far from any limit, so seconds do not matter)."""
        settings = {"max_age_days": 30, "max_count": 50, "min_keep": 1} | policy
        return retention.plan(
            catalog.list_backups(self.backup_dir),
            retention.Policy(**settings),
            datetime.now(UTC),
        )


def write_manifest(dump: Path) -> Path:
    """A readable manifest beside ``dump`` (one that cannot be read keeps its backup: its
    pin is unknown, see tests/test_offsite_pins.py)."""
    from velocity_pg.store import manifest

    digest, size = manifest.sha256_file(dump)
    record = manifest.Manifest(
        sha256=digest,
        size_bytes=size,
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:00:01+00:00",
        duration_seconds=1.0,
        database=catalog.database_of(dump.name) or "velocity",
        server_version="17.0",
        pg_dump_version="17.0",
        velocity_pg_version="test",
        toc_entries=1,
    )
    path = manifest.path_for(dump)
    path.write_bytes(manifest.dumps(record))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Folder(backup_dir, workdir)


def tree(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (but the lock file), with contents, link targets, mtimes."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel == lock.LOCK_NAME:
                continue
            info = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", info.st_mtime_ns)
            else:
                found[rel] = ("file", path.read_bytes(), info.st_mtime_ns)
    return found


def add_unrelated(folder: Folder, outside: Path) -> None:
    """Files and folders that look a little like backups, all very old. None may be touched."""
    old = time.time() - 400 * DAY
    d = folder.backup_dir
    (d / "notes.txt").write_text("keep me")
    (d / "velocity_2026-13-01_000000.dump").write_bytes(b"month 13: not a date")
    (d / "velocity_2020-01-01_000000.dump.bak").write_bytes(b"bak")
    (d / "velocity_2020-01-01_000000.DUMP").write_bytes(b"upper case")
    (d / ".velocity_2020-01-01_000000.dump").write_bytes(b"hidden (a dot is written %2E)")
    (d / "a%2fb_2020-01-01_000000.dump").write_bytes(b"lower-case escape: not ours")
    (d / "velocity_2020-01-01_00000.dump").write_bytes(b"short")
    sub = d / "velocity_2019-01-01_000000.dump"  # a folder with a backup's name
    sub.mkdir()
    (sub / "velocity_2019-01-01_000000.dump").write_bytes(b"inside")
    nested = d / "archive"
    nested.mkdir()
    (nested / "velocity_2018-01-01_000000.dump").write_bytes(b"nested backup")
    outside.write_bytes(b"a backup elsewhere")
    (d / "velocity_2017-01-01_000000.dump").symlink_to(outside)  # symlink with a backup's name
    for path in [*d.rglob("*"), outside]:
        os.utime(path, (old, old), follow_symlinks=False)


def populate(folder: Folder) -> None:
    for age in (0.2, 1, 2, 3, 5, 8, 13, 21, 29, 34, 55, 89, 144):
        folder.add_backup(age)


# -- what remains is what the plan said ---------------------------------------------------


def test_cleanup_deletes_exactly_the_plan(folder: Folder, tmp_path: Path) -> None:
    populate(folder)
    add_unrelated(folder, tmp_path / "outside.dump")
    real = set(folder.backups())
    unrelated = {k: v for k, v in tree(folder.backup_dir).items() if k not in real}
    expected = folder.plan(max_count=6)
    assert expected.delete and expected.keep

    result = folder.run("cleanup", "--json", "--max-count", "6")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert [e["name"] for e in data["delete"]] == [d.backup.name for d in expected.delete]
    assert {e["status"] for e in data["delete"]} == {"deleted"}
    assert [e["name"] for e in data["keep"]] == [d.backup.name for d in expected.keep]
    assert folder.backups() == sorted(d.backup.name for d in expected.keep)
    after = {k: v for k, v in tree(folder.backup_dir).items() if k not in real}
    assert after == unrelated
    assert (tmp_path / "outside.dump").read_bytes() == b"a backup elsewhere"
    summary = data["summary"]
    assert summary["kept"] == len(expected.keep)
    assert summary["deleted"] == len(expected.delete)
    assert summary["bytes_freed"] == expected.bytes_to_free == 1000 * len(expected.delete)
    assert summary["partial"] is False
    assert data["policy"] == {"max_age_days": 30, "max_count": 6, "min_keep": 1} | NO_TIERS


def test_text_output_prints_every_decision_and_a_summary(folder: Folder) -> None:
    populate(folder)
    expected = folder.plan()
    result = folder.run("cleanup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"cleanup of {folder.backup_dir}: keep backups modified within 30")
    for decision in expected.keep:
        assert any(ln.startswith("keep") and decision.backup.name in ln for ln in lines), decision
    deleted = [ln for ln in lines if ln.startswith("deleted")]
    assert [ln.split()[1] for ln in deleted] == [d.backup.name for d in expected.delete]
    assert all("older than 30 day(s)" in ln and "BACKUP_MAX_AGE_DAYS" in ln for ln in deleted)
    freed = 1000 * len(expected.delete)
    assert lines[-1] == (
        f"Kept {len(expected.keep)} backup(s), deleted {len(expected.delete)}, "
        f"freed {catalog.human_size(freed)} ({freed} bytes)."
    )


def test_stopped_backup_job_never_ends_with_zero_backups(folder: Folder) -> None:
    for age in (40, 50, 60, 70):
        folder.add_backup(age)
    newest = folder.backups()[-1]
    result = folder.run("cleanup", "--max-age-days", "1", "--max-count", "1")
    assert result.returncode == 0, result.stderr
    assert folder.backups() == [newest]
    keep_line = next(ln for ln in result.stdout.splitlines() if ln.startswith("keep"))
    assert "BACKUP_MIN_KEEP" in keep_line and "older than 1 day(s)" in keep_line


def test_cli_options_override_environment_and_env_file(folder: Folder) -> None:
    populate(folder)
    (folder.workdir / ".env").write_text("BACKUP_MAX_COUNT=2\nBACKUP_MIN_KEEP=1\n")
    expected = folder.plan(max_count=4, max_age_days=1000)
    result = folder.run(
        "cleanup", "--max-count", "4", "--json", BACKUP_MAX_COUNT="3", BACKUP_MAX_AGE_DAYS="1000"
    )
    assert result.returncode == 0, result.stderr
    policy = {"max_age_days": 1000, "max_count": 4, "min_keep": 1} | NO_TIERS
    assert json.loads(result.stdout)["policy"] == policy
    assert folder.backups() == sorted(d.backup.name for d in expected.keep)
    assert len(folder.backups()) == 4


def test_settings_from_env_file(folder: Folder) -> None:
    populate(folder)
    (folder.workdir / ".env").write_text("BACKUP_MAX_COUNT=2\nBACKUP_MAX_AGE_DAYS=1000\n")
    result = folder.run("cleanup")
    assert result.returncode == 0, result.stderr
    assert len(folder.backups()) == 2


def test_nothing_to_delete_and_empty_folder(folder: Folder) -> None:
    result = folder.run("cleanup")
    assert result.returncode == 0, result.stderr
    assert f"No backups in {folder.backup_dir}; nothing to delete." in result.stdout
    folder.add_backup(1)
    result = folder.run("cleanup")
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "Kept 1 backup(s), deleted 0, freed 0 B (0 bytes)."


def test_missing_folder_is_an_error(folder: Folder, tmp_path: Path) -> None:
    result = folder.run("cleanup", BACKUP_DIR=str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert not (tmp_path / "nope").exists()


def test_read_only_folder_deletes_nothing(folder: Folder) -> None:
    populate(folder)
    before = tree(folder.backup_dir)
    folder.backup_dir.chmod(0o500)
    try:
        result = folder.run("cleanup")
    finally:
        folder.backup_dir.chmod(0o700)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"velocity-pg: error: backup folder {folder.backup_dir} is not writable by this user; "
        "fix its permissions"
    ]
    assert tree(folder.backup_dir) == before


# -- dry run ------------------------------------------------------------------------------


def test_dry_run_deletes_nothing(folder: Folder, tmp_path: Path) -> None:
    populate(folder)
    add_unrelated(folder, tmp_path / "outside.dump")
    stale = folder.backup_dir / ".velocity-tmp-1-x.partial"
    stale.write_bytes(b"abandoned")
    os.utime(stale, (time.time() - 3 * HOUR,) * 2)
    before = tree(folder.backup_dir)
    expected = folder.plan(max_count=5)

    result = folder.run("cleanup", "--dry-run", "--max-count", "5")
    assert result.returncode == 0, result.stderr
    assert tree(folder.backup_dir) == before
    assert not (folder.backup_dir / lock.LOCK_NAME).exists()  # a dry run takes no lock
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Dry run (nothing is deleted): ")
    would = [ln.split()[2] for ln in lines if ln.startswith("would delete")]
    assert would == [d.backup.name for d in expected.delete]
    assert any(ln.startswith("would remove") and stale.name in ln for ln in lines)
    assert lines[-1].startswith(
        f"Dry run: would keep {len(expected.keep)} backup(s) and delete {len(expected.delete)}"
    )
    assert lines[-1].endswith("nothing was deleted.")

    result = folder.run("cleanup", "--dry-run", "--json", "--max-count", "5")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert {e["status"] for e in data["delete"]} == {"would delete"}
    assert data["summary"]["deleted"] == 0
    assert data["summary"]["bytes_freed"] == 0
    assert data["summary"]["bytes_to_free"] == expected.bytes_to_free
    assert tree(folder.backup_dir) == before


# -- invalid settings ---------------------------------------------------------------------

INVALID = [
    ({"BACKUP_MAX_AGE_DAYS": "0"}, (), "BACKUP_MAX_AGE_DAYS='0' is out of range"),
    ({"BACKUP_MAX_AGE_DAYS": "-5"}, (), "BACKUP_MAX_AGE_DAYS='-5' is out of range"),
    ({"BACKUP_MAX_AGE_DAYS": "30d"}, (), "BACKUP_MAX_AGE_DAYS='30d' is not a whole number"),
    ({"BACKUP_MAX_AGE_DAYS": "1.5"}, (), "BACKUP_MAX_AGE_DAYS='1.5' is not a whole number"),
    ({"BACKUP_MAX_COUNT": "0"}, (), "BACKUP_MAX_COUNT='0' is out of range"),
    ({"BACKUP_MAX_COUNT": "ten"}, (), "BACKUP_MAX_COUNT='ten' is not a whole number"),
    ({"BACKUP_MIN_KEEP": "0"}, (), "BACKUP_MIN_KEEP='0' is out of range"),
    ({"BACKUP_MIN_KEEP": "-1"}, (), "BACKUP_MIN_KEEP='-1' is out of range"),
    ({}, ("--max-count", "0"), "--max-count '0' is out of range"),
    ({}, ("--max-age-days=-1",), "--max-age-days '-1' is out of range"),
    ({}, ("--min-keep", "none"), "--min-keep 'none' is not a whole number"),
    # A bad value is refused even when a valid one elsewhere would not be used.
    ({"BACKUP_MAX_COUNT": "x"}, ("--max-age-days", "5"), "BACKUP_MAX_COUNT='x'"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
@pytest.mark.parametrize(("env", "args", "message"), INVALID)
def test_invalid_settings_delete_nothing(
    folder: Folder, env: dict[str, str], args: tuple[str, ...], message: str, dry_run: bool
) -> None:
    populate(folder)
    before = tree(folder.backup_dir)
    extra = ("--dry-run",) if dry_run else ()
    result = folder.run("cleanup", *args, *extra, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("velocity-pg: error: ")
    assert message in line
    assert result.stdout == ""
    assert tree(folder.backup_dir) == before
    assert not (folder.backup_dir / lock.LOCK_NAME).exists()


def test_invalid_setting_in_env_file_deletes_nothing(folder: Folder) -> None:
    populate(folder)
    before = tree(folder.backup_dir)
    (folder.workdir / ".env").write_text("BACKUP_MAX_COUNT=0\n")
    result = folder.run("cleanup")
    assert result.returncode == 2
    assert "BACKUP_MAX_COUNT='0' (in .env) is out of range" in result.stderr
    assert tree(folder.backup_dir) == before


# -- temporary files ----------------------------------------------------------------------


def make_temp(folder: Folder, pid: int, age_hours: float) -> Path:
    path = folder.backup_dir / f"{catalog.TEMP_PREFIX}{pid}-abc{pid}{catalog.TEMP_SUFFIX}"
    path.write_bytes(b"partial dump " * 10)
    mtime = time.time() - age_hours * HOUR
    os.utime(path, (mtime, mtime))
    return path


def test_temp_files_of_live_backups_are_never_touched(folder: Folder) -> None:
    populate(folder)
    live_old = make_temp(folder, 11, age_hours=5)  # old mtime, but its writer holds the lock
    live_new = make_temp(folder, 12, age_hours=0)
    abandoned_old = make_temp(folder, 13, age_hours=2)
    abandoned_new = make_temp(folder, 14, age_hours=0.5)  # a backup may be just starting
    link = folder.backup_dir / f"{catalog.TEMP_PREFIX}15-link{catalog.TEMP_SUFFIX}"
    link.symlink_to(folder.backup_dir / "nowhere")
    os.utime(link, (1, 1), follow_symlinks=False)
    contents = {p: p.read_bytes() for p in (live_old, live_new, abandoned_new)}

    held = []
    try:
        for path in (live_old, live_new):
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running backup does
            held.append(fd)
        result = folder.run("cleanup", "--json")
        assert result.returncode == 0, result.stderr
    finally:
        for fd in held:
            os.close(fd)

    for path, data in contents.items():
        assert path.read_bytes() == data
    assert not abandoned_old.exists()
    assert link.is_symlink()
    statuses = {t["name"]: t["status"] for t in json.loads(result.stdout)["temp_files"]}
    assert statuses == {
        live_old.name: "in use",
        live_new.name: "recent",
        abandoned_old.name: "removed",
        abandoned_new.name: "recent",
    }
    assert json.loads(result.stdout)["summary"]["temp_files_removed"] == 1


def wait_for_lock_wait(target: Target, timeout: float = 30) -> None:
    """Until a session of the target database waits for a lock (pg_dump behind the locker)."""
    deadline = time.monotonic() + timeout
    with target.connect("postgres") as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock'",
                (target.dbname,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("pg_dump never waited for the table lock")


def test_cleanup_during_a_real_backup_leaves_its_temp_file(target: Target) -> None:
    """A real backup, stalled by a table lock, with its temp file made to look old."""
    load_varied_schema(target)
    for age in (40, 50):
        Folder(target.backup_dir, target.workdir).add_backup(age)
    locker = hold_table_lock(target, "shop.orders")
    try:
        proc = target.popen("backup")
        _pid, argv = wait_for_pg_dump(proc.pid)
        temp = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--file=")))
        wait_for_lock_wait(target)  # pg_dump has opened (truncated) its file by now
        old = time.time() - 10 * HOUR
        os.utime(temp, (old, old))
        result = target.run("cleanup", "--json")
        assert temp.exists()
    finally:
        locker.rollback()
        locker.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(t["name"], t["status"]) for t in data["temp_files"]] == [(temp.name, "in use")]
    assert data["summary"]["deleted"] == 1  # the older stale backup; the floor kept the other
    names = sorted(p.name for p in target.backup_dir.iterdir() if catalog.is_backup_name(p.name))
    assert len(names) == 2  # the kept old one and the new backup
    assert "Backup created" in out


# -- the folder lock ----------------------------------------------------------------------


def test_cleanup_fails_at_once_while_a_reader_holds_the_lock(folder: Folder) -> None:
    populate(folder)
    before = tree(folder.backup_dir)
    with lock.shared(folder.backup_dir, "restore"):
        result = folder.run("cleanup")
        dry = folder.run("cleanup", "--dry-run")  # reading the plan needs no lock
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"velocity-pg: error: cannot clean up: a restore, verify or another cleanup is using "
        f"the backups in {folder.backup_dir} right now (lock "
        f"{folder.backup_dir / lock.LOCK_NAME}); try again when it has finished"
    ]
    assert tree(folder.backup_dir) == before
    assert dry.returncode == 0
    assert tree(folder.backup_dir) == before
    # Once the reader is done, cleanup runs.
    assert folder.run("cleanup").returncode == 0
    assert tree(folder.backup_dir) != before


HOLDER = """
import sys
from pathlib import Path
from velocity_pg.store import lock
with getattr(lock, sys.argv[2])(Path(sys.argv[1]), "test"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_cleanup_fails_while_another_process_holds_the_lock(folder: Folder, mode: str) -> None:
    """Another process (a restore: shared; another cleanup: exclusive) holds the lock."""
    populate(folder)
    before = tree(folder.backup_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder.backup_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        result = folder.run("cleanup")
    finally:
        holder.communicate("", timeout=30)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("velocity-pg: error: cannot clean up: ")
    assert tree(folder.backup_dir) == before


# -- failures midway ------------------------------------------------------------------------


def test_file_that_cannot_be_deleted_is_reported_and_the_rest_runs(
    folder: Folder, tmp_path: Path
) -> None:
    """A real EBUSY: one backup is a mount point (bound onto itself in a private namespace)."""
    if not _unshare_works():
        pytest.skip("needs unprivileged user namespaces (unshare -rm)")
    populate(folder)
    expected = folder.plan()
    busy = expected.delete[1].backup.name  # not the first: deletions before and after it
    script = tmp_path / "inside.sh"
    script.write_text(
        f"""set -u
mount --bind "$BACKUP_DIR/{busy}" "$BACKUP_DIR/{busy}"
"$PYTHON" -m velocity_pg cleanup
echo "rc=$?"
"""
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", str(script)],
        env=folder.env(PYTHON=sys.executable),
        cwd=folder.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout.splitlines()
    assert out[-1] == "rc=1", (result.stdout, result.stderr)
    assert folder.backups() == sorted([busy, *(d.backup.name for d in expected.keep)])
    failed = [ln for ln in out if ln.startswith("NOT DELETED")]
    assert len(failed) == 1
    assert busy in failed[0] and "cannot delete it: Device or resource busy" in failed[0]
    deleted = [ln.split()[1] for ln in out if ln.startswith("deleted")]
    assert deleted == [d.backup.name for d in expected.delete if d.backup.name != busy]
    n = len(expected.delete)
    assert f"deleted {n - 1} of {n} planned" in out[-2]
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"velocity-pg: error: cleanup of {folder.backup_dir} was partial: 1 of {n} planned "
        "deletion(s) did not happen (see the output above); everything else was done as planned"
    )


def _unshare_works() -> bool:
    if not Path("/usr/bin/unshare").exists():
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def test_files_that_vanish_or_change_after_planning(folder: Folder) -> None:
    """Between the plan and the deletions: one file vanishes, one is modified, one replaced."""
    populate(folder)
    settings = load_settings(environ={"BACKUP_DIR": str(folder.backup_dir)}, env_file=None)
    seen: list[cleanup.Outcome | cleanup.TempOutcome] = []
    meddled: dict[str, str] = {}

    def meddle(plan: retention.Plan) -> None:
        gone, touched, replaced = (d.backup.path for d in plan.delete[:3])
        gone.unlink()
        os.utime(touched)
        replaced.unlink()
        replaced.mkdir()
        meddled.update(gone=gone.name, touched=touched.name, replaced=replaced.name)

    result = cleanup.run_cleanup(settings, on_plan=meddle, on_outcome=seen.append)

    assert seen == [*result.outcomes, *result.temps]
    status = {o.decision.backup.name: o.status for o in result.outcomes}
    assert status[meddled["gone"]] is cleanup.Status.VANISHED
    assert status[meddled["touched"]] is cleanup.Status.CHANGED
    assert status[meddled["replaced"]] is cleanup.Status.CHANGED
    others = [o for o in result.outcomes if o.decision.backup.name not in meddled.values()]
    assert others and all(o.status is cleanup.Status.DELETED for o in others)
    assert result.partial
    assert "3 of" in result.partial_message()
    assert (folder.backup_dir / meddled["touched"]).is_file()
    assert (folder.backup_dir / meddled["replaced"]).is_dir()
    remaining = {d.backup.name for d in result.plan.keep} | {meddled["touched"]}
    assert set(folder.backups()) == remaining


# -- manifests go with their dumps ---------------------------------------------------


def test_manifest_is_deleted_with_its_dump_and_orphans_are_cleared(folder: Folder) -> None:
    from velocity_pg.store import manifest

    old = folder.add_backup(40)
    kept = folder.add_backup(1)
    for dump in (old, kept):
        write_manifest(dump)
    # A manifest whose dump was removed by hand two hours ago, and one from a
    # backup publishing right now (recent): only the old orphan goes.
    gone = folder.backup_dir / "velocity_2025-01-01_000000.dump.json"
    gone.write_text("{}")
    os.utime(gone, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
    fresh = folder.backup_dir / "velocity_2025-01-02_000000.dump.json"
    fresh.write_text("{}")

    result = folder.run("cleanup")
    assert result.returncode == 0, result.stderr
    assert not old.exists() and not manifest.path_for(old).exists()
    assert kept.exists() and manifest.path_for(kept).exists()
    assert not gone.exists()
    assert fresh.exists()
    assert "manifest whose dump is gone" in result.stdout


def test_orphan_manifest_held_by_a_live_backup_is_never_touched(folder: Folder) -> None:
    orphan = folder.backup_dir / "velocity_2025-01-01_000000.dump.json"
    orphan.write_text("{}")
    os.utime(orphan, (time.time() - 5 * HOUR, time.time() - 5 * HOUR))
    fd = os.open(orphan, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = folder.run("cleanup")
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert orphan.exists()


def test_each_database_pruned_on_its_own(folder: Folder) -> None:
    """As cleanup.sh pruned the whole folder, but per database: one database's many fresh
    backups never push out another's, and each keeps its own floor."""
    busy = [folder.add_backup(age, database="velocity") for age in (1, 2, 3, 4)]
    quiet = [folder.add_backup(age, database="my_app") for age in (5, 60)]
    lonely = folder.add_backup(90, database="a/b")  # a%2Fb_...: old, but its only backup
    for path in (*busy, *quiet, lonely):
        manifest_path = write_manifest(path)  # goes with its dump
        stamp = path.stat().st_mtime
        os.utime(manifest_path, (stamp, stamp))
    notes = folder.backup_dir / "my_app notes.txt"
    notes.write_text("not a backup")
    os.utime(notes, (time.time() - 400 * DAY,) * 2)

    dry = folder.run("cleanup", "--dry-run", "--json", "--max-count", "2")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert [
        (g["database"], g["kept"], g["planned_deletions"], g["delete"]) for g in data["groups"]
    ] == [
        ("a/b", 1, 0, []),
        ("my_app", 1, 1, [quiet[1].name]),
        ("velocity", 2, 2, [busy[3].name, busy[2].name]),
    ]
    assert [(d["name"], d["database"]) for d in data["delete"]] == [
        (quiet[1].name, "my_app"),
        (busy[3].name, "velocity"),
        (busy[2].name, "velocity"),
    ]
    text = folder.run("cleanup", "--dry-run", "--max-count", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "for each database's backups" in lines[0]
    assert "database 'a/b': 1 backup(s), keep 1, would delete 0" in lines
    assert "database 'my_app': 2 backup(s), keep 1, would delete 1" in lines
    assert "database 'velocity': 4 backup(s), keep 2, would delete 2" in lines
    assert len(folder.backups()) == 7  # a dry run deletes nothing

    result = folder.run("cleanup", "--max-count", "2")
    assert result.returncode == 0, result.stderr
    left = {p.name for p in folder.backup_dir.iterdir()} - {lock.LOCK_NAME}
    kept = (busy[0], busy[1], quiet[0], lonely)
    assert left == {p.name for p in kept} | {p.name + ".json" for p in kept} | {notes.name}
    assert lonely.name.startswith("a%2Fb_")
