"""The command line: parse, build the settings once, call the core, translate errors.

Each command is a few lines; the work lives in one module per verb. Heavy
imports (psycopg) happen inside the commands that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from velocity_pg import __version__
from velocity_pg.errors import ExitStatus, VelocityError
from velocity_pg.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Options given before the verb, kept until a verb builds its settings."""

    def __init__(self) -> None:
        self.env_file: Path | None = None
        self.env_file_required = False
        self.overrides: dict[str, str | int | None] = {}
        self._settings: Settings | None = None

    def settings(self, **more: str | int | None) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                env_file=self.env_file,
                env_file_required=self.env_file_required,
                overrides={**self.overrides, **more},
            )
        return self._settings


pass_state = click.make_pass_decorator(State, ensure=True)


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (for scripts)."
    )(func)


def emit_json(payload: object) -> None:
    from velocity_pg.report import to_json

    click.echo(to_json(payload))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="velocity-pg")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read settings from this .env file (default: ./.env if present).",
)
@click.option(
    "--backup-dir", metavar="DIR", help="Backup folder [env BACKUP_DIR; default /backups]."
)
@click.option("--host", metavar="HOST", help="Server host or socket folder [env PGHOST].")
@click.option("--port", metavar="PORT", help="Server port [env PGPORT].")
@click.option("--user", "-U", metavar="USER", help="Database user [env PGUSER, POSTGRES_USER].")
@click.option("--dbname", "-d", metavar="NAME", help="Database [env PGDATABASE, POSTGRES_DB].")
@click.option("--debug", is_flag=True, help="Show tracebacks and the commands run.")
@pass_state
def cli(
    state: State,
    env_file: Path | None,
    backup_dir: str | None,
    host: str | None,
    port: str | None,
    user: str | None,
    dbname: str | None,
    debug: bool,
) -> None:
    """Safe PostgreSQL backups for Django Velocity: backup, list, restore, cleanup.

    Settings come from these options, then the environment, then a .env file,
    then defaults. The password is read from PGPASSWORD or POSTGRES_PASSWORD
    only (never from the command line).
    """
    if debug:
        os.environ["VELOCITY_PG_DEBUG"] = "1"
    if env_file is not None:
        state.env_file, state.env_file_required = env_file, True
    else:
        state.env_file = Path(".env")
    state.overrides = {
        "BACKUP_DIR": backup_dir,
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": user,
        "PGDATABASE": dbname,
    }


@cli.command()
@json_option
@pass_state
def backup(state: State, as_json: bool) -> None:
    """Dump the database (pg_dump -Fc -Z9) into BACKUP_DIR/velocity_YYYY-MM-DD_HHMMSS.dump.

    Runs alongside the application without blocking it. A failed backup
    leaves no file behind and never touches the existing backups.
    """
    from velocity_pg.backup import create_backup

    settings = state.settings()
    result = create_backup(settings)
    if as_json:
        emit_json(result.to_json())
        return
    from velocity_pg.catalog import human_size

    click.echo(
        f"Backup created: {result.name} ({human_size(result.size)}) "
        f"of database {result.database!r} in {result.duration:.1f} s"
    )


@cli.command("list")
@json_option
@pass_state
def list_(state: State, as_json: bool) -> None:
    """List the backups in BACKUP_DIR, newest first."""
    from velocity_pg.catalog import human_age, human_size, list_backups
    from velocity_pg.report import format_table

    settings = state.settings()
    backups = list_backups(settings.backup_dir)
    now = datetime.now(UTC)
    if as_json:
        emit_json(
            {
                "backup_dir": str(settings.backup_dir),
                "backups": [
                    {
                        "name": b.name,
                        "path": str(b.path),
                        "size_bytes": b.size,
                        "created_at": b.created.isoformat(),
                        "modified_at": b.mtime.isoformat(),
                        "age_seconds": int((now - b.created).total_seconds()),
                    }
                    for b in backups
                ],
            }
        )
        return
    if not backups:
        click.echo(
            f"No backups yet in {settings.backup_dir}. Create one with `velocity-pg backup`."
        )
        return
    rows = [
        (
            b.name,
            human_size(b.size),
            b.created.strftime("%Y-%m-%d %H:%M:%S"),
            human_age(now - b.created),
        )
        for b in backups
    ]
    header = ("NAME", "SIZE", "CREATED (UTC)", "AGE")
    click.echo(format_table(header, rows, right=(1, 3)))
    total = sum(b.size for b in backups)
    click.echo(f"{len(backups)} backup(s), {human_size(total)} in {settings.backup_dir}")


@cli.command()
@click.argument("name", metavar="NAME")
@click.option(
    "--check",
    is_flag=True,
    help="Only check the backup, the server and the permissions, then count down; change nothing.",
)
@click.option("--yes", "-y", is_flag=True, help="Skip the 5-second countdown (for scripts).")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    metavar="N",
    help="Parallel pg_restore jobs [default: the number of CPUs].",
)
@json_option
@pass_state
def restore(
    state: State, name: str, check: bool, yes: bool, jobs: int | None, as_json: bool
) -> None:
    """Replace the database with backup NAME (a file name in BACKUP_DIR, as `list` shows).

    The backup is restored into a new database first; only when that is
    complete is it swapped in, in one transaction. A failed or interrupted
    restore leaves the database exactly as it was.
    """
    from velocity_pg.restore import CheckResult, restore_backup

    settings = state.settings()
    result = restore_backup(settings, name, check=check, yes=yes, jobs=jobs)
    if as_json:
        emit_json(result.to_json())
        return
    if isinstance(result, CheckResult):
        plan = result.plan
        action = "replace" if plan.live is not None else "create"
        click.echo(
            f"Check passed: {plan.backup.name} ({plan.toc.entries} objects) can restore "
            f"database {plan.target!r} (it would {action} it). Nothing was changed."
        )
        return
    verb = "Created" if result.created else "Restored"
    click.echo(
        f"{verb} database {result.database!r} from {result.name} in {result.duration:.1f} s "
        f"({result.objects_total} objects); it was unavailable for "
        f"{result.unavailable_seconds:.2f} s."
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turn every error into one line and an exit status."""
    from velocity_pg.pgtools import Terminated, install_termination_handlers

    install_termination_handlers()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="velocity-pg", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitStatus.USAGE if exc.exit_code == 2 else exc.exit_code)
    except click.Abort:
        click.echo("velocity-pg: interrupted", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except VelocityError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        kind = "" if exc.exit_status == ExitStatus.INTERRUPTED else "error: "
        click.echo(f"velocity-pg: {kind}{exc.message}", err=True)
        sys.exit(exc.exit_status)
    except (KeyboardInterrupt, Terminated):
        click.echo("velocity-pg: interrupted", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"velocity-pg: error: unexpected {type(exc).__name__}: {exc} "
            "(run with --debug for details)",
            err=True,
        )
        sys.exit(ExitStatus.FAILED)
