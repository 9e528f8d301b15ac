"""Plain-text output helpers shared by the verbs (tables, JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """Columns padded to their widest cell; indexes in ``right`` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(payload: object) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False)


def describe_verification(record: object) -> str:
    """A backup's verification state in a few words, from its manifest (or lack of one)."""
    from velocity_pg.store.manifest import Manifest

    if isinstance(record, str):
        return "manifest unreadable"
    if not isinstance(record, Manifest):
        return "no manifest"
    return describe_check(record.last_verification)


def describe_check(check: object) -> str:
    """A verification (``manifest.Verification`` or None) in a few words."""
    from velocity_pg.store.manifest import Verification

    if not isinstance(check, Verification):
        return "not yet"
    verdict = "ok" if check.ok else "FAILED"
    return f"{verdict} ({check.method}, {check.at[:16].replace('T', ' ')})"
