"""Dockerfile.db's install steps, run on this machine.

The venv and pip commands are taken from the Dockerfile's RUN instruction itself
and run with the image's paths swapped for temporary ones: a fresh virtual
environment made with Debian's /usr/bin/python3, this repository installed into
it with its dependencies from the same build context the image gets
(.dockerignore's allowlist). The one difference: pip may use its wheel cache
(the Dockerfile says --no-cache-dir), to keep the test fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import Target

REPO = Path(__file__).resolve().parent.parent
VENV = "/opt/velocity-pg"
SRC = "/tmp/velocity-pg-src"
SYSTEM_PYTHON = "/usr/bin/python3"


def run_instructions(dockerfile: str) -> list[str]:
    """The shell text of each RUN instruction (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def install_commands() -> list[list[str]]:
    """The RUN steps that build the venv: `python3 -m venv` and the venv's `pip install`."""
    (run,) = run_instructions((REPO / "Dockerfile.db").read_text())
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    steps: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            steps.append([])
        else:
            steps[-1].append(token)
    wanted = [s for s in steps if s and s[0] in (SYSTEM_PYTHON, f"{VENV}/bin/pip")]
    assert [s[0] for s in wanted] == [SYSTEM_PYTHON, f"{VENV}/bin/pip"], wanted
    assert wanted[0] == [SYSTEM_PYTHON, "-m", "venv", VENV]
    assert wanted[1][1] == "install" and wanted[1][-1].startswith(SRC)
    return wanted


def installed_extras() -> set[str]:
    """The extras of ``pip install /tmp/velocity-pg-src[a,b]`` in the Dockerfile."""
    spec = install_commands()[1][-1]
    match = re.fullmatch(re.escape(SRC) + r"(?:\[([a-z0-9,-]+)\])?", spec)
    assert match, spec
    return set(match.group(1).split(",")) if match.group(1) else set()


def runtime_extras() -> set[str]:
    """pyproject's extras except those for working on velocity-pg itself."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"]) - {"test", "dev"}


def build_context(dest: Path) -> None:
    """Copy what .dockerignore lets into the build context (its "!" lines)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert next(x for x in lines if x and not x.startswith("#")) == "*"
    for line in lines:
        if line.startswith("!"):
            source = REPO / line[1:]
            if source.is_dir():
                shutil.copytree(
                    source, dest / line[1:], ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                (dest / line[1:]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / line[1:])


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("Debian's /usr/bin/python3 is not installed")
    root = tmp_path_factory.mktemp("image")
    venv, src = root / "opt-velocity-pg", root / "velocity-pg-src"
    src.mkdir()
    build_context(src)
    for cmd in install_commands():
        argv = [
            str(venv) + a[len(VENV) :]
            if a.startswith(VENV)
            else str(src) + a[len(SRC) :]
            if a.startswith(SRC)
            else a
            for a in cmd
            if a != "--no-cache-dir"
        ]
        result = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return venv


def test_install_commands_are_the_dockerfile_ones() -> None:
    pip = install_commands()[1]
    assert "--no-deps" not in pip and "-e" not in pip and "--editable" not in pip


def test_the_image_installs_every_runtime_extra() -> None:
    """A new extra in pyproject.toml (say, for off-site copies) must reach the image too."""
    assert installed_extras() == runtime_extras()


def test_the_run_step_handles_alpine_and_debian() -> None:
    """One RUN for both variants: apk or apt-get, Python, venv and age from each."""
    (run,) = run_instructions((REPO / "Dockerfile.db").read_text())
    assert "command -v apk" in run and "command -v apt-get" in run
    assert "apk add --no-cache python3 age;" in run
    assert "apt-get install -y --no-install-recommends python3 python3-venv age;" in run
    assert "exit 1" in run  # neither: the build fails, it does not guess


def test_every_runtime_dependency_installs_on_alpine(tmp_path: Path) -> None:
    """The Alpine variant (musl) cannot be built here: check its Python side instead.

    Every dependency of velocity-pg and its runtime extras must come as a
    musllinux wheel or be pure Python, for Alpine 3.2x's Python 3.12, so that
    the image's `pip install` never needs a compiler. Needs PyPI (as the test
    extra's own install does): without it this fails, it does not skip.
    """
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    build_context(src)
    extras = ",".join(sorted(installed_extras()))
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--platform", "musllinux_1_2_x86_64",
            "--python-version", "3.12", "--dest", str(wheels),
            f"{src}[{extras}]" if extras else str(src),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        "a dependency has no musllinux wheel and is not pure Python (the Alpine image "
        f"would need a compiler):\n{result.stdout}\n{result.stderr}"
    )
    names = sorted(p.name for p in wheels.iterdir())
    assert any(n.startswith("psycopg-") for n in names), names
    for name in names:
        tags = name.removesuffix(".whl").split("-")[-3:]
        assert name.endswith(".whl"), name
        assert tags[2] == "any" or tags[2].startswith("musllinux_"), name


def test_velocity_pg_runs_from_the_fresh_venv(image_venv: Path) -> None:
    result = subprocess.run(
        [str(image_venv / "bin" / "velocity-pg"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("velocity-pg, version ")
    assert (image_venv / "bin" / "python").resolve().parent == Path("/usr/bin")


def test_dependencies_come_with_it_and_psycopg_finds_a_libpq(image_venv: Path) -> None:
    """Like the image: psycopg finds a libpq (its binary driver's, else the system one)."""
    result = subprocess.run(
        [
            str(image_venv / "bin" / "python"),
            "-c",
            "import json, click, dotenv, psycopg; "
            "print(json.dumps([psycopg.pq.__impl__, psycopg.pq.version()]))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    impl, libpq = json.loads(result.stdout)
    assert impl == ("binary" if "binary" in installed_extras() else "python")
    assert libpq > 0


def test_backup_from_the_fresh_venv(image_venv: Path, target: Target) -> None:
    """The installed package, not the checkout, dumps a real database."""
    env = target.env()
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(image_venv / "bin" / "velocity-pg"), "backup", "--json"],
        env=env,
        cwd=target.workdir,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    name = json.loads(result.stdout)["name"]
    assert (target.backup_dir / name).stat().st_size > 0
    assert sorted(os.listdir(target.backup_dir)) == [name, name + ".json", name + ".roles.sql"]


def test_install_prints_no_deprecation_warning(image_venv: Path, tmp_path: Path) -> None:
    """The build setuptools runs for every install: no dated warning (the license is an
    SPDX expression with its file), and the wheel carries the license."""
    import zipfile

    src = image_venv.parent / "velocity-pg-src"
    result = subprocess.run(
        [
            str(image_venv / "bin" / "pip"),
            "wheel",
            "--no-deps",
            "-v",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Running command" in output  # pip -v shows what the build backend printed
    assert "Deprecat" not in output, output
    (wheel,) = tmp_path.glob("velocity_pg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: MIT" in archive.read(metadata).decode()
        assert any(n.endswith("licenses/LICENSE") for n in names)
