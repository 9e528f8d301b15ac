"""``velocity-pg report --html FILE``: the status page as one self-contained file.

The same page as ``velocity-pg serve``'s ``/`` (charts inlined as SVG, no script, no
link to anything), written to a temporary file beside FILE, fsynced and renamed over
it, mode 0600: FILE is the old one or the whole new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity_pg.errors import OperationFailed
from velocity_pg.settings import Settings


@dataclass(frozen=True)
class Written:
    path: Path
    size: int

    def lines(self) -> list[str]:
        return [f"Wrote the status page to {self.path} ({self.size} bytes)."]

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size}


def write_file(path: Path, data: bytes) -> None:
    """``data`` as ``path``: temporary file beside it, fsync, rename, mode 0600."""
    folder = path.parent if str(path.parent) else Path()
    temp = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def run(settings: Settings, path: Path) -> Written:
    from velocity_pg.verbs import serve

    serve.check(settings)
    data = serve.render_page(settings).encode("utf-8")
    try:
        write_file(path, data)
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror or exc}") from None
    return Written(path, len(data))
