"""The verbs: velocity-pg's entry points, one module each.

A verb module holds the verb's orchestration and its result types. It takes the
settings (and the verb's own arguments), calls the machinery below
(``postgres/``, ``store/``, ``restore/``, ``scheduling/``), and returns a result that
renders itself: ``lines()`` for people, ``to_json()`` for scripts. The click layer
(``velocity_pg.cli``) only parses, builds the settings, calls the verb and prints
the result (see :func:`velocity_pg.cli.show`). The machinery never imports a verb.

A verb that reports as it goes (each backup pushed, verified or deleted) is given a
:data:`Say` for those lines (``None`` with ``--json``); its result's ``lines()`` is
then what was not said yet. A verb that can fail after it has done part of its
work returns that part with a :class:`Failure` (its result's ``failure()``), which
the command line prints after the result before it exits 1.

One module per verb: ``backup``, ``list``, ``verify``, ``status``, ``cleanup``,
``push``, ``pull``, ``pin`` (and ``unpin``), ``schedule``, ``notify``, ``entrypoint``
(and ``restore``, whose machinery is :mod:`velocity_pg.restore`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Result(Protocol):
    """What every verb returns: text for people, one JSON object for scripts."""

    def lines(self) -> list[str]:
        """The result for a terminal, one string per line (no trailing newlines)."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object (``--json``)."""
        ...


@dataclass(frozen=True)
class Failure:
    """How a verb that ran to its end failed (exit 1, after its result is printed):
    ``stderr`` is its line for standard error (``None``: none), ``notify`` what
    ``--notify`` says it failed at (``None``: the default reason), ``offsite`` whether
    the part that failed was off-site (``--notify``'s event)."""

    stderr: str | None = None
    notify: str | None = None
    offsite: bool = False

    @classmethod
    def error(cls, message: str, *, offsite: bool = False) -> Failure:
        """An error after the result: ``velocity-pg: error: MESSAGE``."""
        return cls(f"velocity-pg: error: {message}", message, offsite)


#: Where a verb says its lines as it goes (``click.echo`` for people; ``None`` with ``--json``).
Say = Callable[[str], None]
