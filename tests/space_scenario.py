"""Run inside a private mount namespace (see test_restore_space.py): a private PostgreSQL
whose tablespace ``small`` lives on a small tmpfs, a database in it, and velocity-pg runs
against it from the same namespace (so it sees the server's disk). Prints one JSON object.

Usage: python space_scenario.py WORKDIR MOUNTPOINT SCENARIO
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

BINDIR = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]).parent


def velocity(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "velocity_pg", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def databases(conn: psycopg.Connection) -> list[str]:
    """The server's databases, without the rollback point a restore keeps on purpose."""
    rows = conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()
    return [r[0] for r in rows if not r[0].startswith("velocity_pg_previous_")]


def fill(folder: Path) -> Path:
    """Write a ballast file until the filesystem is full."""
    ballast = folder / "ballast"
    with ballast.open("wb") as out:
        block = b"\0" * (1 << 16)
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError:
            pass
    return ballast


def main() -> None:
    work, mount, scenario = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    data = work / "data"
    port = 20000 + os.getpid() % 20000
    subprocess.run(
        [str(BINDIR / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={work}"
    subprocess.run(
        [
            str(BINDIR / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(work / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    out: dict[str, object] = {}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "VELOCITY_PG"))
    }
    backups = work / "backups"
    backups.mkdir()
    env.update(
        PGHOST="127.0.0.1",
        PGPORT=str(port),
        PGUSER="postgres",
        PGDATABASE="app",
        BACKUP_DIR=str(backups),
    )
    try:
        admin = psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        )
        (mount / "ts").mkdir()
        admin.execute(f"CREATE TABLESPACE small LOCATION '{mount / 'ts'}'")
        admin.execute("CREATE DATABASE app TABLESPACE small")
        app = psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="app", autocommit=True
        )
        if scenario == "refuse":
            app.execute(
                "CREATE TABLE big AS SELECT g, repeat('x', 100) AS t "
                "FROM generate_series(1, 200000) g"
            )
            out["backup"] = velocity(env, "backup")
            name = next(p.name for p in backups.glob("*.dump"))
            out["check"] = velocity(env, "restore", name, "--check", "--json")
            out["restore"] = velocity(env, "restore", name, "--yes")
            out["databases"] = databases(admin)
            out["rows"] = app.execute("SELECT count(*) FROM big").fetchone()[0]  # type: ignore[index]
        else:  # "fills": the disk fills while pg_restore runs (a ballast file, written then)
            app.execute(
                """
                CREATE FUNCTION public.slow_here() RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                    IF current_database() LIKE 'velocity\\_pg\\_staging\\_%' THEN
                        PERFORM pg_sleep(2);
                    END IF;
                    RETURN true;
                END $$;
                CREATE TABLE public.a_slow (id int CHECK (public.slow_here()));
                INSERT INTO public.a_slow VALUES (1);
                CREATE TABLE public.z_data AS
                    SELECT g, md5(g::text) || md5((g + 1)::text) AS t
                    FROM generate_series(1, 100000) g;
                """
            )
            out["backup"] = velocity(env, "backup")
            name = next(p.name for p in backups.glob("*.dump"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "velocity_pg", "restore", name, "--yes", "--jobs", "1"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            ).fetchone():
                assert time.monotonic() < deadline, "pg_restore never reached the slow table"
                time.sleep(0.05)
            ballast = fill(mount)
            stdout, stderr = proc.communicate(timeout=300)
            out["failed"] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}
            out["databases_after_failure"] = databases(admin)
            out["rows_after_failure"] = app.execute("SELECT count(*) FROM z_data").fetchone()[0]  # type: ignore[index]
            ballast.unlink()
            out["again"] = velocity(env, "restore", name, "--yes")
            out["databases"] = databases(admin)
            app.close()
            app = psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="app", autocommit=True
            )
            out["rows"] = app.execute("SELECT count(*) FROM z_data").fetchone()[0]  # type: ignore[index]
        app.close()
        admin.close()
    finally:
        subprocess.run(
            [str(BINDIR / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
