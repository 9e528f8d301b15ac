"""The metrics file (``BACKUP_METRICS_FILE``): Prometheus text format, for node_exporter.

Rewritten after every run (and every skipped due time) with prometheus_client's
``write_to_textfile``, which writes a temporary file beside it and renames it:
a reader never sees half a file. The counters and the last-success values are
read back from the previous file at start, so a restart does not reset them.

Names (shared with dashboards and alerts; see README.md, "Metrics"):

* ``velocity_pg_last_success_timestamp_seconds``: end of the last run whose every step passed
* ``velocity_pg_last_run_timestamp_seconds``: end of the last run, whatever its result
* ``velocity_pg_last_run_duration_seconds``
* ``velocity_pg_last_backup_size_bytes``: the newest backup this scheduler made
* ``velocity_pg_runs_total{result="success|failure|skipped"}``
* ``velocity_pg_backups{location="local|remote"}``,
  ``velocity_pg_backups_size_bytes{location="local|remote"}``
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from velocity_pg.store import catalog

RESULTS = ("success", "failure", "skipped")
PREFIX = "velocity_pg_"


@dataclass
class Totals:
    """What the metrics file says; kept across restarts through the file itself."""

    runs: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0.0))
    last_success: float | None = None
    last_run: float | None = None
    last_duration: float | None = None
    last_backup_size: float | None = None
    #: location ("local", "remote") -> (number of backups, their total bytes)
    backups: dict[str, tuple[int, int]] = field(default_factory=dict)


def read_previous(path: Path) -> tuple[Totals, str | None]:
    """The totals in an earlier metrics file, and a problem reading it (None if fine).

    A missing file is a first start; an unreadable one is reported and the
    totals start again from zero (the file is rewritten after the next run).
    """
    from prometheus_client.parser import text_string_to_metric_families

    totals = Totals()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return totals, None
    except (OSError, UnicodeDecodeError) as exc:
        return totals, f"cannot read the previous metrics file {path}: {exc}"
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                _take(totals, sample.name, sample.labels, float(sample.value))
    except (ValueError, TypeError, IndexError) as exc:
        return Totals(), f"the previous metrics file {path} does not parse ({exc}); starting anew"
    return totals, None


def _take(totals: Totals, name: str, labels: dict[str, str], value: float) -> None:
    if value != value:  # NaN
        return
    key = name.removeprefix(PREFIX)
    if key == "runs_total" and labels.get("result") in RESULTS:
        totals.runs[labels["result"]] = value
    elif key == "last_success_timestamp_seconds":
        totals.last_success = value
    elif key == "last_run_timestamp_seconds":
        totals.last_run = value
    elif key == "last_run_duration_seconds":
        totals.last_duration = value
    elif key == "last_backup_size_bytes":
        totals.last_backup_size = value


class _Collector:
    """Yields the families of one :class:`Totals`: exact values, and no ``_created`` series."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t = self.totals
        for name, doc, value in (
            (
                "last_success_timestamp_seconds",
                "When the last run whose every step passed ended (Unix time).",
                t.last_success,
            ),
            (
                "last_run_timestamp_seconds",
                "When the last run ended, whatever its result (Unix time).",
                t.last_run,
            ),
            ("last_run_duration_seconds", "How long the last run took.", t.last_duration),
            (
                "last_backup_size_bytes",
                "Size of the newest backup the scheduler made.",
                t.last_backup_size,
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        runs = CounterMetricFamily(
            PREFIX + "runs",
            "Scheduled runs by result; skipped: a due time that came while a run was going on.",
            labels=["result"],
        )
        for result in RESULTS:
            runs.add_metric([result], t.runs[result])
        yield runs
        count = GaugeMetricFamily(
            PREFIX + "backups", "Backups kept, by location.", labels=["location"]
        )
        size = GaugeMetricFamily(
            PREFIX + "backups_size_bytes",
            "Total size of the backups, by location.",
            labels=["location"],
        )
        for location, (number, total) in sorted(t.backups.items()):
            count.add_metric([location], number)
            size.add_metric([location], total)
        yield count
        yield size


def render(totals: Totals) -> str:
    """The file's text (for tests and --debug)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(totals))  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")


def write(path: Path, totals: Totals) -> None:
    """Rewrite the file atomically (temporary file beside it, then rename)."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(totals))  # type: ignore[arg-type]
    write_to_textfile(str(path), registry)
    # In the backup folder (/backups/velocity.prom), a root run's file is the folder
    # owner's, as every file velocity-pg makes there (see catalog.give_to_folder_owner).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        catalog.give_to_folder_owner(fd, path.parent, path.name)
    finally:
        os.close(fd)
