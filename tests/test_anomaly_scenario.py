"""Issue 21's "Done when": a table emptied on day 1, daily backups for 60 days,
``BACKUP_MAX_COUNT=7``; the last good backup is still on disk and off-site, pinned
automatically, named in ``list``, ``status`` and the scheduler's log, and ``cleanup
--dry-run`` explains every decision. Real server, moto's S3 server off-site.

Sixty real pg_dumps would take minutes, so the calendar is made of real backups moved
back in time: every suspect mark and the pin come from real ``backup`` runs on real
statistics, then each backup (dump and manifest) is renamed to its day, its manifest's
times shifted by the same whole days and its mtime set to that day. The good backup
(day 0, 59 days ago) and five suspect ones (days 1-5) are real runs made that way; days
6-58 are copies of the fifth (its dump and manifest, dated); on day 59 (today) come two
real backups: a ``backup`` with off-site copies on (the pin goes off-site there), and
the backup of a ``schedule --once`` run, which then cleans up here and off-site.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from test_anomaly import backup, fill, read

from velocity_pg.store import catalog, manifest, roles

COUNT = {"BACKUP_MAX_COUNT": "7"}


def shifted(text: str, delta: timedelta) -> str:
    return manifest.now_iso(datetime.fromisoformat(text) + delta)


def dated(source: Path, day: date, *, move: bool) -> Path:
    """``source`` (dump and manifest) as made on ``day`` at its own time of day: renamed
    (``move``) or copied, its manifest's times shifted, its mtime that day."""
    record = read(source)
    created = catalog.parse_name(source.name)
    assert created is not None
    moment = datetime.combine(day, created.time(), UTC)
    delta = moment - created
    target = source.with_name(catalog.format_name(moment, record.database))
    assert not target.exists()
    moved = replace(
        record,
        started_at=shifted(record.started_at, delta),
        finished_at=shifted(record.finished_at, delta),
    )
    roles_file = roles.path_for(source)  # the roles file goes with its dump
    if move:
        os.rename(source, target)
        manifest.path_for(source).unlink()
        os.rename(roles_file, roles.path_for(target))
    else:
        shutil.copyfile(source, target)
        target.chmod(0o600)
        shutil.copyfile(roles_file, roles.path_for(target))
        roles.path_for(target).chmod(0o600)
    manifest.path_for(target).write_bytes(manifest.dumps(moved))
    manifest.path_for(target).chmod(0o600)
    os.utime(target, (moment.timestamp(), moment.timestamp()))
    return target


def test_a_table_emptied_on_day_one_and_sixty_days_of_backups(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
) -> None:
    today = datetime.now(UTC).date()
    day = [today - timedelta(days=59 - n) for n in range(60)]  # day[59] is today
    offsite = target.env(**offsite_env(bucket), **COUNT)

    # Day 0: the good backup (5,000 orders), copied off-site.
    fill(target, "orders", 5000)
    fresh, _stderr, _payload = backup(target)
    good = dated(fresh, day[0], move=True)
    pushed = target.run("push", good.name, env=offsite)
    assert pushed.returncode == 0, pushed.stderr

    # Day 1: the table is emptied; every backup from now on is suspect.
    with target.connect() as conn:
        conn.execute("DELETE FROM orders")
        conn.execute("ANALYZE orders")
    first, stderr, _payload = backup(target)
    assert f"the last good backup {good.name} is now pinned automatically" in stderr
    pin = read(good).pin
    assert pin is not None and pin.auto
    assert pin.reason.startswith("last backup before the anomaly of ")
    assert pin.reason.endswith(": table public.orders 5,000 -> 0 rows")
    suspects = [dated(first, day[1], move=True)]
    for n in range(2, 6):
        made, stderr, _payload = backup(target)
        assert f"{good.name} is already pinned automatically" in stderr
        suspects.append(dated(made, day[n], move=True))
    for n in range(6, 59):
        suspects.append(dated(suspects[4], day[n], move=False))
    for each in suspects:
        mark = read(each).suspect
        assert mark is not None and mark.compared_with == good.name
    pushed = target.run("push", "--all", env=offsite)
    assert pushed.returncode == 0, pushed.stderr

    # Day 59 (today): a real backup with off-site copies on: the pin goes off-site too.
    result = target.run("backup", "--json", env=offsite)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["offsite"]["status"] == "pushed", result.stdout
    assert f"{good.name} is already pinned automatically here and off-site" in result.stderr
    remote_pin = json.loads(bucket.client.get_object(
        Bucket=bucket.name, Key=f"db/{good.name}.json"
    )["Body"].read())["dump"]["pin"]  # fmt: skip
    assert remote_pin == {"at": pin.at, "reason": pin.reason, "auto": True}

    # Still day 59: the scheduler's run: backup, push, cleanup here and off-site, verify.
    run = target.run("schedule", "--once", env=offsite)
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout
    assert "SUSPECT, see below" in log and "looks wrong: table public.orders 5,000 -> 0" in log
    assert f"automatic pin: the last good backup {good.name} is already pinned " in log

    # On disk: the good one, and the newest 7 (all suspect, not counted against it).
    names = sorted(p.name for p in target.backup_dir.glob("*.dump"))
    assert good.name in names
    assert len(names) == 8, names
    assert read(good).pin == pin
    # Off-site: the same.
    keys = [k for k in bucket.names() if k.endswith(".dump")]
    assert sorted(k.removeprefix("db/") for k in keys) == names

    listed = target.run("list", env=offsite)
    assert listed.returncode == 0, listed.stderr
    row = next(ln for ln in listed.stdout.splitlines() if ln.startswith(good.name))
    assert " auto: last backup before the anomaly" in row and " ok " in row
    assert f"PINNED {good.name}: pinned automatically: last backup before the anomaly" in (
        listed.stdout
    )
    assert listed.stdout.count("SUSPECT") >= 14  # 7 rows and 7 reasons
    remote = target.run("list", "--remote", env=offsite)
    assert remote.returncode == 0, remote.stderr
    assert "CONTENTS" in remote.stdout.splitlines()[0]
    row = next(ln for ln in remote.stdout.splitlines() if ln.startswith(good.name))
    assert " auto: last backup before the anomaly" in row
    assert f"PINNED {good.name}: pinned automatically" in remote.stdout
    assert remote.stdout.count("SUSPECT") >= 14

    status = target.run("status", env=offsite)
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("Newest good:"))
    assert line.startswith(f"Newest good:   {good.name} (59d "), line
    assert "; pinned automatically: last backup before the anomaly of " in line
    assert "Suspect:       7 backup(s) look wrong" in status.stdout
    assert target.run("status", "--max-age", "2d", env=offsite).returncode == 1

    # cleanup --dry-run explains every decision: nothing more to delete now; with a
    # count of 3, deletions too.
    dry = target.run("cleanup", "--dry-run", "--json", env=offsite)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    kept = {d["name"]: d for d in plan["keep"]}
    assert sorted(kept) == names and plan["delete"] == []
    assert [k["rule"] for k in kept[good.name]["kept_by"]] == ["min_keep", "pinned"]
    for name in set(names) - {good.name}:
        (only,) = kept[name]["kept_by"]
        assert only["rule"] == "limits" and "suspect" in only["label"]
    text = target.run("cleanup", "--dry-run", env=offsite | {"BACKUP_MAX_COUNT": "3"})
    assert text.returncode == 0, text.stderr
    here, there = text.stdout.split("off-site cleanup of ", 1)
    for part, prefix in ((here, "BACKUP_"), (there, "BACKUP_S3_")):
        lines = part.splitlines()
        keep = {ln.split()[1]: ln for ln in lines if ln.startswith("keep ")}
        would = {ln.split()[2]: ln for ln in lines if ln.startswith("would delete ")}
        assert set(keep) | set(would) == set(names) and len(keep) == 4, part
        assert f"one of the newest 1, always kept ({prefix}MIN_KEEP)" in keep[good.name]
        assert "pinned automatically: last backup before the anomaly" in keep[good.name]
        for name in set(keep) - {good.name}:
            assert "(suspect: table public.orders 5,000 -> 0 rows" in keep[name]
        for line in would.values():
            assert "suspect: table public.orders 5,000 -> 0 rows" in line, line
            assert "beyond the newest 3 (number " in line, line


def remote_dump(bucket: Bucket, name: str) -> dict[str, object]:  # noqa: F811
    body = bucket.client.get_object(Bucket=bucket.name, Key=f"db/{name}.json")["Body"].read()
    dump = json.loads(body)["dump"]
    assert isinstance(dump, dict)
    return dump


def test_accept_off_site_records_it_and_releases_the_pin_there(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
) -> None:
    offsite = target.env(**offsite_env(bucket))
    fill(target, "orders", 3000)
    made = target.run("backup", "--json", env=offsite)
    assert made.returncode == 0, made.stderr
    good = json.loads(made.stdout)["name"]
    with target.connect() as conn:
        conn.execute("DELETE FROM orders")
        conn.execute("ANALYZE orders")
    made = target.run("backup", "--json", env=offsite)
    assert made.returncode == 0, made.stderr
    bad = json.loads(made.stdout)["name"]
    assert f"{good} is now pinned automatically here and off-site" in made.stderr
    pin = remote_dump(bucket, good)["pin"]
    assert isinstance(pin, dict) and pin["auto"] is True
    assert remote_dump(bucket, bad)["suspect"]
    listed = target.run("list", "--remote", env=offsite)
    assert f"SUSPECT {bad}: table public.orders 3,000 -> 0 rows" in listed.stdout

    accepted = target.run("accept", bad, env=offsite)
    assert accepted.returncode == 0, accepted.stderr
    assert f"The automatic pin of {good} is released here and off-site." in accepted.stdout
    assert f"Off-site in s3://{bucket.name}/db" in accepted.stdout
    assert remote_dump(bucket, good)["pin"] is None
    mark = remote_dump(bucket, bad)["accepted"]
    assert isinstance(mark, dict) and mark["by"]
    listed = target.run("list", "--remote", "--json", env=offsite)
    items = {b["name"]: b for b in json.loads(listed.stdout)["backups"]}
    assert items[bad]["accepted"] is not None and items[good]["pin"] is None
    assert "SUSPECT" not in target.run("list", "--remote", env=offsite).stdout
