"""The roles file off-site: ``NAME.roles.sql`` (``NAME.roles.sql.age`` when copies are
encrypted: it may hold password hashes) beside the dump's object.

``push`` uploads it after the dump's object and before the manifest (the manifest is
last: a copy whose manifest exists has its roles file); its SHA-256 is the one in the
dump's manifest, which the off-site manifest holds. ``pull`` downloads it, decrypts it,
checks it against that SHA-256 and refuses a damaged copy before anything is named.
Off-site cleanup deletes it with the backup's object; it is never taken for a dump (its
key is no backup name), so never for a leftover either.
"""

from __future__ import annotations

import io
from pathlib import Path

from velocity_pg.errors import CommandFailed, OperationFailed, describe_failure
from velocity_pg.settings import OffSite
from velocity_pg.store import age, manifest, pipe
from velocity_pg.store import roles as stored
from velocity_pg.store.remote import RemoteStore

SUFFIX = stored.SUFFIX


def key_for(name: str, encrypted: bool) -> str:
    return name + SUFFIX + (age.SUFFIX if encrypted else "")


def _through(filter_: pipe.Filter) -> bytes:
    with filter_:
        data = filter_.read()
        filter_.finish()
    return data


def push(
    store: RemoteStore,
    dump: Path,
    record: manifest.Manifest,
    offsite: OffSite,
    age_program: str | None,
) -> str | None:
    """Upload the backup's roles file (checked by its manifest first); its key, or None when
    the backup has none (made before roles were recorded)."""
    if record.roles is None:
        return None
    path = stored.path_for(dump)
    problem = stored.file_problem(path, record.roles)
    if problem is not None:
        raise OperationFailed(f"the roles file of {dump.name} {problem}; it was not pushed")
    data = path.read_bytes()
    key = key_for(dump.name, offsite.encrypted)
    if offsite.encrypted:
        assert age_program is not None
        try:
            data = _through(age.encrypting(io.BytesIO(data), offsite, age_program))
        except CommandFailed as exc:
            raise OperationFailed(
                f"age failed while encrypting the roles file of {dump.name}: "
                f"{describe_failure(exc.returncode, exc.stderr)}"
            ) from exc
    store.put_bytes(key, data)
    if store.get_bytes(key) != data:
        raise OperationFailed(f"the off-site roles file {key} does not read back as it was sent")
    return key


def fetch(
    store: RemoteStore,
    name: str,
    record: manifest.Manifest,
    encrypted: bool,
    identity: Path | None,
) -> bytes | None:
    """The backup's roles file from the bucket, decrypted and checked against the dump's
    manifest; None when the backup has none. OperationFailed when it is missing or damaged."""
    if record.roles is None:
        return None
    key = key_for(name, encrypted)
    if store.head(key) is None:
        raise OperationFailed(f"{name}: its roles file {key} is missing off-site")
    data = store.get_bytes(key)
    if encrypted and identity is not None:
        try:
            data = _through(age.decrypting(io.BytesIO(data), identity))
        except CommandFailed as exc:
            raise OperationFailed(
                f"{name}: its roles file {key} cannot be decrypted "
                f"({describe_failure(exc.returncode, exc.stderr)}): it is damaged"
            ) from exc
    problem = stored.data_problem(data, record.roles)
    if problem is not None:
        raise OperationFailed(
            f"{name}: its off-site roles file {key} does not match the manifest ({problem})"
        )
    return data


def write_temp(folder: Path, data: bytes) -> tuple[int, Path]:
    return stored.write_temp(folder, data)


def delete(store: RemoteStore, name: str, encrypted: bool) -> None:
    """Delete the roles file of a deleted backup (none there: nothing to do)."""
    key = key_for(name, encrypted)
    if store.head(key) is not None:
        store.delete(key)


def check(
    store: RemoteStore,
    name: str,
    record: manifest.Manifest,
    encrypted: bool,
    identity: Path | None,
) -> str | None:
    """``verify --remote``: the roles file off-site, read and checked (its SHA-256 needs
    the identity when it is encrypted; without it, only that it is there); the check done,
    None when the backup has none. OperationFailed says what is wrong."""
    if record.roles is None:
        return None
    if encrypted and identity is None:
        key = key_for(name, encrypted)
        if store.head(key) is None:
            raise OperationFailed(f"its roles file {key} is missing off-site")
        return "roles file present"
    fetch(store, name, record, encrypted, identity)
    return "roles file"
