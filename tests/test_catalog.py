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
        "Velocity_2026-11-25_160509.dump",
        "velocity_2026-11-25_160509.dump\n",
        "xvelocity_2026-11-25_160509.dump",
        "velocity_2026-11-25_160509.sql",
        "velocity_2026-11-25_160509.dump.json",
        "velocity_2026-11-25_16050\u0669.dump",  # a non-ASCII digit
        "velocity_2026-11-25_240000.dump",  # hour 24
        "",
    ],
)
def test_not_backup_names(name: str) -> None:
    assert catalog.parse_name(name) is None
    assert not catalog.is_backup_name(name)


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
