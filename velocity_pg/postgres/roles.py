"""The roles a backup needs: found in its archive, recorded from ``pg_dumpall --roles-only``,
compared with a server, and created there when asked.

Three pure readers of SQL as pg_dump, pg_restore and pg_dumpall write it (names are
printed by ``fmtId``: bare lower-case words, or double-quoted with ``""`` for a quote;
strings are standard-conforming ``'...'`` with ``''`` for a quote):

- :func:`script_roles`: the owners (``ALTER ... OWNER TO r``) and the grantees
  (``GRANT ... TO r``, ``REVOKE ... FROM r``, ``ALTER DEFAULT PRIVILEGES FOR ROLE r``,
  ``SET SESSION AUTHORIZATION r``, ``CREATE POLICY ... TO r``) of the script
  ``pg_restore --schema-only --file=-`` makes of an archive;
- :func:`filter_dumpall`: ``pg_dumpall --roles-only``'s statements about those roles and
  the roles they are members of (transitively), nothing else (the other roles of the
  server stay out of the backup);
- :func:`parse_dumpall`: that text as role definitions and memberships, from which
  :func:`create_missing` builds its statements (names by ``sql.Identifier``, attributes
  from a fixed list), so nothing of the file is ever executed as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

#: Roles every server has (PostgreSQL reserves the ``pg_`` prefix): never missing, never
#: created; pg_dumpall does not dump them either.
PREDEFINED_PREFIX = "pg_"
PUBLIC = "public"

_IDENT = r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*'
_TOKEN_RE = re.compile(
    rf"""(?P<ident>{_IDENT})|(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<punct>[,;()=.])"""
    r"|(?P<other>\S)"
)


@dataclass(frozen=True)
class Token:
    kind: str  # ident (a word or a quoted name), string, number, punct, other
    value: str  # a word as written; a quoted name or a string unquoted
    quoted: bool = False

    def is_word(self, *words: str) -> bool:
        return self.kind == "ident" and not self.quoted and self.value.upper() in words

    @property
    def name(self) -> str:
        """The role (or other object) it names: a bare word folds to lower case."""
        return self.value if self.quoted else self.value.lower()


def statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, each without its ``;``; comments (``--``), psql's
    meta-commands (``\\connect``, ``\\restrict``) and quoted ``;`` handled."""
    current: list[str] = []
    quote = ""
    for line in script.splitlines(keepends=True):
        if not quote and not "".join(current).strip() and line.startswith("\\"):
            continue  # a psql meta-command on a line of its own
        index = 0
        while index < len(line):
            char = line[index]
            if quote:
                current.append(char)
                if char == quote:
                    if line[index + 1 : index + 2] == quote:  # '' or "": still inside
                        current.append(quote)
                        index += 1
                    else:
                        quote = ""
            elif char in "'\"":
                quote = char
                current.append(char)
            elif line.startswith("--", index):
                break  # the rest of the line is a comment
            elif char == ";":
                text = "".join(current).strip()
                if text:
                    yield text
                current = []
            else:
                current.append(char)
            index += 1
        if not quote and current and not current[-1].endswith("\n"):
            current.append("\n")
    text = "".join(current).strip()
    if text:
        yield text


def tokens(statement: str) -> list[Token]:
    out = []
    for match in _TOKEN_RE.finditer(statement):
        kind = match.lastgroup or "other"
        value = match.group()
        quoted = False
        if kind == "ident" and value.startswith('"'):
            value, quoted = value[1:-1].replace('""', '"'), True
        elif kind == "string":
            value = value[1:-1].replace("''", "'")
        out.append(Token(kind, value, quoted))
    return out


def role_list(toks: Sequence[Token], start: int) -> tuple[list[str], int]:
    """The names of a role list (``a, "B", PUBLIC``) from ``start``; and where it ends."""
    names: list[str] = []
    index = start
    while index < len(toks) and toks[index].kind == "ident":
        tok = toks[index]
        if tok.is_word("GROUP") and index + 1 < len(toks) and toks[index + 1].kind == "ident":
            index += 1
            tok = toks[index]
        names.append(tok.name)
        index += 1
        if index < len(toks) and toks[index].value == "," and toks[index].kind == "punct":
            index += 1
            continue
        break
    return names, index


def _after_last_word(toks: Sequence[Token], word: str) -> int | None:
    """The index just after the last bare ``word`` outside parentheses, or None."""
    depth = 0
    found = None
    for index, tok in enumerate(toks):
        if tok.kind == "punct" and tok.value == "(":
            depth += 1
        elif tok.kind == "punct" and tok.value == ")":
            depth -= 1
        elif depth == 0 and tok.is_word(word):
            found = index + 1
    return found


@dataclass(frozen=True)
class ScriptRoles:
    """The roles a restore script names: as owners, and in privileges (grantees, grantors)."""

    owners: frozenset[str] = frozenset()
    grantees: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.owners | self.grantees


def is_real_role(name: str) -> bool:
    """A role that may be missing on a server (not PUBLIC, not predefined)."""
    return name != PUBLIC and not name.startswith(PREDEFINED_PREFIX)


def statement_roles(statement: str) -> tuple[set[str], set[str]]:
    """(owners, grantees) one statement of a restore script names."""
    toks = tokens(statement)
    owners: set[str] = set()
    grantees: set[str] = set()
    if not toks:
        return owners, grantees
    first = toks[0]
    if first.is_word("ALTER") and len(toks) > 3:
        if toks[1].is_word("DEFAULT") and toks[2].is_word("PRIVILEGES"):
            if toks[3].is_word("FOR") and len(toks) > 5:
                names, _ = role_list(toks, 5)
                grantees.update(names)
            for word in ("TO", "FROM"):
                at = _after_last_word(toks, word)
                if at is not None:
                    grantees.update(role_list(toks, at)[0])
        elif (
            len(toks) >= 3
            and toks[-3].is_word("OWNER")
            and toks[-2].is_word("TO")
            and toks[-1].kind == "ident"
        ):
            owners.add(toks[-1].name)
    elif first.is_word("GRANT", "REVOKE"):
        word = "TO" if first.is_word("GRANT") else "FROM"
        at = _after_last_word(toks, word)
        if at is not None:
            grantees.update(role_list(toks, at)[0])
        by = _after_last_word(toks, "BY")
        if by is not None and by >= 2 and toks[by - 2].is_word("GRANTED"):
            grantees.update(role_list(toks, by)[0])
    elif first.is_word("SET") and len(toks) >= 4 and toks[1].is_word("SESSION"):
        if (
            toks[2].is_word("AUTHORIZATION")
            and toks[3].kind in ("ident", "string")
            and not toks[3].is_word("DEFAULT")
        ):
            grantees.add(toks[3].name if toks[3].kind == "ident" else toks[3].value)
    elif first.is_word("CREATE") and len(toks) > 1 and toks[1].is_word("POLICY"):
        depth = 0
        for index, tok in enumerate(toks):
            if tok.kind == "punct" and tok.value in "()":
                depth += 1 if tok.value == "(" else -1
            elif depth == 0 and tok.is_word("TO"):
                grantees.update(role_list(toks, index + 1)[0])
                break
    return {r for r in owners if is_real_role(r)}, {r for r in grantees if is_real_role(r)}


def script_roles(script: str) -> ScriptRoles:
    """The owners and grantees a restore script (``pg_restore --schema-only -f -``) names."""
    owners: set[str] = set()
    grantees: set[str] = set()
    for statement in statements(script):
        found_owners, found_grantees = statement_roles(statement)
        owners |= found_owners
        grantees |= found_grantees
    return ScriptRoles(frozenset(owners), frozenset(grantees))


def schema_script_cmd(
    program: str | Path, archive: Path, use_list: Path | None = None
) -> list[str]:
    """The archive's schema as a script on stdout (no data: cheap for a large dump)."""
    cmd = [str(program), "--schema-only", "--file=-"]
    if use_list is not None:
        cmd.append(f"--use-list={use_list}")
    return [*cmd, str(archive)]


def dumpall_cmd(program: str | Path, conninfo: str, database: str, *, passwords: bool) -> list[str]:
    """``pg_dumpall --roles-only``: without password hashes it reads pg_roles (any user may);
    with them, pg_authid (superusers only). It connects to ``database`` (the one backed up:
    pg_dumpall ignores the database of ``--dbname`` and would try postgres, then template1,
    which pg_hba.conf may not let the backup user reach)."""
    cmd = [
        str(program),
        "--roles-only",
        "--no-password",
        f"--dbname={conninfo}",
        f"--database={database}",
    ]
    if not passwords:
        cmd.append("--no-role-passwords")
    return cmd


# -- pg_dumpall's roles ---------------------------------------------------------------


#: The attributes ``ALTER ROLE ... WITH`` may carry, as pg_dumpall writes them.
ATTRIBUTES = frozenset(
    {
        f"{no}{word}"
        for no in ("", "NO")
        for word in (
            "SUPERUSER",
            "INHERIT",
            "CREATEROLE",
            "CREATEDB",
            "LOGIN",
            "REPLICATION",
            "BYPASSRLS",
        )
    }
)


@dataclass(frozen=True)
class RoleDef:
    name: str
    attributes: tuple[str, ...] = ()
    connection_limit: int | None = None
    password: str | None = None
    valid_until: str | None = None

    @property
    def login(self) -> bool:
        return "LOGIN" in self.attributes


@dataclass(frozen=True)
class Membership:
    role: str  # the role granted
    member: str
    admin: bool = False


@dataclass(frozen=True)
class Definitions:
    roles: dict[str, RoleDef] = field(default_factory=dict)
    memberships: tuple[Membership, ...] = ()


def _subject(toks: Sequence[Token]) -> str | None:
    """The role a pg_dumpall statement is about (None for memberships and the rest)."""
    if len(toks) >= 3 and toks[0].is_word("CREATE", "ALTER") and toks[1].is_word("ROLE"):
        return toks[2].name if toks[2].kind == "ident" else None
    if len(toks) >= 4 and toks[0].is_word("COMMENT") and toks[2].is_word("ROLE"):
        return toks[3].name if toks[3].kind == "ident" else None
    if toks and toks[0].is_word("SECURITY"):
        for index, tok in enumerate(toks[:-1]):
            if tok.is_word("ROLE") and toks[index - 1].is_word("ON"):
                return toks[index + 1].name
    return None


def _membership(toks: Sequence[Token]) -> Membership | None:
    if not toks or not toks[0].is_word("GRANT") or len(toks) < 4 or not toks[2].is_word("TO"):
        return None
    if toks[1].kind != "ident" or toks[3].kind != "ident":
        return None
    admin = False
    for index, tok in enumerate(toks[4:], start=4):
        if tok.is_word("ADMIN") and index + 1 < len(toks):
            admin = toks[index + 1].is_word("OPTION", "TRUE")
    return Membership(role=toks[1].name, member=toks[3].name, admin=admin)


def parse_dumpall(script: str) -> Definitions:
    """The roles and memberships of a ``pg_dumpall --roles-only`` script (or a roles file)."""
    roles: dict[str, RoleDef] = {}
    memberships: list[Membership] = []
    for statement in statements(script):
        toks = tokens(statement)
        membership = _membership(toks)
        if membership is not None:
            memberships.append(membership)
            continue
        name = _subject(toks)
        if name is None or not toks[0].is_word("CREATE", "ALTER"):
            continue
        role = roles.get(name, RoleDef(name))
        if toks[0].is_word("ALTER") and len(toks) > 3 and toks[3].is_word("WITH"):
            role = _with_options(role, toks[4:])
        roles[name] = role
    return Definitions(roles, tuple(memberships))


def _with_options(role: RoleDef, toks: Sequence[Token]) -> RoleDef:
    attributes = list(role.attributes)
    limit, password, until = role.connection_limit, role.password, role.valid_until
    index = 0
    while index < len(toks):
        tok = toks[index]
        word = tok.value.upper() if tok.kind == "ident" and not tok.quoted else ""
        if word in ATTRIBUTES:
            attributes.append(word)
        elif word == "CONNECTION" and index + 2 < len(toks) and toks[index + 2].kind == "number":
            limit = int(toks[index + 2].value)
            index += 2
        elif word == "PASSWORD" and index + 1 < len(toks) and toks[index + 1].kind == "string":
            password = toks[index + 1].value
            index += 1
        elif word == "VALID" and index + 2 < len(toks) and toks[index + 2].kind == "string":
            until = toks[index + 2].value
            index += 2
        index += 1
    return RoleDef(role.name, tuple(attributes), limit, password, until)


def closure(needed: Iterable[str], memberships: Iterable[Membership]) -> set[str]:
    """``needed`` and every role they are members of, directly or not."""
    member_of: dict[str, set[str]] = {}
    for m in memberships:
        member_of.setdefault(m.member, set()).add(m.role)
    found = set(needed)
    todo = list(found)
    while todo:
        for role in member_of.get(todo.pop(), ()):
            if role not in found:
                found.add(role)
                todo.append(role)
    return found


def filter_dumpall(script: str, needed: Iterable[str]) -> tuple[str, list[str]]:
    """The statements of a ``pg_dumpall --roles-only`` script about ``needed`` and the roles
    they are members of (their definitions, settings, comments, memberships among them),
    one a line; and the roles kept, sorted. Needed roles the script lacks are left out."""
    parsed = [(s, tokens(s)) for s in statements(script)]
    memberships = [m for _, toks in parsed if (m := _membership(toks)) is not None]
    defined = {n for _, toks in parsed if (n := _subject(toks)) is not None}
    keep = closure({n for n in needed if n in defined}, memberships) & defined
    out: list[str] = []
    for statement, toks in parsed:
        membership = _membership(toks)
        if membership is not None:
            wanted = membership.role in keep and membership.member in keep
        else:
            subject = _subject(toks)
            wanted = subject is not None and subject in keep
        if wanted:
            out.append(" ".join(line.strip() for line in statement.splitlines()) + ";")
    return "".join(line + "\n" for line in out), sorted(keep)


def has_password(script: str) -> bool:
    """A password hash (SCRAM-SHA-256 or md5) is in the script."""
    return any(role.password for role in parse_dumpall(script).roles.values())


# -- the server ---------------------------------------------------------------------------


def existing(conn: Conn, names: Iterable[str]) -> set[str]:
    """Which of ``names`` exist as roles on the server."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))
    return {str(row[0]) for row in rows.fetchall()}


def missing(conn: Conn, names: Iterable[str]) -> list[str]:
    """The roles of ``names`` the server lacks (PUBLIC and predefined roles never are), sorted."""
    wanted = {n for n in names if is_real_role(n)}
    return sorted(wanted - existing(conn, wanted))


def create_statements(
    names: Sequence[str], definitions: Definitions, *, passwords: bool
) -> list[Any]:
    """The statements that create the roles ``names`` as recorded (NOLOGIN unless the
    recorded passwords are kept) and their memberships among roles that will exist;
    names by ``sql.Identifier``, attributes from :data:`ATTRIBUTES`, values by
    ``sql.Literal``. Roles the definitions lack are created plain (NOLOGIN)."""
    from psycopg import sql

    out: list[Any] = []
    for name in sorted(set(names)):
        role = definitions.roles.get(name, RoleDef(name))
        attributes = [a for a in role.attributes if a in ATTRIBUTES]
        keep_login = passwords and role.login
        attributes = [a for a in attributes if a not in ("LOGIN", "NOLOGIN")]
        attributes.append("LOGIN" if keep_login else "NOLOGIN")
        parts: list[sql.Composable] = [sql.SQL("CREATE ROLE {} WITH").format(sql.Identifier(name))]
        parts.extend(sql.SQL(a) for a in attributes)
        if role.connection_limit is not None:
            parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(role.connection_limit)))
        if passwords and role.password is not None:
            parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(role.password)))
        if passwords and role.valid_until is not None:
            parts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role.valid_until)))
        out.append(sql.SQL(" ").join(parts))
    return out


def membership_statements(
    created: Sequence[str], definitions: Definitions, present: set[str]
) -> tuple[list[Any], list[Membership]]:
    """GRANT statements for the recorded memberships that involve a created role and whose
    both sides will exist (``present``: roles on the server, created ones included)."""
    from psycopg import sql

    out: list[Any] = []
    granted: list[Membership] = []
    made = set(created)
    for m in definitions.memberships:
        if (m.role in made or m.member in made) and m.role in present and m.member in present:
            statement = sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(m.role), sql.Identifier(m.member)
            )
            if m.admin:
                statement = sql.SQL("{} WITH ADMIN OPTION").format(statement)
            out.append(statement)
            granted.append(m)
    return out, granted


def create_missing(
    conn: Conn, names: Sequence[str], definitions: Definitions, *, passwords: bool
) -> list[Membership]:
    """Create the roles ``names`` and their memberships in one transaction (all or none);
    the memberships granted. psycopg.Error when the server refuses."""
    with conn.transaction():
        for statement in create_statements(names, definitions, passwords=passwords):
            conn.execute(statement)
        present = existing(conn, set(names) | closure(names, definitions.memberships))
        present |= existing(conn, {m.role for m in definitions.memberships})
        present |= existing(conn, {m.member for m in definitions.memberships})
        grants, granted = membership_statements(names, definitions, present)
        for statement in grants:
            conn.execute(statement)
    return granted


def run_script_roles(
    program: str | Path, archive: Path, env: Mapping[str, str | None] | None = None
) -> ScriptRoles:
    """The owners and grantees of an archive (pg_restore reads it; raises CommandFailed)."""
    from velocity_pg.postgres import pgtools

    return script_roles(pgtools.capture(schema_script_cmd(program, archive), env or {}))
