"""Off-site pieces without a server: settings, the bucket layout, age's argv, retention input."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from velocity_pg.errors import ConfigError
from velocity_pg.settings import OffSite, load_settings, parse_recipients, parse_s3_url
from velocity_pg.store import age, manifest, remote, retention

KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def test_off_site_is_off_without_a_url() -> None:
    assert load_settings(environ={}).offsite is None


def test_off_site_settings_and_their_defaults(tmp_path: Path) -> None:
    s = load_settings(
        environ={
            "BACKUP_S3_URL": "s3://my-bucket/prod/db/",
            "BACKUP_S3_ENDPOINT_URL": "https://s3.example.com",
            "BACKUP_AGE_RECIPIENTS": f"{KEY}, {KEY}",
            "BACKUP_MAX_AGE_DAYS": "7",
            "BACKUP_S3_MAX_COUNT": "90",
            "AWS_SECRET_ACCESS_KEY": "hidden-secret",
        }
    )
    off = s.offsite
    assert off is not None
    assert (off.bucket, off.prefix, off.url) == ("my-bucket", "prod/db/", "s3://my-bucket/prod/db/")
    assert off.recipients == (KEY, KEY) and off.encrypted
    # Off-site retention defaults to the local values; each can be set on its own.
    assert (off.max_age_days, off.max_count, off.min_keep) == (7, 90, 1)
    assert "hidden-secret" not in repr(s)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket//a//b", ("bucket", "a/b/")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url", ["bucket", "https://bucket", "s3://", "s3://UPPER", "s3://b/../x", "s3://a"]
)
def test_bad_s3_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="BACKUP_S3_URL"):
        parse_s3_url(url)


def test_recipients_must_be_age_public_keys() -> None:
    assert parse_recipients(f" {KEY}\n{KEY} ") == (KEY, KEY)
    with pytest.raises(ConfigError, match="not an age public key"):
        parse_recipients("AGE-SECRET-KEY-1ABCDEF")


def test_missing_recipients_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BACKUP_AGE_RECIPIENTS_FILE"):
        load_settings(
            environ={
                "BACKUP_S3_URL": "s3://bucket",
                "BACKUP_AGE_RECIPIENTS_FILE": str(tmp_path / "nope"),
            }
        )


@pytest.mark.parametrize("name", ["BACKUP_S3_MAX_AGE_DAYS", "BACKUP_S3_MIN_KEEP"])
def test_off_site_retention_zero_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={"BACKUP_S3_URL": "s3://bucket", name: "0"})


@pytest.mark.parametrize(
    "size", [0, 1, 6 << 20, 900 * (6 << 20), 900 * (6 << 20) + 1, 50 << 30, 3 << 40]
)
def test_an_upload_never_has_more_parts_than_swift_allows(size: int) -> None:
    """Swift's S3 layer refuses part 1,001 by default (AWS: 10,001): a dump of any size,
    and its age-encrypted copy (16 bytes more per 64 KiB, and a header), keep under it."""
    from velocity_pg.store import s3

    part = s3.upload_part_size(size)
    assert s3.PART_SIZE <= part <= 5 << 30  # S3's largest part: 5 GiB
    assert -(-size // part) <= 900
    encrypted = size + 16 * -(-size // 65536) + 4096
    assert -(-encrypted // part) <= 1000


def test_age_argv() -> None:
    off = OffSite(bucket="b", prefix="", recipients=(KEY,), recipients_file=Path("/r.txt"))
    assert age.encrypt_cmd("age", off) == shlex.split(f"age --encrypt -r {KEY} -R /r.txt")
    # The identity is a file name, never its contents.
    assert age.decrypt_cmd("age", Path("/id.txt")) == shlex.split("age --decrypt -i /id.txt")


def test_layout_keys() -> None:
    name = "velocity_2026-11-30_120000.dump"
    assert remote.object_key(name, True) == name + ".age"
    assert remote.object_key(name, False) == name
    assert remote.manifest_key(name) == name + ".json"
    assert remote.name_of_manifest_key(name + ".json") == name
    assert remote.name_of_object_key(name + ".age") == name
    for other in ("notes.json", "sub/" + name + ".json", name + ".partial"):
        assert remote.name_of_manifest_key(other) is None


def sample_manifest(started: str) -> manifest.Manifest:
    return manifest.Manifest(
        sha256="a" * 64,
        size_bytes=10,
        started_at=started,
        finished_at=started,
        duration_seconds=1,
        database="velocity",
        server_version="15",
        pg_dump_version="15",
        velocity_pg_version="0",
        toc_entries=3,
    )


def test_remote_manifest_round_trip_and_own_time() -> None:
    name = "velocity_2026-11-30_120000.dump"
    record = remote.RemoteManifest(
        name=name,
        object_key=name + ".age",
        object_size=99,
        object_sha256="b" * 64,
        encryption="age",
        recipients=(KEY,),
        uploaded_at="2026-12-01T00:00:00+00:00",
        dump=sample_manifest("2026-11-30T12:00:00+00:00"),
    )
    back = remote.loads(remote.dumps(record))
    assert back == record
    assert back.created == datetime(2026, 11, 30, 12, tzinfo=UTC)
    with pytest.raises(ValueError):
        remote.loads(remote.dumps(record).replace(b"velocity-pg-offsite/1", b"other"))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: b"[" * 1000 + b"]" * 1000, "nested deeper than"),
        (lambda d: d + b" " * manifest.MAX_BYTES, "larger than"),
        (lambda d: d.replace(b'"object_size": 99', b'"object_size": "99"'), "object_size"),
        (lambda d: d.replace(b'"encryption": "age"', b'"encryption": 1'), "encryption"),
        (lambda d: d.replace(b'"origin": null', b'"origin": "host-a"'), "origin"),
        (lambda d: d.replace(b'"toc_entries": 3', b'"toc_entries": -3'), "dump.toc_entries"),
        (lambda d: d.replace(b'"sha256": "a', b'"sha256": "X'), "dump.sha256"),
    ],
)
def test_off_site_manifests_are_read_with_care(change: Any, problem: str) -> None:
    name = "velocity_2026-11-30_120000.dump"
    record = remote.RemoteManifest(
        name=name,
        object_key=name + ".age",
        object_size=99,
        object_sha256="b" * 64,
        encryption="age",
        recipients=(KEY,),
        uploaded_at="2026-12-01T00:00:00+00:00",
        dump=sample_manifest("2026-11-30T12:00:00+00:00"),
    )
    good = remote.dumps(record)
    assert remote.loads(good).origin is None  # pushed before identities existed
    with pytest.raises(ValueError, match=problem):
        remote.loads(change(good))


def test_retention_input_uses_the_backups_own_time_not_last_modified() -> None:
    name = "velocity_2026-01-01_000000.dump"
    record = remote.RemoteManifest(
        name=name,
        object_key=name,
        object_size=5,
        object_sha256="c" * 64,
        encryption=None,
        recipients=(),
        uploaded_at="2026-12-01T00:00:00+00:00",
        dump=sample_manifest("2026-01-01T00:00:00+00:00"),
    )
    uploaded_now = remote.RemoteObject(name + ".json", 10, datetime(2026, 12, 1, tzinfo=UTC))
    backup = remote.RemoteBackup(name, record, uploaded_now).as_catalog_backup()
    assert backup.mtime == backup.created == datetime(2026, 1, 1, tzinfo=UTC)
    plan = retention.plan(
        [backup, *[]], retention.Policy(30, 50, 1), datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert [d.backup.name for d in plan.keep] == [name]  # the floor, although 334 days old


def test_progress_on_a_terminal_only() -> None:
    import io

    from velocity_pg.store.offsite import Meter

    shown = io.StringIO()
    meter = Meter(shown, tty=True)
    step = meter.start("uploading x.dump", 10 * 1024 * 1024)
    step(5 * 1024 * 1024)
    meter.end()
    assert "uploading x.dump: 5.0 MiB of 10.0 MiB" in shown.getvalue()
    assert shown.getvalue().endswith("\n")
    quiet = io.StringIO()
    meter = Meter(quiet, tty=False)
    meter.start("uploading x.dump", 10)(5)
    meter.end()
    assert quiet.getvalue() == ""  # no progress lines in logs and cron mail
