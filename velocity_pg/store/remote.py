"""Off-site storage: the small protocol the verbs speak, and the bucket's layout.

The verbs never speak boto3: they use a :class:`RemoteStore` (``put``,
``head``, ``list``, ``get``, ``delete``, streaming), and S3 is one class
behind it (:mod:`velocity_pg.store.s3`).

Layout under ``s3://BUCKET/PREFIX/``, for a backup NAME (as ``list`` shows it):

* ``NAME.age`` (encrypted with age) or ``NAME`` (not encrypted): the dump;
* ``NAME.json``: the off-site manifest, uploaded **last**, after the dump was
  uploaded and checked. It is the commit marker: a dump object without its
  manifest is an unfinished upload and never counts as a backup. It records
  the uploaded object (key, size, SHA-256), the recipients' public keys, the
  dump's own manifest (its SHA-256 before encryption), and ``origin``: the
  identity of the backup folder that pushed it (:mod:`velocity_pg.store.identity`).

Off-site manifests are read as carefully as local ones: at most
:data:`manifest.MAX_BYTES`, nested no deeper than :data:`manifest.MAX_DEPTH`,
every field checked; one that fails is reported for that copy only.
"""

from __future__ import annotations

import builtins
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from velocity_pg.errors import OperationFailed
from velocity_pg.store import catalog, identity, manifest, pipe

FORMAT = "velocity-pg-offsite/1"
MANIFEST_SUFFIX = ".json"
ENCRYPTED_SUFFIX = ".age"

Progress = Callable[[int], None]
T = TypeVar("T")

#: Clean-up after a failure or a stop (abort an unfinished upload, look at what the
#: store holds, delete an object that never counted) is given up after this many
#: seconds a step: what is left never counts as a copy, and ``velocity-pg cleanup``
#: removes it after an hour. A stopped push is over within seconds.
CLEANUP_LIMIT = 3.0


@dataclass(frozen=True)
class RemoteObject:
    key: str  # relative to the prefix
    size: int
    last_modified: datetime
    etag: str = ""  # the store's version tag (for conditional writes); "" when unknown


class Changed(OperationFailed):
    """A conditional write found its object changed or gone since it was read."""


@dataclass(frozen=True)
class Upload:
    """A multipart upload that was started and never completed or aborted."""

    key: str
    upload_id: str
    initiated: datetime


class RemoteStore(Protocol):
    """Objects under one prefix of one bucket; keys are relative to the prefix."""

    def describe(self) -> str: ...

    def put(
        self,
        key: str,
        source: pipe.Reader,
        progress: Progress | None = None,
        size_hint: int = 0,
    ) -> None:
        """Stream ``source`` into ``key`` (multipart, flat memory); atomic for readers."""

    def put_bytes(self, key: str, data: bytes, if_match: str | None = None) -> None:
        """Write a small object whole; with ``if_match`` (an ETag) only over that very
        version of it: :class:`Changed` when it changed or is gone."""

    def head(self, key: str) -> RemoteObject | None: ...

    def list(self) -> Iterator[RemoteObject]:
        """Every object under the prefix (all pages)."""

    def open(self, key: str) -> pipe.Reader:
        """A reader of the object's bytes, streamed."""

    def get_bytes(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def incomplete_uploads(self) -> builtins.list[Upload]: ...

    def abort_upload(self, upload: Upload) -> None: ...

    def upload_activity(self, upload: Upload) -> datetime | None:
        """When an unfinished upload last showed life (its newest part, else its start);
        None when it is gone."""

    def hurried(self) -> RemoteStore:
        """The same store for clean-up after a failure or a stop: each call is one short
        attempt (run it with :func:`within` to bound the whole clean-up)."""


class TimedOut(OperationFailed):
    """Work given to :func:`within` did not finish in time (it may still finish)."""


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` run in a daemon thread, waited for at most ``seconds``.

    Its result, or its exception raised here; :class:`TimedOut` when it has not
    finished by then: it goes on in the background, and never keeps the process
    alive. The wait is in the main thread, so a signal ends it at once.
    """
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # raised again in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="velocity-pg-cleanup", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimedOut(f"no answer within {seconds:g} s")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class RemoteManifest:
    """What an off-site copy is: the object uploaded and the dump it holds."""

    name: str
    object_key: str
    object_size: int
    object_sha256: str
    encryption: str | None  # "age" or None
    recipients: tuple[str, ...]
    uploaded_at: str
    dump: manifest.Manifest
    format: str = FORMAT
    last_verification: manifest.Verification | None = field(default=None)
    #: The identity of the backup folder that pushed it; None in copies pushed before
    #: velocity-pg recorded it.
    origin: str | None = None

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def created(self) -> datetime:
        """The backup's own time: its dump's start, else the time in its name."""
        try:
            moment = datetime.fromisoformat(self.dump.started_at)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC)
        named = catalog.parse_name(self.name)
        assert named is not None  # listing only reads manifests of backup names
        return named

    def with_verification(self, verification: manifest.Verification) -> RemoteManifest:
        return replace(self, last_verification=verification)

    @property
    def pin(self) -> manifest.Pin | None:
        """The backup's pin: it travels in the dump's manifest, which a push uploads."""
        return self.dump.pin

    def with_pin(self, pin: manifest.Pin | None) -> RemoteManifest:
        return replace(self, dump=self.dump.with_pin(pin))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["recipients"] = list(self.recipients)
        data["dump"] = self.dump.to_json()
        return data


def object_key(name: str, encrypted: bool) -> str:
    return name + (ENCRYPTED_SUFFIX if encrypted else "")


def manifest_key(name: str) -> str:
    return name + MANIFEST_SUFFIX


def name_of_manifest_key(key: str) -> str | None:
    """The backup name of a manifest key (``NAME.json``), None for any other key."""
    if "/" in key or not key.endswith(MANIFEST_SUFFIX):
        return None
    name = key[: -len(MANIFEST_SUFFIX)]
    return name if catalog.is_backup_name(name) else None


def name_of_object_key(key: str) -> str | None:
    """The backup name of a dump object key (``NAME`` or ``NAME.age``), else None."""
    if "/" in key:
        return None
    name = key[: -len(ENCRYPTED_SUFFIX)] if key.endswith(ENCRYPTED_SUFFIX) else key
    return name if catalog.is_backup_name(name) else None


def dumps(record: RemoteManifest) -> bytes:
    return (json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n").encode()


_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_ENCRYPTIONS = (None, "age")


def loads(data: bytes) -> RemoteManifest:
    """Parse and validate an off-site manifest, as carefully as a local one (size cap,
    nesting, every field's type); ValueError says what is wrong."""
    raw = manifest.parse_document(data, "off-site manifest")
    if raw.get("format") != FORMAT:
        raise ValueError("not a velocity-pg off-site manifest")
    encryption = raw.get("encryption")
    if encryption not in _ENCRYPTIONS:
        raise ValueError(f"field encryption {encryption!r} is not one of {_ENCRYPTIONS}")
    recipients = raw.get("recipients") or []
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ValueError("field recipients is not a list of public keys")
    origin = raw.get("origin")
    if origin is not None and not (isinstance(origin, str) and identity.PATTERN.match(origin)):
        raise ValueError("field origin is not a backup folder identity")
    record = RemoteManifest(
        name=manifest.text(raw, "name"),
        object_key=manifest.text(raw, "object_key"),
        object_size=manifest.count(raw, "object_size"),
        object_sha256=manifest.text(raw, "object_sha256", pattern=_SHA256),
        encryption=encryption,
        recipients=tuple(recipients),
        uploaded_at=manifest.text(raw, "uploaded_at"),
        dump=manifest.from_json(raw.get("dump"), "dump."),
        last_verification=manifest.verification_from(raw),
        origin=origin,
    )
    if name_of_object_key(record.object_key) != record.name:
        raise ValueError("inconsistent off-site manifest")
    return record


def read_manifest(store: RemoteStore, obj: RemoteObject) -> RemoteManifest:
    """Read and validate the manifest object ``obj``; one too large is not even read."""
    if obj.size > manifest.MAX_BYTES:
        raise ValueError(f"it is larger than {manifest.MAX_BYTES} bytes")
    return loads(store.get_bytes(obj.key))


@dataclass(frozen=True)
class RemoteBackup:
    """One complete off-site backup (its manifest exists), or one whose manifest is damaged."""

    name: str
    record: RemoteManifest | None
    manifest_object: RemoteObject
    problem: str = ""

    @property
    def created(self) -> datetime:
        if self.record is not None:
            return self.record.created
        named = catalog.parse_name(self.name)
        assert named is not None
        return named

    @property
    def database(self) -> str:
        """The database in the backup's name (retention and "newest" are per database)."""
        return catalog.database_of(self.name) or ""

    def as_catalog_backup(self) -> catalog.Backup:
        """For the retention plan: the backup's own time, never the store's LastModified."""
        size = self.record.object_size if self.record is not None else 0
        return catalog.Backup(
            name=self.name,
            path=Path(self.record.object_key if self.record else self.name),
            created=self.created,
            mtime=self.created,
            size=size,
            database=self.database,
        )


@dataclass(frozen=True)
class Listing:
    """The backups of a store and what else lies under its prefix."""

    backups: list[RemoteBackup]  # newest first
    #: Dump objects without a manifest: unfinished uploads (never backups).
    orphans: list[RemoteObject]
    objects: dict[str, RemoteObject]


def list_backups(store: RemoteStore) -> Listing:
    """Read the bucket: every manifest (all pages) and the objects without one."""
    objects = {obj.key: obj for obj in store.list()}
    backups: list[RemoteBackup] = []
    committed: set[str] = set()
    for key, obj in objects.items():
        name = name_of_manifest_key(key)
        if name is None:
            continue
        try:
            record = read_manifest(store, obj)
        except ValueError as exc:
            backups.append(RemoteBackup(name, None, obj, f"manifest is damaged ({exc})"))
            continue
        if record.name != name:
            backups.append(RemoteBackup(name, None, obj, "manifest names another backup"))
            continue
        committed.add(record.object_key)
        backups.append(RemoteBackup(name, record, obj))
    orphans = [
        obj
        for key, obj in objects.items()
        if name_of_object_key(key) is not None
        and key not in committed
        # A damaged manifest's objects are not orphans: never delete them as leftovers.
        and not any(b.record is None and b.name == name_of_object_key(key) for b in backups)
    ]
    backups.sort(key=lambda b: b.name, reverse=True)
    return Listing(backups=backups, orphans=orphans, objects=objects)


def problem_with(backup: RemoteBackup, objects: dict[str, RemoteObject]) -> str | None:
    """Why a listed off-site backup is not usable (damaged manifest, missing object)."""
    if backup.record is None:
        return backup.problem
    obj = objects.get(backup.record.object_key)
    if obj is None:
        return f"its object {backup.record.object_key} is missing from the bucket"
    if obj.size != backup.record.object_size:
        return (
            f"its object is {obj.size} bytes, the manifest says {backup.record.object_size}: "
            "it changed in the bucket"
        )
    return None


#: Two backups started in one second get consecutive seconds in their names (see
#: :func:`catalog.candidate_names`): a name's time is at most this much after the start.
NAME_TIME_SLACK = timedelta(seconds=3600)


def not_describing(record: RemoteManifest, name: str) -> str | None:
    """Why an off-site manifest does not describe backup ``name`` (its name, its
    database, its time); None when it does."""
    if record.name != name:
        return f"its manifest describes backup {record.name}, not {name}"
    database = catalog.database_of(name)
    if record.dump.database != database:
        return (
            f"its manifest describes a backup of database {record.dump.database!r}, "
            f"not {database!r}"
        )
    named = catalog.parse_name(name)
    try:
        started = datetime.fromisoformat(record.dump.started_at).astimezone(UTC)
    except ValueError:
        return "its manifest's start time is not a time"
    assert named is not None  # a backup name (its database was read from it)
    if not timedelta(0) <= named - started.replace(microsecond=0) <= NAME_TIME_SLACK:
        return (
            f"its manifest describes a backup started at {record.dump.started_at}, "
            f"not at the time in the name {name}"
        )
    return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
