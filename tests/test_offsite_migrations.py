"""The off-site manifest carries a Django backup's migration state (issue 23): `list
--remote --json` and the `restore --check` of a backup that is only off-site show it."""

from __future__ import annotations

import json

from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from test_migrations import migrate


def test_off_site_copies_carry_the_migration_state(target: Target, bucket: Bucket) -> None:
    migrate(target, "shop", "0002")
    env = target.env(**offsite_env(bucket))
    made = target.run("backup", "--json", env=env)
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    state = record["migrations"]
    assert state["counts"] == {"shop": 2}
    listed = target.run("list", "--remote", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (copy,) = json.loads(listed.stdout)["backups"]
    assert copy["migrations"] == state
    name = str(record["name"])
    for path in (target.backup_dir / name, target.backup_dir / (name + ".json")):
        path.unlink()
    checked = target.run("restore", "--check", name, env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"fingerprint {state['fingerprint']}" in checked.stdout
    as_json = target.run("restore", "--check", name, "--json", env=env)
    assert json.loads(as_json.stdout)["migrations"] == state
