"""The status page's data (pure): the backups' state and history at a glance.

:func:`build` takes what was read from the folder, the off-site store and the run log
(:mod:`velocity_pg.scheduling.runlog`) and returns a :class:`Page`: the summary
(freshness in three colours, the last run, counts and space, the last verification and
drill, pins, suspects, restore copies), the list of backups (local and off-site side by
side, newest first) and the series the charts draw. The verb (``velocity-pg serve``)
gathers the inputs, :mod:`velocity_pg.scheduling.html` renders the page.

The colour: **red** when the backups are not fresh (the judgement of ``status --max-age
auto`` and ``/healthz``); **amber** when they are fresh but something needs a look (the
last run failed, the newest backup looks wrong, the off-site copies cannot be read);
**green** otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from velocity_pg.store import anomaly, catalog
from velocity_pg.store.manifest import Manifest


@dataclass(frozen=True)
class Local:
    """A backup in the folder, its manifest (None: none or unreadable) and its problem."""

    backup: catalog.Backup
    record: Manifest | None
    problem: str | None = None


@dataclass(frozen=True)
class Remote:
    """An off-site copy of this folder's."""

    name: str
    created: datetime
    size: int | None
    encrypted: bool | None
    pinned: bool = False
    suspect: bool = False
    database_bytes: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class Freshness:
    """The judgement of ``status --max-age auto``: fresh or not, and why not."""

    fresh: bool
    reason: str
    allowance: timedelta
    source: str


@dataclass(frozen=True)
class Inputs:
    now: datetime
    database: str | None
    local: list[Local]
    freshness: Freshness
    free_bytes: int
    #: None: off-site copies are not configured.
    remote: list[Remote] | None = None
    remote_where: str = ""
    remote_problem: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    next_due: datetime | None = None
    #: The restore's copies beside the database, as lines (empty: none, or not known).
    copies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    name: str
    database: str
    created: datetime
    local_size: int | None
    remote_size: int | None
    pinned: str
    contents: str
    verified: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "database": self.database,
            "created_at": self.created.isoformat(),
            "local_size_bytes": self.local_size,
            "remote_size_bytes": self.remote_size,
            "pinned": self.pinned,
            "contents": self.contents,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class Point:
    """One point of a chart: when, the value (None: a run without one), and its mark."""

    at: datetime
    value: float | None
    mark: str = "success"  # success, failure, skipped


@dataclass(frozen=True)
class Page:
    now: datetime
    database: str | None
    colour: str  # green, amber, red
    headline: str
    facts: list[tuple[str, str]]
    last_run: dict[str, Any] | None
    rows: list[Row]
    sizes: list[Point]
    durations: list[Point]
    database_sizes: list[Point]
    offsite_seconds: list[Point]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        def points(series: list[Point]) -> list[dict[str, Any]]:
            return [{"at": p.at.isoformat(), "value": p.value, "mark": p.mark} for p in series]

        return {
            "now": self.now.isoformat(),
            "database": self.database,
            "colour": self.colour,
            "headline": self.headline,
            "facts": [list(f) for f in self.facts],
            "last_run": self.last_run,
            "rows": [r.to_json() for r in self.rows],
            "sizes": points(self.sizes),
            "durations": points(self.durations),
            "database_sizes": points(self.database_sizes),
            "offsite_seconds": points(self.offsite_seconds),
            "warnings": self.warnings,
        }


def _when(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _check(record: Manifest | None) -> str:
    if record is None or record.last_verification is None:
        return "not yet"
    check = record.last_verification
    verdict = "ok" if check.ok else "FAILED"
    return f"{verdict} ({check.method}, {check.at[:16].replace('T', ' ')})"


def _contents(item: Local) -> str:
    if item.problem:
        return item.problem
    if item.record is None:
        return "no manifest"
    if anomaly.is_suspect(item.record):
        return "SUSPECT"
    return "ok" if item.record.statistics is not None else "no statistics"


def rows(local: list[Local], remote: list[Remote] | None) -> list[Row]:
    """The local backups and the off-site copies side by side, one row per name, newest
    first (pure)."""
    by_name: dict[str, Row] = {}
    for item in local:
        b, rec = item.backup, item.record
        pin = "-" if rec is None or rec.pin is None else ("auto" if rec.pin.auto else "yes")
        by_name[b.name] = Row(
            b.name, b.database, b.created, b.size, None, pin, _contents(item), _check(rec)
        )
    for copy in remote or []:
        here = by_name.get(copy.name)
        if here is not None:
            by_name[copy.name] = Row(
                here.name,
                here.database,
                here.created,
                here.local_size,
                copy.size,
                here.pinned if here.pinned != "-" or not copy.pinned else "yes",
                here.contents,
                here.verified,
            )
            continue
        parsed = catalog.parse_backup_name(copy.name)
        by_name[copy.name] = Row(
            copy.name,
            parsed[0] if parsed else "?",
            copy.created,
            None,
            copy.size,
            "yes" if copy.pinned else "-",
            copy.problem or ("SUSPECT" if copy.suspect else "ok"),
            "-",
        )
    return sorted(by_name.values(), key=lambda r: (r.created, r.name), reverse=True)


def history(
    local: list[Local], remote: list[Remote] | None, runs: list[dict[str, Any]]
) -> tuple[list[Point], list[Point], list[Point], list[Point]]:
    """(backup sizes, run durations, database sizes, off-site transfer seconds), oldest
    first (pure). Sizes and durations come from the run log; without one, from the
    manifests (every backup, scheduled or not)."""
    sizes: list[Point] = []
    durations: list[Point] = []
    offsite: list[Point] = []
    for run in runs:
        at = _when(run.get("time", ""))
        if at is None:
            continue
        mark = run.get("result") if run.get("result") in ("success", "failure", "skipped") else "?"
        size = run.get("backup_size_bytes")
        seconds = run.get("duration_seconds")
        sizes.append(Point(at, float(size) if isinstance(size, int | float) else None, str(mark)))
        durations.append(
            Point(
                at,
                float(seconds) if isinstance(seconds, int | float) and mark != "skipped" else None,
                str(mark),
            )
        )
        push = run.get("offsite_seconds")
        if isinstance(push, int | float):
            offsite.append(Point(at, float(push), str(mark)))
    if not runs:
        for item in reversed(local):
            if item.record is not None:
                sizes.append(Point(item.backup.created, float(item.backup.size)))
                durations.append(Point(item.backup.created, item.record.duration_seconds))
    database: dict[datetime, float] = {}
    for item in local:
        if item.record is not None and item.record.statistics is not None:
            database[item.backup.created] = float(item.record.statistics.database_bytes)
    for copy in remote or []:
        if copy.database_bytes is not None:
            database.setdefault(copy.created, float(copy.database_bytes))
    database_sizes = [Point(at, value) for at, value in sorted(database.items())]
    return sizes, durations, database_sizes, offsite


def build(inputs: Inputs) -> Page:
    """The page (pure)."""
    now = inputs.now
    mine = [
        i for i in inputs.local if inputs.database is None or i.backup.database == inputs.database
    ]
    last_run = inputs.runs[-1] if inputs.runs else None
    last_done = next((r for r in reversed(inputs.runs) if r.get("result") != "skipped"), None)
    newest = mine[0] if mine else None
    warnings: list[str] = []
    if last_done is not None and last_done.get("result") == "failure":
        failed = [
            s.get("name", "?") for s in last_done.get("steps", []) if s.get("status") == "FAILED"
        ]
        warnings.append(f"the last run failed ({', '.join(map(str, failed)) or 'a step'})")
    if newest is not None and newest.record is not None and anomaly.is_suspect(newest.record):
        assert newest.record.suspect is not None
        warnings.append(
            f"the newest backup, {newest.backup.name}, looks wrong "
            f"({anomaly.describe(newest.record.suspect, 1)})"
        )
    if inputs.remote_problem:
        warnings.append(f"the off-site copies cannot be read: {inputs.remote_problem}")
    fresh = inputs.freshness
    if not fresh.fresh:
        colour, headline = "red", f"NOT FRESH: {fresh.reason}"
    elif warnings:
        colour, headline = "amber", "Fresh, but " + "; ".join(warnings)
    else:
        colour, headline = "green", "Fresh: backups are on time"
    allowance = human(fresh.allowance)
    facts: list[tuple[str, str]] = []
    if newest is None:
        facts.append(("Newest backup", "none"))
    else:
        age = max(now - newest.backup.created, timedelta(0))
        facts.append(
            (
                "Newest backup",
                f"{newest.backup.name} ({catalog.human_size(newest.backup.size)}), "
                f"{human(age)} old; allowed {allowance} ({fresh.source})",
            )
        )
    if inputs.next_due is not None:
        facts.append(("Next run", f"{inputs.next_due.isoformat(timespec='seconds')}"))
    if last_done is not None:
        steps = ", ".join(
            f"{s.get('name', '?')} {s.get('status', '?')}" for s in last_done.get("steps", [])
        )
        facts.append(
            (
                "Last run",
                f"{last_done.get('result', '?')} at {str(last_done.get('time', '?'))[:19]} "
                f"in {float(last_done.get('duration_seconds') or 0):.1f} s ({steps or 'no steps'})",
            )
        )
    total = sum(i.backup.size for i in inputs.local)
    facts.append(("Local", f"{len(inputs.local)} backup(s), {catalog.human_size(total)}"))
    if inputs.remote is not None:
        if inputs.remote_problem:
            facts.append(("Off-site", f"cannot be read ({inputs.remote_problem})"))
        else:
            space = sum(c.size or 0 for c in inputs.remote)
            where = f" in {inputs.remote_where}" if inputs.remote_where else ""
            facts.append(
                ("Off-site", f"{len(inputs.remote)} copy(ies), {catalog.human_size(space)}{where}")
            )
    facts.append(("Free space", catalog.human_size(inputs.free_bytes)))
    checks = [
        (i.record.last_verification, i.backup.name)
        for i in mine
        if i.record is not None and i.record.last_verification is not None
    ]
    verification = max(checks, key=lambda c: c[0].at, default=None)
    drill = max(
        ((c, n) for c, n in checks if c.method == "restore"), key=lambda c: c[0].at, default=None
    )
    for label, found in (("Last verification", verification), ("Last restore drill", drill)):
        if found is None:
            facts.append((label, "none recorded"))
        else:
            check, name = found
            verdict = "passed" if check.ok else f"FAILED ({check.detail})"
            facts.append((label, f"{check.at[:19]} on {name}: {verdict}"))
    pinned = [i for i in inputs.local if i.record is not None and i.record.pin is not None]
    if pinned:
        facts.append(
            (
                "Pinned",
                ", ".join(
                    f"{i.backup.name} ({i.record.pin.describe()})"
                    for i in pinned
                    if i.record is not None and i.record.pin is not None
                ),
            )
        )
    suspects = [i for i in inputs.local if i.record is not None and anomaly.is_suspect(i.record)]
    if suspects:
        facts.append(("Suspect", ", ".join(i.backup.name for i in suspects)))
    for line in inputs.copies:
        head, _, rest = line.partition(":")
        facts.append((head.strip(), rest.strip()))
    sizes, durations, database_sizes, offsite = history(inputs.local, inputs.remote, inputs.runs)
    return Page(
        now=now,
        database=inputs.database,
        colour=colour,
        headline=headline,
        facts=facts,
        last_run=last_run,
        rows=rows(inputs.local, inputs.remote),
        sizes=sizes,
        durations=durations,
        database_sizes=database_sizes,
        offsite_seconds=offsite,
        warnings=warnings,
    )


def human(delta: timedelta) -> str:
    from velocity_pg.scheduling.timetable import human_duration

    return human_duration(delta)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (of at least 4 characters) replaced by ``***`` (pure)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
