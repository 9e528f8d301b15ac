"""The backup's recorded database properties: the manifest field and the merge (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from velocity_pg.restore.properties import (
    DatabaseProps,
    Grant,
    RoleSetting,
    merge_recorded,
    property_statements,
)
from velocity_pg.store import manifest, remote
from velocity_pg.store.manifest import DatabaseGrant, DatabaseProperties, DatabaseSetting

LIVE = DatabaseProps(
    oid=1,
    name="app",
    owner="postgres",
    encoding="UTF8",
    collate="C",
    ctype="C",
    tablespace="pg_default",
)
RECORDED = DatabaseProperties(
    settings=(
        DatabaseSetting(None, "statement_timeout=41s"),
        DatabaseSetting(None, "search_path=app, public"),
        DatabaseSetting("reader", "work_mem=9MB"),
        DatabaseSetting("gone", "work_mem=1MB"),
    ),
    comment="the app's database",
    grants=(
        DatabaseGrant("app", "app", "CONNECT", False),
        DatabaseGrant("app", "reader", "CONNECT", True),
        DatabaseGrant("app", "gone", "CONNECT", False),
        DatabaseGrant("app", None, "TEMPORARY", False),
    ),
    connection_limit=33,
)
ROLES = frozenset({"reader", "app"})


def test_a_fresh_database_takes_everything_but_missing_roles() -> None:
    merged = merge_recorded(LIVE, RECORDED, ROLES)
    assert merged.taken == (
        "statement_timeout",
        "search_path",
        "work_mem (for reader)",
        "comment",
        "grants",
        "connection limit",
    )
    assert merged.left_out == ("gone",)
    assert merged.line() == (
        "database settings from the backup: search_path, statement_timeout, "
        "work_mem (for reader); comment; grants; connection limit; "
        "left out for role(s) the target lacks: gone"
    )
    props = merged.props
    assert props.settings == (
        RoleSetting(None, ("statement_timeout=41s", "search_path=app, public")),
        RoleSetting("reader", ("work_mem=9MB",)),
    )
    assert props.comment == "the app's database" and props.conn_limit == 33
    assert props.acl is not None
    # made by the live owner (the recorded grantor may be missing); the owner keeps its own
    assert {g.grantor for g in props.acl} == {"postgres"}
    assert Grant("postgres", "reader", "CONNECT", True) in props.acl
    assert Grant("postgres", None, "TEMPORARY", False) in props.acl
    assert Grant("postgres", "postgres", "CONNECT", False) in props.acl
    assert not any(g.grantee == "gone" for g in props.acl)
    text = [
        s.as_string(None)
        for s in property_statements("app", props, owner="postgres", as_grantors=True)
    ]
    assert not any("SET ROLE" in s for s in text)
    assert 'ALTER DATABASE "app" SET "statement_timeout" = \'41s\'' in text


def test_the_live_databases_own_values_win() -> None:
    live = dataclasses.replace(
        LIVE,
        settings=(RoleSetting(None, ("Statement_Timeout=5s",)),),
        comment="staging",
        acl=(Grant("postgres", "postgres", "CONNECT", False),),
        conn_limit=5,
    )
    merged = merge_recorded(live, RECORDED, ROLES)
    assert merged.taken == ("search_path", "work_mem (for reader)")
    assert merged.props.settings == (
        RoleSetting(None, ("Statement_Timeout=5s", "search_path=app, public")),
        RoleSetting("reader", ("work_mem=9MB",)),
    )
    assert (merged.props.comment, merged.props.acl, merged.props.conn_limit) == (
        "staging",
        live.acl,
        5,
    )


def test_a_setting_only_a_superuser_may_set_is_left_out_and_said() -> None:
    merged = merge_recorded(LIVE, RECORDED, ROLES, unsettable=frozenset({"statement_timeout"}))
    assert "statement_timeout" not in merged.taken
    assert merged.needs_superuser == ("statement_timeout",)
    assert all("statement_timeout" not in e for s in merged.props.settings for e in s.config)
    line = merged.line()
    assert line is not None
    assert line.endswith("; left out, only a superuser may set them: statement_timeout")


def test_nothing_recorded_changes_nothing() -> None:
    assert merge_recorded(LIVE, None, ROLES).props == LIVE
    assert merge_recorded(LIVE, None, ROLES).line() is None
    assert merge_recorded(LIVE, DatabaseProperties(), ROLES).line() is None
    assert merge_recorded(LIVE, DatabaseProperties(), ROLES).props == LIVE


def base_manifest(**extra: object) -> dict[str, object]:
    return {
        "format": manifest.FORMAT,
        "sha256": "0" * 64,
        "size_bytes": 1,
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "duration_seconds": 1.0,
        "database": "app",
        "server_version": "17.0",
        "pg_dump_version": "17.0",
        "velocity_pg_version": "1",
        "toc_entries": 3,
        **extra,
    }


def test_manifest_round_trip_and_old_manifests() -> None:
    assert manifest.from_json(base_manifest()).database_properties is None
    record = dataclasses.replace(manifest.from_json(base_manifest()), database_properties=RECORDED)
    again = manifest.loads(manifest.dumps(record))
    assert again.database_properties == RECORDED
    assert again == record


def test_off_site_manifest_carries_them_within_the_depth_limit() -> None:
    name = "app_2026-01-01_000000.dump"
    dump = dataclasses.replace(manifest.from_json(base_manifest()), database_properties=RECORDED)
    record = remote.RemoteManifest(
        name=name,
        object_key=name,
        object_size=1,
        object_sha256="b" * 64,
        encryption=None,
        recipients=(),
        uploaded_at="2026-01-01T00:00:02+00:00",
        dump=dump,
    )
    # nested one level deeper than the local manifest: still within MAX_DEPTH
    assert remote.loads(remote.dumps(record)).dump.database_properties == RECORDED


@pytest.mark.parametrize(
    "props",
    [
        [],
        {"settings": [{"role": None, "setting": "no equals sign"}]},
        {"settings": [{"role": "", "setting": "a=b"}]},
        {"settings": "a=b"},
        {"grants": [{"grantor": "a", "grantee": "b", "privilege": "DROP"}]},
        {"grants": [{"grantor": "a", "privilege": "CONNECT", "grantable": "yes"}]},
        {"comment": 5},
        {"connection_limit": -2},
        {"connection_limit": True},
    ],
)
def test_bad_properties_are_refused(props: object) -> None:
    with pytest.raises(ValueError, match="database_properties"):
        manifest.from_json(base_manifest(database_properties=props))
