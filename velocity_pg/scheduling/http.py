"""The status page's HTTP server (``velocity-pg serve``, and ``schedule`` with
``BACKUP_HTTP_ADDR``): read-only, bounded, and never in a backup's way.

* ``GET /`` the page, ``GET /metrics`` the Prometheus exposition, ``GET /healthz`` 200
  or 503 with the reason; ``HEAD`` of each; any other method 405, any other path 404.
* Each connection is served in its own daemon thread, at the lowest CPU priority
  (:data:`THREAD_NICE`: below pg_dump's ``BACKUP_NICE``) (:class:`ThreadingHTTPServer`), at
  most :data:`MAX_CLIENTS` at once (beyond: 503 at once, the connection closed); a
  client has :data:`CLIENT_TIMEOUT` seconds per read or write (a slow client is cut
  off, never waited for); a request line longer than :data:`MAX_REQUEST_LINE` gets 414.
* What a response says is computed from files (the page's callables), at most once
  every :data:`CACHE_SECONDS` (:func:`cached`: many clients cost one page, not one each);
  no lock a backup needs is held. An error while computing it is a 500 with one line,
  never the server's end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from velocity_pg.errors import ConfigError

#: Connections served at once; more are answered 503 and closed.
MAX_CLIENTS = 64
#: Seconds a client has for each read and write.
CLIENT_TIMEOUT = 10.0
#: The longest request line (method, path, version) taken.
MAX_REQUEST_LINE = 4096
#: How long an answer is reused (see :func:`cached`).
CACHE_SECONDS = 2.0
#: What the page may load: nothing from anywhere; its styles are inline, it runs no script.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Endpoints:
    """What the server answers with, each computed per request."""

    page: Callable[[], str]
    metrics: Callable[[], tuple[bytes, str]]  # (body, content type)
    health: Callable[[], tuple[bool, str]]  # (fresh, reason)


T = TypeVar("T")


def cached(compute: Callable[[], T], ttl: float = CACHE_SECONDS) -> Callable[[], T]:
    """``compute`` called at most once every ``ttl`` seconds, by one thread at a time: the
    requests that come meanwhile share its answer. Many clients then cost the machine
    (and a backup running beside them) one page every ``ttl`` seconds, not one each. The
    lock is the server's own: nothing a backup takes."""
    lock = threading.Lock()
    last: list[tuple[float, T]] = []

    def call() -> T:
        with lock:
            now = time.monotonic()
            if last and now - last[0][0] < ttl:
                return last[0][1]
            value = compute()
            last[:] = [(time.monotonic(), value)]
            return value

    return call


def parse_addr(text: str, setting: str = "BACKUP_HTTP_ADDR") -> tuple[str, int]:
    """``host:port`` (``[::1]:8070`` for IPv6, ``:8070`` for every address) as (host, port);
    ConfigError (exit 2) when it is not one."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(
            f"{setting}={text!r} is not host:port (e.g. 127.0.0.1:8070 or 0.0.0.0:8070)"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{setting}={text!r}: the port must be between 1 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if any(c.isspace() or c in "/@?#" for c in host):
        raise ConfigError(f"{setting}={text!r}: {host!r} is not a host name or address")
    return host or "0.0.0.0", port  # noqa: S104 - ":8070" means every address, as said


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self, addr: tuple[str, int], endpoints: Endpoints, log: Callable[[str], None]
    ) -> None:
        self.endpoints = endpoints
        self.log = log
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\nbusy: too many connections\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        lowest_priority()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away, timed out or sent garbage: not worth a traceback.
        pass


class Handler(BaseHTTPRequestHandler):
    server: Server
    raw_requestline: bytes
    timeout = CLIENT_TIMEOUT
    server_version = "velocity-pg"
    sys_version = ""

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline = ""
            self.request_version = "HTTP/1.0"
            self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are not logged: the scheduler's log is about backups

    def do_GET(self) -> None:
        self.answer(body=True)

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        body = b"read-only: GET or HEAD only\n"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = refuse

    def answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        endpoints = self.server.endpoints
        status = HTTPStatus.OK
        try:
            if path in ("/", "/index.html"):
                data = endpoints.page().encode("utf-8")
                kind = "text/html; charset=utf-8"
            elif path == "/metrics":
                data, kind = endpoints.metrics()
            elif path == "/healthz":
                fresh, reason = endpoints.health()
                status = HTTPStatus.OK if fresh else HTTPStatus.SERVICE_UNAVAILABLE
                data = (("ok: " if fresh else "stale: ") + reason + "\n").encode("utf-8")
                kind = "text/plain; charset=utf-8"
            else:
                status, data, kind = HTTPStatus.NOT_FOUND, b"not found\n", "text/plain"
        except Exception as exc:  # a bug or a surprise: a 500, never the server's end
            self.server.log(f"http: {path}: unexpected {type(exc).__name__}")
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            data = f"error: unexpected {type(exc).__name__}\n".encode()
            kind = "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if body:
            self.wfile.write(data)


#: The niceness of the server's threads: below every backup's (pg_dump runs at
#: BACKUP_NICE, 10 by default), so a page never takes the CPU from a dump.
THREAD_NICE = 19


def lowest_priority() -> None:
    """This thread (only) at :data:`THREAD_NICE` (Linux: a thread's own niceness)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)


def bind(addr: tuple[str, int], endpoints: Endpoints, log: Callable[[str], None]) -> Server:
    """The server bound to ``addr`` (not yet serving); OSError when it cannot be."""
    return Server(addr, endpoints, log)


def start(server: Server) -> threading.Thread:
    """Serve in a daemon thread (it never keeps the process alive)."""

    def serve() -> None:
        lowest_priority()
        server.serve_forever(poll_interval=0.5)

    thread = threading.Thread(
        target=serve,
        name="velocity-pg-http",
        daemon=True,
    )
    thread.start()
    return thread
