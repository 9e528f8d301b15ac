"""Real S3 APIs for the off-site tests, and real age keys.

No mocked client: velocity-pg runs as a real process and talks HTTP to a real
server on 127.0.0.1: moto's, or OpenStack Swift's S3 layer (tests/swift_server.py);
the tests of tests/test_offsite*.py run on both (conftest.py parametrizes
``s3_endpoint``). Encryption uses Debian's real ``age`` program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: The same credentials on both servers: moto takes any, Swift's tempauth has this user
#: (its S3 access keys are "account:user"). The secret is distinctive, so a leak into
#: argv, logs or output is easy to spot.
AWS_KEY_ID = "velocity:tester"
AWS_SECRET = "velocity-aws-Secret-9f3b1c7e"

#: The S3 servers each test of tests/test_offsite*.py runs on (conftest.py).
S3_SERVERS = ("moto", "swift")


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str
    client: Any  # a boto3 S3 client for the test's own looks into the bucket

    def names(self) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def snapshot(self) -> dict[str, bytes]:
        return {key: self.read(key) for key in self.names()}

    def read(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def uploads(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=self.name).get(
            "Uploads", []
        )
        return found


@dataclass(frozen=True)
class Keys:
    identity: Path  # the secret key file
    recipient: str  # its public key
    other_identity: Path  # a key that is not a recipient


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        # No config or credentials files of the machine's user leak in.
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "BACKUP_S3_ENDPOINT_URL": endpoint,
    }


def without_aws(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def s3_endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The endpoint of an S3 server on 127.0.0.1 for the whole session: moto's unless the
    test is parametrized (conftest.py does so for tests/test_offsite*.py) with "swift"."""
    server = getattr(request, "param", "moto")
    if server == "swift":
        yield _swift_endpoint(request, tmp_path_factory)
        return
    assert server == "moto", server
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


#: The session's one Swift ("server"), or why it could not start ("problem"). Every test
#: module that imports ``s3_endpoint`` has its own copy of the fixture (and so its own
#: moto, which starts in a moment); Swift takes seconds to start, so they share it.
_swift: dict[str, Any] = {}


def _swift_endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Swift's S3 API. Where it cannot start (no PyPI to install it from, say), its tests
    are skipped with the reason, but in CI (CI=true) they fail: CI must run them."""
    from swift_server import SwiftServer, SwiftUnavailable

    if not _swift:
        swift = SwiftServer(
            state=tmp_path_factory.mktemp("swift"), access_key=AWS_KEY_ID, secret=AWS_SECRET
        )
        try:
            swift.start()
            _swift["server"] = swift
            request.config.add_cleanup(swift.stop)  # at the end of the session
        except SwiftUnavailable as exc:
            swift.stop()
            _swift["problem"] = f"OpenStack Swift (the second S3 server) could not start: {exc}"
    problem = _swift.get("problem")
    if problem and _in_ci():
        pytest.fail(problem, pytrace=False)
    if problem:
        pytest.skip(problem)
    endpoint: str = _swift["server"].endpoint
    return endpoint


@pytest.fixture
def bucket(s3_endpoint: str) -> Bucket:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        region_name="us-east-1",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    name = f"vpg-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(endpoint=s3_endpoint, name=name, client=client)


def age_keygen(path: Path) -> str:
    """A new age identity in ``path``; returns its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    public = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    )
    return public.stdout.strip()


@pytest.fixture(scope="session")
def age_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        pytest.fail("the age program is needed (Debian: apt-get install age; .ci/run does)")
    folder = tmp_path_factory.mktemp("age")
    identity = folder / "identity.txt"
    recipient = age_keygen(identity)
    other = folder / "other.txt"
    age_keygen(other)
    return Keys(identity=identity, recipient=recipient, other_identity=other)


def offsite_env(
    bucket: Bucket, keys: Keys | None = None, *, prefix: str = "db", identity: bool = True
) -> dict[str, str]:
    """The variables that turn off-site copies on (encrypted when ``keys`` is given)."""
    env = aws_env(bucket.endpoint) | {"BACKUP_S3_URL": f"s3://{bucket.name}/{prefix}"}
    if keys is not None:
        env["BACKUP_AGE_RECIPIENTS"] = keys.recipient
        if identity:
            env["BACKUP_AGE_IDENTITY_FILE"] = str(keys.identity)
    return env


def fake_backup(folder: Path, name: str, size: int = 4096, database: str = "velocity") -> Path:
    """A backup file with a correct manifest whose own time is the time in its name.

    Its bytes are random (not an archive): push, pull, cleanup and verify --remote
    check checksums, not contents, so this stands for a backup of any age and size.
    """
    from velocity_pg.store import catalog, manifest

    created = catalog.parse_name(name)
    assert created is not None
    path = folder / name
    with path.open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)
    os.chmod(path, 0o600)
    digest, length = manifest.sha256_file(path)
    record = manifest.Manifest(
        sha256=digest,
        size_bytes=length,
        started_at=manifest.now_iso(created),
        finished_at=manifest.now_iso(created),
        duration_seconds=1.0,
        database=database,
        server_version="15.0",
        pg_dump_version="15.0",
        velocity_pg_version="test",
        toc_entries=0,
    )
    manifest.path_for(path).write_bytes(manifest.dumps(record))
    os.utime(path, (created.timestamp(), created.timestamp()))  # as if made then
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class AuthServer:
    """A moto server that checks credentials (IAM), with two users' keys."""

    endpoint: str
    full: tuple[str, str]  # may do anything in S3
    no_delete: tuple[str, str]  # may not delete manifests (*.json)

    def env(self, keys: tuple[str, str], bucket: str) -> dict[str, str]:
        return aws_env(self.endpoint) | {
            "AWS_ACCESS_KEY_ID": keys[0],
            "AWS_SECRET_ACCESS_KEY": keys[1],
            "BACKUP_S3_URL": f"s3://{bucket}/db",
        }

    def client(self, keys: tuple[str, str]) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            region_name="us-east-1",
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


_ALLOW_ALL = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
)
_NO_DELETE = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},'
    '{"Effect":"Deny","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::*/*.json"}]}'
)


@pytest.fixture(scope="session")
def auth_server() -> Iterator[AuthServer]:
    """moto's server in its own process, checking credentials after the first 6 requests
    (which create the two users: create_user, put_user_policy, create_access_key each)."""
    import socket
    import sys
    import time

    import boto3

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="6")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name="us-east-1",
        )
        pairs = []
        for user, policy in (("full", _ALLOW_ALL), ("nodelete", _NO_DELETE)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=policy)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            pairs.append((key["AccessKeyId"], key["SecretAccessKey"]))
        yield AuthServer(endpoint=endpoint, full=pairs[0], no_delete=pairs[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def local_files(folder: Path) -> dict[str, bytes]:
    """Every file in the backup folder with its bytes, but the lock file (readers create it)
    and the folder's identity (the first push makes it)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (".velocity.lock", ".velocity-folder-id")
    }
