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

import dataclasses
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
    Merged,
    RoleSetting,
    create_database_sql,
    merge_recorded,
    property_statements,
    reset_statements,
    setting_name,
)
from velocity_pg.store.manifest import DatabaseProperties

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from velocity_pg.postgres.endpoint import Endpoint

    Conn = psycopg.Connection[tuple[Any, ...]]

#: How long the swap may wait for a lock on either database before giving up.
SWAP_LOCK_TIMEOUT = 10.0
#: How often the terminator looks for sessions during the swap.
TERMINATE_INTERVAL = 0.02


class SwapFailed(OperationFailed):
    """The swap transaction rolled back: the live database is unchanged."""


@dataclass(frozen=True)
class Chain:
    """More work for the swap transaction, all or nothing with the swap itself.

    ``before``: renames done first (an older rollback point moved out of the
    way); ``after``: renames done last (an undo moves the replaced contents to
    the rollback point's name); ``comments``: set on databases at the end;
    ``reset_target``: clear the settings the database coming in carries (an
    undo's rollback point has its own) before it gets the live one's.
    """

    before: tuple[tuple[str, str], ...] = ()
    after: tuple[tuple[str, str], ...] = ()
    comments: tuple[tuple[str, str], ...] = ()
    reset_target: bool = False

    def databases(self) -> list[str]:
        """Databases the chain renames: their sessions are terminated too."""
        return [old for old, _new in (*self.before, *self.after)]


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


def present_roles(admin: Conn, recorded: DatabaseProperties | None) -> frozenset[str]:
    """Which of the roles the backup's recorded properties name exist on this server."""
    if recorded is None:
        return frozenset()
    names = {s.role for s in recorded.settings if s.role is not None}
    names |= {g.grantee for g in recorded.grants or () if g.grantee is not None}
    if not names:
        return frozenset()
    rows = admin.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(names),)
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def fresh_props(admin: Conn, name: str) -> DatabaseProps:
    """A database velocity-pg just created, as the base the backup's properties fill:
    its own properties without the staging comment."""
    props = read_props(admin, name)
    if props is None:
        raise OperationFailed(f"database {name!r} disappeared")
    return dataclasses.replace(props, comment=None)


def unsettable_settings(admin: Conn, recorded: DatabaseProperties | None) -> frozenset[str]:
    """Which of the recorded settings the connected user may not set on a database: those
    only a superuser may (``pg_settings.context``), when it is not one and (PostgreSQL 15+)
    holds no ``SET`` privilege on them. Names unknown to this server are not judged here."""
    if recorded is None or not recorded.settings:
        return frozenset()
    names = sorted({setting_name(s.setting) for s in recorded.settings})
    row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if row is not None and row[0]:
        return frozenset()
    query = (
        "SELECT lower(name) FROM pg_settings WHERE context = 'superuser' AND lower(name) = ANY(%s)"
    )
    if admin.info.server_version >= 150000:  # GRANT SET ON PARAMETER
        query += " AND NOT has_parameter_privilege(name, 'SET')"
    rows = admin.execute(query, (names,)).fetchall()
    return frozenset(str(r[0]) for r in rows)


def merged_props(admin: Conn, base: DatabaseProps, recorded: DatabaseProperties | None) -> Merged:
    """``base`` with the gaps filled from the backup's recorded properties (leaving out
    roles the target lacks and settings the user may not set)."""
    return merge_recorded(
        base, recorded, present_roles(admin, recorded), unsettable_settings(admin, recorded)
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


#: A session of another velocity-pg restore or verify that must not be ended: its admin
#: session, which holds that run's advisory lock (a restore of ``postgres`` meets them).
_VELOCITY_ADMIN = """
    a.application_name = 'velocity-pg' AND EXISTS (
        SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
    )
"""


def terminate_sessions(admin: Conn, names: list[str]) -> set[int]:
    """pg_terminate_backend for every other session connected to these databases, except
    the admin sessions of other velocity-pg runs (see :func:`velocity_admin_sessions`);
    the pids it ended.

    A session stays listed until it has exited, so it may be terminated (and
    returned) more than once: count the distinct pids.
    """
    # pg_terminate_backend in the select list: a WHERE clause does not fix the order in
    # which its conditions run, and must never terminate a session it then filters out.
    rows = admin.execute(
        "SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a "
        f"WHERE a.datname = ANY(%s) AND a.pid <> pg_backend_pid() AND NOT ({_VELOCITY_ADMIN})",
        (names,),
    ).fetchall()
    return {int(pid) for pid, ended in rows if ended}


def velocity_admin_sessions(admin: Conn, name: str) -> list[int]:
    """Pids of other velocity-pg restores' and verifies' admin sessions in database ``name``
    (they connect to a maintenance database, usually ``postgres``, and hold their lock)."""
    rows = admin.execute(
        "SELECT a.pid FROM pg_stat_activity a "
        f"WHERE a.datname = %s AND a.pid <> pg_backend_pid() AND {_VELOCITY_ADMIN} ORDER BY 1",
        (name,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def subscriptions(admin: Conn, name: str) -> list[tuple[str, str, bool]]:
    """(name, owner, enabled) of each logical replication subscription in a database."""
    rows = admin.execute(
        "SELECT s.subname, pg_get_userbyid(s.subowner), s.subenabled FROM pg_subscription s "
        "JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = %s ORDER BY 1",
        (name,),
    ).fetchall()
    return [(str(r[0]), str(r[1]), bool(r[2])) for r in rows]


def logical_slots(admin: Conn, name: str) -> list[str]:
    """The logical replication slots of a database (DROP DATABASE drops them with it)."""
    rows = admin.execute(
        "SELECT slot_name FROM pg_replication_slots "
        "WHERE database = %s AND slot_type = 'logical' ORDER BY 1",
        (name,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def slots_retaining_wal(admin: Conn, name: str) -> list[tuple[str, int | None]]:
    """Each replication slot of a database, with the WAL it holds back from removal in
    bytes (``pg_current_wal_lsn() - restart_lsn``; None when it reserves none)."""
    rows = admin.execute(
        "SELECT slot_name, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() "
        "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn) "
        "FROM pg_replication_slots WHERE database = %s ORDER BY 1",
        (name,),
    ).fetchall()
    return [(str(r[0]), None if r[1] is None else int(r[1])) for r in rows]


def drop_slot(admin: Conn, slot: str, database: str, attempts: int = 10) -> None:
    """Drop replication slot ``slot`` if it still belongs to ``database``, ending the
    session that uses it (a consumer still connected to the replaced contents)."""
    import psycopg

    where = "FROM pg_replication_slots WHERE slot_name = %s AND database = %s"
    for attempt in range(attempts):
        admin.execute(
            f"SELECT pg_terminate_backend(active_pid) {where} AND active_pid IS NOT NULL",
            (slot, database),
        )
        try:
            admin.execute(f"SELECT pg_drop_replication_slot(slot_name) {where}", (slot, database))
            return
        except psycopg.errors.ObjectInUse:  # its session has not exited yet
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def make_droppable(admin: Conn, conn: Endpoint | None, name: str) -> None:
    """Clear what stops DROP DATABASE on a database of ours: the template flag ("cannot
    drop a template database") and subscriptions ("is being used by logical replication
    subscription"). Each subscription is disabled, detached from its slot (which stays on
    the publisher: the restored copy's subscription of the same name uses it) and dropped.
    """
    from psycopg import sql

    row = admin.execute(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row is None:
        return
    ident = sql.Identifier(name)
    if row[0]:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
    subs = subscriptions(admin, name)
    if not subs or conn is None:
        return
    if not row[1]:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident))
    with db.connect(conn, name) as inside:
        for sub, _owner, enabled in subs:
            sub_id = sql.Identifier(sub)
            if enabled:
                inside.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sub_id))
            inside.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sub_id))
            inside.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sub_id))


def drop_database(admin: Conn, name: str, conn: Endpoint | None = None) -> None:
    """Drop a database of ours (staging, old or drill), ending its sessions first.

    With ``conn`` (how to connect to it), a subscription in it does not stop the drop
    (see :func:`make_droppable`); a template flag never does.
    """
    import psycopg
    from psycopg import sql

    make_droppable(admin, conn, name)
    force = db.server_version_num(admin) >= 130000
    stmt = sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
        sql.Identifier(name), sql.SQL(" WITH (FORCE)") if force else sql.SQL("")
    )
    try:
        _drop(admin, stmt, name)
    except psycopg.errors.ObjectInUse:
        raise
    except psycopg.Error as first:
        # A full disk: DROP DATABASE needs a checkpoint, which needs to write ("checkpoint
        # request failed"). Emptying the database's tables frees their files at once.
        if conn is None or admin.closed or admin.broken:
            raise
        try:
            empty_database(conn, name)
        except (psycopg.Error, OperationFailed):
            raise first from None
        _drop(admin, stmt, name)


def _drop(admin: Conn, stmt: sql.Composed, name: str) -> None:
    import psycopg

    for attempt in range(3):
        terminate_sessions(admin, [name])
        try:
            admin.execute(stmt)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 2:
                raise
            time.sleep(0.5)


def empty_database(conn: Endpoint, name: str) -> None:
    """TRUNCATE every table of a database of ours: their files are freed at commit, with
    no checkpoint (what lets DROP DATABASE work again on a full disk)."""
    from psycopg import sql

    with db.connect(conn, name) as inside:
        tables = inside.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"
        ).fetchall()
        if tables:
            inside.execute(
                sql.SQL("TRUNCATE {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(str(s), str(t)) for s, t in tables)
                )
            )


def create_staging(admin: Conn, name: str, like: DatabaseProps | None, comment: str) -> None:
    """Create the empty staging database like the live one (template0)."""
    from psycopg import sql

    admin.execute(create_database_sql(name, like))
    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
    )


def database_comment(admin: Conn, name: str) -> str | None:
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def set_comment(admin: Conn, name: str, comment: str) -> None:
    from psycopg import sql

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
    import psycopg
    from psycopg import sql

    owner = database_owner(admin, staging)
    with admin.transaction(force_rollback=True):
        # On the live database (at the check) a session holding its catalog row must not
        # make us wait forever: our sessions have no lock timeout of their own.
        admin.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(f"{int(SWAP_LOCK_TIMEOUT * 1000)}ms")
            )
        )
        for stmt in property_statements(staging, old, owner=owner, as_grantors=as_grantors):
            try:
                admin.execute(stmt)
            except psycopg.Error as exc:
                raise PropertyRefused(stmt.as_string(admin), exc) from exc


def rehearse_merged(
    admin: Conn,
    staging: str,
    live: DatabaseProps | None,
    recorded: DatabaseProperties | None,
    *,
    as_grantors: bool,
) -> None:
    """:func:`rehearse_properties` with what the swap will give: the live database's
    properties (on a fresh server, the new database's own) filled from the backup's."""
    base = live if live is not None else fresh_props(admin, staging)
    merged = merged_props(admin, base, recorded).props
    rehearse_properties(admin, staging, merged, as_grantors=as_grantors)


class PropertyRefused(OperationFailed):
    """One of the statements that carry a database's settings and grants over failed."""

    def __init__(self, statement: str, exc: Exception) -> None:
        self.statement = statement
        self.reason = db.one_line(exc)
        super().__init__(f"cannot carry over `{statement}`: {self.reason}")


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
    chain: Chain | None = None,
    recorded: DatabaseProperties | None = None,
) -> SwapResult:
    """Put the restored ``staging`` database in ``target``'s place, in one transaction.

    ``replace``: ``target`` exists and is renamed aside (else it is created). If
    it appeared or vanished since, a rename fails and the swap rolls back.
    Raises :class:`SwapFailed` when it rolled back (``target`` unchanged,
    ``staging`` still there). Returns once committed: ``target`` is the restored
    database with the old one's properties, and the old one is named ``aside``.

    ``chain`` adds renames before and after, and comments, to the same
    transaction (the rollback point's moves, see :class:`Chain`).

    ``recorded``: the backup's own database properties (its manifest), which fill
    what the replaced database does not set (:func:`merge_recorded`); with no database
    replaced they are all the new one gets.
    """
    import psycopg
    from psycopg import sql

    chain = Chain() if chain is None else chain
    source_oid = database_oid(admin, staging)

    def rename(old_name: str, new_name: str) -> None:
        admin.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old_name), sql.Identifier(new_name)
            )
        )

    with (
        db.connect(conn, admin.info.dbname) as killer,
        Terminator(killer, [target, staging, *chain.databases()]) as terminator,
    ):
        started = time.monotonic()
        try:
            with admin.transaction():
                admin.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")
                    )
                )
                for old_name, new_name in chain.before:
                    rename(old_name, new_name)
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
                if old is None and recorded is not None:
                    old = fresh_props(admin, target)
                if old is not None:
                    old = merged_props(admin, old, recorded).props
                    owner = database_owner(admin, target)
                    if chain.reset_target:
                        returning = read_props(admin, target)
                        assert returning is not None
                        for stmt in reset_statements(returning):
                            admin.execute(stmt)
                    for stmt in property_statements(
                        target, old, owner=owner, as_grantors=as_grantors
                    ):
                        admin.execute(stmt)
                else:  # a fresh server: only our staging comment goes
                    admin.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(target))
                    )
                for old_name, new_name in chain.after:
                    rename(old_name, new_name)
                for name, comment in chain.comments:
                    admin.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(name), sql.Literal(comment)
                        )
                    )
            unavailable = time.monotonic() - started
        except Exception as exc:  # whatever it was, the catalog says whether we committed
            if swap_committed(conn, admin, target=target, staging=staging, source_oid=source_oid):
                return SwapResult(time.monotonic() - started, terminator.terminated)
            blockers = SwapBlockers()
            if isinstance(exc, psycopg.errors.ObjectInUse):
                blockers = find_blockers(admin, [target, staging])
            raise SwapFailed(
                describe_swap_failure(exc, target, terminator.error, lock_timeout, blockers)
            ) from exc
    return SwapResult(unavailable, terminator.terminated)


def swap_committed(
    conn: Endpoint, admin: Conn, *, target: str, staging: str, source_oid: int | None = None
) -> bool:
    """After an error at the swap: did the transaction commit anyway (e.g. the
    connection broke during COMMIT)? The catalog tells: staging's name is gone
    (with ``source_oid``: ``target`` is now the database that had that oid)."""
    import psycopg

    def look(connection: Conn) -> bool:
        if source_oid is not None:
            return database_oid(connection, target) == source_oid
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


@dataclass(frozen=True)
class SwapBlockers:
    """What no session termination ends, found after the swap failed for sessions."""

    prepared: int = 0  # prepared transactions in the target or its copy
    velocity_admins: tuple[int, ...] = ()  # other velocity-pg runs' admin sessions


def find_blockers(admin: Conn, names: list[str]) -> SwapBlockers:
    import psycopg

    try:
        prepared = sum(prepared_transactions(admin, name) for name in names)
        admins = tuple(pid for name in names for pid in velocity_admin_sessions(admin, name))
    except psycopg.Error:
        return SwapBlockers()
    return SwapBlockers(prepared=prepared, velocity_admins=admins)


def describe_swap_failure(
    exc: Exception,
    target: str,
    terminator_error: Exception | None,
    lock_timeout: float,
    blockers: SwapBlockers | None = None,
) -> str:
    import psycopg

    reason = db.one_line(exc)
    blockers = blockers or SwapBlockers()
    if blockers.prepared:
        return (
            f"database {target!r} got {blockers.prepared} prepared transaction(s) during the "
            "restore, which block the swap and which ending sessions does not end: COMMIT "
            "PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts), then restore again"
        )
    if blockers.velocity_admins:
        pids = ", ".join(str(pid) for pid in blockers.velocity_admins)
        return (
            f"another velocity-pg restore or verify (session {pids}) is connected to database "
            f"{target!r} for its own work, which a restore of {target!r} must not end; "
            "restore again when it has finished"
        )
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
