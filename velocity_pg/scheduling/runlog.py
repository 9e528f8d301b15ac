"""The run log: one JSON line per scheduled run in ``BACKUP_DIR/.velocity-runs.jsonl``.

What the status page draws its history from (sizes, durations, failures, skipped due
times, off-site transfer times), beside the manifests. Bounded: the last :data:`KEEP`
entries are kept. Each write rewrites the file whole (temporary file beside it, fsync,
rename, mode 0600), so a reader never sees half a line. Writing it never fails a
backup: :func:`append` raises OSError only, and the scheduler logs that and goes on.

An entry (all times ISO 8601, UTC)::

    {"time": "...", "started": "...", "result": "success|failure|skipped",
     "duration_seconds": 12.3, "backup": "NAME" | null, "backup_size_bytes": 123 | null,
     "offsite_seconds": 1.2 | null,
     "steps": [{"name": "backup", "status": "ok", "seconds": 10.1, "detail": "..."}]}
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from velocity_pg.scheduling.job import RunResult, StepStatus
from velocity_pg.store import catalog

FILE_NAME = ".velocity-runs.jsonl"
#: How many runs the log keeps (at most a few hundred kilobytes).
KEEP = 1000
#: The longest file read back (a file grown by hand beyond this is read from its end).
MAX_READ = 4 * 1024 * 1024
#: A step's detail is cut to this many characters.
DETAIL_WIDTH = 300


def path_in(folder: Path) -> Path:
    return folder / FILE_NAME


def entry(result: RunResult, backup_name: str | None = None) -> dict[str, Any]:
    """A run's line (pure)."""
    offsite = next(
        (s.seconds for s in result.steps if s.name == "push" and s.status is StepStatus.OK), None
    )
    return {
        "time": result.finished.isoformat(),
        "started": result.started.isoformat(),
        "result": "success" if result.ok else "failure",
        "duration_seconds": round(result.duration, 3),
        "backup": backup_name,
        "backup_size_bytes": result.backup_size,
        "offsite_seconds": None if offsite is None else round(offsite, 3),
        "steps": [
            {
                "name": s.name,
                "status": str(s.status),
                "seconds": round(s.seconds, 3),
                "detail": s.detail[:DETAIL_WIDTH],
            }
            for s in result.steps
        ],
    }


def skipped(at: datetime, count: int = 1) -> dict[str, Any]:
    """The line of due times skipped because a run was going on (pure)."""
    return {
        "time": at.isoformat(),
        "started": at.isoformat(),
        "result": "skipped",
        "skipped": count,
        "duration_seconds": 0.0,
        "backup": None,
        "backup_size_bytes": None,
        "offsite_seconds": None,
        "steps": [],
    }


def parse(text: str) -> list[dict[str, Any]]:
    """The entries of a log's text, oldest first; a line that is not an entry is left out."""
    entries = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("time"), str) and "result" in item:
            try:
                datetime.fromisoformat(item["time"])
            except ValueError:
                continue
            entries.append(item)
    return entries


def read(folder: Path) -> list[dict[str, Any]]:
    """The folder's run log, oldest first; empty when there is none or it cannot be read."""
    try:
        fd = os.open(path_in(folder), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        if size > MAX_READ:
            os.lseek(fd, size - MAX_READ, os.SEEK_SET)
        chunks = []
        left = MAX_READ
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    return parse(b"".join(chunks).decode("utf-8", errors="replace"))


def append(folder: Path, item: dict[str, Any], keep: int = KEEP) -> None:
    """Add one entry, keeping the last ``keep``: the file rewritten whole (temp, fsync,
    rename, 0600). Raises OSError (the caller logs it; a backup never fails of it)."""
    entries = [*read(folder), item][-keep:]
    data = "".join(json.dumps(e, separators=(",", ":"), sort_keys=True) + "\n" for e in entries)
    catalog.write_whole(
        path_in(folder),
        data.encode("utf-8"),
        prepare=lambda fd: catalog.give_to_folder_owner(fd, folder, FILE_NAME),
    )
