"""When to send which message: failing, stale, recovered (and the digest's counts).

The state lives in ``BACKUP_DIR/.velocity-notify.json`` (written atomically, mode
0600, owned by the folder's owner like velocity-pg's other files), so a restarted
scheduler, or a manual verb given ``--notify``, knows that backups were failing
and says "recovered" when they succeed again, and does not repeat a stale message
early. A state file that cannot be read or written is logged and never stops a
backup: the machine then starts afresh.

* a run fails: a failure message; the same failing steps again are sent at most
  every ``BACKUP_NOTIFY_REPEAT`` (a manual verb's failures always are);
* a run succeeds after failures or staleness: "recovered", with for how long;
* stale (:meth:`Watch.check_stale`, called by the scheduler's own clock): no
  successful backup within the allowance. Once when it goes stale, then at most
  every ``BACKUP_NOTIFY_REPEAT`` while it stays stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from velocity_pg.scheduling import notify
from velocity_pg.scheduling.notify import Event, Origin

STATE_NAME = ".velocity-notify.json"


@dataclass
class WatchState:
    failing_since: str | None = None
    failure_steps: str | None = None
    failure_sent_at: str | None = None
    stale_since: str | None = None
    stale_sent_at: str | None = None
    last_success: str | None = None
    digest_at: str | None = None
    digest_size: int | None = None
    runs_ok: int = 0
    runs_failed: int = 0


def when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def read_state(path: Path) -> tuple[WatchState, str | None]:
    """The saved state, or a fresh one and why (an unreadable file is no reason to stop)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return WatchState(), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or "not valid JSON"
        return WatchState(), f"cannot read {path} ({why}); starting afresh"
    if not isinstance(raw, dict):
        return WatchState(), f"{path} is not a JSON object; starting afresh"
    state = WatchState()
    for f in fields(WatchState):
        value = raw.get(f.name)
        if f.name in ("digest_size", "runs_ok", "runs_failed"):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(state, f.name, value)
        elif isinstance(value, str) and (f.name == "failure_steps" or when(value)):
            setattr(state, f.name, value)
    return state, None


def write_state(folder: Path, state: WatchState) -> None:
    """Atomically: a temporary file (0600, the folder owner's), fsync, rename."""
    from velocity_pg.store import catalog

    data = (json.dumps(asdict(state), indent=1, sort_keys=True) + "\n").encode()
    fd, temp = catalog.temp_path_for(folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(folder / STATE_NAME)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        catalog.fsync_path(folder)


class Watch:
    """The failing/stale/recovered machine of one backup folder; thread-safe."""

    def __init__(
        self,
        folder: Path,
        notifier: notify.Notifier,
        origin: Origin,
        *,
        repeat: timedelta,
        log: Callable[[str], None],
    ) -> None:
        self.folder = folder
        self.notifier = notifier
        self.origin = origin
        self.repeat = repeat
        self.log = log
        self._lock = threading.Lock()
        self.state, problem = read_state(folder / STATE_NAME)
        if problem:
            self.log(f"notify: {problem}")

    def save(self) -> None:
        from velocity_pg.errors import Interrupted
        from velocity_pg.postgres.pgtools import Terminated

        try:
            write_state(self.folder, self.state)
        except (Interrupted, Terminated):
            raise  # a stop, not a problem of the state file
        except Exception as exc:  # the state is a convenience; never stop a backup for it
            why = getattr(exc, "message", None) or getattr(exc, "strerror", None) or repr(exc)
            self.log(f"notify: cannot write {self.folder / STATE_NAME}: {why}")

    # -- the runs ----------------------------------------------------------------------

    def succeeded(
        self,
        now: datetime,
        what: str,
        covers: frozenset[str] | None = None,
        *,
        fresh: bool = True,
    ) -> None:
        """A run (or verb) that succeeded: "recovered" when it ends failures or staleness.

        ``covers``: a manual verb's steps (``{"verify"}``); it ends only failures of those
        steps (a good ``verify`` says nothing of failing backups), and only ``backup``
        ends staleness. None: a whole scheduled run, which ends everything. ``fresh``:
        False when the backup it made is suspect (store/anomaly.py): it ends failures, but
        not staleness, and the backups are no fresher for it.
        """
        with self._lock:
            s = self.state
            failing = set((s.failure_steps or "").split(", ")) - {""}
            ends_failing = s.failing_since is not None and (covers is None or failing <= covers)
            makes_backup = (covers is None or "backup" in covers) and fresh
            ends_stale = s.stale_since is not None and makes_backup
            began = [
                moment
                for moment, ends in ((when(s.failing_since), ends_failing),
                                     (when(s.stale_since), ends_stale))
                if ends and moment is not None
            ]  # fmt: skip
            if began:
                self.notifier.send(notify.recovered_message(self.origin, what, now - min(began)))
            if ends_failing:
                s.failing_since = s.failure_steps = s.failure_sent_at = None
            if ends_stale:
                s.stale_since = s.stale_sent_at = None
            if makes_backup:
                s.last_success = iso(now)
            if covers is None:
                s.runs_ok += 1
            self.save()

    def suspect(self, name: str, why: str, pinned: str = "") -> bool:
        """A new backup that looks wrong: told once, for that backup (no state: the next
        suspect backup is another message). True when a message was queued."""
        return self.notifier.send(notify.suspect_message(self.origin, name, why, pinned))

    def failed(
        self,
        now: datetime,
        what: str,
        event: Event,
        failures: Sequence[tuple[str, str]],
        *,
        always: bool = False,
    ) -> bool:
        """A failed run or verb: its message unless the same steps failed within the
        repeat interval (``always``: a manual verb, whose every failure is told). True
        when a message was queued."""
        with self._lock:
            s = self.state
            steps = ", ".join(name for name, _ in failures)
            if s.failing_since is None:
                s.failing_since = iso(now)
            last = when(s.failure_sent_at)
            due = always or steps != s.failure_steps or last is None or now - last >= self.repeat
            sent = False
            if due:
                message = notify.failure_message(self.origin, event, what, failures)
                sent = self.notifier.send(message)
                s.failure_sent_at, s.failure_steps = iso(now), steps
            else:
                self.log(
                    f"notify: {steps} failed again; not told again before "
                    f"{notify.short(self.repeat)} after the last message (BACKUP_NOTIFY_REPEAT)"
                )
            if not always:
                s.runs_failed += 1
            self.save()
            return sent

    # -- the clock ----------------------------------------------------------------------

    def check_stale(
        self,
        now: datetime,
        newest: tuple[str, datetime] | None,
        allowance: timedelta,
        watching_since: datetime,
    ) -> None:
        """Called every little while by the scheduler's clock; see the module docstring.

        ``newest`` is the newest backup (name, time made) of the database; with none,
        the allowance counts from ``watching_since`` (the scheduler's start).
        """
        with self._lock:
            s = self.state
            moments = [m for m in (newest[1] if newest else None, when(s.last_success)) if m]
            reference = max(moments) if moments else watching_since
            age = now - reference
            if age <= allowance:
                if s.stale_since is not None and s.failing_since is None and newest is not None:
                    stale_for = now - (when(s.stale_since) or now)
                    self.notifier.send(
                        notify.recovered_message(
                            self.origin, f"a new backup ({newest[0]}) was made; it", stale_for
                        )
                    )
                    s.stale_since = s.stale_sent_at = None
                    self.save()
                return
            since = when(s.stale_since)
            if since is None:
                since = reference + allowance
                s.stale_since = iso(since)
            sent = when(s.stale_sent_at)
            if sent is not None and now - sent < self.repeat:
                return
            self.log(
                f"notify: backups are stale: no successful backup for {notify.short(age)} "
                f"(allowance {notify.short(allowance)})"
                + ("" if sent is None else "; told again (BACKUP_NOTIFY_REPEAT)")
            )
            self.notifier.send(
                notify.stale_message(
                    self.origin,
                    newest[0] if newest else None,
                    now - newest[1] if newest else None,
                    allowance,
                    now - since,
                    again=sent is not None,
                )
            )
            s.stale_sent_at = iso(now)
            self.save()

    # -- the digest ---------------------------------------------------------------------

    def digest_taken(self, now: datetime, size: int) -> dict[str, Any]:
        """The counts since the last digest (and its size), reset for the next one."""
        with self._lock:
            s = self.state
            before = {
                "since": when(s.digest_at),
                "size": s.digest_size,
                "runs_ok": s.runs_ok,
                "runs_failed": s.runs_failed,
            }
            s.digest_at, s.digest_size, s.runs_ok, s.runs_failed = iso(now), size, 0, 0
            self.save()
            return before

    def last_digest(self) -> datetime | None:
        with self._lock:
            return when(self.state.digest_at)
