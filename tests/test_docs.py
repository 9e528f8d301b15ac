"""The documentation holds together (issue 19). Pure: no database, no network.

1. Every relative link in README.md and docs/*.md resolves: to a file or folder of the
   repository, and a ``#anchor`` to a heading of its page (GitHub's slugs).
2. Every setting the code reads is defined exactly once in docs/settings.md, as a table
   row or a definition heading, and settings.md defines no setting the code does not read.

The settings the code reads are found in its source, not restated here: the names in the
registries (``SETTING_NAMES``, ``AWS_VARIABLES``), every string literal under velocity_pg/
that is a whole setting name (``text("BACKUP_SCHEDULE")``, ``os.environ.get("PG_BINDIR")``),
and the retention tiers' names, which the code builds from a prefix (``"BACKUP_"``,
``"BACKUP_S3_"``) and the tiers (``{prefix}KEEP_DAILY`` ...).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from velocity_pg.store.retention import TIERS

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

#: What a setting's name looks like in the code (a literal that is the whole name).
SETTING_NAME = re.compile(
    r"(BACKUP_[A-Z0-9_]*|PG[A-Z_]+|POSTGRES_[A-Z_]+|DATABASE_URL|VELOCITY_PG_[A-Z_]+"
    r"|AWS_[A-Z_]+|TZ)"
)
#: Registries of setting names in the code: every string in them is a setting.
REGISTRIES = ("SETTING_NAMES", "AWS_VARIABLES")
#: Literals of the form above that are not settings, with the reason (none today).
NOT_SETTINGS: dict[str, str] = {}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
NAME_IN_CELL = re.compile(r"`([A-Z][A-Z0-9_]*)`")


# -- markdown, as GitHub reads it ----------------------------------------------------------


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2 ... as on GitHub."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of each inline link outside code."""
    found = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)):
            found.append((number, match.group(1)))
    return found


def test_slugs_follow_githubs_rules() -> None:
    assert slug("The folder, its lock and its users") == "the-folder-its-lock-and-its-users"
    assert slug("`restore`") == "restore"
    assert slug("CI: the suite on PostgreSQL 15 and 17") == "ci-the-suite-on-postgresql-15-and-17"
    assert slug("Off-site tests: two S3 servers") == "off-site-tests-two-s3-servers"
    assert slug("Bucket layout, and getting a backup back without velocity-pg") == (
        "bucket-layout-and-getting-a-backup-back-without-velocity-pg"
    )


def test_the_pages_are_there() -> None:
    names = {page.name for page in DOCS.glob("*.md")}
    for needed in (
        "README.md",
        "adoption.md",
        "restore.md",
        "offsite.md",
        "scheduling.md",
        "notifications.md",
        "retention.md",
        "settings.md",
        "performance.md",
        "development.md",
    ):
        assert needed in names, needed


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where}: no such file")
        elif REPO not in (dest, *dest.parents):
            broken.append(f"{where}: outside the repository")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("index", [REPO / "README.md", DOCS / "README.md"], ids=["README", "docs"])
def test_the_front_page_and_the_index_link_to_every_page(index: Path) -> None:
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for _, target in links(index)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)
    }
    missing = [
        p.name for p in DOCS.glob("*.md") if p.resolve() not in linked and p.resolve() != index
    ]
    assert not missing, f"{index.relative_to(REPO)} does not link to {missing}"


# -- the settings ------------------------------------------------------------------------


def code_settings() -> dict[str, set[str]]:
    """Each setting the code reads, with the modules it appears in."""
    found: dict[str, set[str]] = {}
    prefixes: set[str] = set()
    registries: set[str] = set()
    for path in sorted((REPO / "velocity_pg").rglob("*.py")):
        module = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text(encoding="utf-8"), module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id in REGISTRIES for t in targets):
                    registries.update(t.id for t in targets if isinstance(t, ast.Name))
                    for sub in ast.walk(node.value):
                        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                            found.setdefault(sub.value, set()).add(module)
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if not SETTING_NAME.fullmatch(node.value) or node.value in NOT_SETTINGS:
                continue
            if node.value.endswith("_"):
                prefixes.add(node.value)  # "BACKUP_S3_": the tiers are built from it
            else:
                found.setdefault(node.value, set()).add(module)
    assert registries == set(REGISTRIES), f"registries not found: {set(REGISTRIES) - registries}"
    for prefix in prefixes:
        for tier in TIERS:
            found.setdefault(f"{prefix}KEEP_{tier.value.upper()}", set()).add("(tiers)")
    return found


def settings_page_definitions() -> Counter[str]:
    """How often settings.md defines each name: a row of a table whose first column is
    `variable` (one name a row), or a heading that is just the name."""
    defined: Counter[str] = Counter()
    in_table = False
    for _, line in prose_lines(SETTINGS_PAGE.read_text(encoding="utf-8")):
        if not line.startswith("|"):
            in_table = False
            heading = HEADING.match(line)
            if heading and re.fullmatch(r"`[A-Z][A-Z0-9_]*`", heading.group(2)):
                defined[heading.group(2).strip("`")] += 1
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "variable":
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("-: "):
            continue
        names = NAME_IN_CELL.findall(cells[0])
        assert len(names) == 1, f"settings.md: one setting a row, not {cells[0]!r}"
        defined[names[0]] += 1
    return defined


def test_the_settings_are_found_in_the_code() -> None:
    """The scan finds what the registries and the verbs read (a check of the scan)."""
    found = code_settings()
    for name in (
        "BACKUP_DIR",
        "POSTGRES_DB",
        "AWS_PROFILE",
        "BACKUP_SCHEDULE",
        "BACKUP_NOTIFY_URLS",
        "BACKUP_S3_KEEP_YEARLY",
        "BACKUP_KEEP_DAILY",
        "DATABASE_URL",
        "PG_BINDIR",
        "TZ",
    ):
        assert name in found, name


def test_every_setting_the_code_reads_is_documented_once_in_settings_md() -> None:
    read = code_settings()
    defined = settings_page_definitions()
    missing = sorted(name for name in read if defined[name] == 0)
    twice = sorted(name for name, n in defined.items() if n > 1)
    unknown = sorted(name for name in defined if name not in read)
    assert not missing, "settings the code reads, not in docs/settings.md: " + ", ".join(
        f"{name} ({', '.join(sorted(read[name]))})" for name in missing
    )
    assert not twice, f"defined more than once in docs/settings.md: {twice}"
    assert not unknown, f"docs/settings.md defines settings the code does not read: {unknown}"


def test_no_other_page_has_a_settings_table() -> None:
    """Each setting is defined in one place; the topic pages link to it."""
    for page in PAGES:
        if page == SETTINGS_PAGE:
            continue
        for number, line in prose_lines(page.read_text(encoding="utf-8")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert not (line.startswith("|") and cells[0] == "variable"), (
                f"{page.relative_to(REPO)}:{number}: a settings table outside docs/settings.md"
            )
