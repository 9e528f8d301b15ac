"""The status page's data, HTML and run log, without a database (issue 24).

:func:`velocity_pg.scheduling.page.build` is pure: the backups, manifests, off-site copies
and run log are made here as values. The HTML is checked for what a browser needs (no
script, no link out, the charts inline); the run log's bounds and file mode on a tmp folder.
"""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from velocity_pg.errors import ConfigError
from velocity_pg.scheduling import html, page, runlog
from velocity_pg.scheduling.http import parse_addr
from velocity_pg.scheduling.job import RunResult, StepOutcome, StepStatus
from velocity_pg.store import catalog
from velocity_pg.store.manifest import Manifest, Pin, Statistics, Suspect, Verification

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DB = "app"


def backup(hours_ago: float, size: int = 1000, database: str = DB) -> catalog.Backup:
    created = (NOW - timedelta(hours=hours_ago)).replace(microsecond=0)
    name = catalog.format_name(created, database)
    return catalog.Backup(name, Path("/b") / name, created, created, size, database)


def record(
    b: catalog.Backup,
    *,
    db_bytes: int | None = 5000,
    check: Verification | None = None,
    pin: Pin | None = None,
    suspect: bool = False,
) -> Manifest:
    return Manifest(
        sha256="0" * 64,
        size_bytes=b.size,
        started_at=b.created.isoformat(),
        finished_at=b.created.isoformat(),
        duration_seconds=2.5,
        database=b.database,
        server_version="17",
        pg_dump_version="17",
        velocity_pg_version="1",
        toc_entries=3,
        last_verification=check,
        pin=pin,
        statistics=None if db_bytes is None else Statistics(b.created.isoformat(), db_bytes),
        suspect=Suspect(NOW.isoformat(), "x", ("public.t lost 90% of its rows",))
        if suspect
        else None,
    )


FRESH = page.Freshness(True, "", timedelta(hours=26), "BACKUP_SCHEDULE=@daily")


def run_line(
    hours_ago: float, result: str, size: int | None = 1000, push: float | None = None
) -> dict[str, object]:
    at = NOW - timedelta(hours=hours_ago)
    steps = [{"name": "backup", "status": "ok" if result != "failure" else "FAILED"}]
    return {
        "time": at.isoformat(),
        "started": at.isoformat(),
        "result": result,
        "duration_seconds": 3.0,
        "backup_size_bytes": size,
        "offsite_seconds": push,
        "steps": steps,
    }


def test_a_fresh_folder_is_green_with_its_facts_and_rows_newest_first() -> None:
    old, new = backup(30), backup(2, size=2048)
    check = Verification(NOW.isoformat(), "restore", True)
    local = [
        page.Local(new, record(new, check=check)),
        page.Local(old, record(old, pin=Pin(NOW.isoformat(), "before upgrade"))),
    ]
    built = page.build(page.Inputs(NOW, DB, local, FRESH, free_bytes=10**9))
    assert built.colour == "green"
    facts = dict(built.facts)
    assert facts["Newest backup"].startswith(f"{new.name} (2.0 KiB), 2h old")
    assert facts["Local"] == "2 backup(s), 3.0 KiB"
    assert "passed" in facts["Last restore drill"] and new.name in facts["Last restore drill"]
    assert old.name in facts["Pinned"] and "before upgrade" in facts["Pinned"]
    assert "Suspect" not in facts and "Off-site" not in facts
    assert [r.name for r in built.rows] == [new.name, old.name]
    assert built.rows[1].pinned == "yes"
    assert [p.value for p in built.database_sizes] == [5000.0, 5000.0]
    # Without a run log, sizes and durations come from the manifests, oldest first.
    assert [p.value for p in built.sizes] == [1000.0, 2048.0]


def test_stale_is_red_and_a_failed_last_run_or_a_suspect_backup_is_amber() -> None:
    b = backup(1)
    stale = page.Freshness(False, "the newest backup is older than 26h", timedelta(hours=26), "x")
    red = page.build(page.Inputs(NOW, DB, [page.Local(b, record(b))], stale, 0))
    assert red.colour == "red" and "older than 26h" in red.headline
    runs = [run_line(3, "success"), run_line(1, "failure", size=None), run_line(0.5, "skipped")]
    amber = page.build(page.Inputs(NOW, DB, [page.Local(b, record(b))], FRESH, 0, runs=runs))
    assert amber.colour == "amber" and "the last run failed (backup)" in amber.headline
    suspect = page.build(page.Inputs(NOW, DB, [page.Local(b, record(b, suspect=True))], FRESH, 0))
    assert suspect.colour == "amber" and "looks wrong" in suspect.headline
    assert dict(suspect.facts)["Suspect"] == b.name
    assert suspect.rows[0].contents == "SUSPECT"


def test_local_and_offsite_side_by_side() -> None:
    both, only_here = backup(5), backup(1)
    gone_here = backup(50)
    remote = [
        page.Remote(both.name, both.created, 900, True, database_bytes=7000),
        page.Remote(gone_here.name, gone_here.created, 800, True, pinned=True, database_bytes=6000),
    ]
    local = [page.Local(only_here, record(only_here)), page.Local(both, record(both))]
    built = page.build(
        page.Inputs(NOW, DB, local, FRESH, 0, remote=remote, remote_where="s3://b/db/")
    )
    rows = {r.name: r for r in built.rows}
    assert [r.name for r in built.rows] == [only_here.name, both.name, gone_here.name]
    assert (rows[only_here.name].local_size, rows[only_here.name].remote_size) == (1000, None)
    assert (rows[both.name].local_size, rows[both.name].remote_size) == (1000, 900)
    assert (rows[gone_here.name].local_size, rows[gone_here.name].remote_size) == (None, 800)
    assert rows[gone_here.name].pinned == "yes"
    assert dict(built.facts)["Off-site"] == "2 copy(ies), 1.7 KiB in s3://b/db/"
    # The database's size: the local manifests', then the off-site ones not here.
    assert [p.value for p in built.database_sizes] == [6000.0, 5000.0, 5000.0]


def test_an_offsite_problem_is_amber_and_said() -> None:
    b = backup(1)
    built = page.build(
        page.Inputs(NOW, DB, [page.Local(b, record(b))], FRESH, 0, remote=[], remote_problem="503")
    )
    assert built.colour == "amber"
    assert dict(built.facts)["Off-site"] == "cannot be read (503)"


def test_history_marks_failures_and_skipped_runs_and_offsite_times() -> None:
    runs = [
        run_line(4, "success", 100, push=1.5),
        run_line(3, "failure", None),
        run_line(2, "skipped", None),
        run_line(1, "success", 300, push=2.5),
    ]
    sizes, durations, _db, offsite = page.history([], None, runs)
    assert [(p.value, p.mark) for p in sizes] == [
        (100.0, "success"),
        (None, "failure"),
        (None, "skipped"),
        (300.0, "success"),
    ]
    assert [p.value for p in durations] == [3.0, 3.0, None, 3.0]
    assert [p.value for p in offsite] == [1.5, 2.5]


def test_other_databases_backups_do_not_count_as_newest() -> None:
    mine, other = backup(10), backup(1, database="old_project")
    built = page.build(
        page.Inputs(
            NOW, DB, [page.Local(other, record(other)), page.Local(mine, record(mine))], FRESH, 0
        )
    )
    assert dict(built.facts)["Newest backup"].startswith(mine.name)
    assert len(built.rows) == 2


def test_the_html_is_self_contained_and_has_the_charts() -> None:
    b = backup(1)
    runs = [run_line(3, "success", push=1.0), run_line(2, "failure", None), run_line(1, "skipped")]
    built = page.build(page.Inputs(NOW, DB, [page.Local(b, record(b))], FRESH, 0, runs=runs))
    text = html.render(built)
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<svg") == 4
    assert "<script" not in text.lower()
    # Nothing loaded from anywhere: no src= or stylesheet link, no http(s) URL but the
    # SVG namespaces.
    assert " src=" not in text and '<link rel="stylesheet"' not in text
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert "failed run" in text and "skipped run" in text
    assert f'data-name="{b.name}"' in text


def test_names_are_escaped_in_the_html() -> None:
    b = backup(1, database="<b>x</b>")
    built = page.build(page.Inputs(NOW, "<b>x</b>", [page.Local(b, record(b))], FRESH, 0))
    text = html.render(built)
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text


def test_redact_replaces_every_secret() -> None:
    assert page.redact("a hunter22 b hunter2", ["hunter2", "hunter22", "", "ab"]) == "a *** b ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8070", ("127.0.0.1", 8070)),
        ("0.0.0.0:8070", ("0.0.0.0", 8070)),  # noqa: S104
        (":8070", ("0.0.0.0", 8070)),  # noqa: S104
        ("[::1]:8070", ("::1", 8070)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_http_addr_good(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize(
    "text", ["8070", "host:", "host:port", "h:0", "h:70000", "a b:80", "u@h:1"]
)
def test_http_addr_bad(text: str) -> None:
    with pytest.raises(ConfigError, match="BACKUP_HTTP_ADDR"):
        parse_addr(text)


# -- the run log ------------------------------------------------------------------------------


def result(ok: bool = True) -> RunResult:
    steps = [
        StepOutcome("backup", StepStatus.OK, "made", NOW, 2.0),
        StepOutcome("push", StepStatus.OK if ok else StepStatus.FAILED, "x" * 999, NOW, 1.25),
    ]
    return RunResult(NOW - timedelta(seconds=4), NOW, steps, 1234)


def test_a_run_entry_has_its_steps_sizes_and_offsite_time() -> None:
    item = runlog.entry(result(), "app_2026-05-01_120000.dump")
    assert item["result"] == "success" and item["backup_size_bytes"] == 1234
    assert item["offsite_seconds"] == 1.25 and item["duration_seconds"] == 4.0
    assert [s["name"] for s in item["steps"]] == ["backup", "push"]
    assert len(item["steps"][1]["detail"]) == runlog.DETAIL_WIDTH
    failed = runlog.entry(result(ok=False))
    assert failed["result"] == "failure" and failed["offsite_seconds"] is None
    assert runlog.skipped(NOW, 3)["skipped"] == 3


def test_the_run_log_is_bounded_0600_and_skips_bad_lines(tmp_path: Path) -> None:
    for i in range(12):
        runlog.append(tmp_path, {**runlog.skipped(NOW), "n": i}, keep=5)
    entries = runlog.read(tmp_path)
    assert [e["n"] for e in entries] == [7, 8, 9, 10, 11]
    path = runlog.path_in(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [runlog.FILE_NAME]  # no temp left
    with path.open("a") as f:
        f.write('not json\n{"time": "nope", "result": 1}\n[1]\n')
    assert len(runlog.read(tmp_path)) == 5
    runlog.append(tmp_path, runlog.skipped(NOW), keep=5)
    assert len(runlog.read(tmp_path)) == 5
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_an_unwritable_folder_raises_oserror_only(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError):
            runlog.append(tmp_path, runlog.skipped(NOW))
    finally:
        tmp_path.chmod(0o700)
    assert runlog.read(tmp_path) == []


def test_every_secret_setting_is_known_to_the_page() -> None:
    from velocity_pg.settings import settings_from_values
    from velocity_pg.verbs.serve import secrets_of

    values = {
        "PGPASSWORD": "pg-Secret-1",
        "BACKUP_PING_URL": "https://hc-ping.com/ping-Token-2",
        "BACKUP_NOTIFY_URLS": "mailtos://me:mail-Secret-3@smtp.example.com, slack://tokA/tokB-4/tokC",
        "BACKUP_S3_URL": "s3://bucket/prefix",
        "BACKUP_S3_ENDPOINT_URL": "https://keyuser:endpoint-Secret-5@s3.example.com",
        "AWS_ACCESS_KEY_ID": "AKIA-Key-6",
        "AWS_SECRET_ACCESS_KEY": "aws-Secret-7",
        "AWS_SESSION_TOKEN": "aws-Token-8",
    }
    found = secrets_of(settings_from_values(values))
    shown = page.redact(" ".join(values.values()), found)
    for secret in ("pg-Secret-1", "ping-Token-2", "mail-Secret-3", "tokB-4", "endpoint-Secret-5",
                   "AKIA-Key-6", "aws-Secret-7", "aws-Token-8"):  # fmt: skip
        assert secret not in shown, secret
