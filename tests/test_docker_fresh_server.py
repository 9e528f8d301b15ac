"""A fresh server, end to end on a real Docker engine (issue 22, item 5).

Machine A: the project with off-site copies (BACKUP_S3_URL to moto, which runs in this
test process on the Docker bridge's gateway, where the containers reach it), encrypted
to an age recipient; `just db-backup` makes a backup and its off-site copy. Then the
machine is lost: `docker compose down -v` deletes both volumes, the database and every
local backup.

Machine B: the same compose file on new, empty volumes, given only what docs/docker.md
("A fresh server") says a user keeps elsewhere: BACKUP_S3_URL (and the endpoint), the
credentials, the age identity (mounted read-only), and POSTGRES_PASSWORD.
`docker compose up -d --build --wait db`, `just db-backup-list --remote` names the
backup, `just db-restore NAME --yes` downloads it (in its stage step), checks and
restores it: every row is back, the pulled backup is an ordinary local one, and the
rest of the project (db-backup) then starts on it.

Opt-in like tests/test_docker_e2e.py (VELOCITY_E2E_DOCKER=1, POSTGRES_IMAGE); the
project is ``<VELOCITY_E2E_PROJECT>-fresh``, removed with its volumes at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_support import (
    IDENTITY_IN_CONTAINER,
    ContainerBucket,
    ContainerKeys,
    age_keys_for_containers,
    compose_project,
    identity_mount,
    moto_for_containers,
    project_volumes,
    remove_project,
)
from offsite_support import AWS_SECRET
from test_docker_e2e import PASSWORD, PROJECT, chosen_base_image, skip_reason

pytestmark = pytest.mark.docker

NAME = f"{PROJECT}-fresh"


@pytest.fixture
def bucket() -> Iterator[ContainerBucket]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with moto_for_containers() as found:
        yield found


@pytest.fixture
def keys(tmp_path: Path) -> ContainerKeys:
    return age_keys_for_containers(tmp_path / "keys")


def test_a_fresh_server_restores_from_the_bucket_alone(
    bucket: ContainerBucket, keys: ContainerKeys, tmp_path: Path
) -> None:
    settings = bucket.settings() | {
        "BACKUP_AGE_RECIPIENTS": keys.recipient,
        "BACKUP_AGE_IDENTITY_FILE": IDENTITY_IN_CONTAINER,
    }
    p = compose_project(NAME, tmp_path, chosen_base_image(), identity_mount(keys), **settings)
    remove_project(p)
    try:
        # Machine A: data, a backup, its encrypted off-site copy.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", "db", timeout=1800)
        p.sql(
            "CREATE TABLE notes (id int PRIMARY KEY, body text); "
            "INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 5000) g"
        )
        made = p.just("db-backup", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        name = str(json.loads(made.stdout)["name"])
        assert f"velocity/{name}.age" in bucket.object_keys()
        assert f"velocity/{name}.json" in bucket.object_keys()
        # The machine is lost: the database and every local backup with it.
        p.compose("down", "-v", "--remove-orphans")
        assert project_volumes(p) == []

        # Machine B: new volumes; only the bucket, the credentials and the identity.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", "db", timeout=1800)
        assert p.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'notes'") == "0"
        assert p.backups() == []
        remote = p.just("db-backup-list", "--remote")
        assert remote.returncode == 0, remote.stderr
        assert name in remote.stdout

        # The check downloads nothing; the recipe's stage step pulls it, then swaps.
        restored = p.just("db-restore", name, "--yes")
        out = restored.stdout + restored.stderr
        assert restored.returncode == 0, out
        assert f"{name} is not in /backups; downloading it from" in out
        assert p.sql("SELECT count(*), sum(id) FROM notes") == "5000|12502500"
        assert p.backups() == [name]  # pulled: an ordinary local backup from now on
        verified = p.just("db-backup-verify", name)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        for secret in (AWS_SECRET, PASSWORD):
            assert secret not in out

        # The rest of the project starts on the restored database and backs it up.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=1800)
        assert p.container("db-backup")[0]
        again = p.just("db-backup", "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        assert p.sql("SELECT count(*) FROM notes") == "5000"
    finally:
        remove_project(p)
