"""psycopg admin work for a restore: the lock, the staging database, and the swap.

Everything here runs through a connection to a maintenance database (never
the target), in autocommit, with names in :class:`psycopg.sql.Identifier`.

The swap is **one transaction** on that connection::

    BEGIN;
    ALTER DATABASE live RENAME TO velocity_pg_old_<h>;     -- waits until live has no sessions
    ALTER DATABASE velocity_pg_staging_<h> RENAME TO live;
    ALTER DATABASE live SET ... ; GRANT ... ON DATABASE live ...; COMMENT ...;
    COMMIT;

while a second connection terminates every session of the two databases.
Renaming takes an exclusive lock on the database: a client that connects
meanwhile waits for the lock, then is told the database "has just been
renamed" and connects again, to the restored one. It never sees a half
restored database, and PostgreSQL makes the swap all or nothing: if any step
fails (a session that cannot be terminated, a lock, a grant) or the process
dies, the transaction rolls back and ``live`` is exactly as it was. Only
dropping the old database happens after the commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import OperationFailed
from velocity_pg.postgres import db
from velocity_pg.restore.properties import (
    DatabaseProps,
    Grant,
    RoleSetting,
    create_database_sql,
    property_statements,
)

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.postgres.endpoint import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]

#: How long the swap may wait for a lock on either database before giving up.
SWAP_LOCK_TIMEOUT = 10.0
#: How often the terminator looks for sessions during the swap.
TERMINATE_INTERVAL = 0.02


class SwapFailed(OperationFailed):
    """The swap transaction rolled back: the live database is unchanged."""


@contextmanager
def connect_admin(conn: Endpoint, target: str) -> Iterator[Conn]:
    """Autocommit connection to a maintenance database other than ``target``."""
    with db.connect_maintenance(conn, avoid=target) as connection:
        yield connection


# -- who we are, what exists ------------------------------------------------------


@dataclass(frozen=True)
class Role:
    name: str
    superuser: bool
    createdb: bool


def current_role(admin: Conn) -> Role:
    row = admin.execute(
        "SELECT rolname, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    return Role(name=str(row[0]), superuser=bool(row[1]), createdb=bool(row[2]))


def is_member_of(admin: Conn, role: str) -> bool:
    row = admin.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)).fetchone()
    return bool(row and row[0])


def database_oid(admin: Conn, name: str) -> int | None:
    row = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def prepared_transactions(admin: Conn, name: str) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_prepared_xacts WHERE database = %s", (name,)
    ).fetchone()
    return int(row[0]) if row else 0


def read_props(admin: Conn, name: str) -> DatabaseProps | None:
    """A database's properties (owner, locale, settings, grants, ...), or None if it is missing."""
    row = admin.execute(
        """
        SELECT d.oid, d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
               d.datcollate::text, d.datctype::text, t.spcname, d.datconnlimit,
               d.datallowconn, d.datistemplate, shobj_description(d.oid, 'pg_database'),
               d.datacl IS NULL, to_jsonb(d)
        FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
        WHERE d.datname = %s
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    oid = int(row[0])
    extra: dict[str, Any] = row[12] or {}
    acl: tuple[Grant, ...] | None = None
    if not row[11]:
        acl = tuple(
            Grant(
                grantor=str(g[0]),
                grantee=None if g[1] is None else str(g[1]),
                privilege=str(g[2]),
                grantable=bool(g[3]),
            )
            for g in admin.execute(
                """
                SELECT pg_get_userbyid(a.grantor),
                       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                       a.privilege_type, a.is_grantable
                FROM pg_database d, aclexplode(d.datacl) WITH ORDINALITY AS a
                WHERE d.oid = %s ORDER BY a.ordinality
                """,
                (oid,),
            )
        )
    settings = tuple(
        RoleSetting(role=None if s[0] is None else str(s[0]), config=tuple(s[1] or ()))
        for s in admin.execute(
            """
            SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
                   s.setconfig
            FROM pg_db_role_setting s WHERE s.setdatabase = %s
            ORDER BY s.setrole <> 0, 1
            """,
            (oid,),
        )
    )
    return DatabaseProps(
        oid=oid,
        name=str(row[1]),
        owner=str(row[2]),
        encoding=str(row[3]),
        collate=str(row[4]),
        ctype=str(row[5]),
        tablespace=str(row[6]),
        conn_limit=int(row[7]),
        allow_connections=bool(row[8]),
        is_template=bool(row[9]),
        comment=None if row[10] is None else str(row[10]),
        acl=acl,
        settings=settings,
        locale_provider=str(extra.get("datlocprovider") or "c"),
        locale=extra.get("datlocale") or extra.get("daticulocale"),
        icu_rules=extra.get("daticurules"),
    )


# -- one restore at a time ---------------------------------------------------------


def try_lock(admin: Conn, key: int) -> bool:
    """Take the restore's session advisory lock without waiting; False if it is held."""
    row = admin.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def unlock(admin: Conn, key: int) -> None:
    admin.execute("SELECT pg_advisory_unlock(%s)", (key,))


def keep_session_alive(admin: Conn) -> None:
    """A long pg_restore must not cost us the lock: no idle timeout on this session."""
    if db.server_version_num(admin) >= 140000:
        admin.execute("SET idle_session_timeout = 0")


# -- creating and dropping -----------------------------------------------------------


def terminate_sessions(admin: Conn, names: list[str]) -> set[int]:
    """pg_terminate_backend for every other session connected to these databases; their pids.

    A session stays listed until it has exited, so it may be terminated (and
    returned) more than once: count the distinct pids.
    """
    # pg_terminate_backend in the select list: a WHERE clause does not fix the order in
    # which its conditions run, and must never terminate a session it then filters out.
    rows = admin.execute(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
        (names,),
    ).fetchall()
    return {int(pid) for pid, ended in rows if ended}


def drop_database(admin: Conn, name: str) -> None:
    """Drop a database of ours (staging or old), ending its sessions first."""
    import psycopg
    from psycopg import sql

    force = db.server_version_num(admin) >= 130000
    stmt = sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
        sql.Identifier(name), sql.SQL(" WITH (FORCE)") if force else sql.SQL("")
    )
    for attempt in range(3):
        terminate_sessions(admin, [name])
        try:
            admin.execute(stmt)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 2:
                raise
            time.sleep(0.5)


def create_staging(admin: Conn, name: str, like: DatabaseProps | None, comment: str) -> None:
    """Create the empty staging database like the live one (template0)."""
    from psycopg import sql

    admin.execute(create_database_sql(name, like))
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
    )


def database_owner(admin: Conn, name: str) -> str:
    row = admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is None:
        raise OperationFailed(f"database {name!r} disappeared")
    return str(row[0])


def rehearse_properties(
    admin: Conn, staging: str, old: DatabaseProps, *, as_grantors: bool
) -> None:
    """Apply the live database's settings and grants to the empty staging database, and
    roll back: a setting or grant we cannot carry over shows up now, not at the swap."""
    owner = database_owner(admin, staging)
    with admin.transaction(force_rollback=True):
        for stmt in property_statements(staging, old, owner=owner, as_grantors=as_grantors):
            admin.execute(stmt)


def analyze(conn: Endpoint, name: str) -> None:
    """ANALYZE the restored copy before the swap, so the first queries get good plans."""
    with db.connect(conn, name) as connection:
        connection.execute("ANALYZE")


# -- the swap ------------------------------------------------------------------------


class Terminator:
    """A thread that keeps terminating the sessions of some databases until stopped."""

    def __init__(self, connection: Conn, names: list[str]) -> None:
        self.connection = connection
        self.names = names
        self.pids: set[int] = set()
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="velocity-pg-terminator")

    def _run(self) -> None:
        try:
            while True:
                self.pids |= terminate_sessions(self.connection, self.names)
                if self._stop.wait(TERMINATE_INTERVAL):
                    return
        except Exception as exc:  # reported by the swap, which then fails cleanly
            self.error = exc

    @property
    def terminated(self) -> int:
        """Sessions terminated (each counted once)."""
        return len(self.pids)

    def __enter__(self) -> Terminator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class SwapResult:
    unavailable: float  # seconds from the first terminated session to the commit
    terminated: int  # sessions terminated


def swap_in(
    admin: Conn,
    conn: Endpoint,
    *,
    target: str,
    staging: str,
    aside: str,
    replace: bool,
    as_grantors: bool,
    lock_timeout: float = SWAP_LOCK_TIMEOUT,
) -> SwapResult:
    """Put the restored ``staging`` database in ``target``'s place, in one transaction.

    ``replace``: ``target`` exists and is renamed aside (else it is created). If
    it appeared or vanished since, a rename fails and the swap rolls back.
    Raises :class:`SwapFailed` when it rolled back (``target`` unchanged,
    ``staging`` still there). Returns once committed: ``target`` is the restored
    database with the old one's properties, and the old one is named ``aside``.
    """
    from psycopg import sql

    with (
        db.connect(conn, admin.info.dbname) as killer,
        Terminator(killer, [target, staging]) as terminator,
    ):
        started = time.monotonic()
        try:
            with admin.transaction():
                admin.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")
                    )
                )
                if replace:
                    admin.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(target), sql.Identifier(aside)
                        )
                    )
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(staging), sql.Identifier(target)
                    )
                )
                old = read_props(admin, aside) if replace else None
                if old is not None:
                    owner = database_owner(admin, target)
                    for stmt in property_statements(
                        target, old, owner=owner, as_grantors=as_grantors
                    ):
                        admin.execute(stmt)
                else:  # a fresh server: only our staging comment goes
                    admin.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(target))
                    )
            unavailable = time.monotonic() - started
        except Exception as exc:  # whatever it was, the catalog says whether we committed
            if swap_committed(conn, admin, target=target, staging=staging):
                return SwapResult(time.monotonic() - started, terminator.terminated)
            raise SwapFailed(
                describe_swap_failure(exc, target, terminator.error, lock_timeout)
            ) from exc
    return SwapResult(unavailable, terminator.terminated)


def swap_committed(conn: Endpoint, admin: Conn, *, target: str, staging: str) -> bool:
    """After an error at the swap: did the transaction commit anyway (e.g. the
    connection broke during COMMIT)? The catalog tells: staging's name is gone."""
    import psycopg

    def look(connection: Conn) -> bool:
        return database_oid(connection, staging) is None and (
            database_oid(connection, target) is not None
        )

    try:
        return look(admin)
    except psycopg.Error:
        pass
    try:
        with connect_admin(conn, target) as fresh:
            return look(fresh)
    except (psycopg.Error, OperationFailed):
        return False


def describe_swap_failure(
    exc: Exception, target: str, terminator_error: Exception | None, lock_timeout: float
) -> str:
    import psycopg

    reason = db.one_line(exc)
    if isinstance(exc, psycopg.errors.ObjectInUse):
        why = (
            f"cannot terminate them: {db.one_line(terminator_error)}"
            if terminator_error is not None
            else "they kept coming back"
        )
        return f"database {target!r} still had sessions at the swap ({why}): {reason}"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (
            f"another session holds a lock on database {target!r} or its restored copy "
            f"(waited {lock_timeout:g} s): {reason}"
        )
    return f"the swap failed: {reason}"


def existing(admin: Conn, names: list[str]) -> list[str]:
    """Which of these databases exist."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY datname", (names,)
    ).fetchall()
    return [str(r[0]) for r in rows]
