"""When runs are due: ``BACKUP_SCHEDULE`` parsed into a timetable (pure, no clock).

Forms:

* a five-field cron expression (``minute hour day-of-month month day-of-week``,
  e.g. ``0 3 * * *``), evaluated by cronsim in the time zone ``TZ`` names. At a
  daylight-saving change it behaves as Debian's cron does: a fixed time that
  does not exist that night (spring forward) runs at the first minute after
  the gap; a fixed time that happens twice (fall back) runs once;
  ``*/15 * * * *``-style jobs keep their rhythm in real time;
* ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``,
  ``@yearly`` (``@annually``): cron's own shorthands;
* ``@every DURATION`` (``@every 6h``, ``@every 30s``, ``@every 1h30m``): every
  DURATION from the moment the scheduler started, not from wall-clock
  boundaries, so a time zone change does not move it.

Every function takes the moment it is asked about; none reads the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from velocity_pg.errors import ConfigError
from velocity_pg.settings import MAX_DAYS

SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
_DURATION = re.compile(r"\A(?:[0-9]+[smhdw])+\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration any setting takes, in seconds (see MAX_DAYS).
MAX_DURATION = MAX_DAYS * 86400
#: How far ahead :meth:`Timetable.longest_gap` looks: a year covers both DST
#: changes and every month length; the step cap keeps ``* * * * *`` cheap.
_GAP_HORIZON = timedelta(days=400)
_GAP_STEPS = 2000
#: Values written as .env lines both just's dotenv loader and Compose read (quoted: spaces).
HINT = (
    'use a cron expression like BACKUP_SCHEDULE="0 3 * * *" (quoted in .env), '
    '@hourly, @daily, @weekly, @monthly or BACKUP_SCHEDULE="@every 6h"'
)


def parse_duration(text: str, what: str) -> timedelta:
    """``30s``, ``90m``, ``6h``, ``1h30m``, ``2d``, ``1w`` as a timedelta, 1s to MAX_DAYS days.

    Numbers are plain ASCII digits; ``what`` names the setting in messages
    (``--max-age``, ``BACKUP_HEALTH_MAX_AGE``).
    """
    compact = text.strip().replace(" ", "")
    if not _DURATION.match(compact):
        raise ConfigError(
            f"{what} {text!r} is not a duration; use a number and a unit (s m h d w), "
            "e.g. 30s, 90m, 6h, 1h30m, 2d"
        )
    seconds = 0
    for number, unit in _DURATION_PART.findall(compact):
        digits = number.lstrip("0")
        # A number longer than the limit is out of range, however long (never converted).
        seconds += (
            MAX_DURATION + 1 if len(digits) > 15 else int(digits or "0") * _UNIT_SECONDS[unit]
        )
    if seconds <= 0:
        raise ConfigError(f"{what} {text!r} must be more than zero")
    if seconds > MAX_DURATION:
        raise ConfigError(f"{what} {text!r} is out of range; it must be between 1s and {MAX_DAYS}d")
    return timedelta(seconds=seconds)


def human_duration(delta: timedelta) -> str:
    """``1d 2h``, ``26h 24m``, ``62s``: a short, exact-enough duration for messages."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else ""]
    parts.append(f"{minutes}m" if minutes else "")
    if not days and not hours:
        parts.append(f"{secs}s" if secs else "")
    return " ".join(p for p in parts if p)


def parse_timezone(text: str | None) -> tzinfo:
    """The zone ``TZ`` names (``Europe/Berlin``, ``UTC``, ``:/etc/localtime``); UTC if unset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if text is None or text.strip() in ("", ":"):
        return UTC
    name = text.strip().removeprefix(":")
    try:
        if name.startswith("/"):
            with Path(name).open("rb") as handle:
                return ZoneInfo.from_file(handle, key=name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or "no such time zone"
        raise ConfigError(
            f"TZ={text!r} is not a time zone ({reason}); use a name like UTC or Europe/Berlin"
        ) from None


@dataclass(frozen=True)
class Timetable:
    """A parsed ``BACKUP_SCHEDULE``: a cron expression or a fixed interval, in a zone."""

    expression: str
    zone: tzinfo
    cron: str | None = None
    every: timedelta | None = None

    def describe(self) -> str:
        zone = getattr(self.zone, "key", None) or str(self.zone)
        if self.every is not None:
            return self.expression
        return f"{self.expression} (TZ {zone})"

    def next_after(self, moment: datetime, anchor: datetime) -> datetime:
        """The first due time strictly after ``moment`` (UTC).

        ``anchor`` is when the scheduler started: ``@every`` runs fall at
        ``anchor + k * DURATION``; cron runs ignore it.
        """
        if self.every is not None:
            if moment < anchor:
                return anchor
            steps = (moment - anchor) // self.every + 1
            return anchor + steps * self.every
        return self._cron_iter(moment, reverse=False)

    def previous_at_or_before(self, moment: datetime, anchor: datetime) -> datetime:
        """The last due time at or before ``moment`` (UTC)."""
        if self.every is not None:
            if moment < anchor:
                return anchor - self.every
            return anchor + ((moment - anchor) // self.every) * self.every
        return self._cron_iter(moment + timedelta(microseconds=1), reverse=True)

    def due_between(
        self, after: datetime, until: datetime, anchor: datetime, limit: int = 10_000
    ) -> list[datetime]:
        """Due times in ``(after, until]``: those that came while a run was going on."""
        found: list[datetime] = []
        moment = after
        while len(found) < limit:
            moment = self.next_after(moment, anchor)
            if moment > until:
                break
            found.append(moment)
        return found

    def period(self, moment: datetime, anchor: datetime) -> timedelta:
        """The length of the schedule period ``moment`` falls in (last due time to next)."""
        if self.every is not None:
            return self.every
        return self.next_after(moment, anchor) - self.previous_at_or_before(moment, anchor)

    def longest_gap(self, moment: datetime, anchor: datetime) -> timedelta:
        """The longest time between two due times in the coming year.

        For ``0 3 * * 1-5`` it is the weekend (72 h), for ``0 3 * * *`` in a
        zone with daylight saving the 25-hour night: what a freshness check
        must allow for at least.
        """
        if self.every is not None:
            return self.every
        longest = timedelta(0)
        previous = self.previous_at_or_before(moment, anchor)
        horizon = moment + _GAP_HORIZON
        for _ in range(_GAP_STEPS):
            following = self.next_after(previous, anchor)
            longest = max(longest, following - previous)
            if following > horizon:
                break
            previous = following
        return longest

    def health_allowance(self, moment: datetime, anchor: datetime) -> timedelta:
        """How old the newest backup may get before the health check says stale.

        The longest gap between runs, plus a tenth of it (at least a minute) for
        the run itself: ``@daily`` allows 26 h 24 m, ``@hourly`` 66 m, ``@every 2s`` 62 s.
        """
        gap = self.longest_gap(moment, anchor)
        return gap + max(gap / 10, timedelta(minutes=1))

    def _cron_iter(self, moment: datetime, *, reverse: bool) -> datetime:
        from cronsim import CronSim

        assert self.cron is not None
        local = moment.astimezone(self.zone)
        try:
            found = next(CronSim(self.cron, local, reverse=reverse))
        except StopIteration:  # pragma: no cover - parse() refuses such expressions
            raise ConfigError(
                f"BACKUP_SCHEDULE={self.expression!r} never matches a date; {HINT}"
            ) from None
        return found.astimezone(UTC)


def parse_schedule(text: str, zone: tzinfo, *, probe: datetime | None = None) -> Timetable:
    """Parse ``BACKUP_SCHEDULE``; a bad one is a :class:`ConfigError` (exit 2) with the reason."""
    from cronsim import CronSim, CronSimError

    expression = " ".join(text.split())
    if not expression:
        raise ConfigError(f"BACKUP_SCHEDULE is empty; {HINT}")
    lowered = expression.lower()
    if lowered.startswith("@every"):
        rest = expression[len("@every") :].strip()
        if not rest:
            raise ConfigError(f"BACKUP_SCHEDULE={text!r} lacks a duration; {HINT}")
        every = parse_duration(rest, f"BACKUP_SCHEDULE={text!r}: the duration")
        return Timetable(expression=expression, zone=zone, every=every)
    if expression.startswith("@"):
        cron = SHORTHANDS.get(lowered)
        if cron is None:
            raise ConfigError(f"BACKUP_SCHEDULE={text!r} is not a known shorthand; {HINT}")
    else:
        fields = expression.split(" ")
        if len(fields) != 5:
            raise ConfigError(
                f"BACKUP_SCHEDULE={text!r} has {len(fields)} field(s), a cron expression has 5 "
                f"(minute hour day-of-month month day-of-week); {HINT}"
            )
        cron = expression
    start = (probe or datetime(2000, 1, 1, tzinfo=UTC)).astimezone(zone)
    try:
        next(CronSim(cron, start))
    except CronSimError as exc:
        raise ConfigError(
            f"BACKUP_SCHEDULE={text!r} is not a cron expression: {exc}; {HINT}"
        ) from None
    except StopIteration:
        raise ConfigError(f"BACKUP_SCHEDULE={text!r} never matches a date; {HINT}") from None
    return Timetable(expression=expression, zone=zone, cron=cron)
