"""The manifest: a small JSON file beside each backup that says what it holds.

``<database>_YYYY-MM-DD_HHMMSS.dump.json`` sits beside
``<database>_YYYY-MM-DD_HHMMSS.dump``. It is put in place *before* the dump gets
its name, so every named dump made by velocity-pg has its manifest; dumps
without one (made by the old bash scripts, copied in by hand) are still
backups, just unverifiable by checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from velocity_pg.errors import ManifestUnreadable
from velocity_pg.store import catalog

FORMAT = "velocity-pg-manifest/1"
SUFFIX = ".json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Verification:
    at: str  # ISO 8601, UTC
    method: str  # "checksum" or "restore"
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Manifest:
    sha256: str
    size_bytes: int
    started_at: str
    finished_at: str
    duration_seconds: float
    database: str
    server_version: str
    pg_dump_version: str
    velocity_pg_version: str
    toc_entries: int
    format: str = FORMAT
    #: pg_dump's --compress method (gzip, zstd, lz4, none) and level; None in manifests
    #: written before velocity-pg recorded it (those dumps are gzip:9).
    compression_method: str | None = None
    compression_level: int | None = None
    last_verification: Verification | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def compression(self) -> str | None:
        """``zstd:3``, ``gzip:9``, ``none``; None when the manifest does not say."""
        if self.compression_method is None:
            return None
        if self.compression_method == "none" or self.compression_level is None:
            return self.compression_method
        return f"{self.compression_method}:{self.compression_level}"

    def with_verification(self, verification: Verification) -> Manifest:
        return replace(self, last_verification=verification)


def path_for(dump: Path) -> Path:
    """The manifest's path beside a dump."""
    return dump.with_name(dump.name + SUFFIX)


def is_manifest_name(name: str) -> bool:
    return name.endswith(SUFFIX) and catalog.is_backup_name(name[: -len(SUFFIX)])


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size) of a file, read in 1 MiB chunks (memory stays flat)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def checksum_problem(dump: Path, record: Manifest) -> str | None:
    """Why a dump does not match its manifest (size, then SHA-256); None if it does."""
    digest, size = sha256_file(dump)
    if size != record.size_bytes:
        return f"size is {size} bytes, the manifest says {record.size_bytes}: the file changed"
    if digest != record.sha256:
        return "SHA-256 does not match the manifest: the file is damaged"
    return None


def dumps(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()


def loads(data: bytes) -> Manifest:
    raw = json.loads(data)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError("not a velocity-pg manifest")
    verification = raw.pop("last_verification", None)
    fields = {k: raw[k] for k in Manifest.__dataclass_fields__ if k in raw}
    fields.pop("last_verification", None)
    manifest = Manifest(**fields)
    if not isinstance(manifest.sha256, str) or len(manifest.sha256) != 64:
        raise ValueError("bad sha256")
    if manifest.compression_method is not None and not isinstance(manifest.compression_method, str):
        raise ValueError("bad compression_method")
    level = manifest.compression_level
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise ValueError("bad compression_level")
    if verification is not None:
        manifest = manifest.with_verification(Verification(**verification))
    return manifest


def read(dump: Path) -> Manifest | None:
    """The manifest of a dump, None if it has none; ManifestUnreadable if it is unreadable."""
    path = path_for(dump)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestUnreadable(f"cannot read manifest {path.name}: {exc.strerror}") from exc
    try:
        return loads(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ManifestUnreadable(
            f"manifest {path.name} is damaged ({exc}); the dump itself may still be fine: "
            "move the .json aside to use the dump without its checksum"
        ) from exc


def write_temp(folder: Path, manifest: Manifest) -> tuple[int, Path]:
    """A complete, fsynced temporary manifest file in ``folder`` (fd kept open)."""
    fd, temp = catalog.temp_path_for(folder)
    try:
        os.write(fd, dumps(manifest))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return fd, temp


def replace_manifest(dump: Path, manifest: Manifest) -> None:
    """Atomically replace a dump's manifest (after a verification)."""
    fd, temp = write_temp(dump.parent, manifest)
    try:
        os.close(fd)
        temp.replace(path_for(dump))
        catalog.fsync_path(dump.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def now_iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
