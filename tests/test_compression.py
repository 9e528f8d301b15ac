"""BACKUP_COMPRESSION: parsing and pg_dump's argv per version (pure), then real backups with
every method the local pg_dump can write (zstd and lz4 need pg_dump 16+: skipped on 15, where
their refusal is tested instead), each verified, drilled and restored.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import Target, load_varied_schema, table_contents

from velocity_pg.errors import ConfigError
from velocity_pg.postgres import compression, pgtools
from velocity_pg.postgres.compression import Compression
from velocity_pg.settings import settings_from_values
from velocity_pg.store import manifest

TEMP = Path("/b/.velocity-tmp-1.partial")

# -- parsing (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "method", "level", "spec"),
    [
        ("gzip:9", "gzip", 9, "gzip:9"),
        ("gzip:1", "gzip", 1, "gzip:1"),
        ("gzip:0", "none", 0, "none"),
        ("9", "gzip", 9, "gzip:9"),  # pg_dump's old -Z N
        ("5", "gzip", 5, "gzip:5"),
        ("0", "none", 0, "none"),
        ("none", "none", 0, "none"),
        ("zstd:1", "zstd", 1, "zstd:1"),
        ("zstd:3", "zstd", 3, "zstd:3"),
        ("zstd:22", "zstd", 22, "zstd:22"),
        ("lz4:1", "lz4", 1, "lz4:1"),
        ("lz4:12", "lz4", 12, "lz4:12"),
        ("gzip", "gzip", 6, "gzip:6"),  # pg_dump's default level of each method
        ("zstd", "zstd", 3, "zstd:3"),
        ("lz4", "lz4", 1, "lz4:1"),
        (" ZSTD:3 ", "zstd", 3, "zstd:3"),
    ],
)
def test_parse(text: str, method: str, level: int, spec: str) -> None:
    parsed = compression.parse(text)
    assert (parsed.method, parsed.level, parsed.spec) == (method, level, spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gzip:10", "the gzip level must be between 0 and 9"),
        ("10", "the gzip level must be between 0 and 9"),
        ("gzip:-1", "the gzip level must be between 0 and 9"),
        ("zstd:0", "the zstd level must be between 1 and 22"),
        ("zstd:23", "the zstd level must be between 1 and 22"),
        ("zstd:-5", "the zstd level must be between 1 and 22"),
        ("lz4:0", "the lz4 level must be between 1 and 12"),
        ("lz4:13", "the lz4 level must be between 1 and 12"),
        ("none:1", "none takes no level"),
        ("brotli:5", "unknown compression method 'brotli'"),
        ("zstd:level=3", "is not a compression method and level"),
        ("zstd:long", "is not a compression method and level"),
        ("gzip:", "is not a compression method and level"),
        ("", "is not a compression method and level"),
        ("gzip:9;rm -rf /", "is not a compression method and level"),
        ("gzip:1.5", "is not a compression method and level"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="BACKUP_COMPRESSION=") as info:
        compression.parse(text)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_setting_default_and_value() -> None:
    assert settings_from_values({}).compression == Compression("gzip", 9)
    assert settings_from_values({"BACKUP_COMPRESSION": "zstd:3"}).compression == Compression(
        "zstd", 3
    )
    with pytest.raises(ConfigError, match="BACKUP_COMPRESSION='zstd:99'"):
        settings_from_values({"BACKUP_COMPRESSION": "zstd:99"})


# -- pg_dump's argv per version (pure) -------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "major", "line"),
    [
        ("gzip:9", 15, "--compress=9"),  # pg_dump 15 knows only -Z N
        ("gzip:1", 15, "--compress=1"),
        ("none", 15, "--compress=0"),
        ("gzip:9", 16, "--compress=gzip:9"),
        ("gzip:9", 17, "--compress=gzip:9"),
        ("none", 17, "--compress=none"),
        ("zstd:3", 16, "--compress=zstd:3"),
        ("zstd:19", 17, "--compress=zstd:19"),
        ("lz4:12", 17, "--compress=lz4:12"),
        ("gzip:0", 17, "--compress=none"),  # pg_dump 16+ refuses gzip:0 itself
    ],
)
def test_pg_dump_cmd_per_version(spec: str, major: int, line: str) -> None:
    cmd = pgtools.pg_dump_cmd(
        "pg_dump", TEMP, compression=compression.parse(spec), pg_dump_major=major
    )
    assert cmd == shlex.split(
        f"pg_dump --format=custom {line} --no-password --lock-wait-timeout=60s --file={TEMP}"
    )


@pytest.mark.parametrize("spec", ["zstd:3", "lz4:1"])
def test_pg_dump_15_cannot_write_zstd_or_lz4(spec: str) -> None:
    wanted = compression.parse(spec)
    with pytest.raises(ConfigError, match="needs pg_dump 16 or newer"):
        pgtools.pg_dump_cmd("pg_dump", TEMP, compression=wanted, pg_dump_major=15)
    problem = compression.dump_problem(wanted, 15, "15.18")
    assert problem == (
        f"BACKUP_COMPRESSION={spec} needs pg_dump 16 or newer; this pg_dump is 15.18: use "
        "gzip:N (e.g. gzip:9) or run velocity-pg with PostgreSQL 16+ client programs "
        "(set PG_BINDIR)"
    )
    assert compression.dump_problem(wanted, 16, "16.4") is None
    assert compression.dump_problem(compression.parse("gzip:9"), 15, "15.18") is None


def test_restore_problem() -> None:
    assert compression.restore_problem("zstd", 15, "15.18") == (
        "it is compressed with zstd, which needs pg_restore 16 or newer; this pg_restore is "
        "15.18 (set PG_BINDIR to PostgreSQL 16+ client programs, or run velocity-pg in the db "
        "container)"
    )
    assert compression.restore_problem("lz4", 17, "17.2") is None
    assert compression.restore_problem("gzip", 15, "15.18") is None
    assert compression.restore_problem(None, 15, "15.18") is None  # old manifests: gzip:9
    assert compression.restore_problem("brotli", 15, "15.18") is None  # pg_restore will say


# -- real backups ------------------------------------------------------------------------


def local_pg_dump() -> pgtools.Program:
    """The pg_dump the tests' velocity-pg uses (the test server is the newest installed)."""
    return pgtools.find_program("pg_dump")


def pg_dump_15() -> pgtools.Program | None:
    """A pg_dump older than 16, if this machine has one (Debian: /usr/lib/postgresql/15)."""
    for major in (15, 14, 13):
        path = Path(pgtools.DEBIAN_BINDIR.format(major=major)) / "pg_dump"
        if path.is_file():
            return pgtools.describe_program(path)
    found = shutil.which("pg_dump")
    if found:
        program = pgtools.describe_program(Path(found))
        if program.major < compression.METHOD_SYNTAX_MAJOR:
            return program
    return None


METHODS = [
    pytest.param(spec, id=spec)
    for spec in (None, "gzip:1", "5", "none", "zstd:3", "zstd:19", "lz4:1", "lz4:12")
]


@pytest.mark.parametrize("spec", METHODS)
def test_backup_verify_drill_restore_with_each_method(target: Target, spec: str | None) -> None:
    wanted = compression.DEFAULT if spec is None else compression.parse(spec)
    program = local_pg_dump()
    if program.major < wanted.needs_major:
        pytest.skip(f"{wanted.spec} needs pg_dump {wanted.needs_major}+, here {program.version}")
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(
            "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS t "
            "FROM generate_series(1, 3000) g"
        )
        expected = table_contents(conn)
    args = ["backup", "--json"] if spec is None else ["backup", "--compression", spec, "--json"]
    result = target.run(*args)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["compression"] == wanted.spec
    path = Path(made["path"])
    record = manifest.read(path)
    assert record is not None
    assert (record.compression_method, record.compression_level) == (wanted.method, wanted.level)
    assert record.compression == wanted.spec
    listed = json.loads(target.run("list", "--json").stdout)["backups"]
    assert [b["compression"] for b in listed] == [wanted.spec]
    # The archive's header says what pg_dump really did.
    header = pgtools.capture(
        pgtools.pg_restore_list_cmd(pgtools.find_program("pg_restore").path, path)
    )
    compression_line = next(ln for ln in header.splitlines() if "Compression:" in ln)
    if program.major >= compression.METHOD_SYNTAX_MAJOR:
        assert compression_line.split(":", 1)[1].strip() == wanted.method
    else:
        assert compression_line.split(":", 1)[1].strip() == str(wanted.level)

    verified = target.run("verify", "--restore", path.name)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with target.connect() as conn:
        conn.execute("DELETE FROM filler")
    restored = target.run("restore", path.name, "--yes")
    assert restored.returncode == 0, restored.stderr
    with target.connect() as conn:
        assert table_contents(conn) == expected


def test_sizes_follow_the_method(target: Target) -> None:
    """none is far bigger than gzip:9 on compressible data: the setting really reaches pg_dump."""
    with target.connect() as conn:
        conn.execute(
            "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS t "
            "FROM generate_series(1, 5000) g"
        )
    sizes = {}
    for spec in ("none", "gzip:9"):
        result = target.run("backup", "--json", env=target.env(BACKUP_COMPRESSION=spec))
        assert result.returncode == 0, result.stderr
        sizes[spec] = json.loads(result.stdout)["size_bytes"]
    assert sizes["none"] > 5 * sizes["gzip:9"]


@pytest.mark.parametrize("spec", ["zstd:3", "lz4:1"])
def test_old_pg_dump_refuses_zstd_and_lz4_before_anything_runs(target: Target, spec: str) -> None:
    old = pg_dump_15()
    if old is None:
        pytest.skip("no pg_dump older than 16 on this machine")
    server = local_pg_dump()
    if server.major > old.major:
        pytest.skip(f"pg_dump {old.version} cannot dump the PostgreSQL {server.major} test server")
    env = target.env(PG_BINDIR=str(old.path.parent))
    for result in (
        target.run("backup", "--compression", spec, env=env),
        target.run(
            "backup", env=target.env(PG_BINDIR=str(old.path.parent), BACKUP_COMPRESSION=spec)
        ),
    ):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr == (
            f"velocity-pg: error: BACKUP_COMPRESSION={spec} needs pg_dump 16 or newer; "
            f"this pg_dump is {old.version}: use gzip:N (e.g. gzip:9) or run velocity-pg with "
            "PostgreSQL 16+ client programs (set PG_BINDIR)\n"
        )
        assert list(target.backup_dir.iterdir()) == []  # no file, not even a temporary one


def test_bad_compression_is_a_usage_error(target: Target) -> None:
    result = target.run("backup", "--compression", "zstd:99")
    assert result.returncode == 2
    assert "the zstd level must be between 1 and 22" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = target.run("backup", env=target.env(BACKUP_COMPRESSION="gzip:10"))
    assert result.returncode == 2
    assert list(target.backup_dir.iterdir()) == []


def test_old_pg_restore_refuses_a_zstd_backup_with_the_reason(target: Target) -> None:
    """A zstd backup made elsewhere (pg_dump 17) meets pg_restore 15: verify and restore say
    why, instead of pg_restore's "unsupported version" line."""
    reader = pgtools.find_program("pg_restore")
    if reader.major >= compression.FIRST_MAJOR["zstd"]:
        pytest.skip(f"pg_restore {reader.version} reads zstd")
    load_varied_schema(target)
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    path = Path(json.loads(result.stdout)["path"])
    record = manifest.read(path)
    assert record is not None
    # What the manifest of a pg_dump 17 zstd backup says (the checksum still matches).
    doctored = manifest.dumps(record).replace(b'"gzip"', b'"zstd"').replace(b": 9,", b": 3,")
    manifest.path_for(path).write_bytes(doctored)
    verified = target.run("verify", path.name)
    assert verified.returncode == 1
    assert "compressed with zstd, which needs pg_restore 16 or newer" in verified.stdout
    restored = target.run("restore", path.name, "--yes")
    assert restored.returncode == 1
    assert restored.stderr.strip().endswith("nothing was changed")
    assert "needs pg_restore 16 or newer" in restored.stderr
