"""The automatic pin and ``accept`` (issue 21), against the real server: a suspect
backup pins the last good one (``backup`` and ``verify``), a person's pin is never
overwritten, a pin that fails is said, ``accept`` lifts the mark and releases the pin,
and ``cleanup`` keeps the good backup beyond the count."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Target
from test_anomaly import backup, fill, read

from velocity_pg.store import lock, manifest


def empty(target: Target, table: str = "orders") -> None:
    with target.connect() as conn:
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"ANALYZE {table}")


def test_a_suspect_backup_pins_the_good_one_and_cleanup_keeps_it(target: Target) -> None:
    fill(target, "orders", 3000)
    good, stderr, _payload = backup(target)
    assert read(good).pin is None
    empty(target)
    bad, stderr, payload = backup(target)
    mark = read(bad).suspect
    assert mark is not None and mark.compared_with == good.name
    pin = read(good).pin
    assert pin is not None and pin.auto
    day = mark.at[:10]
    assert pin.reason == (
        f"last backup before the anomaly of {day}: table public.orders 3,000 -> 0 rows"
    )
    assert f"the last good backup {good.name} is now pinned automatically" in stderr
    assert f"`velocity-pg accept {bad.name}` if the change was intended" in stderr
    assert payload["autopin"]["name"] == good.name and payload["autopin"]["pinned"] is True
    # The next suspect backup finds it pinned already.
    again, stderr, _payload = backup(target)
    assert f"{good.name} is already pinned automatically" in stderr
    assert read(good).pin == pin
    listed = target.run("list").stdout
    assert f"PINNED {good.name}: pinned automatically: last backup before the anomaly of {day}" in (
        listed
    )

    # cleanup --max-count 1: the suspect ones do not count; the good one stays.
    dry = target.run("cleanup", "--dry-run", "--max-count", "1")
    assert dry.returncode == 0, dry.stderr
    keep = {ln.split()[1]: ln for ln in dry.stdout.splitlines() if ln.startswith("keep ")}
    assert good.name in keep and "pinned automatically" in keep[good.name]
    assert "one of the newest 1, always kept" in keep[good.name]
    would = {ln.split()[2]: ln for ln in dry.stdout.splitlines() if ln.startswith("would delete")}
    assert list(would) == [bad.name]
    assert "suspect: table public.orders 3,000 -> 0 rows" in would[bad.name]
    result = target.run("cleanup", "--max-count", "1")
    assert result.returncode == 0, result.stderr
    assert good.exists() and again.exists() and not bad.exists()

    # accept: the new state is intended; the mark no longer counts, the pin is released.
    accepted = target.run("accept", again.name)
    assert accepted.returncode == 0, accepted.stderr
    assert f"{again.name} accepted in " in accepted.stdout
    assert f"The automatic pin of {good.name} is released." in accepted.stdout
    record = read(again)
    assert record.suspect is not None and record.accepted is not None
    assert read(good).pin is None
    listed = target.run("list").stdout
    assert "SUSPECT" not in listed
    # The next backup is compared with the accepted one: not suspect.
    _next, stderr, payload = backup(target)
    assert payload["suspect"] is None and "WARNING" not in stderr
    # Accepting again, or a backup that is not suspect: said, exit 0.
    twice = target.run("accept", again.name)
    assert twice.returncode == 0 and "was already accepted by " in twice.stdout
    plain = target.run("accept", good.name)
    assert plain.returncode == 0
    assert plain.stdout.strip() == f"{good.name} is not suspect; there is nothing to accept."


def test_a_persons_pin_stays(target: Target) -> None:
    fill(target, "orders", 3000)
    good, _stderr, _payload = backup(target)
    assert target.run("pin", good.name, "--reason", "before the upgrade").returncode == 0
    empty(target)
    bad, stderr, _payload = backup(target)
    assert f"the last good backup {good.name} stays pinned: before the upgrade" in stderr
    pin = read(good).pin
    assert pin is not None and not pin.auto and pin.reason == "before the upgrade"
    accepted = target.run("accept", bad.name, "--json")
    assert accepted.returncode == 0, accepted.stderr
    data = json.loads(accepted.stdout)
    assert data["auto_pin_released"] is False and data["pin_stays"] == "pinned: before the upgrade"
    assert read(good).pin == pin


def test_accept_takes_every_backup_of_the_same_anomaly(target: Target) -> None:
    fill(target, "orders", 3000)
    good, _stderr, _payload = backup(target)
    empty(target)
    first, _stderr, _payload = backup(target)
    second, _stderr, _payload = backup(target)
    result = target.run("accept", second.name)
    assert result.returncode == 0, result.stderr
    assert f"Accepted with it (the same anomaly, next to {good.name}): {first.name}" in (
        result.stdout
    )
    assert read(first).accepted is not None and read(second).accepted is not None
    assert "Suspect:" not in target.run("status").stdout


def test_a_pin_that_fails_is_said_and_the_backup_stands(target: Target) -> None:
    fill(target, "orders", 3000)
    good, _stderr, _payload = backup(target)
    empty(target)
    # A cleanup (say) holds the folder lock: the pin cannot be written now.
    with lock.exclusive(target.backup_dir, "a test's cleanup"):
        result = target.run("backup")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Backup created: ")
    assert f"the last good backup {good.name} is NOT pinned (" in result.stderr
    assert f"pin it with `velocity-pg pin {good.name}`" in result.stderr
    assert read(good).pin is None
    # The pin said how: it works.
    assert target.run("pin", good.name).returncode == 0


def test_verify_pins_the_good_one_when_it_marks_a_backup(target: Target) -> None:
    fill(target, "orders", 3000)
    good, _stderr, _payload = backup(target)
    empty(target)
    dump, _stderr, _payload = backup(target)
    # As if made before velocity-pg judged new backups: no mark, no pin.
    data = json.loads(manifest.path_for(dump).read_text())
    del data["suspect"]
    manifest.path_for(dump).write_text(json.dumps(data))
    assert target.run("unpin", good.name).returncode == 0
    result = target.run("verify", "--json")
    assert result.returncode == 0, result.stderr
    assert f"the last good backup {good.name} is now pinned automatically" in result.stderr
    (outcome,) = json.loads(result.stdout)["backups"]
    assert outcome["autopin"]["name"] == good.name
    pin = read(good).pin
    assert pin is not None and pin.auto
    # A second verify: the mark is old, the pin is not made again (a person unpinned?).
    assert target.run("unpin", good.name).returncode == 0
    again = target.run("verify", dump.name)
    assert again.returncode == 0 and "pinned automatically" not in again.stderr
    assert read(good).pin is None


def test_accept_of_an_unknown_backup_fails(target: Target, tmp_path: Path) -> None:
    result = target.run("accept", "app_2026-01-01_000000.dump")
    assert result.returncode == 1
    assert "there is no backup app_2026-01-01_000000.dump" in result.stderr
    assert target.run("accept", "nonsense").returncode == 2


# -- freshness for the notifications' stale event (no server) --------------------------------


def test_the_schedulers_freshness_skips_suspect_backups(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from test_anomaly_rules import put, record, stats

    from velocity_pg.store import catalog
    from velocity_pg.verbs.schedule import newest_good

    now = datetime.now(UTC)
    good = put(tmp_path, now - timedelta(days=3), record(statistics=stats(t=5000)))
    mark = manifest.Suspect(at=now.isoformat(), compared_with=good.name, reasons=("r",))
    bad = put(tmp_path, now - timedelta(hours=1), record(statistics=stats(t=0), suspect=mark))
    found = newest_good(catalog.list_backups(tmp_path))
    assert found is not None and found.name == good.name
    # Accepted: it counts as good (and fresh) again.
    accepted = manifest.Accepted(at=now.isoformat(), by="someone")
    manifest.path_for(bad).write_bytes(
        manifest.dumps(record(statistics=stats(t=0), suspect=mark, accepted=accepted))
    )
    found = newest_good(catalog.list_backups(tmp_path))
    assert found is not None and found.name == bad.name


def test_a_suspect_run_does_not_end_staleness(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from velocity_pg.scheduling import notify
    from velocity_pg.scheduling.watch import Watch, iso

    now = datetime.now(UTC)
    notifier = notify.Notifier(notify.NotifyConfig(urls=(), events=frozenset()), print)
    watch = Watch(
        tmp_path,
        notifier,
        notify.Origin("host", str(tmp_path), "app"),
        repeat=timedelta(hours=1),
        log=print,
    )
    watch.state.stale_since = iso(now - timedelta(hours=2))
    watch.succeeded(now, "the run", fresh=False)
    assert watch.state.stale_since is not None and watch.state.last_success is None
    watch.succeeded(now, "the run")
    assert watch.state.stale_since is None and watch.state.last_success == iso(now)
