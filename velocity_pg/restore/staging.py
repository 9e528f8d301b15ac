"""Names a restore gives its temporary databases, and its lock key (pure).

A restore of database ``X`` fills ``velocity_pg_staging_<h>`` and, at the swap,
renames ``X`` aside to ``velocity_pg_old_<h>`` until it is dropped, where
``<h>`` is a hash of ``X``'s name. The names

* cannot collide with a user's database in practice (prefix plus 64-bit hash),
* never need quoting and never contain ``=`` (so libpq never reads them as a
  connection string), whatever ``X`` is called, and always fit NAMEDATALEN;
* are one per target: a leftover of a killed run is found by name alone.

``restore --stage`` leaves a complete copy under the staging name, and a
restore keeps ``X``'s previous contents as its rollback point,
``velocity_pg_previous_<h>`` (see :mod:`velocity_pg.restore.marks` for the
comments that say what each is).

Only one restore of ``X`` runs at a time: it holds a session advisory lock
keyed by :func:`lock_key` on the maintenance database. Whoever holds that
lock owns ``X``'s staging and old names; a run that takes the lock and finds
them knows they are abandoned.
"""

from __future__ import annotations

import hashlib

STAGING_PREFIX = "velocity_pg_staging_"
ASIDE_PREFIX = "velocity_pg_old_"
#: A restore of ``X`` keeps ``X``'s previous contents under this prefix (its rollback point).
PREVIOUS_PREFIX = "velocity_pg_previous_"
#: ``verify --restore`` restores into ``velocity_pg_verify_<random>``, holding the
#: lock :func:`drill_lock_key` of that name while it exists.
DRILL_PREFIX = "velocity_pg_verify_"
_LOCK_NAMESPACE = b"velocity-pg restore\x00"
_DRILL_NAMESPACE = b"velocity-pg verify\x00"


def target_hash(target: str) -> str:
    """16 hex digits identifying a target database name."""
    return hashlib.sha256(target.encode("utf-8")).hexdigest()[:16]


def staging_name(target: str) -> str:
    """The database a restore of ``target`` fills before the swap."""
    return STAGING_PREFIX + target_hash(target)


def aside_name(target: str) -> str:
    """The name ``target``'s previous contents have between the swap and their drop."""
    return ASIDE_PREFIX + target_hash(target)


def previous_name(target: str) -> str:
    """The rollback point of ``target``: its contents before the last restore (or undo)."""
    return PREVIOUS_PREFIX + target_hash(target)


def is_internal_name(name: str) -> bool:
    """True for names velocity-pg's restore uses for itself (never a restore target)."""
    return name.startswith((STAGING_PREFIX, ASIDE_PREFIX, DRILL_PREFIX, PREVIOUS_PREFIX))


def lock_key(target: str) -> int:
    """The signed 64-bit key of ``pg_try_advisory_lock(bigint)`` for restores of ``target``."""
    digest = hashlib.sha256(_LOCK_NAMESPACE + target.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: How a staging database's comment begins while its restore runs (see :func:`staging_comment`).
IN_PROGRESS_MARK = "velocity-pg: restore of database "


def staging_comment(target: str, pid: int, host: str) -> str:
    """The comment on a staging database, for anyone who finds it in ``\\l``."""
    return (
        f"{IN_PROGRESS_MARK}{target!r} in progress (pid {pid} on {host}); "
        "if no restore is running, the next restore of that database drops it"
    )


#: How a run that could not drop what it left says so, in that database's comment; the
#: next run then knows it failed (rather than died) and says which.
FAILED_MARK = "velocity-pg: left by a restore of database "
KEPT_MARK = "velocity-pg: previous contents of database "


def failed_comment(target: str, reason: str) -> str:
    """The comment on a staging database a failed restore could not drop."""
    return (
        f"{FAILED_MARK}{target!r} that failed ({reason[:400]}) and could not drop it; "
        "the next restore of that database drops it"
    )


def kept_comment(target: str) -> str:
    """The comment on the previous contents a completed restore could not drop."""
    return (
        f"{KEPT_MARK}{target!r}, replaced by a restore that completed but could not drop "
        "them; the next restore of that database drops them"
    )


def is_unfinished_copy_of(comment: str | None, target: str) -> bool:
    """True when ``comment`` is one velocity-pg gives a staging database of ``target``
    before it is complete: a restore in progress (or killed), or one that failed."""
    if comment is None:
        return False
    return comment.startswith(
        (f"{IN_PROGRESS_MARK}{target!r} in progress", f"{FAILED_MARK}{target!r} that failed")
    )


def leftover_story(name: str, comment: str | None) -> str:
    """What happened to the run that left database ``name`` (its comment tells)."""
    if comment is not None and comment.startswith(FAILED_MARK):
        return "an earlier restore that failed and could not drop it"
    if comment is not None and comment.startswith(KEPT_MARK):
        return "an earlier restore that completed but could not drop it"
    if name.startswith(ASIDE_PREFIX):
        return "an earlier restore that was killed after its swap"
    return "an earlier restore that was killed"


def drill_name(token: str) -> str:
    """The throwaway database of one ``verify --restore`` (``token``: random hex)."""
    return DRILL_PREFIX + token


def drill_lock_key(name: str) -> int:
    """The advisory lock a verify holds while its throwaway database ``name`` exists."""
    digest = hashlib.sha256(_DRILL_NAMESPACE + name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
