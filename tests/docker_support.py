"""Helpers shared by the Docker end-to-end tests (tests/test_docker_*.py).

- :func:`bridge_gateway`, :func:`free_port`: the host as the containers reach it, and a
  port to listen on there (the notify test's SMTP receiver, the off-site tests' moto);
- :func:`moto_for_containers`: moto's S3 server on that address, with a bucket, and the
  settings that point velocity-pg in a container at it;
- :func:`age_keys_for_containers`: a real age identity in a file a compose override can
  mount into the containers (readable by their postgres user), and its public key;
- :func:`compose_project`: tests/test_docker_e2e.py's ``Project`` for a project of the
  test's own name, built from this repository's compose file plus an override, and
  :func:`remove_project`, which takes down every volume the project ever made (also
  those no longer in use, such as the old data volume of a major upgrade).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from offsite_support import AWS_KEY_ID, AWS_SECRET
from test_docker_e2e import DB, ENGINE_TIMEOUT, PASSWORD, REPO, USER, Project

#: Where the override mounts the age identity inside the containers.
IDENTITY_IN_CONTAINER = "/run/velocity-age/key.txt"


def bridge_gateway() -> str:
    """The default bridge's gateway: the host, as containers reach it (the engine's IPAM
    leaves Gateway empty on some versions: then the subnet's first address, docker0's)."""
    found = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(found.stdout)[0]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    assert gateway, found.stdout
    return str(gateway)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ContainerBucket:
    """An S3 bucket on moto, reachable from the containers at ``endpoint``."""

    endpoint: str
    url: str  # BACKUP_S3_URL
    client: Any  # boto3, for the test's own looks

    def object_keys(self) -> list[str]:
        bucket, _, _ = self.url.removeprefix("s3://").partition("/")
        found = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(item["Key"] for item in found)

    def settings(self) -> dict[str, str]:
        """What a project's environment (its .env) needs to reach it."""
        return {
            "BACKUP_S3_URL": self.url,
            "BACKUP_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextmanager
def moto_for_containers() -> Iterator[ContainerBucket]:
    """moto's S3 server on the bridge's gateway (the containers reach it there) with one
    new bucket; stopped afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    host = bridge_gateway()
    port = free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
            region_name="us-east-1",
        )
        bucket = f"fresh-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        yield ContainerBucket(endpoint=endpoint, url=f"s3://{bucket}/velocity", client=client)
    finally:
        server.stop()


@dataclass(frozen=True)
class ContainerKeys:
    identity: Path  # on the host; the override mounts it at IDENTITY_IN_CONTAINER
    recipient: str


def age_keys_for_containers(folder: Path) -> ContainerKeys:
    """A new age identity in ``folder``, readable by the containers' postgres user (uid
    999) only: owner 999, mode 0400 (the test runs as root, as Docker's tests do)."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = folder / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    os.chown(identity, 999, 999)
    identity.chmod(0o400)
    folder.chmod(0o755)
    return ContainerKeys(identity=identity, recipient=recipient)


def identity_mount(keys: ContainerKeys) -> dict[str, object]:
    """A compose override mounting the identity read-only into db and db-backup."""
    mount = {"volumes": [f"{keys.identity}:{IDENTITY_IN_CONTAINER}:ro"]}
    return {"services": {"db": mount, "db-backup": mount}}


def compose_project(
    name: str,
    folder: Path,
    base_image: str,
    override: dict[str, object] | None = None,
    **settings: str,
) -> Project:
    """A compose project named ``name`` on this repository's compose file (plus
    ``override``), with the e2e tests' user, password and database and ``settings``
    (POSTGRES_IMAGE and the rest) in its environment, as a .env would give them."""
    files = [str(REPO / "docker-compose.yml")]
    if override is not None:
        path = folder / f"{name}.override.yml"
        path.write_text(yaml.safe_dump(override))
        files.append(str(path))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_", "AWS_"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=name,
        COMPOSE_FILE=os.pathsep.join(files),
        POSTGRES_IMAGE=base_image,
        POSTGRES_USER=USER,
        POSTGRES_PASSWORD=PASSWORD,
        POSTGRES_DB=DB,
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
    )
    env.update(settings)
    return Project(env=env, base_image=base_image)


def project_volumes(p: Project) -> list[str]:
    label = f"label=com.docker.compose.project={p.env['COMPOSE_PROJECT_NAME']}"
    return sorted(p.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split())


def remove_project(p: Project) -> None:
    """`down -v --rmi local`, then every volume of the project that is left (one the
    compose file no longer uses: `down -v` removes only those it names now)."""
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
    for volume in project_volumes(p):
        p.run("docker", "volume", "rm", volume, check=False)
    assert project_volumes(p) == [], "volumes left behind"


def mounted_volume(p: Project, service: str, target: str) -> str:
    """Docker's name of the volume mounted at ``target`` in the service's container."""
    ids = p.compose("ps", "-q", service).stdout.split()
    assert len(ids) == 1, ids
    mounts = json.loads(p.run("docker", "inspect", "-f", "{{json .Mounts}}", ids[0]).stdout)
    return next(str(m["Name"]) for m in mounts if m["Destination"] == target)
