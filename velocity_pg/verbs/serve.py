"""``velocity-pg serve``: the status page, ``/metrics`` and ``/healthz`` over HTTP.

The same server runs inside ``velocity-pg schedule`` when ``BACKUP_HTTP_ADDR`` is set
(:func:`start_beside`). Everything shown is read per request from files (the folder,
its manifests, the run log), the off-site listing and the server's restore copies;
nothing on the page changes anything. The data is :mod:`velocity_pg.scheduling.page`'s,
the HTML :mod:`velocity_pg.scheduling.html`'s, the server :mod:`velocity_pg.scheduling.http`'s.

No secret reaches the page: what is shown never holds a setting's secret (passwords,
the S3 endpoint's user info, AWS keys, ping and notification URLs), and as a last guard
every such value is replaced by ``***`` in the page, ``/metrics`` and ``/healthz``.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from velocity_pg.errors import ConfigError, ExitStatus, VelocityError
from velocity_pg.scheduling import metrics, page, runlog
from velocity_pg.scheduling.http import Endpoints, Server
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog


def secrets_of(settings: Settings) -> list[str]:
    """Every value of the settings that must never be shown."""
    found: list[str] = []
    if settings.connection.password:
        found.append(settings.connection.password)
    if settings.ping_url:
        found.append(settings.ping_url.strip())
        found.append(urlsplit(settings.ping_url.strip()).path.strip("/"))
    if settings.notify_urls:
        for url in re.split(r"[\s,]+", settings.notify_urls):
            if url:
                found.append(url)
                parts = urlsplit(url)
                found += [parts.password or "", parts.path.strip("/"), parts.username or ""]
    if settings.offsite is not None:
        off = settings.offsite
        for key, value in off.aws.items():
            if "SECRET" in key or "TOKEN" in key or "ACCESS_KEY" in key:
                found.append(value)
        if off.endpoint_url:
            parts = urlsplit(off.endpoint_url)
            found += [parts.password or ""]
            if parts.username:
                found.append(f"{parts.username}:")
    return [s for s in found if s and len(s) >= 4]


def freshness(settings: Settings, now: datetime) -> page.Freshness:
    """``status --max-age auto``'s judgement of the folder now."""
    from velocity_pg.verbs import status

    limits = status.limits(settings, "auto", None)
    assert limits.limit is not None and limits.shown is not None
    local = status.gather(settings.backup_dir, now, limits.limit, settings.database)
    allowance, _, source = limits.shown.partition(" (")
    reason = local.stale_reason(limits.shown) if local.stale else ""
    return page.Freshness(not local.stale, reason, limits.limit, source.rstrip(")") or allowance)


def next_due(settings: Settings, now: datetime) -> datetime | None:
    from velocity_pg.scheduling.timetable import parse_schedule, parse_timezone

    try:
        timetable = parse_schedule(settings.schedule, parse_timezone(settings.timezone), probe=now)
        return timetable.next_after(now, now)
    except VelocityError:
        return None


def inputs(
    settings: Settings, now: datetime, *, with_copies: bool = True, due: datetime | None = None
) -> page.Inputs:
    """Everything the page shows, read now; ``due``: the scheduler's next due time (else
    the schedule's next one from now)."""
    from velocity_pg.verbs.status import read_state

    local = []
    for backup in catalog.list_backups(settings.backup_dir):
        record, problem = read_state(backup)
        local.append(page.Local(backup, record, None if problem is None else problem[1]))
    remote: list[page.Remote] | None = None
    where = problem_text = ""
    if settings.offsite is not None:
        remote, where, problem_text = remote_copies(settings)
    copies_lines: list[str] = []
    if with_copies:
        copies_lines = restore_copies(settings, now)
    import shutil

    return page.Inputs(
        now=now,
        database=settings.database,
        local=local,
        freshness=freshness(settings, now),
        free_bytes=shutil.disk_usage(settings.backup_dir).free,
        remote=remote,
        remote_where=where,
        remote_problem=problem_text,
        runs=runlog.read(settings.backup_dir),
        next_due=due or next_due(settings, now),
        copies=copies_lines,
    )


def remote_copies(settings: Settings) -> tuple[list[page.Remote], str, str]:
    """This folder's off-site copies, where they are, and a problem reading them."""
    from velocity_pg.store import offsite, remote

    try:
        ctx = offsite.prepare(settings, for_upload=False)
        listing = remote.list_backups(ctx.store)
        mine, _foreign = offsite.split_owned(settings.backup_dir, listing.backups)
    except VelocityError as exc:
        return [], offsite.offsite_of(settings).url, exc.message
    except Exception as exc:  # the page shows what it can
        return [], offsite.offsite_of(settings).url, f"unexpected {type(exc).__name__}"
    copies = []
    for b in mine:
        rec = b.record
        stats = rec.dump.statistics if rec is not None else None
        copies.append(
            page.Remote(
                name=b.name,
                created=b.created,
                size=rec.object_size if rec is not None else None,
                encrypted=rec.encrypted if rec is not None else None,
                pinned=rec is not None and rec.pin is not None,
                suspect=rec is not None and anomaly.is_suspect(rec.dump),
                database_bytes=None if stats is None else stats.database_bytes,
                problem=b.problem,
            )
        )
    return copies, ctx.store.describe(), ""


def restore_copies(settings: Settings, now: datetime) -> list[str]:
    """The rollback point and staged copy beside the database, when there are any."""
    try:
        from velocity_pg.postgres import endpoint
        from velocity_pg.restore import copies

        target = endpoint.database_name(settings.connection)
        if not target:
            return []
        report = copies.report(settings, target)
    except Exception:  # the server may be down; the page is about the backups
        return []
    if report.error is not None:
        return []
    return [line for line in report.lines(now) if line.partition(":")[2].strip() != "none"]


def render_page(
    settings: Settings, now: datetime | None = None, due: datetime | None = None
) -> str:
    """The page's HTML, secrets replaced."""
    from velocity_pg.scheduling import html

    moment = now or datetime.now(UTC)
    built = page.build(inputs(settings, moment, due=due))
    return page.redact(html.render(built), secrets_of(settings))


def metrics_text(settings: Settings, totals: Callable[[], metrics.Totals]) -> tuple[bytes, str]:
    """The Prometheus exposition of the textfile's metrics (prometheus_client's own
    ``generate_latest``, with a registry of its own)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    current = totals()
    try:
        backups = catalog.list_backups(settings.backup_dir, settings.database)
        current.backups["local"] = (len(backups), sum(b.size for b in backups))
    except VelocityError:
        pass
    if settings.offsite is not None:
        copies, _where, problem = remote_copies(settings)
        if not problem:  # as the textfile: this folder's copies of the database
            mine = [
                c
                for c in copies
                if settings.database is None or catalog.database_of(c.name) == settings.database
            ]
            current.backups["remote"] = (len(mine), sum(c.size or 0 for c in mine))
    text = page.redact(metrics.render(current), secrets_of(settings))
    return text.encode("utf-8"), CONTENT_TYPE_LATEST


def file_totals(settings: Settings) -> Callable[[], metrics.Totals]:
    """The totals of BACKUP_METRICS_FILE when there is one (``serve`` runs no backups)."""
    from pathlib import Path

    def read() -> metrics.Totals:
        if settings.metrics_file:
            totals, _problem = metrics.read_previous(Path(settings.metrics_file).expanduser())
            return totals
        return metrics.Totals()

    return read


#: The scheduler's next due time, when the server runs inside ``schedule``.
Due = Callable[[], datetime | None]


def endpoints(
    settings: Settings, totals: Callable[[], metrics.Totals], due: Due | None = None
) -> Endpoints:
    secrets = secrets_of(settings)

    def health() -> tuple[bool, str]:
        judged = freshness(settings, datetime.now(UTC))
        reason = judged.reason or f"the newest good backup is within {page.human(judged.allowance)}"
        return judged.fresh, page.redact(reason, secrets)

    from velocity_pg.scheduling.http import cached

    return Endpoints(
        page=cached(lambda: render_page(settings, due=None if due is None else due())),
        metrics=cached(lambda: metrics_text(settings, totals)),
        health=cached(health),
    )


def http_addr(settings: Settings) -> tuple[str, int] | None:
    """BACKUP_HTTP_ADDR checked (ConfigError, exit 2); None when not set."""
    from velocity_pg.scheduling.http import parse_addr

    if settings.http_addr is None:
        return None
    if not settings.http_addr.strip():
        return None
    return parse_addr(settings.http_addr)


def check(settings: Settings) -> None:
    """What the page needs, checked before anything runs (ConfigError: exit 2)."""
    from velocity_pg.scheduling.config import health_allowance

    health_allowance(settings, datetime.now(UTC))
    catalog.require_dir(settings.backup_dir)  # missing or unreadable: said at once


def bind(
    settings: Settings,
    addr: tuple[str, int],
    totals: Callable[[], metrics.Totals],
    log: Callable[[str], None],
    due: Due | None = None,
) -> Server:
    """The server bound (not serving yet); OperationFailed (exit 1) when the address cannot
    be had (in use, not this machine's, not allowed)."""
    from velocity_pg.errors import OperationFailed
    from velocity_pg.scheduling import http

    try:
        return http.bind(addr, endpoints(settings, totals, due), log)
    except OSError as exc:
        host, port = addr
        raise OperationFailed(
            f"cannot serve the status page on {host}:{port} (BACKUP_HTTP_ADDR or --addr): "
            f"{exc.strerror or exc}"
        ) from None


def url_of(server: Server) -> str:
    host, port = server.server_address[:2]
    shown = host.decode() if isinstance(host, bytes) else str(host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


@dataclass
class Running:
    server: Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_beside(
    settings: Settings,
    totals: Callable[[], metrics.Totals],
    log: Callable[[str], None],
    due: Due | None = None,
) -> Running | None:
    """``schedule``'s server when BACKUP_HTTP_ADDR is set: bound before any run (an address
    that cannot be had fails closed, exit 1), then serving in a daemon thread."""
    from velocity_pg.scheduling import http

    addr = http_addr(settings)
    if addr is None:
        return None
    server = bind(settings, addr, totals, log, due)
    log(f"status page on {url_of(server)} (/metrics, /healthz)")
    return Running(server, http.start(server))


def run(settings: Settings, addr_text: str | None) -> int:
    """``velocity-pg serve``: until SIGTERM or Ctrl+C."""
    from velocity_pg.scheduling.http import parse_addr

    addr = parse_addr(addr_text, "--addr") if addr_text else http_addr(settings)
    if addr is None:
        raise ConfigError("no address to serve on: set BACKUP_HTTP_ADDR (host:port) or --addr")
    check(settings)
    server = bind(settings, addr, file_totals(settings), lambda line: print(line, file=sys.stderr))
    print(f"velocity-pg: status page on {url_of(server)} (/metrics, /healthz)", flush=True)
    from velocity_pg.postgres.pgtools import Terminated

    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, Terminated):
        print("velocity-pg: serve stopped", flush=True)  # a stop is no failure: exit 0
    finally:
        server.server_close()
    return ExitStatus.OK
