#!/usr/bin/env python3
"""Benchmark: ``velocity-pg push`` and ``pull`` of a large dump vs plain boto3, memory first.

Starts moto's S3 server in its own process on 127.0.0.1 (so its memory is not
counted), writes a backup of ``--size-mib`` MiB of random bytes (incompressible,
like a compressed dump) with a correct manifest, then times whole processes,
each measured with ``wait4`` (peak RSS of the process, and of its children such
as ``age``):

* ``boto3 upload_file`` of the same file (the raw tool: multipart, threads),
* ``velocity-pg push`` (encrypted with age, and the object read back and hashed),
* ``boto3 download_file`` of the same object,
* ``velocity-pg pull`` (downloaded, decrypted with age, both SHA-256s checked).

Prints one Markdown table with the ratios to boto3 in the same run. Target:
peak RSS flat (independent of the size) and under 100 MiB. With ``--plain``
the copies are not encrypted (what age costs). Run with the project's Python:

    .venv/bin/python bench/offsite_bench.py [--size-mib 512] [--plain]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGET_RSS_MIB = 100
SECRET = "bench-secret-key"  # noqa: S105 (moto accepts any key)
KEY_ID = "AKIABENCH0000000000"


def velocity_pg() -> list[str]:
    script = Path(sys.executable).parent / "velocity-pg"
    return [str(script)] if script.exists() else [sys.executable, "-m", "velocity_pg"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one whole process and the children it waited for
    (``wait4``'s ``ru_maxrss``: at least this small process's own, about 15 MiB)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = b"", b""
    # Read the pipes in a thread-free way: the commands print little.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}... failed ({proc.returncode}): {err.decode()[-2000:]}")
    del out
    return seconds, usage.ru_maxrss / 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_backup(folder: Path, size: int, offset_seconds: int = 0) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from velocity_pg.store import catalog, manifest

    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=offset_seconds)
    path = folder / catalog.format_name(moment)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    os.chmod(path, 0o600)
    record = manifest.Manifest(
        sha256=digest.hexdigest(),
        size_bytes=size,
        started_at=manifest.now_iso(moment),
        finished_at=manifest.now_iso(moment),
        duration_seconds=0.0,
        database="velocity",
        server_version="bench",
        pg_dump_version="bench",
        velocity_pg_version="bench",
        toc_entries=0,
    )
    manifest.path_for(path).write_bytes(manifest.dumps(record))
    return path


BOTO3 = textwrap.dedent(
    """
    import sys, boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required"))
    if sys.argv[2] == "up":
        c.upload_file(sys.argv[5], sys.argv[3], sys.argv[4])
    elif sys.argv[2] == "down":
        c.download_file(sys.argv[3], sys.argv[4], sys.argv[5])
    elif sys.argv[2] == "mk":
        c.create_bucket(Bucket=sys.argv[3])
        c.put_object(Bucket=sys.argv[3], Key=sys.argv[4], Body=bytes(1 << 20))
    else:  # one streamed GET, as velocity-pg pull does
        import shutil
        body = c.get_object(Bucket=sys.argv[3], Key=sys.argv[4])["Body"]
        with open(sys.argv[5], "wb") as f:
            shutil.copyfileobj(body, f, 1 << 20)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--plain", action="store_true", help="no encryption")
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="vpg-offsite-bench-"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TMPDIR=str(work)),
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PG", "POSTGRES_", "BACKUP_", "VELOCITY_PG", "AWS_"))
        } | {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        # The bucket, and a warm-up (the server's first requests are slow), from a child:
        # this process stays small, since a child's peak RSS as wait4 reports it
        # includes the memory of the process that started it.
        raw = [sys.executable, "-c", BOTO3, endpoint]
        measure([*raw, "mk", "bench", "warm-up", "-"], env)
        folder = work / "backups"
        folder.mkdir()
        print(f"writing a {args.size_mib} MiB backup ...", file=sys.stderr)
        dump = write_backup(folder, size)
        vpg_env = env | {
            "BACKUP_DIR": str(folder),
            "BACKUP_S3_URL": "s3://bench/vpg",
            "BACKUP_S3_ENDPOINT_URL": endpoint,
        }
        if not args.plain:
            identity = work / "identity.txt"
            subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
            public = subprocess.run(
                ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
            ).stdout.strip()
            vpg_env |= {"BACKUP_AGE_RECIPIENTS": public, "BACKUP_AGE_IDENTITY_FILE": str(identity)}
        small_mib = max(1, min(64, args.size_mib // 8))
        small = write_backup(folder, small_mib * 1024 * 1024, offset_seconds=-60)

        def pull_again(path: Path) -> tuple[float, float]:
            """Delete the local backup (kept aside) and pull it back; check it."""
            keep = work / "original.dump"
            shutil.move(str(path), keep)
            path.with_name(path.name + ".json").unlink()
            result = measure([*velocity_pg(), "pull", path.name], vpg_env)
            assert sha256_of(path) == sha256_of(keep), "the pulled dump differs"
            keep.unlink()
            return result

        print("boto3 upload_file ...", file=sys.stderr)
        up_raw = measure([*raw, "up", "bench", "raw/" + dump.name, str(dump)], env)
        print("velocity-pg push ...", file=sys.stderr)
        up_vpg = measure([*velocity_pg(), "push", dump.name], vpg_env)
        up_small = measure([*velocity_pg(), "push", small.name], vpg_env)
        copy = work / "copy.bin"
        print("boto3 get_object (one streamed GET) ...", file=sys.stderr)
        get_raw = measure([*raw, "get", "bench", "raw/" + dump.name, str(copy)], env)
        copy.unlink()
        print("boto3 download_file ...", file=sys.stderr)
        down_raw = measure([*raw, "down", "bench", "raw/" + dump.name, str(copy)], env)
        copy.unlink()
        print("velocity-pg pull ...", file=sys.stderr)
        down_vpg = pull_again(dump)
        down_small = pull_again(small)
        mib = args.size_mib
        how = "plain" if args.plain else "age-encrypted"

        def rate(seconds: float) -> str:
            return f"{mib / seconds:.0f} MiB/s"

        rows = [
            (
                f"push {mib} MiB ({how}, read back) time / boto3 `upload_file`",
                f"{up_vpg[0] / up_raw[0]:.2f} ({up_vpg[0]:.1f} s, {rate(up_vpg[0])} vs "
                f"{up_raw[0]:.1f} s, {rate(up_raw[0])})",
                "-",
                "-",
            ),
            (
                f"pull {mib} MiB ({how}, checked) time / boto3 one streamed GET",
                f"{down_vpg[0] / get_raw[0]:.2f} ({down_vpg[0]:.1f} s, {rate(down_vpg[0])} vs "
                f"{get_raw[0]:.1f} s; boto3 `download_file`: {down_raw[0]:.1f} s)",
                "-",
                "-",
            ),
        ]
        for label, big, little, raw_run, raw_name in (
            ("push", up_vpg, up_small, up_raw, "upload_file"),
            ("pull", down_vpg, down_small, down_raw, "download_file"),
        ):
            rows.append(
                (
                    f"peak RSS of `{label}`, {mib} MiB / {small_mib} MiB dump",
                    f"{big[1]:.0f} MiB / {little[1]:.0f} MiB (boto3 `{raw_name}`: "
                    f"{raw_run[1]:.0f} MiB)",
                    f"flat, < {TARGET_RSS_MIB} MiB",
                    "yes" if big[1] < TARGET_RSS_MIB and big[1] < little[1] + 16 else "no",
                )
            )
        print("| figure | measured | target | met |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
