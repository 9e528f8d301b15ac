"""Backup names, listing and safe placement: pure and file-level tests (no database)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from velocity_pg.errors import ConfigError, OperationFailed
from velocity_pg.store import catalog


def test_format_and_parse_round_trip() -> None:
    moment = datetime(2026, 11, 25, 16, 5, 9, 123456, tzinfo=UTC)
    name = catalog.format_name(moment)
    assert name == "velocity_2026-11-25_160509.dump"
    assert catalog.parse_name(name) == moment.replace(microsecond=0)


def test_format_converts_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert catalog.format_name(datetime(2026, 1, 1, 1, 0, 0, tzinfo=paris)) == (
        "velocity_2026-01-01_000000.dump"
    )


def test_format_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        catalog.format_name(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "name",
    [
        "velocity_2026-11-25_160509.dump.partial",
        ".velocity-tmp-123-abc.partial",
        "velocity_2026-11-25_16050.dump",
        "velocity_2026-13-01_000000.dump",  # month 13: the shape, but no date
        "velocity_2026-02-30_000000.dump",
        "velocity_2026-11-25_160509.dump\n",
        "velocity_2026-11-25_160509.sql",
        "_2026-11-25_160509.dump",  # no database
        "velocity2026-11-25_160509.dump",  # no separator
        ".velocity_2026-11-25_160509.dump",  # a hidden file: a leading dot is written %2E
        ".velocity.lock",
        "notes_2026-11-25.txt",
        "velocity_2026-11-25_160509.dump.json.partial",
        "%41pp_2026-11-25_160509.dump",  # "A" needs no escape: not what format_name writes
        "a%2fb_2026-11-25_160509.dump",  # lower-case hex
        "a%2_2026-11-25_160509.dump",  # a cut escape
        "a%_2026-11-25_160509.dump",  # a bare percent sign
        "caf%C3_2026-11-25_160509.dump",  # half a UTF-8 character
        "%FF_2026-11-25_160509.dump",  # not UTF-8 at all
        "a\nb_2026-11-25_160509.dump",  # a raw newline (written %0A)
        "a\x00b_2026-11-25_160509.dump",
        "velocity_2026-11-25_160509.dump.json",
        "velocity_2026-11-25_16050\u0669.dump",  # a non-ASCII digit
        "velocity_2026-11-25_240000.dump",  # hour 24
        "",
    ],
)
def test_not_backup_names(name: str) -> None:
    assert catalog.parse_name(name) is None
    assert not catalog.is_backup_name(name)


@pytest.mark.parametrize(
    ("database", "part"),
    [
        ("velocity", "velocity"),
        ("my_app", "my_app"),  # "_" is legal in a database name
        ("my_app_2026-01-01_000000", "my_app_2026-01-01_000000"),  # even a timestamp
        ("Velocity", "Velocity"),
        ("with space", "with space"),
        ("a.b", "a.b"),
        ("trailing.", "trailing."),
        ("-dash", "-dash"),
        ("café 日本", "café 日本"),
        ("a/b", "a%2Fb"),
        ("50%", "50%25"),
        ("%41", "%2541"),
        (".hidden", "%2Ehidden"),
        ("..", "%2E."),
        ("tab\there", "tab%09here"),
        ("new\nline", "new%0Aline"),
        ("del\x7f", "del%7F"),
        ("nbsp\u00a0", "nbsp%C2%A0"),  # not printable in Python's sense
        ("x" * 63, "x" * 63),
    ],
)
def test_database_names_map_both_ways(database: str, part: str) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    name = catalog.format_name(moment, database)
    assert name == f"{part}_2026-01-02_030405.dump"
    assert catalog.parse_backup_name(name) == (database, moment)
    assert catalog.database_of(name) == database
    assert catalog.is_backup_name(name)
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert not catalog.is_backup_name(name + ".json")


def test_default_database_is_the_templates() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert catalog.format_name(moment) == "velocity_2026-01-02_030405.dump"
    assert catalog.database_of("velocity_2026-01-02_030405.dump") == "velocity"


def test_longest_postgresql_name_fits_even_fully_escaped() -> None:
    """63 bytes (NAMEDATALEN - 1) of characters that all need escaping: 189 bytes + date."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for database in ("/" * 63, "\u00a0" * 31):
        name = catalog.format_name(moment, database)
        assert len((name + ".json").encode()) <= catalog.NAME_MAX
        assert catalog.database_of(name) == database


@pytest.mark.parametrize("database", ["x" * 250, "日" * 80, "/" * 80])
def test_too_long_for_a_file_name_is_refused(database: str) -> None:
    with pytest.raises(ConfigError, match="too long for a backup file name"):
        catalog.format_name(datetime(2026, 1, 1, tzinfo=UTC), database)


def test_empty_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        catalog.format_name(datetime(2026, 1, 1, tzinfo=UTC), "")


def test_the_timestamp_is_matched_from_the_end() -> None:
    name = "a_2020-01-01_000000_2026-02-03_040506.dump"
    assert catalog.parse_backup_name(name) == (
        "a_2020-01-01_000000",
        datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC),
    )


def test_temp_names_are_never_backup_names(tmp_path: Path) -> None:
    fd, path = catalog.temp_path_for(tmp_path)
    os.close(fd)
    assert not catalog.is_backup_name(path.name)
    assert path.name.startswith(".velocity-tmp-")
    assert (path.stat().st_mode & 0o777) == 0o600


def test_candidate_names_are_consecutive_seconds() -> None:
    start = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    names = list(catalog.candidate_names(start, tries=3))
    assert names == [
        "velocity_2026-12-31_235959.dump",
        "velocity_2027-01-01_000000.dump",
        "velocity_2027-01-01_000001.dump",
    ]
    assert list(catalog.candidate_names(start, "a/b", tries=2)) == [
        "a%2Fb_2026-12-31_235959.dump",
        "a%2Fb_2027-01-01_000000.dump",
    ]


def test_publish_never_overwrites(tmp_path: Path) -> None:
    existing = tmp_path / "velocity_2026-01-01_000000.dump"
    existing.write_bytes(b"old")
    fd, temp = catalog.temp_path_for(tmp_path)
    os.write(fd, b"new")
    os.close(fd)
    final = catalog.publish(
        temp, tmp_path, catalog.candidate_names(datetime(2026, 1, 1, tzinfo=UTC))
    )
    assert final.name == "velocity_2026-01-01_000001.dump"
    assert existing.read_bytes() == b"old"
    assert final.read_bytes() == b"new"
    assert not temp.exists()


def make_files(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x" * 10)


def test_list_backups_newest_first_and_only_backups(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        "velocity_2026-01-02_000000.dump",
        "velocity_2026-01-03_000000.dump",
        "velocity_2026-01-01_000000.dump",
        ".velocity-tmp-1-x.partial",
        "notes.txt",
        "velocity_2026-01-04_000000.dump.partial",
    )
    (tmp_path / "velocity_2026-01-05_000000.dump").mkdir()  # a folder is not a backup
    (tmp_path / "velocity_2026-01-06_000000.dump").symlink_to(tmp_path / "notes.txt")
    names = [b.name for b in catalog.list_backups(tmp_path)]
    assert names == [
        "velocity_2026-01-03_000000.dump",
        "velocity_2026-01-02_000000.dump",
        "velocity_2026-01-01_000000.dump",
    ]


def test_list_backups_of_every_database_by_time(tmp_path: Path) -> None:
    make_files(
        tmp_path,
        "velocity_2026-01-01_000000.dump",
        "velocity_2026-01-03_000000.dump",
        "my_app_2026-01-02_000000.dump",
        "my_app_2026-01-02_000000.dump.json",  # its manifest
        "a%2Fb_2026-01-04_000000.dump",
        "%2Eenv_2026-01-05_000000.dump",
        ".env_2026-01-05_000000.dump",  # hidden: not a backup
        "notes.txt",
        ".velocity.lock",
        ".velocity-tmp-1-x.partial",
    )
    found = [(b.name, b.database) for b in catalog.list_backups(tmp_path)]
    assert found == [
        ("%2Eenv_2026-01-05_000000.dump", ".env"),
        ("a%2Fb_2026-01-04_000000.dump", "a/b"),
        ("velocity_2026-01-03_000000.dump", "velocity"),
        ("my_app_2026-01-02_000000.dump", "my_app"),
        ("velocity_2026-01-01_000000.dump", "velocity"),
    ]
    only = [b.name for b in catalog.list_backups(tmp_path, "my_app")]
    assert only == ["my_app_2026-01-02_000000.dump"]
    backups = catalog.list_backups(tmp_path)
    newest = catalog.newest_of(backups, "velocity")
    assert newest is not None and newest.name == "velocity_2026-01-03_000000.dump"
    assert catalog.newest_of(backups, "nobody") is None
    assert catalog.newest_of(backups, None) is backups[0]


def test_backup_database_defaults_from_its_name() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    backup = catalog.Backup(
        name="my_app_2026-01-01_000000.dump",
        path=Path("/b/my_app_2026-01-01_000000.dump"),
        created=moment,
        mtime=moment,
        size=1,
    )
    assert backup.database == "my_app"


def test_list_backups_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="does not exist"):
        catalog.list_backups(tmp_path / "missing")


def test_list_backups_folder_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        catalog.list_backups(tmp_path / "f")


class TestResolveBackup:
    NAME = "velocity_2026-01-01_000000.dump"

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        folder = tmp_path / "backups"
        folder.mkdir()
        (folder / self.NAME).write_bytes(b"PGDMP")
        (tmp_path / self.NAME).write_bytes(b"outside")
        return folder

    def test_by_name(self, folder: Path) -> None:
        assert catalog.resolve_backup(folder, self.NAME) == (folder / self.NAME).resolve()

    def test_by_path_inside(self, folder: Path) -> None:
        assert catalog.resolve_backup(folder, str(folder / self.NAME)).name == self.NAME

    @pytest.mark.parametrize(
        "name",
        [
            f"../{NAME}",
            f"sub/../../{NAME}",
            "/etc/passwd",
            "notes.txt",
            ".",
            "..",
        ],
    )
    def test_refuses_escapes_and_non_backups(self, folder: Path, name: str) -> None:
        with pytest.raises((ConfigError, OperationFailed)):
            catalog.resolve_backup(folder, name)

    def test_refuses_absolute_path_elsewhere(self, folder: Path) -> None:
        with pytest.raises(ConfigError, match="not a file in the backup folder"):
            catalog.resolve_backup(folder, str(folder.parent / self.NAME))

    def test_refuses_symlink_leading_out(self, folder: Path) -> None:
        link = folder / "velocity_2026-02-02_000000.dump"
        link.symlink_to(folder.parent / self.NAME)
        with pytest.raises(ConfigError, match="not a file in the backup folder"):
            catalog.resolve_backup(folder, link.name)

    def test_any_databases_backup(self, folder: Path) -> None:
        (folder / "my_app_2026-01-01_000000.dump").write_bytes(b"PGDMP")
        found = catalog.resolve_backup(folder, "my_app_2026-01-01_000000.dump")
        assert found.name == "my_app_2026-01-01_000000.dump"

    def test_refuses_a_manifest(self, folder: Path) -> None:
        (folder / f"{self.NAME}.json").write_text("{}")
        with pytest.raises(ConfigError, match="is not a backup name"):
            catalog.resolve_backup(folder, f"{self.NAME}.json")

    def test_missing(self, folder: Path) -> None:
        with pytest.raises(OperationFailed, match="does not exist"):
            catalog.resolve_backup(folder, "velocity_2030-01-01_000000.dump")

    @pytest.mark.parametrize("relative_folder", [True, False])
    def test_relative_path_from_the_current_folder(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch, relative_folder: bool
    ) -> None:
        """`restore backups/velocity_...dump --backup-dir backups`, from the folder above."""
        monkeypatch.chdir(folder.parent)
        where = Path("backups") if relative_folder else folder
        found = catalog.resolve_backup(where, f"backups/{self.NAME}")
        assert found == (folder / self.NAME).resolve()
        assert catalog.resolve_backup(where, f"./backups/{self.NAME}") == found

    def test_relative_path_leading_elsewhere_is_refused(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(folder.parent)
        # ./NAME is the file beside the folder, not the one in it.
        with pytest.raises(ConfigError, match="not a file in the backup folder"):
            catalog.resolve_backup(folder, f"./{self.NAME}")
        monkeypatch.chdir(folder)
        assert catalog.resolve_backup(folder, f"./{self.NAME}") == (folder / self.NAME).resolve()


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_human_size(size: int, text: str) -> None:
    assert catalog.human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (65, "1m 5s"), (3660, "1h 1m"), (90000, "1d 1h"), (-5, "in the future")],
)
def test_human_age(seconds: int, text: str) -> None:
    assert catalog.human_age(timedelta(seconds=seconds)) == text
