"""Mixed users in one backup folder: root and the folder's owner (issue 10, item 2).

The tests run as an unprivileged user and cannot become root, so they build
two real users in a user namespace: ``unshare --map-auto --map-root-user``
maps the test user to root (uid 0) and its subordinate ids (``/etc/subuid``,
set by ``useradd``; needs ``newuidmap`` from Debian's ``uidmap``) to uids 1 and
up. Inside, uid 1000 owns the backup folder, as ``postgres`` owns ``/backups``
in the db container, and root runs velocity-pg as ``docker compose exec db``
does. Every check is a real velocity-pg process against the real server and
real files; only the mapping of ids is the namespace's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from conftest import PASSWORD, Target, create_database, drop_database, load_varied_schema

OWNER = 1000

DRIVER = r"""
import json, os, shutil, subprocess, sys

source, python = sys.argv[1], sys.argv[2]
results = {}


def sh(*cmd):
    subprocess.run(cmd, check=True)


def velocity(step, *args, owner=False, folder="/srv/backups", **extra):
    env = dict(os.environ, BACKUP_DIR=folder, **extra)
    prefix = ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups"] if owner else []
    done = subprocess.run(
        [*prefix, python, "-m", "velocity_pg", *args],
        env=env, capture_output=True, text=True, cwd="/", timeout=120,
    )
    results[step] = {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def owners(step, folder="/srv/backups"):
    results[step] = {
        name: [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)]
        for name in sorted(os.listdir(folder))
        for st in [os.lstat(os.path.join(folder, name))]
    }


OWNER = int(sys.argv[3])
# uid OWNER must reach the interpreter and the package: a home folder of mode 0700
# or 0750 (Debian 13 and Ubuntu make them so) keeps it out, and the story cannot run.
as_owner = ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups"]
probe = subprocess.run(
    [*as_owner, python, "-c", "import velocity_pg"],
    capture_output=True, text=True, cwd="/", timeout=60,
)
if probe.returncode != 0:
    print(json.dumps({"unreachable": probe.stderr.strip()}))
    sys.exit(0)
# A private tmpfs, reachable by uid OWNER (the test's tmp_path is not); gone with the namespace.
sh("mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", "/srv")
folder = "/srv/backups"
os.mkdir(folder, 0o700)
for name in os.listdir(source):
    if ".dump" in name:
        shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))
        os.chmod(os.path.join(folder, name), 0o600)
        os.chown(os.path.join(folder, name), OWNER, OWNER)
os.chown(folder, OWNER, OWNER)

# 1. A lock file an older velocity-pg made as root (root-owned, 0600).
lock = os.path.join(folder, ".velocity.lock")
os.close(os.open(lock, os.O_CREAT | os.O_WRONLY, 0o600))
velocity("owner_cleanup", "cleanup", "--max-count", "1", owner=True)
velocity("owner_verify", "verify", "--all", owner=True)
owners("after_refusals")

# 2. Root verifies: it works, keeps the manifests' owner and mode, gives the lock back.
velocity("root_verify", "verify", "--all")
owners("after_root_verify")
velocity("owner_verify_again", "verify", "--all", owner=True)

# 3. Root backs up into the owner's folder; the owner restores that backup (check only).
velocity("root_backup", "backup", "--json")
owners("after_root_backup")
if results["root_backup"]["rc"] == 0:
    name = json.loads(results["root_backup"]["out"])["name"]
    velocity("owner_restore_check", "restore", name, "--check", "--yes", owner=True)

# 4. The scheduler's run lock (issue 17, item 13): root's `schedule --once` makes it the
#    owner's; one an older velocity-pg left as root (0600) stops the owner's run, which
#    never goes on unlocked; root's next run gives it back.
run_lock = os.path.join(folder, ".velocity-schedule.lock")
metrics = os.path.join(folder, "velocity.prom")
velocity("root_schedule", "schedule", "--once", BACKUP_VERIFY="none", BACKUP_METRICS_FILE=metrics)
owners("after_root_schedule")
velocity(
    "owner_schedule", "schedule", "--once", owner=True, BACKUP_VERIFY="none",
    BACKUP_METRICS_FILE=metrics,
)
os.unlink(run_lock)
os.close(os.open(run_lock, os.O_CREAT | os.O_WRONLY, 0o600))
owners("before_owner_refused")
velocity("owner_schedule_refused", "schedule", "--once", owner=True, BACKUP_VERIFY="none")
owners("after_owner_refused")
velocity("root_schedule_repairs", "schedule", "--once", BACKUP_VERIFY="none")
velocity("owner_schedule_again", "schedule", "--once", owner=True, BACKUP_VERIFY="none")
owners("after_owner_schedule_again")

# 5. Root where it cannot act for the owner: in a nested namespace uid OWNER is not mapped
#    (it shows as nobody), as on a root-squashing or id-mapped mount: refuse, change nothing.
os.chmod(folder, 0o777)
nested = subprocess.run(
    ["unshare", "--map-root-user", python, "-m", "velocity_pg", "verify", "--all"],
    env=dict(os.environ, BACKUP_DIR=folder), capture_output=True, text=True, timeout=120,
)
results["unmapped_verify"] = {"rc": nested.returncode, "out": nested.stdout, "err": nested.stderr}
os.unlink(lock)
nested = subprocess.run(
    ["unshare", "--map-root-user", python, "-m", "velocity_pg", "verify", "--all"],
    env=dict(os.environ, BACKUP_DIR=folder), capture_output=True, text=True, timeout=120,
)
results["unmapped_new_lock"] = {"rc": nested.returncode, "out": nested.stdout, "err": nested.stderr}
owners("after_unmapped")
print(json.dumps(results))
"""


def _two_users_work() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "--map-auto", "--map-root-user", "setpriv", "--reuid=1000", "true"],
            capture_output=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _two_users_work(),
    reason="needs subordinate ids (/etc/subuid) and newuidmap (Debian: uidmap)",
)


@pytest.fixture(scope="module")
def module_target(
    postgresql_proc: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    name = f"vt_{uuid.uuid4().hex[:10]}"
    create_database(postgresql_proc, name)
    base = tmp_path_factory.mktemp("two-users")
    (base / "backups").mkdir(mode=0o700)
    (base / "work").mkdir()
    yield Target(
        host=postgresql_proc.host,  # type: ignore[attr-defined]
        port=int(postgresql_proc.port),  # type: ignore[attr-defined]
        user=postgresql_proc.user,  # type: ignore[attr-defined]
        password=PASSWORD,
        dbname=name,
        backup_dir=base / "backups",
        workdir=base / "work",
    )
    drop_database(postgresql_proc, name)


@pytest.fixture(scope="module")
def two_users(module_target: Target) -> dict:  # type: ignore[type-arg]
    """Run the whole two-user story once; each test reads its part."""
    target = module_target
    load_varied_schema(target)
    for _ in range(2):
        made = target.run("backup")
        assert made.returncode == 0, made.stderr
    work = target.workdir
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    result = subprocess.run(
        [
            "unshare",
            "--map-auto",
            "--map-root-user",
            "--mount",
            sys.executable,
            str(driver),
            str(target.backup_dir),
            sys.executable,
            str(OWNER),
        ],
        env=target.env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    data: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    if "unreachable" in data:
        pytest.skip(
            f"a second user cannot run {sys.executable} (a folder above it is private to you: "
            f"{data['unreachable'].splitlines()[-1] if data['unreachable'] else 'no detail'}); "
            "put the checkout and its .venv where other users can read, as .ci/run does"
        )
    return data


def one_error_line(step: dict) -> str:  # type: ignore[type-arg]
    lines = [ln for ln in step["err"].splitlines() if ln.strip()]
    assert len(lines) == 1, step
    line: str = lines[0]
    assert "unexpected" not in line
    return line


def test_a_lock_file_the_owner_cannot_take_stops_the_run(two_users: dict) -> None:  # type: ignore[type-arg]
    for step, verb in (("owner_cleanup", "clean up"), ("owner_verify", "verify")):
        run = two_users[step]
        assert run["rc"] == 1, run
        line = one_error_line(run)
        assert line.startswith(f"velocity-pg: error: cannot {verb}: the folder lock ")
        assert "/srv/backups/.velocity.lock belongs to root (mode 0600)" in line
        assert "nothing was done" in line
        assert "chown" in line
    assert two_users["owner_verify"]["out"] == ""  # nothing was checked without the lock
    # Nothing was deleted: both backups (and their manifests) are still there.
    files = two_users["after_refusals"]
    assert len([n for n in files if n.endswith(".dump")]) == 2
    assert len([n for n in files if n.endswith(".dump.json")]) == 2
    assert files[".velocity.lock"] == [0, 0, "0o600"]  # the owner could not (and did not) fix it


def test_root_keeps_the_owner_and_mode_of_what_it_rewrites(two_users: dict) -> None:  # type: ignore[type-arg]
    run = two_users["root_verify"]
    assert run["rc"] == 0, run
    assert run["out"].startswith("ok      ")
    before, after = two_users["after_refusals"], two_users["after_root_verify"]
    manifests = [n for n in after if n.endswith(".dump.json")]
    assert manifests
    for name in manifests:
        assert after[name] == [OWNER, OWNER, "0o600"] == before[name]
    # The lock file root had made is the owner's now, and the owner's runs work again.
    assert after[".velocity.lock"][:2] == [OWNER, OWNER]
    again = two_users["owner_verify_again"]
    assert again["rc"] == 0, again
    assert again["err"] == ""


def test_root_backs_up_on_the_owners_behalf(two_users: dict) -> None:  # type: ignore[type-arg]
    run = two_users["root_backup"]
    assert run["rc"] == 0, run
    name = json.loads(run["out"])["name"]
    files = two_users["after_root_backup"]
    assert files[name] == [OWNER, OWNER, "0o600"]
    assert files[name + ".json"] == [OWNER, OWNER, "0o600"]
    assert not [n for n in files if n.startswith(".velocity-tmp-")]
    check = two_users["owner_restore_check"]
    assert check["rc"] == 0, check
    assert "Check passed" in check["out"]


def test_root_refuses_where_it_cannot_act_for_the_owner(two_users: dict) -> None:  # type: ignore[type-arg]
    # The owner's lock file (mode 0600, its owner unmapped here) cannot be taken: refused.
    run = two_users["unmapped_verify"]
    assert run["rc"] == 1, run
    assert "/srv/backups/.velocity.lock belongs to nobody" in one_error_line(run)
    # No lock file: root cannot make one the owner could use, so it refuses.
    run = two_users["unmapped_new_lock"]
    assert run["rc"] == 1, run
    line = one_error_line(run)
    assert "running as root in /srv/backups, which belongs to nobody" in line
    assert "cannot give .velocity.lock to nobody" in line
    files = two_users["after_unmapped"]
    assert ".velocity.lock" not in files
    for name, owner in files.items():
        assert owner[:2] == [OWNER, OWNER], name


def test_the_schedulers_run_lock_belongs_to_the_folders_owner(two_users: dict) -> None:  # type: ignore[type-arg]
    run = two_users["root_schedule"]
    assert run["rc"] == 0, run
    files = two_users["after_root_schedule"]
    assert files[".velocity-schedule.lock"] == [OWNER, OWNER, "0o600"]
    assert files["velocity.prom"][:2] == [OWNER, OWNER]  # BACKUP_METRICS_FILE there too
    for name, owner in files.items():
        assert owner[:2] == [OWNER, OWNER], name  # everything root made is the owner's
    # So the owner's scheduler takes the lock after a root run.
    run = two_users["owner_schedule"]
    assert run["rc"] == 0, run
    assert "run succeeded" in run["out"]
    assert "metrics:" not in run["out"]  # it reads and rewrites root's metrics file


def test_a_run_lock_the_owner_cannot_take_stops_the_run(two_users: dict) -> None:  # type: ignore[type-arg]
    run = two_users["owner_schedule_refused"]
    assert run["rc"] == 1, run
    line = one_error_line(run)
    assert line.startswith(
        "velocity-pg: error: the run failed: run lock: cannot start the scheduled run: "
        "the run lock /srv/backups/.velocity-schedule.lock belongs to root (mode 0600)"
    ), line
    assert "`velocity-pg schedule --once` as root" in line
    assert "run lock: FAILED" in run["out"] and "run FAILED" in run["out"]
    assert "run started" not in run["out"] and "backup:" not in run["out"]
    # Nothing ran unlocked: no new backup, nothing deleted.
    assert two_users["after_owner_refused"] == two_users["before_owner_refused"]
    # Root's next run gives the lock back; the owner's runs work again.
    assert two_users["root_schedule_repairs"]["rc"] == 0, two_users["root_schedule_repairs"]
    again = two_users["owner_schedule_again"]
    assert again["rc"] == 0, again
    files = two_users["after_owner_schedule_again"]
    assert files[".velocity-schedule.lock"] == [OWNER, OWNER, "0o600"]
