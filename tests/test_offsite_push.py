"""Push, pull and verify --remote believe only what the bucket really holds.

A real S3 API (moto's server on 127.0.0.1), the real age, and for the faults a
real HTTP proxy on 127.0.0.1 between velocity-pg and the server, which can hold a
request back or drop the answer to one after the server has acted on it.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Target, load_varied_schema, snapshot_dir, table_contents
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    Keys,
    age_keygen,
    age_keys,
    bucket,
    fake_backup,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.errors import OperationFailed
from velocity_pg.store import catalog, manifest, offsite, remote
from velocity_pg.store.remote import RemoteManifest
from velocity_pg.verbs import push

A = "velocity_2026-11-30_120000.dump"
B = "velocity_2026-11-29_120000.dump"

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class Proxy:
    """An HTTP proxy on 127.0.0.1 in front of the S3 server.

    ``hold(match)``: requests for which ``match(method, path)`` is true wait until
    :meth:`release` (``held`` is set when one arrives). ``drop_answer(match)``: such
    requests reach the server, and their answer is never sent: the connection is
    closed instead (a lost response)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.held = threading.Event()
        self._released = threading.Event()
        self._hold: Callable[[str, str], bool] = lambda _m, _p: False
        self._drop: Callable[[str, str], bool] = lambda _m, _p: False
        self.requests: list[tuple[str, str]] = []
        #: Answer conditional PUTs (If-Match) 501 NotImplemented, as Swift's S3 layer does.
        self.refuse_conditional_puts = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def relay(self) -> None:
                proxy.forward(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self, match: Callable[[str, str], bool]) -> None:
        self._hold = match

    def release(self) -> None:
        self._hold = lambda _m, _p: False
        self._released.set()

    def drop_answer(self, match: Callable[[str, str], bool]) -> None:
        self._drop = match

    def forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        self.requests.append((method, path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        if self._hold(method, path):
            self.held.set()
            assert self._released.wait(60), "the test never released the request"
        if self.refuse_conditional_puts and method == "PUT" and "If-Match" in handler.headers:
            self.requests.append(("refused", path))
            error = (
                b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>NotImplemented</Code>"
                b"<Message>Conditional object PUTs are not supported.</Message></Error>"
            )
            handler.send_response(501)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(error)))
            handler.end_headers()
            handler.wfile.write(error)
            return
        upstream = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=60
        )
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() not in _HOP:
                    upstream.putheader(name, value)
            upstream.endheaders(body)
            answer = upstream.getresponse()
            if self._drop(method, path):
                answer.read()
                handler.close_connection = True
                with contextlib.suppress(OSError):
                    handler.connection.shutdown(2)
                return
            data = answer.read()
            handler.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP and name.lower() != "content-length":
                    handler.send_header(name, value)
            if method == "HEAD":
                handler.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                handler.end_headers()
                return
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        finally:
            upstream.close()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[Proxy]:
    p = Proxy(s3_endpoint)
    yield p
    p.close()


def public_key(identity: Path) -> str:
    out = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def remote_manifest(bucket: Bucket, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(bucket.read(f"db/{name}.json"))
    return data


# -- item 1: a copy counts only by its checksums, its object and its encryption ------------


def test_a_different_backup_under_the_same_name_is_never_taken_for_this_one(
    target: Target, bucket: Bucket, tmp_path: Path
) -> None:
    """Host B pushed a backup of the same name first: host A's push is an error naming both
    checksums, and nothing is uploaded over B's copy; push --all goes on with the others."""
    other_host = tmp_path / "host-b"
    other_host.mkdir()
    fake_backup(other_host, A)
    env_b = target.env(**offsite_env(bucket)) | {"BACKUP_DIR": str(other_host)}
    assert target.run("push", A, env=env_b).returncode == 0
    fake_backup(target.backup_dir, A)
    fake_backup(target.backup_dir, B)
    mine = manifest.read(target.backup_dir / A)
    theirs = manifest.read(other_host / A)
    assert mine is not None and theirs is not None and mine.sha256 != theirs.sha256
    before = bucket.snapshot()
    env = target.env(**offsite_env(bucket))

    result = target.run("push", A, env=env)
    assert result.returncode == 1, result.stdout
    assert "already off-site" not in result.stdout
    assert f"a different backup named {A} is off-site" in result.stdout
    assert mine.sha256 in result.stdout and theirs.sha256 in result.stdout
    assert bucket.snapshot() == before

    everything = target.run("push", "--all", env=env)
    assert everything.returncode == 1
    assert f"FAILED           {A}" in everything.stdout
    assert f"pushed           {B}" in everything.stdout
    assert f"retry with `velocity-pg push {A}`" in everything.stderr
    assert bucket.read(f"db/{A}") == before[f"db/{A}"]
    assert bucket.read(f"db/{A}.json") == before[f"db/{A}.json"]


def test_the_push_inside_backup_uploads_nothing_over_another_hosts_backup(
    target: Target, bucket: Bucket, tmp_path: Path
) -> None:
    """Host B pushed backups of the same database under every name host A's next backup
    can get (the next minute): A's `backup` is made locally, and its push is an error
    naming both checksums; B's copies are untouched."""
    load_varied_schema(target)
    other_host = tmp_path / "host-b"
    other_host.mkdir()
    start = datetime.now(UTC)
    for second in range(-2, 60):
        fake_backup(
            other_host,
            catalog.format_name(start + timedelta(seconds=second), target.dbname),
            database=target.dbname,
        )
    env_b = target.env(**offsite_env(bucket)) | {"BACKUP_DIR": str(other_host)}
    assert target.run("push", "--all", env=env_b).returncode == 0
    before = bucket.snapshot()
    env = target.env(**offsite_env(bucket))
    result = target.run("backup", env=env)
    assert result.returncode == 1, result.stdout
    (name,) = [p.name for p in target.backup_dir.iterdir() if catalog.is_backup_name(p.name)]
    (line,) = result.stderr.strip().splitlines()
    mine = manifest.read(target.backup_dir / name)
    theirs = manifest.read(other_host / name)
    assert mine is not None and theirs is not None
    assert f"{name} was created locally" in line and "NOT copied off-site" in line
    assert f"a different backup named {name} is off-site" in line
    assert mine.sha256 in line and theirs.sha256 in line
    assert bucket.snapshot() == before


def test_a_plaintext_copy_is_replaced_once_recipients_are_set(
    target: Target, bucket: Bucket, age_keys: Keys, tmp_path: Path
) -> None:
    fake_backup(target.backup_dir, A)
    plain_env = target.env(**offsite_env(bucket))
    assert target.run("push", A, env=plain_env).returncode == 0
    assert bucket.names() == [f"db/{A}", f"db/{A}.json"]

    env = target.env(**offsite_env(bucket, age_keys))
    result = target.run("push", A, env=env)
    assert result.returncode == 0, result.stderr
    assert "already off-site" not in result.stdout
    assert f"it replaced a plaintext copy ({A}), removed" in result.stdout
    # The plaintext object is gone; the encrypted copy is the one that counts.
    assert bucket.names() == [f"db/{A}.age", f"db/{A}.json"]
    record = remote_manifest(bucket, A)
    assert record["encryption"] == "age"
    assert record["recipients"] == [age_keys.recipient]
    again = target.run("push", A, env=env)
    assert again.returncode == 0 and "already off-site" in again.stdout

    # Recipients changed (a new key): the copy encrypted to the old one is replaced too,
    # and the new identity reads it back.
    new_identity = tmp_path / "new.txt"
    new_key = age_keygen(new_identity)
    rotated = env | {
        "BACKUP_AGE_RECIPIENTS": new_key,
        "BACKUP_AGE_IDENTITY_FILE": str(new_identity),
    }
    result = target.run("push", A, env=rotated)
    assert result.returncode == 0, result.stderr
    assert "it replaced a copy encrypted to other recipients" in result.stdout
    assert remote_manifest(bucket, A)["recipients"] == [new_key]
    local = manifest.read(target.backup_dir / A)
    assert local is not None
    for path in (target.backup_dir / A, target.backup_dir / (A + ".json")):
        path.unlink()
    pulled = target.run("pull", A, env=rotated)
    assert pulled.returncode == 0, pulled.stderr
    assert manifest.sha256_file(target.backup_dir / A)[0] == local.sha256


def test_already_off_site_needs_the_object_too(target: Target, bucket: Bucket) -> None:
    """A manifest whose object is gone (or changed size) is not a copy: push uploads it
    again (push NAME and push --all alike)."""
    fake_backup(target.backup_dir, A)
    fake_backup(target.backup_dir, B)
    env = target.env(**offsite_env(bucket))
    assert target.run("push", "--all", env=env).returncode == 0
    bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{A}")
    bucket.write(f"db/{B}", b"cut")

    one = target.run("push", A, env=env)
    assert one.returncode == 0, one.stderr
    assert f"it replaced a copy whose object {A} was missing" in one.stdout
    assert bucket.read(f"db/{A}") == (target.backup_dir / A).read_bytes()
    everything = target.run("push", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    assert f"pushed           {B}" in everything.stdout
    assert "had changed (3 bytes" in everything.stdout
    assert bucket.read(f"db/{B}") == (target.backup_dir / B).read_bytes()


# -- item 3: pull follows only a manifest that describes the backup asked for ---------------


@pytest.mark.parametrize("how", ["names another", "same name, another backup's dump"])
def test_pull_refuses_a_manifest_of_another_backup(
    target: Target, bucket: Bucket, how: str
) -> None:
    load_varied_schema(target)
    fake_backup(target.backup_dir, A)
    fake_backup(target.backup_dir, B)
    env = target.env(**offsite_env(bucket))
    assert target.run("push", "--all", env=env).returncode == 0
    other = remote_manifest(bucket, A)
    if how == "names another":
        bucket.write(f"db/{B}.json", json.dumps(other).encode())
    else:  # consistent in itself: B's name and object key, A's object and dump
        bucket.write(f"db/{B}", bucket.read(f"db/{A}"))
        bucket.write(f"db/{B}.json", json.dumps(other | {"name": B, "object_key": B}).encode())
    for name in (A, B):
        for path in (target.backup_dir / name, target.backup_dir / (name + ".json")):
            path.unlink()
    before = snapshot_dir(target.backup_dir)
    with target.connect() as conn:
        expected = table_contents(conn)

    pulled = target.run("pull", B, env=env)
    assert pulled.returncode == 1, pulled.stdout
    (line,) = pulled.stderr.strip().splitlines()
    assert "cannot be used" in line and "nothing was written" in line
    assert snapshot_dir(target.backup_dir) == before
    restored = target.run("restore", B, "--yes", env=env)
    assert restored.returncode == 1
    assert "cannot be used" in restored.stderr
    assert snapshot_dir(target.backup_dir) == before
    with target.connect() as conn:
        assert table_contents(conn) == expected
    checked = target.run("restore", "--check", B, env=env)
    assert checked.returncode == 1 and "cannot be used" in checked.stderr


def test_pull_from_a_bucket_that_is_gone_says_so(target: Target, bucket: Bucket) -> None:
    fake_backup(target.backup_dir, A)
    env = target.env(**offsite_env(bucket))
    assert target.run("push", A, env=env).returncode == 0
    for key in bucket.names():
        bucket.client.delete_object(Bucket=bucket.name, Key=key)
    bucket.client.delete_bucket(Bucket=bucket.name)
    (target.backup_dir / A).unlink()
    (target.backup_dir / (A + ".json")).unlink()
    pulled = target.run("pull", A, env=env)
    assert pulled.returncode == 1
    assert f"bucket {bucket.name!r} does not exist" in pulled.stderr
    assert "not off-site" not in pulled.stderr


# -- item 14: an off-site manifest never outlives its dump ----------------------------------


def test_a_lost_answer_to_the_manifest_upload_deletes_nothing(
    target: Target, bucket: Bucket, proxy: Proxy
) -> None:
    """The server stored the manifest but its answer never came back (every try): push
    looks at what the store holds and finds its copy complete, instead of deleting the
    object under a manifest that names it."""
    fake_backup(target.backup_dir, A)
    env = target.env(**offsite_env(bucket)) | {"BACKUP_S3_ENDPOINT_URL": proxy.endpoint}
    proxy.drop_answer(lambda method, path: method == "PUT" and path.endswith(f"/{A}.json"))
    result = target.run("push", A, env=env)
    assert ("PUT", f"/{bucket.name}/db/{A}.json") in proxy.requests
    assert result.returncode == 0, result.stderr
    assert bucket.names() == [f"db/{A}", f"db/{A}.json"]
    assert bucket.read(f"db/{A}") == (target.backup_dir / A).read_bytes()
    proxy.drop_answer(lambda _m, _p: False)
    again = target.run("push", A, env=env)
    assert again.returncode == 0 and "already off-site" in again.stdout


@pytest.mark.parametrize("conditional", ["If-Match", "refused"])
@pytest.mark.parametrize("meanwhile", ["deleted", "replaced", "nothing"])
def test_verify_remote_writes_no_verdict_over_a_copy_gone_or_changed_meanwhile(
    target: Target, bucket: Bucket, proxy: Proxy, meanwhile: str, conditional: str
) -> None:
    """A verdict goes only onto the manifest that was read, whether the store does
    conditional writes (moto) or answers them 501 (as Swift's S3 layer does)."""
    fake_backup(target.backup_dir, A, size=1 << 20)
    env = target.env(**offsite_env(bucket)) | {"BACKUP_S3_ENDPOINT_URL": proxy.endpoint}
    assert target.run("push", A, env=env).returncode == 0
    proxy.refuse_conditional_puts = conditional == "refused"
    proxy.hold(lambda method, path: method == "GET" and path == f"/{bucket.name}/db/{A}")
    proc = target.popen("verify", "--remote", A, env=env)
    try:
        assert proxy.held.wait(60), proc.communicate()
        if meanwhile == "deleted":  # as an off-site cleanup does: the manifest first
            bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{A}.json")
            bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{A}")
        elif meanwhile == "replaced":  # another push wrote a new manifest
            changed = remote_manifest(bucket, A) | {"uploaded_at": "2026-12-01T00:00:00+00:00"}
            bucket.write(f"db/{A}.json", json.dumps(changed).encode())
        after = bucket.snapshot()
    finally:
        proxy.release()
    out, err = proc.communicate(timeout=60)
    if meanwhile == "nothing":  # the verdict is written
        assert proc.returncode == 0, err
        verdict = remote_manifest(bucket, A)["last_verification"]
        assert isinstance(verdict, dict) and verdict["ok"] is True
        assert (("refused", f"/{bucket.name}/db/{A}.json") in proxy.requests) == (
            conditional == "refused"
        )
        return
    assert bucket.snapshot() == after  # no manifest back from the dead, none overwritten
    if meanwhile == "deleted":
        assert proc.returncode == 1
        assert "while it was being verified" in out and "no verdict was written" in out
    else:
        assert proc.returncode == 0, err
        assert "no verdict was written: its manifest changed meanwhile" in out


# -- item 19: a dump that cannot be read whole is never uploaded ----------------------------


def versions_of(bucket: Bucket, key: str) -> list[str]:
    """Every version of ``key`` the bucket ever kept (deleted ones too; delete markers
    are not versions: a delete of a key that never existed makes one on Swift)."""
    answer = bucket.client.list_object_versions(Bucket=bucket.name, Prefix=key)
    return [v["VersionId"] for v in answer.get("Versions", [])]


def first_part_of(name: str) -> Callable[[str, str], bool]:
    return lambda method, path: method == "PUT" and f"/{name}.age?" in path and "partNumber" in path


def test_a_dump_cut_during_the_push_is_never_encrypted_and_uploaded(
    target: Target, bucket: Bucket, age_keys: Keys, proxy: Proxy
) -> None:
    """The local dump is cut while age encrypts it: the upload stops without a complete
    object ever existing (the bucket keeps versions: none was made), one clear line, and
    push --all goes on with the other backup."""
    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    fake_backup(target.backup_dir, B, size=96 * 1024 * 1024)  # older: pushed first
    fake_backup(target.backup_dir, A)
    env = target.env(**offsite_env(bucket, age_keys)) | {"BACKUP_S3_ENDPOINT_URL": proxy.endpoint}
    proxy.hold(first_part_of(B))
    proc = target.popen("push", "--all", env=env)
    try:
        assert proxy.held.wait(60), proc.communicate()
        os.truncate(target.backup_dir / B, 0)
    finally:
        proxy.release()
    out, err = proc.communicate(timeout=120)
    assert versions_of(bucket, f"db/{B}") == []  # no object of B ever existed
    assert proc.returncode == 1, err
    assert f"FAILED           {B}: {B} changed while it was being read" in out
    assert "nothing was uploaded" in out
    assert f"pushed           {A}" in out
    assert "unexpected" not in out + err
    assert bucket.uploads() == []
    assert bucket.names() == [f"db/{A}.age", f"db/{A}.json"]


def test_a_read_error_on_the_dump_is_one_clear_failure_and_push_all_goes_on(
    target: Target, bucket: Bucket, age_keys: Keys, proxy: Proxy
) -> None:
    """A real read error (the kernel's EISDIR: the dump's descriptor now refers to a
    folder) while age encrypts: no object, one clear line, the next backup is pushed."""
    from velocity_pg.settings import load_settings

    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    fake_backup(target.backup_dir, B, size=96 * 1024 * 1024)
    fake_backup(target.backup_dir, A)
    env = target.env(**offsite_env(bucket, age_keys)) | {"BACKUP_S3_ENDPOINT_URL": proxy.endpoint}
    settings = load_settings(environ=env)
    proxy.hold(first_part_of(B))
    folder_fd = os.open(target.backup_dir, os.O_RDONLY)

    def break_the_read() -> None:
        if not proxy.held.wait(60):
            return
        try:
            for entry in Path("/proc/self/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(entry) == str(target.backup_dir / B):
                        os.dup2(folder_fd, int(entry.name))
        finally:
            proxy.release()

    breaker = threading.Thread(target=break_the_read, daemon=True)
    breaker.start()
    lines: list[str] = []
    try:
        report = push.push(settings, [], everything=True, report=lines.append)
    finally:
        breaker.join(60)
        os.close(folder_fd)
    assert [name for name, _ in report.failures] == [B]
    (problem,) = [p for _, p in report.failures]
    assert problem.startswith(f"cannot read {B} in {target.backup_dir} (Is a directory)")
    assert [r.name for r in report.results] == [A]
    assert versions_of(bucket, f"db/{B}") == []
    assert bucket.uploads() == []
    assert bucket.names() == [f"db/{A}.age", f"db/{A}.json"]


# -- the judgements themselves, without a server --------------------------------------------


def sample_record(name: str, *, started: str, database: str = "velocity") -> RemoteManifest:
    dump = manifest.Manifest(
        sha256="a" * 64,
        size_bytes=10,
        started_at=started,
        finished_at=started,
        duration_seconds=1,
        database=database,
        server_version="15",
        pg_dump_version="15",
        velocity_pg_version="0",
        toc_entries=3,
    )
    return RemoteManifest(
        name=name,
        object_key=name + ".age",
        object_size=99,
        object_sha256="b" * 64,
        encryption="age",
        recipients=("age1key",),
        uploaded_at="2026-12-01T00:00:00+00:00",
        dump=dump,
    )


def test_a_manifest_describes_a_backup_by_name_database_and_time() -> None:
    assert remote.not_describing(sample_record(A, started="2026-11-30T12:00:00+00:00"), A) is None
    # Two backups in one second: the second name is a second later than its start.
    late = sample_record(A, started="2026-11-30T11:59:59.5+00:00")
    assert remote.not_describing(late, A) is None
    assert "describes backup" in (
        remote.not_describing(sample_record(B, started="2026-11-29T12:00:00+00:00"), A) or ""
    )
    other_db = sample_record(A, started="2026-11-30T12:00:00+00:00", database="shop")
    assert "of database 'shop'" in (remote.not_describing(other_db, A) or "")
    for started in ("2026-11-29T12:00:00+00:00", "2026-11-30T12:00:01+00:00"):
        wrong_time = sample_record(A, started=started)
        assert "started at" in (remote.not_describing(wrong_time, A) or "")
    in_paris = sample_record(A, started="2026-11-30T13:00:00+01:00")
    assert remote.not_describing(in_paris, A) is None


def test_a_copy_counts_by_checksums_object_and_recipients() -> None:
    record = sample_record(A, started="2026-11-30T12:00:00+00:00")
    obj = remote.RemoteObject(record.object_key, 99, datetime(2026, 12, 1, tzinfo=UTC))
    local = record.dump
    assert offsite.copy_problem(record, obj, local, ("age1key",)) is None
    assert offsite.copy_problem(record, obj, local, ()) is None  # encryption now off
    other = replace(local, sha256="c" * 64)
    ours, why = offsite.copy_problem(record, obj, other, ("age1key",)) or (None, "")
    assert ours is False and "a" * 64 in why and "c" * 64 in why
    assert offsite.copy_problem(record, obj, replace(local, size_bytes=11), ()) is not None
    assert offsite.copy_problem(record, None, local, ()) == (
        True,
        f"a copy whose object {A}.age was missing",
    )
    assert (offsite.copy_problem(record, replace(obj, size=98), local, ()) or (False,))[0]
    assert offsite.copy_problem(record, obj, local, ("age1other",)) == (
        True,
        "a copy encrypted to other recipients",
    )
    plain = replace(record, encryption=None, recipients=(), object_key=A)
    assert offsite.copy_problem(plain, obj, local, ("age1key",)) == (
        True,
        f"a plaintext copy ({A})",
    )


def test_the_dump_reader_refuses_a_short_or_long_dump(tmp_path: Path) -> None:
    dump = tmp_path / A
    dump.write_bytes(b"x" * 10)
    for expected, reads in ((10, True), (11, False), (9, False)):
        with dump.open("rb") as raw:
            reader = offsite.DumpReader(raw, dump, expected)
            if reads:
                assert reader.read(4) + reader.read(100) + reader.read(100) == b"x" * 10
                assert reader.error is None
                continue
            with pytest.raises(OperationFailed, match="changed while it was being read"):
                while reader.read(4):
                    pass
            assert reader.error is not None
