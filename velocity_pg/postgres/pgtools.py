"""PostgreSQL client programs: argv builders (pure) and the one place that runs them.

Every program gets an argument list (never a shell string), stdin from
/dev/null, ``--no-password`` so it can never hang on a prompt, and the
connection (password included) through its environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from velocity_pg.errors import CommandFailed, ConfigError, OperationFailed
from velocity_pg.postgres.compression import DEFAULT as DEFAULT_COMPRESSION
from velocity_pg.postgres.compression import Compression
from velocity_pg.postgres.compression import pg_dump_option as compression_option

DEBIAN_BINDIR = "/usr/lib/postgresql/{major}/bin"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


# -- argv builders (pure) ------------------------------------------------------


def pg_dump_cmd(
    program: str | Path,
    output: Path,
    *,
    compression: Compression = DEFAULT_COMPRESSION,
    pg_dump_major: int = 15,
    lock_wait_timeout: str | None = "60s",
    conninfo: str | None = None,
) -> list[str]:
    """``pg_dump -Fc`` into ``output``; the database comes from PG* variables.

    ``conninfo``: a connection string for ``--dbname`` (``Endpoint.conninfo``: the
    parameters with no environment variable; never a password, this is argv).
    The compression option is written for ``pg_dump_major`` (pg_dump 15:
    ``--compress=9``; 16 and newer: ``--compress=gzip:9``, ``--compress=zstd:3``).
    """
    cmd = [
        str(program),
        "--format=custom",
        compression_option(compression, pg_dump_major),
        "--no-password",
    ]
    if lock_wait_timeout:
        cmd.append(f"--lock-wait-timeout={lock_wait_timeout}")
    if conninfo is not None:
        cmd.append(f"--dbname={conninfo}")
    cmd.append(f"--file={output}")
    return cmd


def pg_restore_list_cmd(program: str | Path, archive: Path) -> list[str]:
    """``pg_restore --list``: reads an archive's table of contents, touches no database."""
    return [str(program), "--list", str(archive)]


def pg_restore_cmd(
    program: str | Path,
    archive: Path,
    dbname: str,
    *,
    jobs: int = 1,
    verbose: bool = False,
    use_list: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``pg_restore`` of an archive into ``dbname`` (a name, or a connection string from
    ``Endpoint.conninfo``: never a password), stopping at the first error.

    ``use_list``: restore only the entries of this ``--use-list`` file, in its order.
    ``extra``: more options (``--no-owner --role=ROLE`` for ``restore --owner``).
    """
    cmd = [
        str(program),
        "--exit-on-error",
        "--no-password",
        f"--dbname={dbname}",
    ]
    if jobs > 1:
        cmd.append(f"--jobs={jobs}")
    if verbose:
        cmd.append("--verbose")
    if use_list is not None:
        cmd.append(f"--use-list={use_list}")
    cmd.extend(extra)
    cmd.append(str(archive))
    return cmd


def pg_restore_data_cmd(program: str | Path, archive: Path) -> list[str]:
    """``pg_restore --data-only`` as a script on stdout: the table data, uncompressed."""
    return [str(program), "--data-only", "--file=-", str(archive)]


def count_toc_entries(listing: str) -> int:
    """Entries in ``pg_restore --list`` output (comment lines start with ';')."""
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(";"))


def version_cmd(program: str | Path) -> list[str]:
    return [str(program), "--version"]


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) from ``pg_dump (PostgreSQL) 15.18 (Debian ...)``."""
    match = _VERSION_RE.search(text)
    if match is None:
        raise ValueError(f"no PostgreSQL version in {text.strip()!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def server_major(server_version_num: int) -> int:
    """Major version from ``server_version_num`` (150018 -> 15, 90624 -> 9)."""
    return server_version_num // 10000


# -- locating programs -----------------------------------------------------------


@dataclass(frozen=True)
class Program:
    path: Path
    major: int
    version: str


def find_program(name: str, wanted_major: int | None = None) -> Program:
    """Find a client program, preferring the one that matches the server's major.

    Order: ``$PG_BINDIR``; Debian's ``/usr/lib/postgresql/<server major>/bin``;
    the newest ``/usr/lib/postgresql/*/bin``; then ``PATH``.
    """
    candidates: list[Path] = []
    bindir = os.environ.get("PG_BINDIR")
    if bindir:
        candidates.append(Path(bindir) / name)
    else:
        if wanted_major is not None:
            candidates.append(Path(DEBIAN_BINDIR.format(major=wanted_major)) / name)
        root = Path("/usr/lib/postgresql")
        if root.is_dir():
            majors = sorted(
                (p.name for p in root.iterdir() if p.name.isdigit()), key=int, reverse=True
            )
            candidates.extend(root / m / "bin" / name for m in majors)
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return describe_program(path)
    where = f"PG_BINDIR={bindir}" if bindir else "PATH or /usr/lib/postgresql/*/bin"
    raise ConfigError(
        f"{name} not found in {where}; install the PostgreSQL client programs "
        "(Debian: postgresql-client) or run velocity-pg inside the db container"
    )


def describe_program(path: Path) -> Program:
    result = subprocess.run(
        version_cmd(path), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    try:
        major, minor = parse_version(result.stdout)
    except ValueError:
        raise ConfigError(f"cannot tell the version of {path}: {result.stdout.strip()!r}") from None
    return Program(path=path, major=major, version=f"{major}.{minor}")


def check_can_dump(program: Program, server_num: int) -> None:
    """pg_dump refuses to dump a server newer than itself; say so before trying."""
    major = server_major(server_num)
    if program.major < major:
        raise OperationFailed(
            f"{program.path.name} {program.version} cannot dump a PostgreSQL {major} server; "
            f"install the PostgreSQL {major} client programs (or set PG_BINDIR) "
            "or run velocity-pg inside the db container, whose tools match the server"
        )


# -- running them -------------------------------------------------------------------


def child_env(extra: Mapping[str, str | None]) -> dict[str, str]:
    """The environment for a client program: ours with the connection variables.

    A ``None`` value removes the variable (see ``Endpoint.libpq_env``).
    """
    env = dict(os.environ)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("LC_MESSAGES", "C")
    return env


def went_silent(stderr: str) -> bool:
    """The program's connection was given up because the server stopped answering
    (keepalive probes or ``tcp_user_timeout``, see ``endpoint.dead_peer_options``):
    libpq says "Connection timed out" (its messages are in English: LC_MESSAGES=C)."""
    return "Connection timed out" in stderr


def silence_note(seconds: int) -> str:
    """What a connection that timed out means, for a message."""
    return (
        f"the server stopped answering for {seconds} s (BACKUP_TCP_TIMEOUT): it was "
        "stopped, restarted or recreated, or the network to it is down"
    )


class Terminated(BaseException):
    """SIGTERM/SIGHUP arrived; unwinds like Ctrl+C (a BaseException, never caught as a
    failure by ``except Exception``) so cleanup code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_word(exc: BaseException | None = None, signum: int | None = None) -> str:
    """How the user stopped us, for a message: "interrupted" (Ctrl+C, SIGINT),
    "terminated (SIGTERM)", "hung up (SIGHUP)"."""
    if isinstance(exc, Terminated):
        signum = exc.signum
    if signum == signal.SIGTERM:
        return "terminated (SIGTERM)"
    if signum == signal.SIGHUP:
        return "hung up (SIGHUP)"
    return "interrupted"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


_watching_input = False


def stop_at_end_of_input() -> None:
    """From now on, act as on Ctrl+C (SIGINT to this process) when standard input ends.

    For callers that cannot pass a signal on: ``docker compose exec`` does not forward
    one to the command it runs, so the justfile's restore recipes run velocity-pg with
    ``--stop-on-eof`` and its input from a pipe they hold open, and close the pipe to
    stop it; the client then returns velocity-pg's real exit status. A signal that
    arrives this way is handled like any other (shielded sections defer it; past the
    point of no return the run finishes and reports). Never with an input that ends
    at once (``/dev/null``): that stops the run at its start. Once per process."""

    global _watching_input
    if _watching_input:
        return
    _watching_input = True

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:  # no standard input at all: nothing to watch
            return
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="velocity-pg-stop-on-eof", daemon=True).start()


def install_termination_handlers() -> None:
    """Turn SIGTERM and SIGHUP into an exception so ``finally`` blocks clean up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)


def run(
    cmd: Sequence[str],
    env: Mapping[str, str | None],
    *,
    nice: int = 0,
    on_stderr_line: Callable[[str], None] | None = None,
) -> str:
    """Run a client program to completion and return its stderr.

    Raises :class:`CommandFailed` with the program's own reason when it fails
    or is killed. If we are interrupted (Ctrl+C, SIGTERM) the child is stopped
    and waited for before the exception goes on, so no orphan keeps writing.
    """
    log_command(cmd)
    proc = subprocess.Popen(
        list(cmd),
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    if nice:
        with contextlib.suppress(OSError):  # best effort: a busy system still backs up
            current = os.getpriority(os.PRIO_PROCESS, proc.pid)
            os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, current + nice))
    lines: list[str] = []
    watchdog: threading.Timer | None = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if on_stderr_line is not None:
                on_stderr_line(line)
            if watchdog is None and went_silent(line):
                watchdog = threading.Timer(SILENT_EXIT_GRACE, kill_tree, (proc,))
                watchdog.daemon = True
                watchdog.start()
        returncode = proc.wait()
    except BaseException:
        stop(proc)
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
    stderr = "".join(lines)
    if returncode != 0:
        if watchdog is not None and returncode < 0:
            # It had failed already (its connection timed out); we only ended the
            # cancel requests it was still sending to the silent server.
            returncode = 1
        raise CommandFailed(Path(cmd[0]).name, returncode, stderr)
    return stderr


def capture(cmd: Sequence[str], env: Mapping[str, str | None] | None = None) -> str:
    """Run a short client program that prints a report (``pg_restore --list``); its stdout.

    Raises :class:`CommandFailed` with the program's own reason when it fails.
    On Ctrl+C the child is killed before the exception goes on.
    """
    log_command(cmd)
    result = subprocess.run(
        list(cmd),
        env=child_env(env or {}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if result.returncode != 0:
        raise CommandFailed(Path(cmd[0]).name, result.returncode, result.stderr)
    return result.stdout


def count_output(cmd: Sequence[str], env: Mapping[str, str | None] | None = None) -> int:
    """Run a client program and count the bytes it writes to stdout (streamed, not kept).

    Raises :class:`CommandFailed` when it fails; on Ctrl+C the child is stopped first.
    """
    import tempfile

    log_command(cmd)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            list(cmd),
            env=child_env(env or {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        total = 0
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                total += len(chunk)
            returncode = proc.wait()
        except BaseException:
            stop(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if returncode != 0:
        raise CommandFailed(Path(cmd[0]).name, returncode, stderr)
    return total


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Terminate a child and wait for it; kill it (and its own children) if it does not go."""
    if proc.poll() is not None:
        return
    proc.terminate()
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        kill_tree(proc)
        proc.wait()


#: How long a client program may take to exit after its connection timed out.
#: pg_restore's parallel leader and workers send cancel requests on the way out
#: (``PQcancel``), and a cancel request to a server that went silent waits for the
#: kernel's connect timeout (about 2 min 7 s), with no libpq bound on it.
SILENT_EXIT_GRACE = 5.0


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (pg_restore's parallel workers), from /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text("ascii", errors="replace")
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat[stat.rfind(")") + 2 :].split()
            if len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a child and its own children (they hold its stderr open); never raises."""
    if proc.poll() is not None:
        return
    for pid in children_of(proc.pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def log_command(cmd: Sequence[str]) -> None:
    """Show the argv under --debug. It never holds a password (that is in the env)."""
    if os.environ.get("VELOCITY_PG_DEBUG") == "1":
        print("velocity-pg: running " + " ".join(cmd), file=sys.stderr)
