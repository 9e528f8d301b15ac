"""A second, real S3 API for the off-site tests: OpenStack Swift with its S3 layer (s3api).

Swift is production object storage (several providers run it behind their S3
endpoints); moto is a model of AWS's API. The tests start Swift here, on
127.0.0.1, with no root and no system package: its proxy, object, container and
account servers, each one process, one replica on one device in a folder of the
test session, tempauth for credentials.

Swift comes from PyPI (``swift==SWIFT_VERSION``), into a virtualenv of its own that
the first run makes under ``~/.cache/velocity-pg-tests/`` (``$XDG_CACHE_HOME`` if
set), keyed by Swift's version and the Python that runs it; later runs reuse it.
Concurrent test runs of one user share it: a lock file serializes its making.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SWIFT_VERSION = "2.38.3"

#: How long the servers may take to answer once started (CI's 2 cores are loaded).
START_TIMEOUT = 60.0

#: Swift's own processes: a warning of a deprecated module is not an error.
_QUIET = {"PYTHONWARNINGS": "ignore"}


class SwiftUnavailable(Exception):
    """Swift could not be installed or started; the message says why."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "velocity-pg-tests"


def venv_dir() -> Path:
    """Swift's virtualenv: one per Swift version and per Python (a venv points at the
    interpreter that made it, so another Python gets its own)."""
    base = getattr(sys, "_base_executable", sys.executable)
    which = hashlib.sha256(os.path.realpath(base).encode()).hexdigest()[:8]
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_root() / f"swift-{SWIFT_VERSION}-{py}-{which}"


def ensure_installed() -> Path:
    """The bin folder of a virtualenv holding Swift, made on first use (a minute at most
    with a fast index; pip's own output is shown only when it fails)."""
    venv = venv_dir()
    done = venv / ".velocity-complete"
    if done.exists() and (venv / "bin" / "python").exists():
        return venv / "bin"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making it right now
        if done.exists() and (venv / "bin" / "python").exists():
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one: start again
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"swift=={SWIFT_VERSION}",
            ],
        ]
        for argv in steps:
            result = subprocess.run(
                argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
            )
            if result.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
                raise SwiftUnavailable(
                    f"cannot install swift=={SWIFT_VERSION} into {venv} "
                    f"({argv[2] if argv[1] == '-m' else argv[0]} exited "
                    f"{result.returncode}):\n" + "\n".join(tail)
                )
        done.write_text(SWIFT_VERSION + "\n")
    return venv / "bin"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


_SERVER_CONF = """\
[DEFAULT]
swift_dir = {etc}
devices = {srv}
mount_check = false
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
log_level = WARNING
[pipeline:main]
pipeline = {kind}-server
[app:{kind}-server]
use = egg:swift#{kind}
{extra}
"""

# The object server waits this long for the container listing to take a new object (its
# default, 1 s, is short on a loaded machine: the listing would then lag, and nothing here
# runs Swift's updater that catches it up later).
_OBJECT_EXTRA = "container_update_timeout = 60\nnode_timeout = 60\n"

_PROXY_CONF = """\
[DEFAULT]
swift_dir = {etc}
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
log_level = WARNING
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api \
tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
node_timeout = 60
recoverable_node_timeout = 60
[filter:cache]
paste.filter_factory = velocity_swift_cache:filter_factory
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
# S3 access key "ACCOUNT:USER", secret key the value's first word
user_{account}_{user} = {secret} .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true
[filter:symlink]
use = egg:swift#symlink
"""

# The proxy's cache, where a production Swift has memcached: in the proxy's own memory
# (it is one process), serialized as Swift's memcache client does (JSON), so every
# reader gets its own copy. Without one, the proxy asks the account and container
# servers about the bucket on every request.
_CACHE_MODULE = """\
import json
import time


class Cache:
    def __init__(self):
        self._items = {}

    def get(self, key, raise_on_error=False):
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] and item[1] < time.time():
            del self._items[key]
            return None
        return json.loads(item[0])

    def set(self, key, value, serialize=True, time=0, min_compress_len=0,
            raise_on_error=False):
        expires = _now() + time if time else 0
        self._items[key] = (json.dumps(value), expires)

    def delete(self, key, server_key=None):
        self._items.pop(key, None)


_now = time.time


def filter_factory(global_conf, **local_conf):
    cache = Cache()

    def make(app):
        def middleware(env, start_response):
            env.setdefault("swift.cache", cache)
            return app(env, start_response)

        return middleware

    return make
"""

_RINGS = """\
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for spec in sys.argv[2:]:
    kind, port = spec.split(":")
    builder = RingBuilder(6, 1, 1)  # 64 partitions, 1 replica
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 1})
    builder.rebalance()
    builder.get_ring().save(f"{etc}/{kind}.ring.gz")
"""

# Each server dies with the test session that started it (PR_SET_PDEATHSIG), also when
# the session itself is killed: no Swift is left running on a CI machine. Its fsync()s
# are no-ops (as under eatmydata): durability across a power cut is not what the tests
# look at, and on a loaded CI disk each costs a PUT tens of milliseconds.
_RUN_SERVER = (
    "import ctypes, os, runpy, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.fsync = os.fdatasync = lambda fd: None; "
    "sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@dataclass
class SwiftServer:
    """Swift's four servers on 127.0.0.1; ``endpoint`` is its S3 API."""

    state: Path
    access_key: str  # "account:user", as tempauth names S3 users
    secret: str
    endpoint: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        bindir = ensure_installed()
        last: SwiftUnavailable | None = None
        for _ in range(3):  # a port taken meanwhile by another process: new ports
            try:
                self._start_once(bindir)
                return
            except SwiftUnavailable as exc:
                last = exc
                self.stop()
        assert last is not None
        raise last

    def _start_once(self, bindir: Path) -> None:
        proxy_port, object_port, container_port, account_port = _free_ports(4)
        etc, srv, log = self.state / "etc", self.state / "srv", self.state / "log"
        shutil.rmtree(self.state, ignore_errors=True)
        for folder in (etc, srv / "d1", log):
            folder.mkdir(parents=True)
        (etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = velocity\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )
        backends = {"object": object_port, "container": container_port, "account": account_port}
        for kind, port in backends.items():
            extra = _OBJECT_EXTRA if kind == "object" else ""
            (etc / f"{kind}-server.conf").write_text(
                _SERVER_CONF.format(etc=etc, srv=srv, port=port, kind=kind, extra=extra)
            )
        account, user = self.access_key.split(":")
        (etc / "proxy-server.conf").write_text(
            _PROXY_CONF.format(
                etc=etc, port=proxy_port, account=account, user=user, secret=self.secret
            )
        )
        (etc / "velocity_swift_cache.py").write_text(_CACHE_MODULE)
        env = dict(os.environ, **_QUIET)
        env["PYTHONPATH"] = str(etc)  # the cache module
        rings = subprocess.run(
            [
                str(bindir / "python"),
                "-c",
                _RINGS,
                str(etc),
                *(f"{k}:{p}" for k, p in backends.items()),
            ],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if rings.returncode != 0:
            raise SwiftUnavailable(f"cannot build Swift's rings: {rings.stderr.strip()}")
        for kind in ("account", "container", "object", "proxy"):
            with (log / f"{kind}.log").open("wb") as out:
                self._procs.append(
                    subprocess.Popen(
                        [
                            str(bindir / "python"),
                            "-c",
                            _RUN_SERVER,
                            str(bindir / f"swift-{kind}-server"),
                            str(etc / f"{kind}-server.conf"),
                            "-v",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
        self.endpoint = f"http://127.0.0.1:{proxy_port}"
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [proxy_port, object_port, container_port, account_port]
        while waiting:
            for proc, kind in zip(
                self._procs, ("account", "container", "object", "proxy"), strict=True
            ):
                if proc.poll() is not None:
                    raise SwiftUnavailable(
                        f"Swift's {kind} server exited {proc.returncode} at start:\n"
                        + _tail(log / f"{kind}.log")
                    )
            try:
                socket.create_connection(("127.0.0.1", waiting[-1]), 0.5).close()
                waiting.pop()
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SwiftUnavailable(
                    f"Swift did not answer within {START_TIMEOUT:.0f} s; see {log}"
                )
            time.sleep(0.1)
        health = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        try:
            health.request("GET", "/healthcheck")
            status = health.getresponse().status
        except OSError as exc:
            raise SwiftUnavailable(f"Swift's healthcheck did not answer: {exc}") from exc
        finally:
            health.close()
        if status != 200:
            raise SwiftUnavailable(f"Swift's healthcheck answered {status}")

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
