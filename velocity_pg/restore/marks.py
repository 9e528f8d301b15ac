"""What velocity-pg writes in the COMMENT of the copies it keeps, and reads back (pure).

Two kinds of copies outlive a velocity-pg process:

* a **staged copy** (``restore NAME --stage``): the complete restore of one
  backup, waiting beside the live database to be swapped in;
* a **rollback point**: the database's contents before the last restore (or
  undo), kept so that ``restore --undo`` can bring them back.

Each carries a comment of two lines: a sentence for whoever finds it in
``\\l+``, and a machine-readable line, ``velocity-pg-mark {json}``, that says
exactly what it is. The mark of a staged copy is written only once pg_restore
and ANALYZE succeeded: a copy without it (the "in progress" comment of
:func:`velocity_pg.restore.staging.staging_comment`) is unfinished.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

MARK_PREFIX = "velocity-pg-mark "
STAGED = "staged"
ROLLBACK = "rollback-point"


@dataclass(frozen=True)
class StagedMark:
    """A complete copy of backup ``backup`` (whose file had ``sha256``), built for ``database``."""

    database: str
    backup: str
    sha256: str
    size_bytes: int
    at: str  # ISO 8601, UTC: when the copy was complete
    by: str  # who staged it: "user@host (role R)"
    #: The live database's committed transactions (pg_stat_database.xact_commit) when
    #: the copy was complete; None when it did not exist or had no statistics.
    live_commits: int | None = None


@dataclass(frozen=True)
class RollbackMark:
    """``database``'s contents until ``at``, when ``replaced_by`` replaced them."""

    database: str
    replaced_by: str  # "restore" or "undo"
    #: The backup the restore put in their place; for an undo, the restore it undid.
    backup: str | None
    at: str
    by: str

    def describe(self) -> str:
        """What replaced these contents, for messages: "the restore of X" / "the undo ..."."""
        if self.replaced_by == "restore" and self.backup:
            return f"the restore of {self.backup}"
        if self.backup:
            return f"the undo of the restore of {self.backup}"
        return "an undo"


Mark = StagedMark | RollbackMark


def who(role: str | None) -> str:
    """``user@host (role R)``: the person (OS user, machine) and the database role."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    text = f"{user}@{socket.gethostname()}"
    return f"{text} (role {role})" if role else text


def now_iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _mark_line(kind: str, mark: Mark) -> str:
    return MARK_PREFIX + json.dumps({"kind": kind, **asdict(mark)}, sort_keys=True)


def staged_comment(mark: StagedMark) -> str:
    sentence = (
        f"velocity-pg: complete copy of backup {mark.backup} for database {mark.database!r}, "
        f"staged at {mark.at} by {mark.by}; `velocity-pg restore {mark.backup}` swaps it in, "
        "`velocity-pg restore --abort` drops it"
    )
    return sentence + "\n" + _mark_line(STAGED, mark)


def rollback_comment(mark: RollbackMark) -> str:
    sentence = (
        f"velocity-pg: rollback point of database {mark.database!r}: its contents until "
        f"{mark.describe()} at {mark.at} by {mark.by}; `velocity-pg restore --undo` brings "
        "them back, `velocity-pg restore --forget` drops them"
    )
    return sentence + "\n" + _mark_line(ROLLBACK, mark)


def parse_comment(comment: str | None) -> Mark | None:
    """The mark in a database comment, or None (no mark, or not one we can read)."""
    if not comment:
        return None
    last = comment.rstrip("\n").rsplit("\n", 1)[-1]
    if not last.startswith(MARK_PREFIX):
        return None
    try:
        data = json.loads(last[len(MARK_PREFIX) :])
        kind = data.pop("kind")
        if kind == STAGED:
            staged = StagedMark(**data)
            if not isinstance(staged.size_bytes, int) or not staged.sha256:
                return None
            return staged
        if kind == ROLLBACK:
            return RollbackMark(**data)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return None
