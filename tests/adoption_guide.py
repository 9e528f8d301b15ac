"""The guide "Adopting velocity-pg in an existing Django Velocity project", applied.

The guide is read from its page, docs/adoption.md, not restated here: its diffs and its
`just` block are applied as they are printed, and each instruction given in words is
carried out only if its sentence is still in the step (``require``): change the guide
and the tests that follow it (tests/test_adoption_guide.py, tests/test_template_e2e.py)
follow the change, or fail where the new words no longer say what this file does.

``adopt(project)`` applies steps 1 to 4 to a copy of the template's files in
``project`` (tests/template/: the template's docker-compose.yml,
docker-compose.production.yml, .env.example and justfile); step 5 is bringing the
project up, left to the caller.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "template"
GUIDE = REPO / "docs" / "adoption.md"
TITLE = "# Adopting velocity-pg in an existing Django Velocity project"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.production.yml")


class GuideError(AssertionError):
    """The guide, applied literally, does not fit the template's files."""


@dataclass
class Step:
    number: int
    text: str
    #: (language, code) of each fenced block, dedented to the fence's indentation.
    blocks: list[tuple[str, str]] = field(default_factory=list)

    def require(self, sentence: str) -> None:
        """The instruction this code carries out is still the step's (whitespace aside)."""
        if " ".join(sentence.split()) not in " ".join(self.text.split()):
            raise GuideError(f"step {self.number} no longer says: {sentence!r}")

    def code(self, language: str) -> list[str]:
        return [code for lang, code in self.blocks if lang == language]


def guide_section(page: str) -> str:
    """The guide: from its title to the next heading of its level, else the page's end."""
    start = page.index(TITLE + "\n")
    end = page.find("\n# ", start + len(TITLE))
    return page[start : end if end != -1 else len(page)]


def guide_steps(page: str | None = None) -> list[Step]:
    """The numbered steps of the guide, each with its text and its code blocks."""
    if page is None:
        page = GUIDE.read_text(encoding="utf-8")
    steps: list[Step] = []
    fence: tuple[str, str, list[str]] | None = None  # (indent, language, lines)
    for line in guide_section(page).splitlines():
        if fence is not None:
            indent, language, lines = fence
            if line.strip() == "```":
                steps[-1].blocks.append((language, "\n".join(lines) + "\n"))
                fence = None
            else:
                if line.strip() and not line.startswith(indent):
                    raise GuideError(f"a line of a code block is not indented: {line!r}")
                lines.append(line[len(indent) :])
            steps[-1].text += line + "\n"
            continue
        numbered = re.match(r"(\d+)\. ", line)
        if numbered:
            steps.append(Step(number=int(numbered.group(1)), text=""))
        opening = re.match(r"( *)```(\w*)\s*$", line)
        if opening and steps:
            fence = (opening.group(1), opening.group(2), [])
        if steps:
            steps[-1].text += line + "\n"
    if [s.number for s in steps] != list(range(1, len(steps) + 1)):
        raise GuideError(f"the guide's steps are not numbered 1..n: {[s.number for s in steps]}")
    return steps


# -- text surgery -----------------------------------------------------------------------


def apply_diff(text: str, diff: str, where: str) -> str:
    """Apply a diff of context (' '), removed ('-') and added ('+') lines: the old
    lines must stand together exactly once in ``text``."""
    old: list[str] = []
    new: list[str] = []
    for line in diff.splitlines():
        mark, body = (line[:1] or " "), line[1:]
        if mark not in " -+":
            raise GuideError(f"not a diff line: {line!r}")
        if mark in " -":
            old.append(body)
        if mark in " +":
            new.append(body)
    lines = text.splitlines()
    found = [i for i in range(len(lines) - len(old) + 1) if lines[i : i + len(old)] == old]
    if len(found) != 1:
        shown = "\n".join(old)
        raise GuideError(f"{where}: the diff's old lines are found {len(found)} times:\n{shown}")
    i = found[0]
    lines[i : i + len(old)] = new
    return "\n".join(lines) + "\n"


def yaml_block(text: str, key: str, indent: int = 0, comments: bool = False) -> str:
    """The lines of mapping key ``key`` at ``indent`` (the key's line and all below it);
    with ``comments``, the comment lines right above it too."""
    lines = text.splitlines()
    pad = " " * indent
    starts = [i for i, ln in enumerate(lines) if re.match(rf"{pad}{re.escape(key)}:(\s|$)", ln)]
    if len(starts) != 1:
        raise GuideError(f"{key!r} at indent {indent}: found {len(starts)} times")
    first = end = starts[0]
    if comments:
        while first > 0 and lines[first - 1].startswith(pad + "#"):
            first -= 1
    end += 1
    while end < len(lines):
        ln = lines[end]
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    return "\n".join(lines[first:end]) + "\n"


def insert_before_line(text: str, line: str, block: str, where: str) -> str:
    lines = text.splitlines(keepends=True)
    at = [i for i, ln in enumerate(lines) if ln.rstrip("\n") == line]
    if len(at) != 1:
        raise GuideError(f"{where}: {line!r} found {len(at)} times")
    lines.insert(at[0], block + "\n")
    return "".join(lines)


def add_service(text: str, block: str, where: str) -> str:
    """Append a service at the end of the top-level ``services:`` mapping."""
    lines = text.splitlines(keepends=True)
    start = lines.index("services:\n")
    end = start + 1
    while end < len(lines) and not re.match(r"[^\s#]", lines[end]):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    lines.insert(end, "\n" + block)
    return "".join(lines)


@dataclass
class Recipe:
    name: str
    #: first and last+1 line of the recipe (its comments and attributes included).
    start: int
    end: int
    lines: list[str]


RECIPE = re.compile(r"@?([A-Za-z_][\w-]*)(?:\s+[^:=]*)?:(?!=)")


def recipes(text: str) -> dict[str, Recipe]:
    """The recipes of a justfile, each with the comment and attribute lines above it."""
    lines = text.splitlines()
    found: dict[str, Recipe] = {}
    for i, line in enumerate(lines):
        match = RECIPE.match(line)
        if not match or line.startswith(("set ", "export ")):
            continue
        start = i
        while start > 0 and lines[start - 1].startswith(("#", "[")):
            start -= 1
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):
            end += 1
        while lines[end - 1].strip() == "":
            end -= 1
        found[match.group(1)] = Recipe(match.group(1), start, end, lines[start:end])
    return found


def replace_recipe(text: str, name: str, new: list[str], where: str) -> str:
    old = recipes(text).get(name)
    if old is None:
        raise GuideError(f"{where}: no recipe {name!r} to replace")
    lines = text.splitlines()
    lines[old.start : old.end] = new
    return "\n".join(lines) + "\n"


def insert_after_recipe(text: str, name: str, new: list[str]) -> str:
    after = recipes(text)[name]
    lines = text.splitlines()
    lines[after.end : after.end] = ["", *new]
    return "\n".join(lines) + "\n"


def with_attribute(recipe: list[str], attribute: str) -> list[str]:
    """The recipe with ``attribute`` on its own line right above its header."""
    header = next(i for i, ln in enumerate(recipe) if RECIPE.match(ln))
    return [*recipe[:header], attribute, *recipe[header:]]


def variable_line(justfile: str, name: str) -> str:
    found = re.findall(rf"^{re.escape(name)} := .*$", justfile, flags=re.M)
    if len(found) != 1:
        raise GuideError(f"velocity-pg/justfile: variable {name!r} found {len(found)} times")
    return str(found[0])


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# -- the steps ----------------------------------------------------------------------------


def copy_template(project: Path) -> None:
    """The template's own files, as tests/template/ keeps them (and .env from .env.example,
    as the template's README has users do)."""
    project.mkdir(parents=True, exist_ok=True)
    for name in (*COMPOSE_FILES, ".env.example", "justfile"):
        shutil.copyfile(TEMPLATE / name, project / name)
    shutil.copyfile(TEMPLATE / ".env.example", project / ".env")


def step_1(step: Step, project: Path) -> None:
    step.require("Put velocity-pg beside the project**, in a folder `velocity-pg/` at its root")
    needs = re.search(r"the build needs (.*?)\)", " ".join(step.text.split()))
    if not needs:
        raise GuideError("step 1 no longer says what the build needs")
    names = backticked(needs.group(1))
    # "a copy of this repository": what the build needs, and the two files later steps
    # copy from (velocity-pg/justfile, this repository's docker-compose.yml).
    target = project / "velocity-pg"
    target.mkdir()
    for name in [*names, "justfile", "docker-compose.yml"]:
        source = REPO / name.rstrip("/")
        if source.is_dir():
            shutil.copytree(
                source, target / source.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copyfile(source, target / source.name)


def step_2(step: Step, project: Path) -> None:
    step.require(
        "`docker-compose.yml` and `docker-compose.production.yml`**, the same change in both"
    )
    step.require(
        "copy the `x-backup-settings` block of this repository's `docker-compose.yml` to the "
        "top of each file, before `services:`"
    )
    diffs = step.code("diff")
    if len(diffs) != 2:
        raise GuideError(f"step 2 has {len(diffs)} diff blocks, not 2")
    ours = (project / "velocity-pg" / "docker-compose.yml").read_text()
    settings = yaml_block(ours, "x-backup-settings")
    for name in COMPOSE_FILES:
        path = project / name
        text = path.read_text()
        for diff in diffs:
            text = apply_diff(text, diff, f"step 2, {name}")
        text = insert_before_line(text, "services:", settings, f"step 2, {name}")
        path.write_text(text)


def step_3(step: Step, project: Path, optional: bool = True) -> None:
    step.require("`justfile`: the four recipes** `db-backup`, `db-restore`, `db-backup-list` and")
    step.require(
        "`db-restore` becomes velocity-pg's `db-restore` recipe (from `velocity-pg/justfile`"
    )
    step.require("and a `[positional-arguments]` line above it)")
    blocks = step.code("just")
    if len(blocks) != 1:
        raise GuideError(f"step 3 has {len(blocks)} just blocks, not 1")
    path = project / "justfile"
    text = path.read_text()
    given = recipes(blocks[0])
    if sorted(given) != ["db-backup", "db-backup-cleanup", "db-backup-list"]:
        raise GuideError(f"step 3's just block has the recipes {sorted(given)}")
    for name, recipe in given.items():
        text = replace_recipe(text, name, recipe.lines, f"step 3, {name}")

    ours = (project / "velocity-pg" / "justfile").read_text()
    flat = " ".join(step.text.split())
    uses = re.search(r"with the six variable lines it uses, (.*?), and a `\[positional", flat)
    if not uses:
        raise GuideError("step 3 no longer names the variables db-restore uses")
    variables = [variable_line(ours, name) for name in backticked(uses.group(1))]
    if len(variables) != 6:
        raise GuideError(f"step 3 names {len(variables)} variables, not six")
    theirs = recipes(ours)
    restore = with_attribute(theirs["db-restore"].lines, "[positional-arguments]")
    text = replace_recipe(text, "db-restore", [*variables, "", *restore], "step 3, db-restore")
    if optional:
        step.require(
            "Optional, for what came after the template: `db-restore-undo` (undo the last "
            "restore), `db-backup-verify`, `db-backup-status` and `db-backup-logs`, copied the "
            "same way."
        )
        last = "db-restore"
        for name in ("db-restore-undo", "db-backup-verify", "db-backup-status", "db-backup-logs"):
            text = insert_after_recipe(
                text, last, with_attribute(theirs[name].lines, "[positional-arguments]")
            )
            last = name
    path.write_text(text)


def step_4(step: Step, project: Path) -> None:
    step.require(
        "Add the `db-backup` service of this repository's `docker-compose.yml` (with the "
        "`x-db-image` block, `context: ./velocity-pg`; the `x-backup-settings` block is there "
        "since step 2) to both compose files."
    )
    ours = (project / "velocity-pg" / "docker-compose.yml").read_text()
    image = yaml_block(ours, "x-db-image")
    if image.count("context: .\n") != 1:
        raise GuideError("velocity-pg's x-db-image block has no `context: .` line to change")
    image = image.replace("context: .\n", "context: ./velocity-pg\n")
    service = yaml_block(ours, "db-backup", indent=2, comments=True)
    for name in COMPOSE_FILES:
        path = project / name
        text = insert_before_line(path.read_text(), "services:", image, f"step 4, {name}")
        path.write_text(add_service(text, service, f"step 4, {name}"))


def adopt(project: Path, *, scheduled: bool = True, optional: bool = True) -> list[Step]:
    """Steps 1 to 4 of the guide on the template's files in ``project`` (copied there
    first if missing); returns the steps, step 5 (bring it up) is the caller's."""
    if not (project / "justfile").exists():
        copy_template(project)
    steps = guide_steps()
    if len(steps) != 5:
        raise GuideError(f"the guide has {len(steps)} steps, not 5")
    step_1(steps[0], project)
    step_2(steps[1], project)
    step_3(steps[2], project, optional=optional)
    if scheduled:
        step_4(steps[3], project)
    steps[4].require("docker compose up -d --build --wait")
    return steps
