"""A stand-in for the `docker` command, for testing the justfile without an engine.

tests/test_justfile.py puts a `docker` wrapper running this file first on PATH.
It understands the few `docker compose` calls the justfile makes (after any
``-f FILE``, as the Django Velocity template's justfile gives):

- ``compose exec [-T] [-u USER] db velocity-pg ARGS`` runs ``python -m velocity_pg ARGS``
  for real, in the caller's environment (the test points PG* and BACKUP_DIR at the
  test server), and exits with its status;
- ``compose ps --services --filter status=running`` prints the file STANDIN_RUNNING;
- ``compose stop|start SERVICE...`` removes the services from / adds them to that file;
- ``compose logs [OPTIONS] SERVICE`` prints one line naming the service;
- ``compose run --rm --no-deps [-T] [-e NAME[=VALUE]]... SERVICE CMD...`` runs CMD for
  real on this machine, in STANDIN_RUN_DIR (else the current folder), with the service's
  environment (STANDIN_SERVICE_ENV) over the caller's and each ``-e`` over that: ``-e
  NAME`` alone takes NAME from the caller's environment, as Compose does (unset there:
  unset in the command's). The Django migrate tests run the project's manage.py this way.

With STANDIN_SERVICE_ENV (a JSON file: service -> its environment, as
``docker compose config`` resolved it from the compose file and .env), ``exec``
runs velocity-pg with the db service's environment over the caller's, as the
container would have it (BACKUP_DIR excepted: the test's folder stands for /backups).

Every call is appended to STANDIN_LOG as one JSON line ``{"argv", "user", "status", "at"}``
(``at``: when it started and ended, epoch seconds).
STANDIN_STATUS (JSON: a list of ``{"when": [token, ...], "status": N}``) makes a call
whose argv holds all the tokens exit with N instead of doing its work: the way a test
makes a step fail (or pass) without depending on what it would really do. With
``"wait": PATH`` it creates PATH and then waits until interrupted (exit 130), like a
long restore that gets Ctrl+C.
Anything else exits 97 with a message, so an unexpected call fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()


def log(argv: list[str], status: int, user: str | None = None) -> None:
    # When the call started and ended (epoch seconds): bench/run.py reads them.
    entry = {"argv": argv, "user": user, "status": status, "at": [STARTED, time.time()]}
    with Path(os.environ["STANDIN_LOG"]).open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def forced_status(argv: list[str]) -> int | None:
    for rule in json.loads(os.environ.get("STANDIN_STATUS") or "[]"):
        if all(token in argv for token in rule["when"]):
            if rule.get("wait"):
                # Stand for a long step: say so, then wait to be interrupted: by SIGINT,
                # or, with --stop-on-eof (velocity-pg's own option), by the end of the
                # input, which is how the recipes stop velocity-pg through `exec`.
                try:
                    # Inside the try: a Ctrl+C right after the file appears is still
                    # answered 130 and logged.
                    Path(rule["wait"]).touch()
                    if "--stop-on-eof" in argv:
                        while os.read(0, 65536):
                            pass
                        Path(rule["wait"]).write_text("stopped by the end of its input\n")
                        return 130
                    time.sleep(600)
                except KeyboardInterrupt:
                    return 130
            return int(rule["status"])
    return None


def running_file() -> Path:
    return Path(os.environ["STANDIN_RUNNING"])


def read_running() -> list[str]:
    return [line.strip() for line in running_file().read_text().splitlines() if line.strip()]


def unsupported(argv: list[str], why: str) -> int:
    print(f"docker stand-in: unsupported call {argv!r}: {why}", file=sys.stderr)
    log(argv, 97)
    return 97


def compose_exec(argv: list[str], args: list[str]) -> int:
    user: str | None = None
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-T", "--no-TTY"):
            continue
        if flag in ("-u", "--user") and args:
            user = args.pop(0)
            continue
        return unsupported(argv, f"exec option {flag}")
    if len(args) < 2 or args[0] != "db" or args[1] != "velocity-pg":
        return unsupported(argv, "only `exec db velocity-pg ...` is supported")
    status = forced_status(argv)
    if status is None:
        cmd = [sys.executable, "-m", "velocity_pg", *args[2:]]
        status = subprocess.run(cmd, check=False, env=service_env(args[0])).returncode
    log(argv, status, user)
    return status


def service_env(service: str, *, missing_ok: bool = False) -> dict[str, str]:
    """The caller's environment with ``service``'s own over it (see STANDIN_SERVICE_ENV)."""
    env = dict(os.environ)
    path = os.environ.get("STANDIN_SERVICE_ENV")
    if path:
        services = json.loads(Path(path).read_text())
        if missing_ok and service not in services:
            return env
        theirs = services[service]
        env.update({k: v for k, v in theirs.items() if k != "BACKUP_DIR"})
    return env


def compose_run(argv: list[str], args: list[str]) -> int:
    overrides: dict[str, str | None] = {}
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("--rm", "--no-deps", "-T", "--no-TTY"):
            continue
        if flag in ("-e", "--env") and args:
            name, sep, value = args.pop(0).partition("=")
            overrides[name] = value if sep else os.environ.get(name)
            continue
        return unsupported(argv, f"run option {flag}")
    if len(args) < 2:
        return unsupported(argv, "`run` needs a service and a command")
    status = forced_status(argv)
    if status is None:
        env = service_env(args[0], missing_ok=True)
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        where = os.environ.get("STANDIN_RUN_DIR") or None
        status = subprocess.run(args[1:], check=False, env=env, cwd=where).returncode
    log(argv, status)
    return status


def compose_ps(argv: list[str], args: list[str]) -> int:
    if args != ["--services", "--filter", "status=running"]:
        return unsupported(argv, "only `ps --services --filter status=running` is supported")
    status = forced_status(argv)
    if status is None:
        for service in read_running():
            print(service)
        status = 0
    log(argv, status)
    return status


def compose_stop_start(argv: list[str], verb: str, services: list[str]) -> int:
    status = forced_status(argv)
    if status is None:
        running = read_running()
        if verb == "stop":
            running = [s for s in running if s not in services]
        else:
            running += [s for s in services if s not in running]
        running_file().write_text("".join(f"{s}\n" for s in running))
        status = 0
    log(argv, status)
    return status


def compose_logs(argv: list[str], args: list[str]) -> int:
    if not args or args[-1].startswith("-"):
        return unsupported(argv, "`logs` needs a service name last")
    print(f"stand-in log of {args[-1]}")
    log(argv, 0)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "compose":
        return unsupported(argv, "only `docker compose ...` is supported")
    # Compose's own options before the verb: `-f FILE` (the Django Velocity template's
    # justfile runs `docker compose -f docker-compose.yml ...`) changes nothing here.
    rest = argv[1:]
    while len(rest) >= 2 and rest[0] in ("-f", "--file"):
        rest = rest[2:]
    if not rest:
        return unsupported(argv, "no compose verb")
    verb, args = rest[0], rest[1:]
    if verb == "exec":
        return compose_exec(argv, list(args))
    if verb == "ps":
        return compose_ps(argv, args)
    if verb == "logs":
        return compose_logs(argv, args)
    if verb == "run":
        return compose_run(argv, list(args))
    if verb in ("stop", "start") and args and not any(a.startswith("-") for a in args):
        return compose_stop_start(argv, verb, args)
    return unsupported(argv, f"compose {verb}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
