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
@click.option(
    "--compression",
    metavar="METHOD[:LEVEL]",
    help="pg_dump's compression: gzip:0-9, zstd:1-22, lz4:1-12 (zstd and lz4 need "
    "pg_dump 16+) or none [env BACKUP_COMPRESSION; default gzip:9].",
)
@json_option
@pass_state
def backup(state: State, compression: str | None, as_json: bool) -> None:
    """Dump the database (pg_dump -Fc) into BACKUP_DIR/<database>_YYYY-MM-DD_HHMMSS.dump.

    Runs alongside the application without blocking it. A failed backup
    leaves no file behind and never touches the existing backups.
    """
    from velocity_pg.backup import create_backup

    settings = state.settings(BACKUP_COMPRESSION=compression)
    result = create_backup(settings)
    if as_json:
        emit_json(result.to_json())
        return
    from velocity_pg.store.catalog import human_size

    click.echo(
        f"Backup created: {result.name} ({human_size(result.size)}, {result.compression}) "
        f"of database {result.database!r} in {result.duration:.1f} s"
    )


@cli.command("list")
@json_option
@pass_state
def list_(state: State, as_json: bool) -> None:
    """List the backups in BACKUP_DIR (of every database), newest first."""
    from velocity_pg.errors import ManifestUnreadable
    from velocity_pg.report import describe_verification, format_table
    from velocity_pg.store import manifest
    from velocity_pg.store.catalog import human_age, human_size, list_backups

    settings = state.settings()
    backups = list_backups(settings.backup_dir)
    now = datetime.now(UTC)
    records: list[manifest.Manifest | str | None] = []
    for b in backups:
        try:
            records.append(manifest.read(b.path))
        except ManifestUnreadable:
            records.append("unreadable")
    if as_json:
        emit_json(
            {
                "backup_dir": str(settings.backup_dir),
                "backups": [
                    {
                        "name": b.name,
                        "database": b.database,
                        "path": str(b.path),
                        "size_bytes": b.size,
                        "created_at": b.created.isoformat(),
                        "modified_at": b.mtime.isoformat(),
                        "age_seconds": int((now - b.created).total_seconds()),
                        "manifest": "unreadable" if isinstance(rec, str) else (rec is not None),
                        "sha256": rec.sha256 if isinstance(rec, manifest.Manifest) else None,
                        "compression": rec.compression
                        if isinstance(rec, manifest.Manifest)
                        else None,
                        "last_verification": vars(rec.last_verification)
                        if isinstance(rec, manifest.Manifest) and rec.last_verification
                        else None,
                    }
                    for b, rec in zip(backups, records, strict=True)
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
            b.database if b.database.isprintable() else repr(b.database),
            human_size(b.size),
            b.created.strftime("%Y-%m-%d %H:%M:%S"),
            human_age(now - b.created),
            describe_verification(rec),
        )
        for b, rec in zip(backups, records, strict=True)
    ]
    header = ("NAME", "DATABASE", "SIZE", "CREATED (UTC)", "AGE", "VERIFIED")
    click.echo(format_table(header, rows, right=(2, 4)))
    total = sum(b.size for b in backups)
    click.echo(f"{len(backups)} backup(s), {human_size(total)} in {settings.backup_dir}")


@cli.command()
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Exit 1 if the newest backup is older than this (90m, 26h, 2d) or there is none.",
)
@json_option
@pass_state
def status(state: State, max_age: str | None, as_json: bool) -> None:
    """Backup count, size, free space, and the newest backup's age and verification.

    "Newest" is of the configured database (PGDATABASE); other databases' backups
    in the folder are listed too. With --max-age it is a monitor (healthcheck,
    cron, CI gate): exit 1 when that newest backup is too old or there is none.
    """
    from velocity_pg.report import to_json
    from velocity_pg.status import gather, parse_duration, render

    limit = parse_duration(max_age) if max_age is not None else None
    settings = state.settings()
    database = settings.connection.dbname
    report = gather(settings.backup_dir, datetime.now(UTC), limit, database)
    click.echo(to_json(report.to_json()) if as_json else render(report))
    if report.stale:
        assert limit is not None
        of = "" if database is None else f" of database {database!r}"
        why = (
            f"there is no backup{of}"
            if report.newest is None
            else f"the newest backup{of} is older than {max_age}"
        )
        click.echo(f"velocity-pg: status: STALE: {why}", err=True)
        sys.exit(ExitStatus.FAILED)


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "everything", is_flag=True, help="Verify every backup in BACKUP_DIR.")
@click.option(
    "--restore",
    "restore_drill",
    is_flag=True,
    help="Also restore each backup into a throwaway database and check its tables.",
)
@json_option
@pass_state
def verify(
    state: State, names: tuple[str, ...], everything: bool, restore_drill: bool, as_json: bool
) -> None:
    """Check backups: checksum against the manifest, archive readable, and with --restore
    a real restore into a throwaway database (the live one is never touched).

    With no NAME and no --all, the newest backup of the configured database is
    verified; --all verifies every database's. Exit 0 only if every check passed.
    """
    from velocity_pg import verify as verifying

    if names and everything:
        raise click.UsageError("give backup names or --all, not both")
    settings = state.settings()
    restore_check = verifying.restore_drill(settings) if restore_drill else None
    outcomes = verifying.verify(
        settings,
        list(names),
        everything=everything,
        restore_check=restore_check,
        report=None if as_json else lambda outcome: click.echo(outcome.line()),
    )
    if as_json:
        emit_json({"ok": all(o.ok for o in outcomes), "backups": [o.to_json() for o in outcomes]})
    if not outcomes:
        # A nightly verify that finds nothing to check must not look like success.
        database = settings.connection.dbname
        of = (
            ""
            if everything or database is None
            else f" (none of database {database!r}; --all verifies every database's)"
        )
        click.echo(
            f"velocity-pg: verify: no backups to verify in {settings.backup_dir}{of}", err=True
        )
    if not outcomes or not all(o.ok for o in outcomes):
        sys.exit(ExitStatus.FAILED)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Print the plan with its reasons; delete nothing.")
@click.option(
    "--max-age-days",
    metavar="DAYS",
    help="Delete backups modified more than DAYS x 24 h ago [env BACKUP_MAX_AGE_DAYS; "
    "default 30; at least 1].",
)
@click.option(
    "--max-count",
    metavar="N",
    help="Keep at most the N newest backups [env BACKUP_MAX_COUNT; default 50; at least 1].",
)
@click.option(
    "--min-keep",
    metavar="N",
    help="Always keep the N newest backups, whatever their age "
    "[env BACKUP_MIN_KEEP; default 1; at least 1].",
)
@json_option
@pass_state
def cleanup(
    state: State,
    dry_run: bool,
    max_age_days: str | None,
    max_count: str | None,
    min_keep: str | None,
    as_json: bool,
) -> None:
    """Delete old backups: older than the age limit or beyond the count, oldest first.

    The newest backups (BACKUP_MIN_KEEP) are always kept. Only files named
    <database>_YYYY-MM-DD_HHMMSS.dump are considered, each database's on their own;
    other files are never touched.
    Fails at once, deleting nothing, while a restore or verify is reading the folder.
    """
    from velocity_pg import cleanup as core
    from velocity_pg.errors import OperationFailed
    from velocity_pg.store.retention import Plan

    settings = state.settings(
        BACKUP_MAX_AGE_DAYS=max_age_days, BACKUP_MAX_COUNT=max_count, BACKUP_MIN_KEEP=min_keep
    )
    folder = settings.backup_dir

    def show_plan(plan: Plan) -> None:
        click.echo("\n".join(core.format_plan_header(plan, folder, dry_run=dry_run)))

    # A real run prints each deletion as it happens; a dry run (which can list
    # thousands of lines at once) prints them in one write.
    pending: list[str] = []

    def show_outcome(outcome: core.Outcome | core.TempOutcome) -> None:
        pending.append(core.format_outcome(outcome))
        if not dry_run:
            click.echo(pending.pop())

    result = core.run_cleanup(
        settings,
        dry_run=dry_run,
        on_plan=None if as_json else show_plan,
        on_outcome=None if as_json else show_outcome,
    )
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo("\n".join([*pending, core.format_summary(result)]))
    if result.partial:
        raise OperationFailed(result.partial_message())


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
    from velocity_pg.restore.verb import CheckResult, restore_backup

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
    from velocity_pg.postgres.pgtools import Terminated, install_termination_handlers

    install_termination_handlers()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode click returns (not raises) the code of ctx.exit().
        returned = cli.main(args=argv, prog_name="velocity-pg", standalone_mode=False)
        sys.exit(returned if isinstance(returned, int) else ExitStatus.OK)
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
