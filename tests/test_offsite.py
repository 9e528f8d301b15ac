"""Off-site copies against a real S3 API (moto's server on 127.0.0.1) and the real age."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Target, load_varied_schema, snapshot_dir, table_contents
from offsite_support import (  # noqa: F401 (fixtures)
    AWS_SECRET,
    Bucket,
    Keys,
    age_keys,
    bucket,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.store import catalog, manifest


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


def make_backup(target: Target, env: dict[str, str]) -> str:
    result = target.run("backup", env=env)
    assert result.returncode == 0, result.stderr
    (name,) = backups_in(target.backup_dir)
    return name


def test_backup_pushes_encrypted_then_restore_on_a_new_machine(
    target: Target, bucket: Bucket, age_keys: Keys
) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    env = target.env(**offsite_env(bucket, age_keys))
    result = target.run("backup", env=env)
    assert result.returncode == 0, result.stderr
    (name,) = backups_in(target.backup_dir)
    assert "Off-site copy checked" in result.stdout
    assert bucket.names() == [f"db/{name}.age", f"db/{name}.json", f"db/{name}.roles.sql.age"]
    # Encrypted: the object is an age file, not a dump.
    obj = bucket.read(f"db/{name}.age")
    assert obj.startswith(b"age-encryption.org/v1")
    assert b"PGDMP" not in obj[:4096]
    record = json.loads(bucket.read(f"db/{name}.json"))
    local = manifest.read(target.backup_dir / name)
    assert local is not None
    assert record["dump"]["sha256"] == local.sha256
    assert record["encryption"] == "age"
    assert record["recipients"] == [age_keys.recipient]
    assert record["object_size"] == len(obj)
    import hashlib

    assert record["object_sha256"] == hashlib.sha256(obj).hexdigest()

    # A new machine: an empty backup folder, and a database that is gone.
    shutil.rmtree(target.backup_dir)
    target.backup_dir.mkdir(mode=0o700)
    with target.connect() as conn:
        conn.execute("DROP SCHEMA shop CASCADE; DROP TABLE public.customers")
    restored = target.run("restore", name, "--yes", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "downloading it from" in restored.stderr
    with target.connect() as conn:
        assert table_contents(conn) == expected
    # Now an ordinary local backup, with its manifest.
    assert sorted(p.name for p in target.backup_dir.iterdir() if not p.name.startswith(".")) == [
        name,
        name + ".json",
        name + ".roles.sql",
    ]
    assert manifest.sha256_file(target.backup_dir / name)[0] == local.sha256


def test_standard_tools_read_an_uploaded_copy(
    target: Target, bucket: Bucket, age_keys: Keys, tmp_path: Path
) -> None:
    """No lock-in: age -d -i and pg_restore --list read what is in the bucket."""
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket, age_keys, identity=False))
    name = make_backup(target, env)
    encrypted = tmp_path / "copy.age"
    encrypted.write_bytes(bucket.read(f"db/{name}.age"))
    plain = tmp_path / "copy.dump"
    subprocess.run(
        ["age", "-d", "-i", str(age_keys.identity), "-o", str(plain), str(encrypted)],
        check=True,
        capture_output=True,
    )
    assert plain.read_bytes() == (target.backup_dir / name).read_bytes()
    listing = subprocess.run(
        ["pg_restore", "--list", str(plain)], check=True, capture_output=True, text=True
    )
    assert "TABLE DATA public customers" in listing.stdout


def test_unencrypted_push_pull_and_list_remote(target: Target, bucket: Bucket) -> None:
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket))
    name = make_backup(target, env)
    assert bucket.names() == [f"db/{name}", f"db/{name}.json", f"db/{name}.roles.sql"]
    assert bucket.read(f"db/{name}") == (target.backup_dir / name).read_bytes()

    listed = target.run("list", "--remote", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    (entry,) = data["backups"]
    assert entry["name"] == name
    assert entry["encrypted"] is False
    assert entry["size_bytes"] == (target.backup_dir / name).stat().st_size
    text = target.run("list", "--remote", env=env)
    assert name in text.stdout and "1 off-site backup(s)" in text.stdout

    # push of a backup already off-site does nothing; pull of a local one refuses.
    again = target.run("push", env=env)
    assert again.returncode == 0, again.stderr
    assert "already off-site" in again.stdout
    refused = target.run("pull", name, env=env)
    assert refused.returncode == 1 and "already in" in refused.stderr

    (target.backup_dir / name).unlink()
    (target.backup_dir / (name + ".json")).unlink()
    (target.backup_dir / (name + ".roles.sql")).unlink()
    pulled = target.run("pull", name, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert backups_in(target.backup_dir) == [name]
    verified = target.run("verify", name, env=env)
    assert verified.returncode == 0, verified.stderr


def test_push_all_uploads_every_missing_backup(target: Target, bucket: Bucket) -> None:
    load_varied_schema(target)
    local_env = target.env()
    for _ in range(3):
        assert target.run("backup", env=local_env).returncode == 0
    names = backups_in(target.backup_dir)
    env = target.env(**offsite_env(bucket))
    first = target.run("push", "--json", env=env)  # default: the newest
    assert first.returncode == 0, first.stderr
    assert [b["name"] for b in json.loads(first.stdout)["backups"]] == [names[-1]]
    rest = target.run("push", "--all", "--json", env=env)
    assert rest.returncode == 0, rest.stderr
    pushed = json.loads(rest.stdout)["backups"]
    assert sorted(b["name"] for b in pushed) == names[:-1]
    assert all(b["status"] == "pushed" for b in pushed)
    assert sorted(k for k in bucket.names() if k.endswith(".json")) == [
        f"db/{n}.json" for n in names
    ]


def test_secrets_never_in_argv_or_output(target: Target, bucket: Bucket, age_keys: Keys) -> None:
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket, age_keys))
    identity_secret = age_keys.identity.read_text().split("AGE-SECRET-KEY-")[1].strip()
    proc = target.popen("--debug", "backup", env=env)
    seen: list[bytes] = []
    while proc.poll() is None:
        seen += all_cmdlines()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    name = backups_in(target.backup_dir)[0]
    for secret in (AWS_SECRET, identity_secret):
        assert not [c for c in seen if secret.encode() in c]
        assert secret not in out + err
    # The pull decrypts with the identity file: its contents never show either.
    (target.backup_dir / name).unlink()
    (target.backup_dir / (name + ".json")).unlink()
    proc = target.popen("--debug", "pull", name, env=env)
    while proc.poll() is None:
        seen += all_cmdlines()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "age --decrypt -i" in err  # --debug shows the argv: a file name, not the key
    for secret in (AWS_SECRET, identity_secret):
        assert not [c for c in seen if secret.encode() in c]
        assert secret not in out + err


def all_cmdlines() -> list[bytes]:
    import contextlib

    lines = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((pid_dir / "cmdline").read_bytes())
    return lines


def test_restore_of_an_unknown_backup_says_so(target: Target, bucket: Bucket) -> None:
    env = target.env(**offsite_env(bucket))
    before = snapshot_dir(target.backup_dir)
    result = target.run("restore", "velocity_2026-01-01_000000.dump", "--yes", env=env)
    assert result.returncode == 1
    assert "is not off-site" in result.stderr
    assert snapshot_dir(target.backup_dir) == before
    assert bucket.names() == []


@pytest.mark.parametrize("what", ["boto3", "age"])
def test_fail_closed_before_anything_runs(
    target: Target, bucket: Bucket, age_keys: Keys, tmp_path: Path, what: str
) -> None:
    """Off-site configured but not possible: exit 2, one line, no dump, nothing uploaded."""
    env = target.env(**offsite_env(bucket, age_keys))
    if what == "boto3":
        # A Python that cannot import boto3: a site folder whose boto3 fails to import.
        shadow = tmp_path / "shadow"
        (shadow / "boto3").mkdir(parents=True)
        (shadow / "boto3" / "__init__.py").write_text("raise ImportError('no boto3 here')\n")
        env["PYTHONPATH"] = str(shadow)
        expected = "pip install 'velocity-pg[s3]'"
    else:
        env["PATH"] = str(tmp_path / "empty-bin")  # pg_dump is found in /usr/lib/postgresql
        expected = "age program is not installed"
    result = target.run("backup", env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert backups_in(target.backup_dir) == []
    assert bucket.names() == []


def test_bad_recipient_refused_before_anything_runs(
    target: Target, bucket: Bucket, tmp_path: Path
) -> None:
    env = target.env(**offsite_env(bucket))
    env["BACKUP_AGE_RECIPIENTS"] = "age1notakey"
    result = target.run("backup", env=env)
    assert result.returncode == 2
    assert "not an age public key" in result.stderr
    # A recipients file age cannot use: age itself says no, before the dump.
    bad = tmp_path / "recipients.txt"
    bad.write_text("ssh-nonsense AAAA\n")
    env.pop("BACKUP_AGE_RECIPIENTS")
    env["BACKUP_AGE_RECIPIENTS_FILE"] = str(bad)
    result = target.run("backup", env=env)
    assert result.returncode == 2, result.stderr
    assert "age cannot encrypt" in result.stderr
    assert backups_in(target.backup_dir) == []
    assert bucket.names() == []


def test_restore_check_of_an_off_site_copy_downloads_nothing(
    target: Target, bucket: Bucket
) -> None:
    """`restore --check` of a backup that is only off-site reads its manifest only, says
    what it could not check, and downloads nothing (`just db-restore` downloads in its
    --stage step, still before the app is stopped); the database is not touched."""
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket))
    name = make_backup(target, env)
    for path in (target.backup_dir / name, target.backup_dir / (name + ".json")):
        path.unlink()
    with target.connect() as conn:
        conn.execute("INSERT INTO public.customers (name) VALUES ('after the backup')")
        expected = table_contents(conn)
    before = snapshot_dir(target.backup_dir)
    checked = target.run("restore", "--check", name, "--yes", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "nothing was downloaded" in checked.stdout
    assert "Not checked without downloading it" in checked.stdout
    assert "downloading" not in checked.stderr
    assert snapshot_dir(target.backup_dir) == before
    as_json = target.run("restore", "--check", name, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["not_checked"]
    with target.connect() as conn:
        assert table_contents(conn) == expected
    # The copy's object gone: the check says so, still downloading nothing.
    bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{name}")
    gone = target.run("restore", "--check", name, env=env)
    assert gone.returncode == 1
    assert f"its object {name} is missing" in gone.stderr
    assert snapshot_dir(target.backup_dir) == before


def test_credentials_from_the_env_file(target: Target, bucket: Bucket) -> None:
    """A .env file never reaches os.environ, yet its AWS_* settings reach the S3 client."""
    from offsite_support import aws_env

    creds = aws_env(bucket.endpoint)
    (target.workdir / ".env").write_text(
        f"AWS_ACCESS_KEY_ID={creds['AWS_ACCESS_KEY_ID']}\n"
        f"AWS_SECRET_ACCESS_KEY={creds['AWS_SECRET_ACCESS_KEY']}\n"
        f"BACKUP_S3_URL=s3://{bucket.name}/db\n"
    )
    env = target.env(
        **{
            k: v
            for k, v in creds.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        }
    )
    name = "velocity_2026-11-30_120000.dump"
    from offsite_support import fake_backup

    fake_backup(target.backup_dir, name)
    pushed = target.run("push", name, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert f"db/{name}.json" in bucket.names()


@pytest.mark.parametrize("spec", ["zstd:3", "lz4:1"])
def test_zstd_and_lz4_backups_go_off_site_and_come_back(
    target: Target, bucket: Bucket, age_keys: Keys, spec: str
) -> None:
    """pull and restore handle every method: the copy comes back byte for byte, with the
    method in its manifest, and restores."""
    from velocity_pg.postgres import compression, pgtools

    wanted = compression.parse(spec)
    program = pgtools.find_program("pg_dump")
    if program.major < wanted.needs_major:
        pytest.skip(f"{spec} needs pg_dump {wanted.needs_major}+, here {program.version}")
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    env = target.env(**offsite_env(bucket, age_keys))
    env["BACKUP_COMPRESSION"] = spec
    name = make_backup(target, env)
    local = manifest.read(target.backup_dir / name)
    assert local is not None and local.compression == wanted.spec
    record = json.loads(bucket.read(f"db/{name}.json"))
    assert record["dump"]["compression_method"] == wanted.method

    shutil.rmtree(target.backup_dir)
    target.backup_dir.mkdir(mode=0o700)
    pulled = target.run("pull", name, env=env)
    assert pulled.returncode == 0, pulled.stderr
    back = manifest.read(target.backup_dir / name)
    assert back is not None and back.compression == wanted.spec
    assert manifest.sha256_file(target.backup_dir / name)[0] == local.sha256
    verified = target.run("verify", "--restore", name, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with target.connect() as conn:
        conn.execute("DROP SCHEMA shop CASCADE")
    restored = target.run("restore", name, "--yes", env=env)
    assert restored.returncode == 0, restored.stderr
    with target.connect() as conn:
        assert table_contents(conn) == expected
