"""The roles of a restore: checked before anything is touched, created when asked, and
``--owner ROLE``.

Before the countdown (and by ``--check``), the archive's owners and grantees (read from
``pg_restore --schema-only``, so backups made before roles were recorded are checked too)
and the roles recorded beside the backup (store/roles.py) are compared with the target
server. A missing role is refused up front, naming each one and the remedy
(``--create-missing-roles``, or ``--owner ROLE``), never at pg_restore's first
``OWNER TO``.

``--create-missing-roles`` creates them before the restore, in one transaction, as the
roles file records them (NOLOGIN unless it kept the password hashes), with their
memberships; a role the backup has no record of (an older backup) is created plain,
NOLOGIN.

``--owner ROLE``: pg_restore runs ``--no-owner --role=ROLE`` (every object is ROLE's),
and the privileges are left out of it (the archive's ``ACL`` entries are not in its
``--use-list``); they are applied afterwards, statement by statement, as ROLE, in one
transaction, leaving out those that name a role the target lacks (reported). Why not
``--no-acl`` alone: that drops the grants to roles that do exist; why not leaving out
whole ACL entries: one entry holds every grant on an object, to present and missing
roles alike. What needs a superuser when ROLE is not one (an extension the target does
not trust, an event trigger) is refused up front, naming it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import CommandFailed, OperationFailed, describe_failure
from velocity_pg.postgres import db, pgtools
from velocity_pg.postgres import roles as pgroles
from velocity_pg.postgres.endpoint import Endpoint
from velocity_pg.restore import archive
from velocity_pg.store import manifest
from velocity_pg.store import roles as stored

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class RolesPlan:
    """What the roles of this restore are, and what it will do about them."""

    #: The backup's roles file says which roles it needs; False: an older backup, unknown.
    recorded: bool
    passwords: bool
    owners: tuple[str, ...]
    grantees: tuple[str, ...]
    #: Roles (needed, or recorded) the target lacks.
    missing: tuple[str, ...]
    #: ``--create-missing-roles``: the roles that will be created.
    create: tuple[str, ...] = ()
    #: ``--owner ROLE``.
    owner: str | None = None
    #: With --owner: the grantees the target lacks, whose privileges are left out.
    left_out: tuple[str, ...] = ()
    definitions: pgroles.Definitions = field(default_factory=pgroles.Definitions)

    def lines(self) -> list[str]:
        out = []
        needed = set(self.owners) | set(self.grantees)
        if not self.missing:
            out.append(
                f"roles: the {len(needed)} role(s) its objects need exist on the target"
                if needed
                else "roles: its objects need no role besides the predefined ones"
            )
        elif not self.create:
            others = [r for r in self.missing if r not in needed and r not in self.left_out]
            if others:
                out.append(
                    "roles recorded with the backup that the target lacks (no object needs "
                    f"them; --create-missing-roles creates them): {', '.join(others)}"
                )
        if not self.recorded:
            out.append(
                "roles: unknown (the backup was made before velocity-pg recorded the roles "
                "beside it); the archive's owners and grantees were checked"
            )
        if self.create:
            how = "as recorded" if self.passwords else "NOLOGIN (no password was recorded)"
            out.append(f"roles to create before the restore, {how}: {', '.join(self.create)}")
        if self.owner is not None:
            absent = [r for r in self.owners if r in self.missing]
            out.append(
                f"every object will be owned by role {self.owner!r} (--owner)"
                + (f", in place of {', '.join(absent)}, which the target lacks" if absent else "")
            )
        if self.left_out:
            out.append(
                "privileges of roles the target lacks are left out: " + ", ".join(self.left_out)
            )
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "recorded": self.recorded,
            "passwords": self.passwords,
            "owners": list(self.owners),
            "grantees": list(self.grantees),
            "missing": list(self.missing),
            "create": list(self.create),
            "owner": self.owner,
            "privileges_left_out_for": list(self.left_out),
        }


def assess(
    admin: Conn,
    program: pgtools.Program,
    path: Path,
    entries: Sequence[archive.Entry],
    *,
    owner: str | None,
    create: bool,
    database_owner: str | None = None,
) -> RolesPlan:
    """Compare the backup's roles with the target; refuse (OperationFailed) what cannot
    work, before anything is touched."""
    record = manifest.read(path)  # read and checked by the plan already
    try:
        recorded = stored.read_checked(path, record)
    except OperationFailed as exc:
        raise OperationFailed(
            f"{exc.message}; restore another backup (`velocity-pg list`), or pull it again; "
            "nothing was changed"
        ) from exc
    try:
        needed = pgroles.run_script_roles(program.path, path)
    except CommandFailed as exc:
        raise OperationFailed(
            f"the roles {path.name} needs cannot be read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc
    definitions = recorded.definitions if recorded is not None else pgroles.Definitions()
    wanted = set(needed.all) | set(definitions.roles)
    missing = pgroles.missing(admin, wanted)
    plan = RolesPlan(
        recorded=recorded is not None,
        passwords=recorded is not None and recorded.record.passwords,
        owners=tuple(sorted(needed.owners)),
        grantees=tuple(sorted(needed.grantees)),
        missing=tuple(missing),
        owner=owner,
        definitions=definitions,
    )
    if owner is not None:
        check_owner(admin, owner, entries, database_owner)
    if create:
        return _replace(plan, create=tuple(missing))
    if owner is not None:
        # The owners are replaced by ROLE; only the missing grantees matter, left out.
        left_out = tuple(r for r in missing if r in needed.grantees)
        return _replace(plan, left_out=left_out)
    needed_missing = [r for r in missing if r in needed.all]
    if needed_missing:
        raise OperationFailed(missing_message(path.name, needed_missing, needed))
    foreign = owners_out_of_reach(admin, needed.owners)
    if foreign:
        raise OperationFailed(
            f"{path.name}'s objects are owned by {', '.join(foreign)}, which the restoring "
            "user may not act as (SET ROLE), so pg_restore could not give them their owners; "
            "restore as a superuser or as a member of those roles, or make every object one "
            "role's with `--owner ROLE`; nothing was changed"
        )
    return plan


def owners_out_of_reach(admin: Conn, owners: Collection[str]) -> list[str]:
    """The archive's owners the connected user cannot become (a superuser can become any);
    PostgreSQL 16+ asks for membership WITH SET, earlier ones for membership."""
    if not owners:
        return []
    how = "SET" if admin.info.server_version >= 160000 else "MEMBER"
    rows = admin.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) "
        "AND NOT pg_has_role(current_user, oid, %s) ORDER BY 1",
        (sorted(owners), how),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _replace(plan: RolesPlan, **changes: Any) -> RolesPlan:
    import dataclasses

    return dataclasses.replace(plan, **changes)


def missing_message(name: str, missing: Sequence[str], needed: pgroles.ScriptRoles) -> str:
    described = []
    for role in missing:
        uses = [w for w, group in (("owner", needed.owners), ("grantee", needed.grantees))
                if role in group]  # fmt: skip
        described.append(f"{role} ({' and '.join(uses)})")
    return (
        f"the target server lacks role(s) {', '.join(described)} that {name} needs: "
        f"`velocity-pg restore {name} --create-missing-roles` creates them first (as the "
        "backup records them, NOLOGIN), or `--owner ROLE` makes every object ROLE's and "
        "leaves their privileges out; nothing was changed"
    )


def check_owner(
    admin: Conn, owner: str, entries: Sequence[archive.Entry], database_owner: str | None
) -> None:
    """Refuse, up front, an --owner ROLE that does not exist, that this user cannot act as,
    or that lacks what the archive needs a superuser for (naming it). ``database_owner``:
    the owner of the database replaced (the restored copy gets it); None for a new database,
    which is created owned by ROLE (see :func:`own_new_database`)."""
    row = admin.execute(
        "SELECT rolsuper, pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles "
        "WHERE rolname = %s",
        (owner,),
    ).fetchone()
    if row is None:
        raise OperationFailed(
            f"--owner {owner}: the target server has no role {owner!r}; create it first "
            "(CREATE ROLE), or name a role it has; nothing was changed"
        )
    superuser, member = bool(row[0]), bool(row[1])
    me = admin.execute("SELECT current_user").fetchone()
    if not member:
        raise OperationFailed(
            f"--owner {owner}: user {me[0] if me else '?'!r} cannot act as role {owner!r} "
            f"(SET ROLE); restore as a superuser, as {owner!r}, or as a member of it; "
            "nothing was changed"
        )
    if superuser:
        return
    if database_owner is not None and database_owner != owner:
        row = admin.execute(
            "SELECT pg_has_role(%s, %s, 'USAGE')", (owner, database_owner)
        ).fetchone()
        if not (row and row[0]):
            raise OperationFailed(
                f"--owner {owner}: the restored database keeps its owner {database_owner!r}, "
                f"and role {owner!r} (not a superuser) cannot create objects in its public "
                f"schema (PostgreSQL 15+ gives that to the database owner); make {owner!r} the "
                f"owner first (ALTER DATABASE ... OWNER TO {owner}), or restore as a "
                "superuser without --owner; nothing was changed"
            )
    needs = superuser_needs(admin, entries)
    if needs:
        raise OperationFailed(
            f"--owner {owner}: role {owner!r} is not a superuser, and the backup holds "
            f"{'; '.join(needs)}, which only a superuser can create; restore without "
            "--owner as a superuser, or create those in the target first; nothing was changed"
        )


def superuser_needs(admin: Conn, entries: Sequence[archive.Entry]) -> list[str]:
    """What in the archive a non-superuser cannot create: extensions the target does not
    mark trusted, event triggers."""
    extensions = [e.text.split(" ")[2] for e in entries if e.text.startswith("EXTENSION - ")]
    needs: list[str] = []
    if extensions:
        rows = admin.execute(
            "SELECT name FROM pg_available_extension_versions "
            "WHERE name = ANY(%s) AND trusted GROUP BY name",
            (extensions,),
        ).fetchall()
        trusted = {str(r[0]) for r in rows}
        # plpgsql is in every database already (template0): pg_restore only comments it.
        untrusted = [x for x in extensions if x not in trusted and x != "plpgsql"]
        needs.extend(f"extension {x} (not trusted)" for x in untrusted)
    triggers = [e.text.split(" ")[3] for e in entries if e.text.startswith("EVENT TRIGGER - ")]
    needs.extend(f"event trigger {t}" for t in triggers)
    return needs


# -- doing it ------------------------------------------------------------------------------


def create_missing(admin: Conn, plan: RolesPlan | None) -> list[str]:
    """``--create-missing-roles``: create them (and their memberships), all or none; lines
    for the report."""
    import psycopg

    if plan is None or not plan.create:
        return []
    try:
        granted = pgroles.create_missing(
            admin, plan.create, plan.definitions, passwords=plan.passwords
        )
    except psycopg.Error as exc:
        raise OperationFailed(
            f"the missing roles could not be created ({db.one_line(exc)}); none was "
            "created; create them as a superuser or a CREATEROLE user; nothing was changed"
        ) from exc
    how = "as recorded, with their passwords" if plan.passwords else "NOLOGIN"
    lines = [f"created role(s) {', '.join(plan.create)} ({how})"]
    if granted:
        lines.append(
            "granted membership(s): " + ", ".join(f"{m.role} to {m.member}" for m in granted)
        )
    return lines


def own_new_database(admin: Conn, name: str, plan: RolesPlan | None, new: bool) -> None:
    """--owner ROLE restoring a database that does not exist yet: the copy is ROLE's, so ROLE
    may create in its public schema and owns the database it gets."""
    from psycopg import sql

    if plan is None or plan.owner is None or not new:
        return
    admin.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(plan.owner)
        )
    )


def is_acl(entry: archive.Entry) -> bool:
    return entry.text.startswith(("ACL ", "DEFAULT ACL "))


def restore_entries(
    plan: RolesPlan | None, entries: Sequence[archive.Entry]
) -> list[archive.Entry]:
    """The entries pg_restore restores: with --owner, not the privileges (applied later)."""
    if plan is None or plan.owner is None:
        return list(entries)
    return [e for e in entries if not is_acl(e)]


def pg_restore_args(plan: RolesPlan | None) -> list[str]:
    if plan is None or plan.owner is None:
        return []
    return ["--no-owner", f"--role={plan.owner}"]


def acl_statements(
    script: str, missing: Sequence[str], owner: str | None = None
) -> tuple[list[str], int]:
    """The statements of the ACL entries' script to apply as the new owner: not those that
    name a missing role, not the SET SESSION AUTHORIZATION a grantor needs (the new owner
    grants), not another role's default privileges (``ALTER DEFAULT PRIVILEGES FOR ROLE r``:
    what r creates later, in the environment the backup came from); the count left out."""
    gone = set(missing)
    kept: list[str] = []
    dropped = 0
    for statement in pgroles.statements(script):
        toks = pgroles.tokens(statement)
        if toks and (
            (toks[0].is_word("SET") and len(toks) > 1 and toks[1].is_word("SESSION"))
            or (toks[0].is_word("RESET") and len(toks) > 1 and toks[1].is_word("SESSION"))
        ):
            continue
        owners, grantees = pgroles.statement_roles(statement)
        others = (
            owner is not None
            and len(toks) > 5
            and toks[0].is_word("ALTER")
            and toks[1].is_word("DEFAULT")
            and toks[3].is_word("FOR")
            and set(pgroles.role_list(toks, 5)[0]) != {owner}
        )
        if others or (owners | grantees) & gone:
            dropped += 1
            continue
        kept.append(statement)
    return kept, dropped


def apply_acls(
    program: Path,
    backup: Path,
    where: Endpoint,
    dbname: str,
    plan: RolesPlan | None,
    entries: Sequence[archive.Entry],
) -> int:
    """With --owner: apply the archive's privileges as ROLE, in one transaction, leaving out
    those of missing roles; the number left out."""
    from psycopg import sql

    if plan is None or plan.owner is None:
        return 0
    acls = [e for e in entries if is_acl(e)]
    if not acls:
        return 0
    with archive.list_file(acls) as listed:
        script = pgtools.capture(pgroles.schema_script_cmd(program, backup, use_list=listed))
    statements, dropped = acl_statements(script, plan.left_out, plan.owner)
    with db.connect(where, dbname) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(plan.owner)))
        for statement in statements:
            conn.execute(statement.encode())
    return dropped
