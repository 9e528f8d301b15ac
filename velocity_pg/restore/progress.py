"""An archive's table of contents and pg_restore's progress through it (pure).

``pg_restore --list`` prints a header of ``;`` comment lines and one line per
entry (``3358; 0 16389 TABLE DATA public customers postgres``). With
``--verbose`` pg_restore reports each entry as it goes:

* one job: ``creating TABLE "public.customers"``, ``processing data for table
  "public.customers"``, ``executing SEQUENCE SET ...``, ``processing BLOBS``;
* ``--jobs N``: ``processing item 216 TABLE customers`` for the first, serial
  part, then ``finished item 3358 TABLE DATA customers`` for the parallel part.

Counting those against the entries of ``--list`` gives "objects done of total".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ENTRY_RE = re.compile(r"\A(\d+);\s")
_ITEM_RE = re.compile(r"\Apg_restore: (?:processing|finished) item (\d+) ")
_STEP_RE = re.compile(
    r"\Apg_restore: (?:creating |executing |processing data for |processing BLOBS"
    r"|processing LARGE OBJECTS)"
)


@dataclass(frozen=True)
class Toc:
    """What ``pg_restore --list`` says about an archive."""

    entry_ids: frozenset[int]
    header: dict[str, str]

    @property
    def entries(self) -> int:
        return len(self.entry_ids)

    @property
    def dbname(self) -> str | None:
        return self.header.get("dbname")

    @property
    def format(self) -> str | None:
        return self.header.get("Format")

    @property
    def dumped_from(self) -> str | None:
        return self.header.get("Dumped from database version")

    @property
    def created_at(self) -> str | None:
        return self.header.get("Archive created at")


def parse_toc(text: str) -> Toc:
    """Parse ``pg_restore --list`` output."""
    ids: set[int] = set()
    header: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(";"):
            body = line[1:].strip()
            if body.startswith("Archive created at "):
                header["Archive created at"] = body.removeprefix("Archive created at ").strip()
            elif ":" in body:
                key, _, value = body.partition(":")
                header.setdefault(key.strip(), value.strip())
            continue
        match = _ENTRY_RE.match(line)
        if match:
            ids.add(int(match.group(1)))
    return Toc(entry_ids=frozenset(ids), header=header)


@dataclass
class RestoreProgress:
    """Objects done of ``total``, fed pg_restore's ``--verbose`` lines one by one."""

    total: int
    entry_ids: frozenset[int] = frozenset()
    _items: set[int] = field(default_factory=set)
    _steps: int = 0
    _finished: bool = False

    def feed(self, line: str) -> bool:
        """Take one stderr line; True if the count of objects done changed."""
        before = self.done
        match = _ITEM_RE.match(line)
        if match:
            item = int(match.group(1))
            if not self.entry_ids or item in self.entry_ids:
                self._items.add(item)
        elif _STEP_RE.match(line):
            self._steps += 1
        return self.done != before

    @property
    def done(self) -> int:
        if self._finished:
            return self.total
        # A parallel restore names its items; then the plain step lines repeat them.
        count = len(self._items) if self._items else self._steps
        return min(count, self.total)

    def finish(self) -> None:
        """pg_restore succeeded: every object is done."""
        self._finished = True

    def describe(self) -> str:
        if self.total <= 0:
            return f"{self.done} objects"
        percent = 100 * self.done // self.total
        return f"{self.done}/{self.total} objects ({percent}%)"
