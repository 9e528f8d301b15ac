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
from velocity_pg.restore import staging, swap

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.postgres.endpoint import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]


def table_entries(listing: str) -> list[str]:
    """The ``TABLE`` entries of a ``pg_restore --list`` listing, as "schema name owner".

    Names are not quoted in a listing, so they are matched by prefix later
    (see :func:`missing_tables`) rather than split.
    """
    found = []
    for line in listing.splitlines():
        if line.startswith(";") or "; " not in line:
            continue
        _, _, rest = line.partition("; ")
        parts = rest.split(" ", 3)  # catalog tableoid, oid, then the description
        if len(parts) == 4 and parts[2] == "TABLE" and not parts[3].startswith("DATA "):
            found.append(parts[3])
    return found


def missing_tables(entries: list[str], present: list[tuple[str, str]]) -> list[str]:
    """Archive tables (``entries``) with no table of that schema and name in ``present``."""
    prefixes = [f"{schema} {name} " for schema, name in present]
    return [entry for entry in entries if not any(entry.startswith(p) for p in prefixes)]


def drop_abandoned(admin: Conn) -> list[str]:
    """Drop throwaway databases of verifies that were killed (nobody holds their lock)."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (staging.DRILL_PREFIX,)
    ).fetchall()
    dropped = []
    for (name,) in rows:
        key = staging.drill_lock_key(str(name))
        if swap.try_lock(admin, key):
            try:
                swap.drop_database(admin, str(name))
                dropped.append(str(name))
            finally:
                swap.unlock(admin, key)
    return dropped


def run_drill(where: Endpoint, dump: Path, listing: str) -> tuple[str | None, str]:
    """Restore ``dump`` into a throwaway database and check its tables.

    Returns (problem, detail): ``problem`` is None when the drill passed.
    """
    import psycopg

    from velocity_pg.restore.verb import default_jobs, shielded

    conn = where
    with db.connect_maintenance(conn) as admin:
        drop_abandoned(admin)
        name = staging.drill_name(secrets.token_hex(8))
        key = staging.drill_lock_key(name)
        if not swap.try_lock(admin, key):  # pragma: no cover - a 64-bit random collision
            return "could not lock a throwaway database name; try again", ""
        swap.keep_session_alive(admin)
        server_num = db.server_version_num(admin)
        program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
        try:
            swap.create_staging(
                admin, name, None, "velocity-pg: verify --restore drill; dropped when it ends"
            )
            cmd = pgtools.pg_restore_cmd(program.path, dump, name, jobs=default_jobs())
            try:
                pgtools.run(cmd, conn.libpq_env(name))
            except CommandFailed as exc:
                reason = describe_failure(exc.returncode, exc.stderr)
                return f"the restore drill failed: {reason}", ""
            with db.connect(conn, name) as drilled:
                present = [
                    (str(s), str(t))
                    for s, t in drilled.execute(
                        "SELECT n.nspname, c.relname FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind IN ('r', 'p')"
                    ).fetchall()
                ]
            entries = table_entries(listing)
            missing = missing_tables(entries, present)
            if missing:
                shown = ", ".join(m.rsplit(" ", 1)[0] for m in missing[:5])
                return (
                    f"the restore drill lacks {len(missing)} table(s) of the archive: {shown}",
                    "",
                )
            return None, f"restore drill ({len(entries)} tables)"
        finally:
            with shielded():
                try:
                    swap.drop_database(admin, name)
                    swap.unlock(admin, key)
                except psycopg.Error:
                    pass  # the lock dies with our session: the next drill drops it
