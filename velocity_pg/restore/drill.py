"""The restore drill of ``verify --restore``: restore a backup into a throwaway database.

The throwaway database, ``velocity_pg_verify_<random>``, lives on the same
server as the live database (so roles and extensions are those a real restore
would meet) and is never the live one. While it exists, the verifying session
holds an advisory lock keyed by its name; a throwaway database whose lock
anyone can take belongs to a verify that was killed, and the next drill drops
it. It is dropped whatever happens to this one: failure, Ctrl+C, SIGTERM.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import CommandFailed, describe_failure
from velocity_pg.postgres import db, pgtools
from velocity_pg.restore import archive, space, staging, swap
from velocity_pg.restore.plan import default_jobs
from velocity_pg.restore.shield import shielded
from velocity_pg.store.catalog import human_size

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.postgres.endpoint import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]


#: The restored copy's own tables: what the archive's TABLE entries must all be among
#: (not the catalogs, not tables an extension creates, which pg_dump leaves to it).
RESTORED_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
"""


def drop_abandoned(admin: Conn, conn: Endpoint | None = None) -> list[str]:
    """Drop throwaway databases of verifies that were killed (nobody holds their lock)."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (staging.DRILL_PREFIX,)
    ).fetchall()
    dropped = []
    for (name,) in rows:
        key = staging.drill_lock_key(str(name))
        if swap.try_lock(admin, key):
            try:
                swap.drop_database(admin, str(name), conn)
                dropped.append(str(name))
            finally:
                swap.unlock(admin, key)
    return dropped


def run_drill(
    where: Endpoint, dump: Path, listing: str, counts: dict[str, int] | None = None
) -> tuple[str | None, str]:
    """Restore ``dump`` into a throwaway database and check its tables.

    Returns (problem, detail): ``problem`` is None when the drill passed. ``counts``, when
    given, gets the exact rows of each table restored (``schema.table``: a count of the
    throwaway copy, which the drill has just written anyway).
    """
    import psycopg
    from psycopg import sql

    conn = where
    with db.connect_maintenance(conn) as admin:
        drop_abandoned(admin, conn)
        name = staging.drill_name(secrets.token_hex(8))
        key = staging.drill_lock_key(name)
        if not swap.try_lock(admin, key):  # pragma: no cover - a 64-bit random collision
            return "could not lock a throwaway database name; try again", ""
        swap.keep_session_alive(admin)
        server_num = db.server_version_num(admin)
        program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
        try:
            room = space.measure(admin, program.path, dump, live=None, tablespace="pg_default")
        except CommandFailed as exc:
            return f"the restore drill failed: {describe_failure(exc.returncode, exc.stderr)}", ""
        if room is not None and not room.enough:
            return (
                "the restore drill did not run: it needs about "
                f"{human_size(room.needed)} free in {room.location}, and only "
                f"{human_size(room.free)} is free (see `restore`'s free-space rule)",
                "",
            )
        try:
            swap.create_staging(
                admin, name, None, "velocity-pg: verify --restore drill; dropped when it ends"
            )
            env = conn.libpq_env(name) | db.untimed_env(server_num, conn)
            entries = archive.parse_entries(listing)
            try:
                target = conn.conninfo(name)  # the dead-peer bounds too
                archive.restore_all_but_matviews(
                    program.path, dump, target, entries, env, jobs=default_jobs()
                )
                unrefreshed = archive.refresh_matviews(program.path, dump, target, entries, env)
            except CommandFailed as exc:
                reason = describe_failure(exc.returncode, exc.stderr)
                return f"the restore drill failed: {reason}", ""
            with db.connect(conn, name) as drilled:
                present = [(str(s), str(t)) for s, t in drilled.execute(RESTORED_TABLES_SQL)]
                for schema, table in present if counts is not None else ():
                    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                    row = drilled.execute(query).fetchone()
                    counts[f"{schema}.{table}"] = int(row[0]) if row is not None else 0  # type: ignore[call-overload,index]
            missing = archive.missing_tables(entries, present)
            if missing:
                shown = ", ".join(missing[:5])
                return (
                    f"the restore drill lacks {len(missing)} table(s) of the archive: {shown}",
                    "",
                )
            tables = sum(1 for e in entries if e.is_table)
            detail = f"restore drill ({tables} tables)"
            if unrefreshed:
                detail = (
                    f"restore drill ({tables} tables; warning: "
                    + "; ".join(v.describe() for v in unrefreshed)
                    + ")"
                )
            return None, detail
        finally:
            with shielded():
                try:
                    swap.drop_database(admin, name, conn)
                    swap.unlock(admin, key)
                except psycopg.Error:
                    pass  # the lock dies with our session: the next drill drops it
