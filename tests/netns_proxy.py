"""A server that goes silent on demand: run under ``unshare -rn`` (tests/test_dead_server.py).

In its own network namespace (a user namespace makes that possible without root) it
brings the loopback interface up, listens on 127.0.0.1 (the port is its first line of
output) and forwards each connection to the PostgreSQL Unix socket given as its
argument (a path works across network namespaces). Programs started in the namespace
(``nsenter -t PID -U -n --preserve-credentials ...``) reach the server through it, over
TCP.

Each line on stdin is a command, answered ``ok``:

* ``down``: the loopback interface goes down. Every packet on it is lost, in both
  directions, and nothing is closed or answered: to a client, the server is gone without
  a word, as when its host or container disappears.
* ``up``: it comes back; the connections that survived the silence carry on.

The proxy's end of each connection stands in for the server's: it probes its client as
the server probes velocity-pg's sessions (``tcp_keepalives_*``, here 1 s, 1 s, 3), and
when the client is gone it closes the connection to the server, whose session then ends
with the locks it held, as it would over the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import sys
import threading

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def set_loopback(up: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags))


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def serve(listener: socket.socket, upstream: str) -> None:
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.connect(upstream)
        except OSError:
            client.close()
            server.close()
            continue
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def main() -> None:
    upstream = sys.argv[1]
    set_loopback(True)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    threading.Thread(target=serve, args=(listener, upstream), daemon=True).start()
    for line in sys.stdin:
        set_loopback(line.strip() != "down")
        print("ok", flush=True)


if __name__ == "__main__":
    main()
