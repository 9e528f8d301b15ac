"""Off-site copies, the machinery: the verbs (``push``, ``pull``, ``list --remote``,
``verify --remote``, ``status``, off-site cleanup) live in :mod:`velocity_pg.verbs`.

Push, in order, so that nothing in the bucket looks like a backup unless it is one:

1. fail closed before anything runs (:func:`prepare`): boto3 installed, S3
   credentials found, and with recipients set, ``age`` installed and accepting
   them (a plaintext copy is never uploaded when recipients are set);
2. stream the local dump (through ``age --encrypt`` when recipients are set)
   into a multipart upload, hashing the dump on its way in and the object on its
   way out; a stale unfinished upload of the same key is aborted first;
3. check: the dump read matches its local manifest (size, SHA-256), and the
   object in the bucket has the size and SHA-256 of what was sent (read back
   end to end);
4. only then upload the off-site manifest ``NAME.json``: the commit marker.
   Any failure before it removes the object again (best effort; an object
   without its manifest never counts, and ``cleanup`` removes such leftovers);
   after an uncertain manifest upload, only once the bucket shows no manifest.

A copy already under the name counts only when it is this backup's (dump SHA-256
and size), its object is there, and it is encrypted to the configured recipients
(:func:`existing_copy`); another backup's copy is never overwritten.

Pull (:mod:`velocity_pg.verbs.pull`) follows only a manifest that describes the backup
asked for, and streams the object back (through ``age --decrypt -i FILE``) into a temporary file in
BACKUP_DIR, checks both SHA-256s (object and dump) and only then gives it its
name, with its manifest: from then on it is an ordinary local backup.

A stop (Ctrl+C, SIGTERM, SIGHUP) is never a failure here: it ends the verb at once
(:class:`Interrupted`, exit 130) after a clean-up bounded by
:data:`remote.CLEANUP_LIMIT` a step, so ``push --all`` does not go on with the next
backup and ``verify --remote`` records no verdict. A store that stalls fails within
:data:`velocity_pg.store.s3.STALL_LIMIT` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from velocity_pg.errors import (
    CommandFailed,
    ConfigError,
    Interrupted,
    ManifestUnreadable,
    OperationFailed,
    describe_failure,
)
from velocity_pg.postgres import pgtools
from velocity_pg.settings import OffSite, Settings
from velocity_pg.store import age, catalog, identity, lock, manifest, pipe, remote, roles_offsite
from velocity_pg.store.remote import RemoteBackup, RemoteManifest, RemoteStore

#: Leftovers in the bucket (objects without a manifest, unfinished multipart
#: uploads) are removed by cleanup only when older than this: a push may be
#: writing them right now. A multipart upload's age is counted from its newest
#: part (a live push uploads parts all along), and neither ``push`` nor off-site
#: cleanup touches one younger than this.
LEFTOVER_MIN_AGE = timedelta(hours=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- streams and progress -------------------------------------------------------------


class Hashing:
    """A reader that hashes (SHA-256) and counts what passes through it."""

    def __init__(self, source: pipe.Reader, progress: Callable[[int], None] | None = None) -> None:
        self._source = source
        self._progress = progress
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self._digest.update(data)
        self.size += len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def drain(self, sink: pipe.Writer | None = None) -> None:
        while chunk := self.read(pipe.CHUNK):
            if sink is not None:
                sink.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class Meter:
    """A transfer's progress on a terminal (stderr), at most 5 times a second; else silent."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self._what = ""
        self._total = 0
        self._done = 0
        self._start = 0.0
        self._last = 0.0
        self._open = False

    def say(self, text: str) -> None:
        self.end()
        print(f"velocity-pg: {text}", file=self.stream, flush=True)

    def start(self, what: str, total: int) -> Callable[[int], None]:
        self.end()
        self._what, self._total, self._done = what, total, 0
        self._start = time.monotonic()
        self._last = 0.0  # the first step shows at once
        return self.advance

    def advance(self, amount: int) -> None:
        self._done += amount
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        rate = self._done / max(now - self._start, 1e-6)
        share = f" of {catalog.human_size(self._total)}" if self._total else ""
        self.stream.write(
            f"\r\033[Kvelocity-pg: {self._what}: {catalog.human_size(self._done)}{share} "
            f"({catalog.human_size(rate)}/s)"
        )
        self.stream.flush()
        self._open = True

    def end(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# -- setup -------------------------------------------------------------------------------


def offsite_of(settings: Settings) -> OffSite:
    if settings.offsite is None:
        raise ConfigError(
            "off-site copies are not configured: set BACKUP_S3_URL=s3://BUCKET[/PREFIX] "
            "(and BACKUP_S3_ENDPOINT_URL for providers other than AWS)"
        )
    return settings.offsite


@dataclass(frozen=True)
class Context:
    """What every off-site operation needs, checked before anything runs."""

    offsite: OffSite
    store: RemoteStore
    age_program: str | None  # set when copies are encrypted
    recipients: tuple[str, ...] = ()  # their public keys (set with age_program)


def prepare(settings: Settings, *, for_upload: bool = True) -> Context:
    """Fail closed (exit 2) before anything runs: client library, credentials, age."""
    from velocity_pg.store import s3

    offsite = offsite_of(settings)
    s3.require_boto3()
    program = age.check_can_encrypt(offsite) if offsite.encrypted and for_upload else None
    keys = tuple(age.public_keys(offsite)) if program is not None else ()
    return Context(offsite=offsite, store=s3.S3Store(offsite), age_program=program, recipients=keys)


def retry_hint(name: str) -> str:
    return f"velocity-pg push {name}"


# -- push ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    name: str
    status: str  # "pushed", "already off-site", or "pin updated" (already off-site)
    object_key: str
    size: int
    encrypted: bool
    seconds: float = 0.0
    #: What this push replaced ("a plaintext copy (NAME), removed", ...); "" when nothing.
    replaced: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "object_key": self.object_key,
            "size_bytes": self.size,
            "encrypted": self.encrypted,
            "seconds": round(self.seconds, 3),
            "replaced": self.replaced or None,
        }

    def line(self) -> str:
        if self.status != "pushed":
            return f"{self.status:<16} {self.name}"
        how = "encrypted" if self.encrypted else "not encrypted"
        return (
            f"{'pushed':<16} {self.name} ({catalog.human_size(self.size)}, {how}) "
            f"in {self.seconds:.1f} s" + (f"; it replaced {self.replaced}" if self.replaced else "")
        )


def copy_problem(
    record: RemoteManifest,
    obj: remote.RemoteObject | None,
    local: manifest.Manifest,
    recipients: tuple[str, ...],
) -> tuple[bool, str] | None:
    """Why an off-site copy named like a local backup does not count as its copy; None
    when it does.

    (False, why): another backup under this name, never to be overwritten;
    (True, what): this backup's copy, but it must be uploaded again (its object is
    gone or changed, it is plaintext while recipients are set, or encrypted to
    other recipients). ``obj`` is what the store holds under the copy's object key.
    """
    if (record.dump.sha256, record.dump.size_bytes) != (local.sha256, local.size_bytes):
        return False, (
            f"a different backup named {record.name} is off-site: its dump has SHA-256 "
            f"{record.dump.sha256} ({record.dump.size_bytes} bytes), this one's has "
            f"{local.sha256} ({local.size_bytes} bytes)"
        )
    if obj is None:
        return True, f"a copy whose object {record.object_key} was missing"
    if obj.size != record.object_size:
        return True, (
            f"a copy whose object {record.object_key} had changed ({obj.size} bytes, "
            f"its manifest said {record.object_size})"
        )
    if recipients and not record.encrypted:
        return True, f"a plaintext copy ({record.object_key})"
    if recipients and sorted(set(record.recipients)) != sorted(set(recipients)):
        return True, "a copy encrypted to other recipients"
    return None


@dataclass(frozen=True)
class Existing:
    """The off-site copy already under a backup's name that must be uploaded again."""

    record: RemoteManifest
    what: str  # what it is, for the output ("a plaintext copy (NAME)")


def existing_copy(
    ctx: Context, name: str, local: manifest.Manifest
) -> tuple[RemoteManifest | None, Existing | None]:
    """What the store holds under ``name``: (a copy that counts, None), (None, one to
    replace), or (None, None) when there is none. A copy of another backup, or a
    manifest that cannot be read, is an OperationFailed: nothing is uploaded over it."""
    store = ctx.store
    key = remote.manifest_key(name)
    if store.head(key) is None:
        return None, None
    where = store.describe()
    try:
        record = remote.loads(store.get_bytes(key))
    except (ValueError, TypeError, KeyError) as exc:
        raise OperationFailed(
            f"the off-site manifest {key} in {where} is damaged ({exc}); nothing was uploaded "
            f"over it: look at it, and delete it to push {name} again"
        ) from exc
    wrong = remote.not_describing(record, name)
    if wrong is not None:
        raise OperationFailed(
            f"{key} in {where} is not {name}'s: {wrong}; nothing was uploaded over it: "
            f"look at it, and delete it to push {name} again"
        )
    problem = copy_problem(record, store.head(record.object_key), local, ctx.recipients)
    if problem is None:
        return record, None
    ours, what = problem
    if not ours:
        raise OperationFailed(
            f"{what}; nothing was uploaded over it (two hosts writing to the same "
            f"BACKUP_S3_URL? give each its own prefix), {name} is safe in the backup folder"
        )
    return None, Existing(record, what)


def manifest_state(store: RemoteStore, key: str, data: bytes) -> str:
    """After an uncertain manifest upload: "ours" (the store holds ``data``), "absent",
    "other" (someone else's), or "unknown" (the store could not be read)."""
    try:
        if store.head(key) is None:
            return "absent"
        return "ours" if store.get_bytes(key) == data else "other"
    except OperationFailed:
        return "unknown"


def manifest_state_now(store: RemoteStore, key: str, data: bytes) -> str:
    """:func:`manifest_state` with short attempts, within ``CLEANUP_LIMIT`` seconds: a
    store that stalls (or a stop) makes it "unknown", and then nothing is deleted."""
    quick = store.hurried()
    try:
        return remote.within(remote.CLEANUP_LIMIT, lambda: manifest_state(quick, key, data))
    except OperationFailed:
        return "unknown"


def discard_uncommitted(
    store: RemoteStore,
    key: str,
    mkey: str,
    manifest_sent: bytes | None,
    keep_object: bool,
    also: tuple[str, ...] = (),
) -> str:
    """After a push that failed or was stopped before its manifest counted: delete its
    object, unless a manifest may name it. Returns what the store holds under ``mkey``
    ("absent" when the manifest was never sent; see :func:`manifest_state`).

    Bounded (short attempts, ``CLEANUP_LIMIT`` seconds for each step), so a stalled
    store or a stop is never held up here; an object left behind has no manifest and
    never counts (``cleanup`` removes it after an hour).
    """
    state = "absent"
    if manifest_sent is not None and not keep_object:
        # Stopped or failed during the manifest's upload: it may be stored; never leave
        # it naming a deleted object.
        state = manifest_state_now(store, mkey, manifest_sent)
        keep_object = state != "absent"
    if not keep_object:
        quick = store.hurried()
        for gone in (key, *also):  # ``also``: the roles file sent with it
            with contextlib.suppress(OperationFailed):
                remote.within(remote.CLEANUP_LIMIT, functools.partial(quick.delete, gone))
    return state


class DumpReader:
    """The local dump being pushed: a read error, or an end before (or after) the size in
    its manifest, raises :class:`OperationFailed` instead of ending the stream early, so
    a truncated dump is never encrypted and uploaded whole-looking."""

    def __init__(self, raw: pipe.Reader, dump: Path, expected: int) -> None:
        self._raw = raw
        self._dump = dump
        self._expected = expected
        self._size = 0
        self.error: OperationFailed | None = None

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._raw.read(size)
        except OSError as exc:
            raise self._failed(
                f"cannot read {self._dump.name} in {self._dump.parent} ({exc.strerror or exc})"
            ) from exc
        self._size += len(data)
        if (not data and size != 0 and self._size < self._expected) or (
            self._size > self._expected
        ):
            raise self._failed(
                f"{self._dump.name} changed while it was being read ({self._size} bytes "
                f"read, its manifest says {self._expected})"
            )
        return data

    def _failed(self, problem: str) -> OperationFailed:
        self.error = OperationFailed(
            f"{problem}; nothing was uploaded: run `velocity-pg verify {self._dump.name}`"
        )
        return self.error


def push_backup(ctx: Context, dump: Path, meter: Meter | None = None) -> PushResult:
    """Upload one local backup and its off-site manifest (last); see the module docstring."""
    meter = meter or Meter()
    name = dump.name
    offsite, store = ctx.offsite, ctx.store
    try:
        record = manifest.read(dump)
    except ManifestUnreadable as exc:
        raise OperationFailed(f"{exc.message}; it was not pushed") from exc
    if record is None:
        raise OperationFailed(
            f"{name} has no manifest (it was not made by velocity-pg), so its copy could not "
            "be checked; it was not pushed"
        )
    origin = identity.ensure(dump.parent)  # recorded in the manifest: whose copy it is
    key = remote.object_key(name, offsite.encrypted)
    counted, replacing = existing_copy(ctx, name, record)
    if counted is not None:
        status = "already off-site"
        if counted.pin != record.pin:  # pinned or unpinned since: the pin travels with it
            set_remote_pin(store, name, record.pin, record.sha256)
            status = "pin updated"
        return PushResult(name, status, counted.object_key, counted.object_size, counted.encrypted)
    # Overwriting the object a manifest still names: a failure must not delete it then.
    in_place = replacing is not None and replacing.record.object_key == key
    clear_stale_uploads(store, key, name)
    try:
        fd = catalog.open_regular(dump)  # never a FIFO, a device or a symlink
    except FileNotFoundError:
        raise OperationFailed(f"{name} is gone from {dump.parent}; it was not pushed") from None
    clock = time.monotonic()
    committed = False
    keep_object = in_place
    manifest_sent: bytes | None = None
    mkey = remote.manifest_key(name)
    try:
        with os.fdopen(fd, "rb") as raw:
            reader = DumpReader(raw, dump, record.size_bytes)
            plain = Hashing(reader)
            progress = meter.start(f"uploading {name}", record.size_bytes)
            if offsite.encrypted:
                assert ctx.age_program is not None
                with age.encrypting(plain, offsite, ctx.age_program) as encrypted:
                    sent = Hashing(encrypted, progress)
                    try:
                        store.put(key, sent, size_hint=record.size_bytes)
                        encrypted.finish()
                    except CommandFailed as exc:
                        raise OperationFailed(
                            f"age failed while encrypting {name}: "
                            f"{describe_failure(exc.returncode, exc.stderr)}"
                        ) from exc
                    except OperationFailed:
                        if reader.error is not None:  # the local dump, not the store
                            raise reader.error from None
                        raise
            else:
                sent = Hashing(plain, progress)
                try:
                    store.put(key, sent, size_hint=record.size_bytes)
                except OperationFailed:
                    if reader.error is not None:
                        raise reader.error from None
                    raise
            meter.end()
        if (plain.size, plain.sha256) != (record.size_bytes, record.sha256):
            raise OperationFailed(
                f"{name} does not match its manifest (it changed or is damaged on disk); "
                "run `velocity-pg verify` on it"
            )
        check_object(store, key, sent.size, sent.sha256, meter)
        # The roles file goes with it, before the manifest (store/roles_offsite.py).
        roles_offsite.push(store, dump, record, offsite, ctx.age_program)
        remote_record = RemoteManifest(
            name=name,
            object_key=key,
            object_size=sent.size,
            object_sha256=sent.sha256,
            encryption="age" if offsite.encrypted else None,
            recipients=ctx.recipients,
            uploaded_at=remote.now_iso(),
            dump=record,
            origin=origin,
        )
        data = manifest_sent = remote.dumps(remote_record)
        try:
            store.put_bytes(mkey, data)
        except OperationFailed as exc:
            # The server may have stored it all the same (a lost answer): look first.
            state = manifest_state_now(store, mkey, data)
            if state != "ours":
                keep_object = keep_object or state != "absent"
                if state == "unknown":
                    raise OperationFailed(
                        f"{exc.message}; whether {mkey} was stored could not be checked, so "
                        f"nothing was deleted: run `{retry_hint(name)}` again to check and "
                        "finish it"
                    ) from exc
                raise
        committed = True
        if store.get_bytes(mkey) != data:
            raise OperationFailed(f"the off-site manifest of {name} does not read back")
    except BaseException as exc:
        meter.end()
        state = "absent"
        if not committed:
            roles_key = roles_offsite.key_for(name, offsite.encrypted)
            also = (roles_key,) if record.roles is not None else ()
            state = discard_uncommitted(store, key, mkey, manifest_sent, keep_object, also)
        if isinstance(exc, KeyboardInterrupt | pgtools.Terminated):
            if committed or state == "ours":
                where = "and its off-site copy was complete before the stop"
            elif state == "unknown":  # the store did not answer in time: nothing deleted
                where = "but whether its off-site manifest was stored could not be checked"
            else:
                where = "but not off-site"
            raise Interrupted(
                f"{pgtools.stop_word(exc)}; {name} is safe in the backup folder {where}; "
                f"retry with `{retry_hint(name)}`"
            ) from None
        raise
    replaced = ""
    if replacing is not None:
        replaced = replacing.what
        old_key = replacing.record.object_key
        if old_key != key:  # the old object, now that the new copy is checked and committed
            try:
                store.delete(old_key)
                replaced += ", removed"
            except OperationFailed as exc:
                replaced += (
                    f"; its object {old_key} could not be removed ({exc.message}): delete it "
                    "by hand, or `velocity-pg cleanup` removes it after an hour"
                )
    return PushResult(
        name, "pushed", key, sent.size, offsite.encrypted, time.monotonic() - clock, replaced
    )


def clear_stale_uploads(
    store: RemoteStore, key: str, name: str, now: Callable[[], datetime] = utcnow
) -> None:
    """Abort a killed push's unfinished upload of ``key``; refuse while one is alive.

    An upload whose newest part is younger than :data:`LEFTOVER_MIN_AGE` may be
    another push of this backup (on this host or another) at work: it is never
    aborted, and this push uploads nothing over it.
    """
    for upload in store.incomplete_uploads():
        if upload.key != key:
            continue
        active = store.upload_activity(upload)
        if active is None:
            continue  # it completed or was aborted meanwhile
        if now() - active <= LEFTOVER_MIN_AGE:
            raise OperationFailed(
                f"another push of {name} is uploading it to {store.describe()} right now "
                f"(last part at {active:%Y-%m-%d %H:%M:%S} UTC); nothing was uploaded: retry "
                f"when it has finished (an upload silent for {leftover_hours()} counts as "
                "killed and is replaced)"
            )
        store.abort_upload(upload)


def leftover_hours() -> str:
    hours = LEFTOVER_MIN_AGE / timedelta(hours=1)
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def check_object(store: RemoteStore, key: str, size: int, sha256: str, meter: Meter) -> None:
    """The object in the bucket has the size and SHA-256 of what was sent (read back)."""
    found = store.head(key)
    if found is None:
        raise OperationFailed(f"the uploaded object {key} is not in the bucket")
    if found.size != size:
        raise OperationFailed(f"the uploaded object {key} is {found.size} bytes, {size} were sent")
    back = Hashing(store.open(key), meter.start(f"checking {key}", size))
    back.drain()
    meter.end()
    if (back.size, back.sha256) != (size, sha256):
        raise OperationFailed(f"the uploaded object {key} does not read back as it was sent")


# -- reading copies back ------------------------------------------------------------------


def read_record(store: RemoteStore, name: str) -> RemoteManifest:
    """The off-site manifest of ``name``; OperationFailed when it is not off-site."""
    if not catalog.is_backup_name(name):
        raise ConfigError(
            f"{name!r} is not a backup name; run `velocity-pg list --remote` to see them"
        )
    key = remote.manifest_key(name)
    found = store.head(key)
    if found is None:
        raise OperationFailed(
            f"backup {name} is not off-site in {store.describe()} (no {key}); "
            "run `velocity-pg list --remote`"
        )
    try:
        return remote.read_manifest(store, found)
    except ValueError as exc:
        raise OperationFailed(f"the off-site manifest {key} is damaged ({exc})") from exc


@dataclass
class Fetched:
    """What reading an off-site object end to end found."""

    object_size: int = 0
    object_sha256: str = ""
    dump_size: int | None = None
    dump_sha256: str | None = None


def fetch(
    store: RemoteStore,
    record: RemoteManifest,
    sink: pipe.Writer | None,
    identity: Path | None,
    meter: Meter,
    verb: str = "downloading",
) -> Fetched:
    """Stream an object (decrypted when ``identity`` is given) into ``sink``; hash both sides."""
    got = Hashing(
        store.open(record.object_key), meter.start(f"{verb} {record.name}", record.object_size)
    )
    found = Fetched()
    try:
        if record.encrypted and identity is not None:
            with age.decrypting(got, identity) as plain:
                dump = Hashing(plain)
                dump.drain(sink)
                try:
                    plain.finish()
                except CommandFailed as exc:
                    raise OperationFailed(
                        f"cannot decrypt {record.name} with BACKUP_AGE_IDENTITY_FILE "
                        f"({describe_failure(exc.returncode, exc.stderr)}): the wrong identity, "
                        "or a damaged object"
                    ) from exc
            found.dump_size, found.dump_sha256 = dump.size, dump.sha256
        else:
            got.drain(sink)
            if not record.encrypted:
                found.dump_size, found.dump_sha256 = got.size, got.sha256
    finally:
        meter.end()
    found.object_size, found.object_sha256 = got.size, got.sha256
    return found


def fetch_problem(record: RemoteManifest, found: Fetched) -> str | None:
    """Why what was read does not match the off-site manifest; None if it does."""
    if found.object_size != record.object_size:
        return (
            f"the off-site object is {found.object_size} bytes, its manifest says "
            f"{record.object_size}: it changed in the bucket"
        )
    if found.object_sha256 != record.object_sha256:
        return "the off-site object's SHA-256 does not match its manifest: it is damaged"
    if found.dump_sha256 is not None and (found.dump_size, found.dump_sha256) != (
        record.dump.size_bytes,
        record.dump.sha256,
    ):
        return "the dump inside the off-site object does not match its manifest: it is damaged"
    return None


@contextlib.contextmanager
def temp_file(folder: Path) -> Iterator[tuple[int, Path]]:
    """A locked temporary file in BACKUP_DIR (cleanup leaves it alone); removed unless kept."""
    try:
        fd, path = catalog.temp_path_for(folder)
    except OSError as exc:
        raise OperationFailed(f"cannot create a file in {folder}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fd, path
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def described_record(store: RemoteStore, name: str) -> RemoteManifest:
    """The off-site manifest of ``name``, checked to describe that very backup (its name,
    database and time): a manifest that names another is never followed."""
    record = read_record(store, name)
    wrong = remote.not_describing(record, name)
    if wrong is not None:
        raise OperationFailed(
            f"the off-site copy of {name} in {store.describe()} cannot be used: {wrong}; "
            "nothing was written"
        )
    return record


# -- pins off-site ------------------------------------------------------------------------


def set_remote_pin(
    store: RemoteStore, name: str, pin: manifest.Pin | None, dump_sha256: str | None = None
) -> tuple[RemoteManifest, bool] | None:
    """Write ``pin`` (None: unpin) into the off-site manifest of ``name``; (the manifest as
    it was, whether it changed), or None when ``name`` is not off-site. See
    :func:`update_remote_dump`."""
    return update_remote_dump(store, name, lambda dump: dump.with_pin(pin), dump_sha256)


def update_remote_dump(
    store: RemoteStore,
    name: str,
    change: Callable[[manifest.Manifest], manifest.Manifest],
    dump_sha256: str | None = None,
) -> tuple[RemoteManifest, bool] | None:
    """Rewrite the dump's part of the off-site manifest of ``name`` (its pin, its accepted
    mark) as ``change`` says; (the manifest as it was, whether it changed), or None when
    ``name`` is not off-site.

    Only the manifest object is rewritten (the copy's object and checksums stay as they
    are), conditionally on the version read (a push or a verify that rewrote it meanwhile
    makes this fail, never lose its write), and read back. With ``dump_sha256`` (the local
    dump's), a copy of another backup under the name is refused. OperationFailed when the
    manifest could not be written; the off-site manifest is then as it was.
    """
    key = remote.manifest_key(name)
    found = store.head(key)
    if found is None:
        return None
    try:
        record = remote.read_manifest(store, found)
    except ValueError as exc:
        raise OperationFailed(f"the off-site manifest {key} is damaged ({exc})") from exc
    wrong = remote.not_describing(record, name)
    if wrong is None and dump_sha256 is not None and record.dump.sha256 != dump_sha256:
        wrong = (
            "it is a copy of a different backup under the same name (its dump's SHA-256 differs)"
        )
    if wrong is not None:
        raise OperationFailed(f"the off-site copy of {name} in {store.describe()}: {wrong}")
    changed = change(record.dump)
    if changed == record.dump:
        return record, False
    data = remote.dumps(replace(record, dump=changed))
    try:
        store.put_bytes(key, data, if_match=found.etag or None)
    except remote.Changed:
        raise OperationFailed(
            f"its off-site manifest {key} changed while it was being rewritten (a push or a "
            "verify at work)"
        ) from None
    if store.get_bytes(key) != data:
        raise OperationFailed(f"the off-site manifest {key} does not read back as it was written")
    return record, True


# -- whose copies: this backup folder's, or another's ------------------------------------------

#: What ``list --remote`` shows for this folder's copies, and for copies whose folder is
#: unknown (pushed before velocity-pg recorded it, and not matched by a local manifest).
THIS_FOLDER = "this folder"
UNKNOWN_OWNER = "unknown"


def owner_of(folder: Path, own: str | None, backup: RemoteBackup) -> str:
    """:data:`THIS_FOLDER`, another folder's short identity, or :data:`UNKNOWN_OWNER`.

    A copy records the identity of the folder that pushed it. One pushed before
    identities existed (no ``origin``) is this folder's only while a local
    manifest of that name with the same dump SHA-256 is in the folder; else its
    owner is unknown, and cleanup never deletes it.
    """
    record = backup.record
    if record is None:
        return UNKNOWN_OWNER
    if record.origin is not None:
        return THIS_FOLDER if record.origin == own else identity.short(record.origin)
    try:
        local = manifest.read(folder / backup.name)
    except (ManifestUnreadable, OSError):
        local = None
    if local is not None and local.sha256 == record.dump.sha256:
        return THIS_FOLDER
    return UNKNOWN_OWNER


def owners(folder: Path, backups: list[RemoteBackup]) -> dict[str, str]:
    """Each listed backup's owner (see :func:`owner_of`), by name."""
    own = identity.read(folder)
    return {b.name: owner_of(folder, own, b) for b in backups}


def foreign_warning(where: str, foreign: list[tuple[str, str]], shown: int = 20) -> str | None:
    """The one warning naming the copies under the prefix that are not this folder's."""
    if not foreign:
        return None
    names = ", ".join(
        f"{name} ({'owner unknown' if owner == UNKNOWN_OWNER else f'folder {owner}'})"
        for name, owner in foreign[:shown]
    )
    more = f" and {len(foreign) - shown} more" if len(foreign) > shown else ""
    return (
        f"{len(foreign)} off-site copy(ies) in {where} are not this backup folder's and are "
        f"left alone (never counted or deleted here): {names}{more}; "
        "`velocity-pg list --remote` shows whose each is"
    )


def newest_remote(backups: list[RemoteBackup], database: str | None) -> list[RemoteBackup]:
    """The backups of ``database`` (of any when None), newest first by their own time."""
    mine = [b for b in backups if database is None or b.database == database]
    return sorted(mine, key=lambda b: (b.created, b.name), reverse=True)


# -- cleanup off-site: deleting copies and leftovers ----------------------------------------


@dataclass(frozen=True)
class RemoteDeletion:
    name: str
    size: int
    status: str  # "deleted", "would delete", "vanished", "changed" (left alone), "failed"
    detail: str

    @property
    def done(self) -> bool:
        return self.status in ("deleted", "would delete", "vanished", "changed")

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "size_bytes": self.size,
            "status": self.status,
            "detail": self.detail,
        }


def split_owned(
    folder: Path, backups: list[RemoteBackup]
) -> tuple[list[RemoteBackup], list[tuple[str, str]]]:
    """This folder's readable copies, and (name, owner) of every other readable copy."""
    good = [b for b in backups if b.record is not None]
    owner = owners(folder, good)
    mine = [b for b in good if owner[b.name] == THIS_FOLDER]
    return mine, [(b.name, owner[b.name]) for b in good if owner[b.name] != THIS_FOLDER]


@contextlib.contextmanager
def leftovers_lock(folder: Path, dry_run: bool) -> Iterator[str]:
    """Hold the folder lock exclusively while unfinished uploads are removed; yields why
    not ("" when held). Every push holds it shared: a push of this folder, however long,
    is never cut by a cleanup (one on another host is judged by its parts' times)."""
    with contextlib.ExitStack() as stack:
        why = ""
        if not dry_run:
            try:
                stack.enter_context(lock.exclusive(folder, "remove unfinished off-site uploads"))
            except OperationFailed as exc:
                why = f"unfinished uploads were left for the next cleanup ({exc.message})"
        yield why


def delete_remote(
    store: RemoteStore, record: RemoteManifest, reason: str, listed: str = ""
) -> RemoteDeletion:
    """Delete the manifest first (the backup stops counting at once), then the object.

    ``listed``: the manifest's version tag when it was planned; a manifest rewritten
    since (pinned meanwhile, say) is left alone."""
    key = remote.manifest_key(record.name)
    try:
        found = store.head(key)
        if found is None:
            return RemoteDeletion(
                record.name, record.object_size, "vanished", "was already gone when its turn came"
            )
        if listed and found.etag and found.etag.strip('"') != listed.strip('"'):
            return RemoteDeletion(
                record.name,
                record.object_size,
                "changed",
                "its manifest was rewritten after cleanup listed it (pinned?); left alone",
            )
        store.delete(key)
        store.delete(record.object_key)
        roles_offsite.delete(store, record.name, record.encrypted)
    except OperationFailed as exc:
        return RemoteDeletion(record.name, record.object_size, "failed", exc.message)
    return RemoteDeletion(record.name, record.object_size, "deleted", reason)


def leftovers(
    store: RemoteStore, listing: remote.Listing, now: datetime
) -> list[Callable[[bool], RemoteDeletion]]:
    """Unfinished uploads older than LEFTOVER_MIN_AGE: objects without a manifest, and
    multipart uploads never completed. Each is a callable (dry_run) -> outcome."""
    actions: list[Callable[[bool], RemoteDeletion]] = []
    for obj in listing.orphans:
        if now - obj.last_modified <= LEFTOVER_MIN_AGE:
            continue

        def drop_object(dry: bool, obj: remote.RemoteObject = obj) -> RemoteDeletion:
            why = "object of an unfinished upload (it has no manifest)"
            if dry:
                return RemoteDeletion(obj.key, obj.size, "would delete", why)
            try:
                store.delete(obj.key)
            except OperationFailed as exc:
                return RemoteDeletion(obj.key, obj.size, "failed", exc.message)
            return RemoteDeletion(obj.key, obj.size, "deleted", why)

        actions.append(drop_object)
    for upload in store.incomplete_uploads():
        if now - upload.initiated <= LEFTOVER_MIN_AGE:
            continue
        active = store.upload_activity(upload)  # a live push renews it with each part
        if active is None or now - active <= LEFTOVER_MIN_AGE:
            continue

        def abort(dry: bool, upload: remote.Upload = upload) -> RemoteDeletion:
            why = "multipart upload never completed (a push that was killed)"
            if dry:
                return RemoteDeletion(upload.key, 0, "would delete", why)
            try:
                store.abort_upload(upload)
            except OperationFailed as exc:
                return RemoteDeletion(upload.key, 0, "failed", exc.message)
            return RemoteDeletion(upload.key, 0, "deleted", why)

        actions.append(abort)
    return actions
