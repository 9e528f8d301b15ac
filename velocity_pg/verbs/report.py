"""``velocity-pg report --html FILE``: the status page as one self-contained file.

The same page as ``velocity-pg serve``'s ``/`` (charts inlined as SVG, no script, no
link to anything), written to a temporary file beside FILE, fsynced and renamed over
it, mode 0600: FILE is the old one or the whole new one, never half of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velocity_pg.errors import OperationFailed
from velocity_pg.settings import Settings
from velocity_pg.store import catalog


@dataclass(frozen=True)
class Written:
    path: Path
    size: int

    def lines(self) -> list[str]:
        return [f"Wrote the status page to {self.path} ({self.size} bytes)."]

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size}


def run(settings: Settings, path: Path) -> Written:
    from velocity_pg.verbs import serve

    serve.check(settings)
    data = serve.render_page(settings).encode("utf-8")
    try:
        catalog.write_whole(path, data)
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror or exc}") from None
    return Written(path, len(data))
