"""A database's own properties, and the SQL that gives them to another database (pure).

``pg_dump`` without ``--create`` (how backups are taken) saves what is *inside*
a database, not the database's own properties: its owner, encoding and
locale, ``ALTER DATABASE ... SET`` settings (also per role), grants,
connection limit and comment. A restore creates a new database, so it carries
these over from the database it replaces: the staging database is created with
:func:`create_database_sql` and receives :func:`property_statements` inside the
swap transaction.

Names go through :class:`psycopg.sql.Identifier`. Values go through
:class:`psycopg.sql.Literal`: these are utility statements, which take no bind
parameters, and ``Literal`` is psycopg's own quoting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from psycopg import sql

from velocity_pg.store.manifest import DatabaseProperties

#: Settings whose stored value is a list of quoted elements: pg_dump's
#: ``variable_is_guc_list_quote``. Their elements must be given one literal each.
GUC_LIST_QUOTE = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
_SCANNER_SPACE = " \t\n\r\f"
DEFAULT_TABLESPACE = "pg_default"


@dataclass(frozen=True)
class Grant:
    """One privilege on a database, as ``aclexplode(datacl)`` lists it."""

    grantor: str
    grantee: str | None  # None: PUBLIC
    privilege: str  # CREATE, TEMPORARY or CONNECT
    grantable: bool


@dataclass(frozen=True)
class RoleSetting:
    """One row of ``pg_db_role_setting`` for a database."""

    role: str | None  # None: for everyone (ALTER DATABASE ... SET)
    config: tuple[str, ...]  # "name=value", as stored


@dataclass(frozen=True)
class DatabaseProps:
    """What a database is, apart from its contents."""

    oid: int
    name: str
    owner: str
    encoding: str
    collate: str
    ctype: str
    tablespace: str
    conn_limit: int = -1
    allow_connections: bool = True
    is_template: bool = False
    comment: str | None = None
    acl: tuple[Grant, ...] | None = None  # None: the default privileges
    settings: tuple[RoleSetting, ...] = ()
    locale_provider: str = "c"  # c: libc, i: ICU, b: builtin
    locale: str | None = None  # the ICU or builtin locale
    icu_rules: str | None = None


@dataclass(frozen=True)
class Merged:
    """The properties a restored database gets: the live database's, with the gaps filled
    from the backup's recorded ones (:func:`merge_recorded`)."""

    props: DatabaseProps
    #: What came from the backup: setting names (``name`` or ``name (for role)``), then
    #: ``comment``, ``grants``, ``connection limit``.
    taken: tuple[str, ...] = ()
    #: Roles the backup's settings or grants name that the target lacks (left out).
    left_out: tuple[str, ...] = ()
    #: Settings only a superuser may set, which the restoring user is not (left out).
    needs_superuser: tuple[str, ...] = ()

    def line(self) -> str | None:
        """``database settings from the backup: search_path, statement_timeout; comment``."""
        if not self.taken and not self.left_out and not self.needs_superuser:
            return None
        settings = sorted(t for t in self.taken if t not in _WHOLE)
        whole = [t for t in self.taken if t in _WHOLE]
        parts = [", ".join(settings)] if settings else []
        parts.extend(whole)
        text = "database settings from the backup: " + ("; ".join(parts) or "none")
        if self.left_out:
            text += "; left out for role(s) the target lacks: " + ", ".join(self.left_out)
        if self.needs_superuser:
            text += "; left out, only a superuser may set them: " + ", ".join(self.needs_superuser)
        return text


_WHOLE = ("comment", "grants", "connection limit")


def setting_name(entry: str) -> str:
    """The (lower-case) name of a stored ``name=value`` setting."""
    return entry.partition("=")[0].lower()


def merge_recorded(
    live: DatabaseProps,
    recorded: DatabaseProperties | None,
    roles: frozenset[str],
    unsettable: frozenset[str] = frozenset(),
) -> Merged:
    """``live``'s properties, with the backup's ``recorded`` ones filling the gaps (pure).

    The live database wins where it has its own: a setting name (per role) it sets, a
    comment, grants other than the default privileges, a connection limit. The backup
    fills the rest. A per-role setting or a grant to a role not in ``roles`` (the
    target's) is left out and reported; grants taken from the backup are made by the
    live database's owner (the recorded grantor may be missing on the target). A
    setting named in ``unsettable`` (lower case: only a superuser may set it, and the
    restoring user is not one) is left out and reported rather than refused: the backup's
    fill-ins never cost the restore.
    """
    if recorded is None:
        return Merged(props=live)
    taken: list[str] = []
    left_out: set[str] = set()
    needs_superuser: set[str] = set()
    settings = list(live.settings)
    have = {(s.role, setting_name(e)) for s in live.settings for e in s.config}
    added: dict[str | None, list[str]] = {}
    for item in recorded.settings:
        key = (item.role, setting_name(item.setting))
        if key in have:
            continue
        if item.role is not None and item.role not in roles:
            left_out.add(item.role)
            continue
        if key[1] in unsettable:
            needs_superuser.add(key[1])
            continue
        have.add(key)
        added.setdefault(item.role, []).append(item.setting)
        taken.append(key[1] if item.role is None else f"{key[1]} (for {item.role})")
    for role, entries in added.items():
        index = next((i for i, s in enumerate(settings) if s.role == role), None)
        if index is None:
            settings.append(RoleSetting(role=role, config=tuple(entries)))
        else:
            settings[index] = RoleSetting(role=role, config=(*settings[index].config, *entries))
    comment = live.comment
    if comment is None and recorded.comment is not None:
        comment = recorded.comment
        taken.append("comment")
    acl = live.acl
    if acl is None and recorded.grants is not None:
        kept: list[Grant] = []
        for grant in recorded.grants:
            if grant.grantee is not None and grant.grantee not in roles:
                left_out.add(grant.grantee)
                continue
            kept.append(
                Grant(
                    grantor=live.owner,
                    grantee=grant.grantee,
                    privilege=grant.privilege,
                    grantable=grant.grantable,
                )
            )
        # The owner keeps its own privileges (its grants are not the backup's to take).
        if not any(g.grantee == live.owner for g in kept):
            kept[:0] = [
                Grant(grantor=live.owner, grantee=live.owner, privilege=p, grantable=False)
                for p in ("CREATE", "TEMPORARY", "CONNECT")
            ]
        acl = tuple(dict.fromkeys(kept))
        taken.append("grants")
    conn_limit = live.conn_limit
    if conn_limit == -1 and recorded.connection_limit != -1:
        conn_limit = recorded.connection_limit
        taken.append("connection limit")
    return Merged(
        props=replace(
            live, settings=tuple(settings), comment=comment, acl=acl, conn_limit=conn_limit
        ),
        taken=tuple(taken),
        left_out=tuple(sorted(left_out)),
        needs_superuser=tuple(sorted(needs_superuser)),
    )


def create_database_sql(name: str, like: DatabaseProps | None) -> sql.Composed:
    """``CREATE DATABASE name`` from template0, with ``like``'s owner, encoding and locale.

    Without ``like`` (a fresh server) the database gets the server's defaults
    and the connecting user as its owner.
    """
    parts: list[sql.Composable] = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    ]
    if like is not None:
        parts.append(
            sql.SQL("OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                sql.Identifier(like.owner),
                sql.Literal(like.encoding),
                sql.Literal(like.collate),
                sql.Literal(like.ctype),
            )
        )
        # Naming a tablespace needs CREATE on it, which roles lack even on pg_default;
        # template0's own is pg_default, so only another one is named.
        if like.tablespace != DEFAULT_TABLESPACE:
            parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(like.tablespace)))
        if like.locale_provider == "i":
            parts.append(sql.SQL("LOCALE_PROVIDER icu"))
            if like.locale:
                parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(like.locale)))
            if like.icu_rules:
                parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(like.icu_rules)))
        elif like.locale_provider == "b":
            parts.append(sql.SQL("LOCALE_PROVIDER builtin"))
            if like.locale:
                parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(like.locale)))
    return sql.SQL(" ").join(parts)


def split_guc_list(text: str) -> list[str] | None:
    """Split a stored list setting into its elements: PostgreSQL's ``SplitGUCList``.

    Elements are separated by commas; double-quoted elements keep commas and
    spaces (``""`` is a quote). None if the text is not a valid list.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n and text[i] in _SCANNER_SPACE:
        i += 1
    if i == n:
        return out
    while True:
        if text[i] == '"':
            chars: list[str] = []
            i += 1
            while True:
                end = text.find('"', i)
                if end < 0:
                    return None
                chars.append(text[i:end])
                if end + 1 < n and text[end + 1] == '"':
                    chars.append('"')
                    i = end + 2
                    continue
                i = end + 1
                break
            element = "".join(chars)
        else:
            start = i
            while i < n and text[i] != "," and text[i] not in _SCANNER_SPACE:
                i += 1
            if i == start:
                return None
            element = text[start:i]
        while i < n and text[i] in _SCANNER_SPACE:
            i += 1
        out.append(element)
        if i == n:
            return out
        if text[i] != ",":
            return None
        i += 1
        while i < n and text[i] in _SCANNER_SPACE:
            i += 1
        if i == n:  # a trailing comma: SplitGUCList refuses an empty unquoted name
            return None


def setting_assignment(entry: str) -> sql.Composed:
    """``name = value`` for a ``pg_db_role_setting`` entry ``name=value``, as pg_dump writes it."""
    name, sep, value = entry.partition("=")
    if not sep or not name:
        raise ValueError(f"not a setting: {entry!r}")
    values: list[str] = [value]
    if name.lower() in GUC_LIST_QUOTE:
        values = split_guc_list(value) or [value]
    return sql.SQL("{} = {}").format(
        sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values)
    )


def ordered_grants(acl: tuple[Grant, ...], owner: str) -> list[Grant]:
    """Grants in an order that can be replayed: a grantor's grant option comes first."""
    pending = list(acl)
    ordered: list[Grant] = []
    holders: set[tuple[str, str]] = set()
    while pending:
        ready = [g for g in pending if g.grantor == owner or (g.grantor, g.privilege) in holders]
        if not ready:  # a cycle or an unknown grantor: keep the catalog's order
            ordered.extend(pending)
            break
        for grant in ready:
            pending.remove(grant)
            ordered.append(grant)
            if grant.grantable and grant.grantee is not None:
                holders.add((grant.grantee, grant.privilege))
    return ordered


def property_statements(
    name: str, old: DatabaseProps, *, owner: str, as_grantors: bool
) -> list[sql.SQL | sql.Composed]:
    """Statements that give database ``name`` (just created, owned by ``owner``) ``old``'s
    settings, grants, connection limit, flags and comment.

    ``as_grantors``: replay each grant as the role that made it (``SET ROLE``), so
    the grantor recorded is the same; needs superuser.
    """
    db = sql.Identifier(name)
    stmts: list[sql.SQL | sql.Composed] = []
    if old.owner != owner:
        stmts.append(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(old.owner)))
    if old.conn_limit != -1:
        stmts.append(
            sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {}").format(
                db, sql.Literal(old.conn_limit)
            )
        )
    if not old.allow_connections:
        stmts.append(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db))
    if old.is_template:
        stmts.append(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(db))
    for setting in old.settings:
        for entry in setting.config:
            if setting.role is None:
                stmt = sql.SQL("ALTER DATABASE {} SET {}").format(db, setting_assignment(entry))
            else:
                stmt = sql.SQL("ALTER ROLE {} IN DATABASE {} SET {}").format(
                    sql.Identifier(setting.role), db, setting_assignment(entry)
                )
            stmts.append(stmt)
    if old.acl is not None:
        owner_id = sql.Identifier(old.owner)
        stmts.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        stmts.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, owner_id))
        for grant in ordered_grants(old.acl, old.owner):
            grantee = sql.SQL("PUBLIC") if grant.grantee is None else sql.Identifier(grant.grantee)
            stmt = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                _privilege(grant.privilege),
                db,
                grantee,
                sql.SQL(" WITH GRANT OPTION") if grant.grantable else sql.SQL(""),
            )
            if as_grantors and grant.grantor != old.owner:
                stmts.append(sql.SQL("SET ROLE {}").format(sql.Identifier(grant.grantor)))
                stmts.append(stmt)
                stmts.append(sql.SQL("RESET ROLE"))
            else:
                stmts.append(stmt)
    stmts.append(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            db, sql.Literal(old.comment) if old.comment is not None else sql.SQL("NULL")
        )
    )
    return stmts


def reset_statements(current: DatabaseProps) -> list[sql.SQL | sql.Composed]:
    """Statements that clear database ``current``'s own settings and connection limit, so
    that :func:`property_statements` then leaves it with exactly another's (an undo)."""
    db = sql.Identifier(current.name)
    stmts: list[sql.SQL | sql.Composed] = []
    for setting in current.settings:
        if setting.role is None:
            stmts.append(sql.SQL("ALTER DATABASE {} RESET ALL").format(db))
        else:
            stmts.append(
                sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
                    sql.Identifier(setting.role), db
                )
            )
    if current.conn_limit != -1:
        stmts.append(sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT -1").format(db))
    if current.is_template:
        stmts.append(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(db))
    return stmts


_PRIVILEGES = {"CREATE", "TEMPORARY", "TEMP", "CONNECT"}


def _privilege(name: str) -> sql.SQL:
    """A database privilege keyword (checked: ``sql.SQL`` takes only known constants)."""
    keyword = name.upper()
    if keyword not in _PRIVILEGES:
        raise ValueError(f"not a database privilege: {name!r}")
    return sql.SQL(keyword)
