"""Recipients that hold no key never switch encryption off (issue 17, item 2).

Real runs of velocity-pg against moto's S3 server on 127.0.0.1 and the real age:
a blank ``BACKUP_AGE_RECIPIENTS`` in a higher layer, or a recipients file with no
recipient in it, is refused (exit 2) before anything is made or uploaded; an
empty value is unset, so the key in ``.env`` still applies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    Keys,
    age_keys,
    bucket,
    fake_backup,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.store import catalog

NAME = "velocity_2026-11-30_120000.dump"


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


@pytest.mark.parametrize("blank", [" ", ",", " , ,", "\t"])
def test_a_blank_recipients_value_is_refused_and_nothing_is_uploaded(
    target: Target, bucket: Bucket, age_keys: Keys, blank: str
) -> None:
    fake_backup(target.backup_dir, NAME)
    (target.workdir / ".env").write_text(f"BACKUP_AGE_RECIPIENTS={age_keys.recipient}\n")
    env = target.env(**offsite_env(bucket)) | {"BACKUP_AGE_RECIPIENTS": blank}
    for args in (("push", NAME), ("backup",)):
        result = target.run(*args, env=env)
        assert result.returncode == 2, result
        line = one_line(result.stderr)
        assert line.startswith("velocity-pg: error: BACKUP_AGE_RECIPIENTS=")
        assert "holds no age public key" in line
        assert result.stdout == ""
    assert bucket.names() == []
    assert backups_in(target.backup_dir) == [NAME]  # `backup` made nothing either


def test_a_blank_recipients_value_in_the_env_file_is_refused(
    target: Target, bucket: Bucket
) -> None:
    fake_backup(target.backup_dir, NAME)
    (target.workdir / ".env").write_text("BACKUP_AGE_RECIPIENTS=' , '\n")
    result = target.run("push", NAME, env=target.env(**offsite_env(bucket)))
    assert result.returncode == 2, result
    assert "holds no age public key" in one_line(result.stderr)
    assert bucket.names() == []


def test_an_empty_value_is_unset_and_the_env_files_key_still_applies(
    target: Target, bucket: Bucket, age_keys: Keys
) -> None:
    fake_backup(target.backup_dir, NAME)
    (target.workdir / ".env").write_text(f"BACKUP_AGE_RECIPIENTS={age_keys.recipient}\n")
    env = target.env(**offsite_env(bucket)) | {"BACKUP_AGE_RECIPIENTS": ""}
    result = target.run("push", NAME, env=env)
    assert result.returncode == 0, result.stderr
    assert bucket.names() == [f"db/{NAME}.age", f"db/{NAME}.json"]
    assert bucket.read(f"db/{NAME}.age").startswith(b"age-encryption.org/v1")


@pytest.mark.parametrize("content", ["", "\n\n", "# the team's key goes here\n   \n"])
def test_a_recipients_file_without_a_recipient_is_refused(
    target: Target, bucket: Bucket, age_keys: Keys, tmp_path: Path, content: str
) -> None:
    fake_backup(target.backup_dir, NAME)
    empty = tmp_path / "recipients.txt"
    empty.write_text(content)
    env = target.env(**offsite_env(bucket)) | {"BACKUP_AGE_RECIPIENTS_FILE": str(empty)}
    # Also beside a key: the file was meant to add recipients, and holds none.
    for extra in ({}, {"BACKUP_AGE_RECIPIENTS": age_keys.recipient}):
        result = target.run("push", NAME, env=env | extra)
        assert result.returncode == 2, result
        line = one_line(result.stderr)
        assert f"BACKUP_AGE_RECIPIENTS_FILE {empty} holds no recipient" in line
    assert bucket.names() == []
