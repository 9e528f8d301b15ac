"""The command line: parse, build the settings once, call the verb, print its result,
translate errors.

Each command is a few lines: the work and the result's text and JSON live in one
module per verb (:mod:`velocity_pg.verbs`). The verb modules are imported inside
their commands, so ``velocity-pg --help`` loads none of them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from velocity_pg import __version__
from velocity_pg.errors import ExitStatus, Interrupted, VelocityError
from velocity_pg.settings import Settings, load_settings, parse_int
from velocity_pg.verbs import Failure, Result

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """The global options (before or after the verb), kept until a verb builds its settings."""

    def __init__(self) -> None:
        self.env_file: Path | None = Path(".env")
        self.env_file_required = False
        self.overrides: dict[str, str | int | None] = {}
        self._settings: Settings | None = None
        #: ``--notify``'s messages (velocity_pg.verbs.notify.Notice), when given.
        self.notice: Any = None

    def settings(self, **more: str | int | None) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                env_file=self.env_file,
                env_file_required=self.env_file_required,
                overrides={**self.overrides, **more},
            )
            if self.notice is not None:
                # The message settings are checked before the verb does anything.
                self.notice.start(self._settings)
        return self._settings

    def failed(self, reason: str, offsite: bool = False) -> None:
        """Tell ``--notify`` what a verb that exits with a status failed at."""
        if self.notice is not None:
            from velocity_pg.scheduling.notify import Event

            self.notice.fail(reason, Event.OFFSITE if offsite else None)


pass_state = click.make_pass_decorator(State, ensure=True)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a global option in the State, wherever it was given (a later one wins)."""
    if value is None or value is False:
        return
    state = ctx.ensure_object(State)
    if param.name == "env_file":
        state.env_file, state.env_file_required = value, True
    elif param.name == "debug":
        os.environ["VELOCITY_PG_DEBUG"] = "1"
    elif param.name == "stop_on_eof":
        from velocity_pg.postgres.pgtools import stop_at_end_of_input

        stop_at_end_of_input()
    else:
        assert param.name is not None
        state.overrides[GLOBAL_SETTINGS[param.name]] = value


#: Global option -> the setting it overrides.
GLOBAL_SETTINGS = {
    "backup_dir": "BACKUP_DIR",
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
}


def global_options(func: F) -> F:
    """The options every verb accepts before it (``velocity-pg --backup-dir x backup``) and
    after it (``velocity-pg backup --backup-dir x``); their values go to the State."""
    kept: dict[str, Any] = {"expose_value": False, "callback": _remember}
    options = [
        click.option(
            "--env-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read settings from this .env file (default: ./.env if present).",
            **kept,
        ),
        click.option(
            "--backup-dir",
            metavar="DIR",
            help="Backup folder [env BACKUP_DIR; default /backups].",
            **kept,
        ),
        click.option(
            "--host", metavar="HOST", help="Server host or socket folder [env PGHOST].", **kept
        ),
        click.option("--port", metavar="PORT", help="Server port [env PGPORT].", **kept),
        click.option(
            "--user",
            "-U",
            metavar="USER",
            help="Database user [env PGUSER, POSTGRES_USER].",
            **kept,
        ),
        click.option(
            "--dbname",
            "-d",
            metavar="NAME",
            help="Database, or a conninfo string or postgresql:// URI "
            "[env PGDATABASE, POSTGRES_DB].",
            **kept,
        ),
        click.option("--debug", is_flag=True, help="Show tracebacks and the commands run.", **kept),
        click.option(
            "--stop-on-eof",
            is_flag=True,
            help="Stop as on Ctrl+C when standard input ends (for callers that cannot pass "
            "a signal on, such as `docker compose exec`; the justfile's restore recipes "
            "use it).",
            **kept,
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def notify_option(verb: str) -> Callable[[F], F]:
    """``--notify``: a message when the verb fails (or succeeds after failures)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, notify_flag: bool, **kwargs: Any) -> Any:
            if not notify_flag:
                return func(*args, **kwargs)
            from velocity_pg.verbs.notify import Notice

            state = click.get_current_context().ensure_object(State)
            state.notice = Notice(verb)
            with state.notice:
                return func(*args, **kwargs)

        return click.option(
            "--notify",
            "notify_flag",
            is_flag=True,
            help="Send a message to BACKUP_NOTIFY_URLS when this fails (or succeeds after "
            "failures), like the scheduler does.",
        )(wrapper)  # type: ignore[return-value]

    return decorate


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (for scripts)."
    )(func)


def emit_json(payload: object) -> None:
    from velocity_pg.report import to_json

    click.echo(to_json(payload))


def show(result: Result, as_json: bool) -> None:
    """Print a verb's result: its JSON object with --json, else its lines."""
    if as_json:
        emit_json(result.to_json())
        return
    for line in result.lines():
        click.echo(line)


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def finish(state: State, result: Result, as_json: bool, failure: Failure | None) -> None:
    """Print a verb's result; when the verb failed, tell ``--notify`` what it failed at,
    say why on stderr and exit 1."""
    show(result, as_json)
    if failure is None:
        return
    if failure.notify is not None or failure.offsite:
        state.failed(failure.notify or "", offsite=failure.offsite)
    if failure.stderr is not None:
        echo_err(failure.stderr)
    sys.exit(ExitStatus.FAILED)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="velocity-pg")
@global_options
def cli() -> None:
    """Safe PostgreSQL backups for Django Velocity: backup, list, verify, status, cleanup,
    pin and unpin, accept, restore, schedule, and off-site copies with push and pull; notify
    sends messages; serve shows a status page (report writes it to a file); entrypoint
    starts the db image.

    Settings come from these options (given before or after the verb), then the
    environment, then a .env file, then defaults. The password is read from
    PGPASSWORD or POSTGRES_PASSWORD, a service file or a connection string only
    (never from an option).
    """


@cli.command(short_help="Dump the database into a new backup (no downtime).")
@click.option(
    "--compression",
    metavar="METHOD[:LEVEL]",
    help="pg_dump's compression: gzip:0-9, zstd:1-22, lz4:1-12 (zstd and lz4 need "
    "pg_dump 16+) or none [env BACKUP_COMPRESSION; default gzip:9].",
)
@click.option("--pin", "pinned", is_flag=True, help="Pin the new backup (see `pin`).")
@click.option("--reason", metavar="TEXT", help="With --pin: why it is kept.")
@notify_option("backup")
@json_option
@global_options
@pass_state
def backup(
    state: State, compression: str | None, pinned: bool, reason: str | None, as_json: bool
) -> None:
    """Dump the database (pg_dump -Fc) into BACKUP_DIR/<database>_YYYY-MM-DD_HHMMSS.dump.

    Runs alongside the application without blocking it. A failed backup
    leaves no file behind and never touches the existing backups.
    """
    from velocity_pg.verbs import backup as backup_verb

    if reason is not None and not pinned:
        raise click.UsageError("--reason goes with --pin")
    result = backup_verb.run(
        state.settings(BACKUP_COMPRESSION=compression),
        say=None if as_json else click.echo,
        pin=backup_verb.pin_for(reason) if pinned else None,
    )
    for line in result.backup.warnings():
        echo_err(line)
    if result.backup.suspect is not None and state.notice is not None:
        state.notice.fresh = False  # a suspect backup does not make the backups fresh
    finish(state, result, as_json, result.failure())


@cli.command("list", short_help="List the backups of every database (or off-site), newest first.")
@click.option("--remote", is_flag=True, help="List the off-site backups (BACKUP_S3_URL) instead.")
@json_option
@global_options
@pass_state
def list_(state: State, remote: bool, as_json: bool) -> None:
    """List the backups in BACKUP_DIR (of every database; off-site with --remote), newest first."""
    from velocity_pg.verbs import list as list_verb

    settings = state.settings()
    show(list_verb.list_remote(settings) if remote else list_verb.list_local(settings), as_json)


@cli.command(
    short_help="Count, size, free space, newest backup's age; --max-age makes it a monitor."
)
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Exit 1 if the newest backup is older than this (90m, 26h, 2d) or there is none; "
    "auto: BACKUP_HEALTH_MAX_AGE, else the longest gap of BACKUP_SCHEDULE plus a tenth.",
)
@click.option(
    "--remote-max-age",
    metavar="DURATION",
    help="Exit 1 if the newest off-site copy is older than this, or there is none.",
)
@json_option
@global_options
@pass_state
def status(state: State, max_age: str | None, remote_max_age: str | None, as_json: bool) -> None:
    """Backup count, size, free space, and the newest backup's age and verification;
    with BACKUP_S3_URL set, also the newest off-site copy.

    "Newest" is of the configured database (PGDATABASE); other databases' backups
    in the folder are listed too. With --max-age (and --remote-max-age) it is a
    monitor (healthcheck, cron, CI gate): exit 1 when that newest backup (off-site
    copy) is too old or there is none.
    """
    from velocity_pg.verbs import status as status_verb

    settings = state.settings()
    limits = status_verb.limits(settings, max_age, remote_max_age)
    if limits.remote_limit is not None and settings.offsite is None:
        raise click.UsageError("--remote-max-age needs off-site copies: set BACKUP_S3_URL")
    result = status_verb.run(settings, limits, warn=echo_err)
    finish(state, result, as_json, result.failure())


@cli.command(
    short_help="Check backups: checksum, archive, and with --restore a real restore drill."
)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "everything", is_flag=True, help="Verify every backup in BACKUP_DIR.")
@click.option(
    "--restore",
    "restore_drill",
    is_flag=True,
    help="Also restore each backup into a throwaway database and check its tables.",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Verify the off-site copies: read each object end to end and check its checksum.",
)
@notify_option("verify")
@json_option
@global_options
@pass_state
def verify(
    state: State,
    names: tuple[str, ...],
    everything: bool,
    restore_drill: bool,
    remote: bool,
    as_json: bool,
) -> None:
    """Check backups: checksum against the manifest, archive readable, and with --restore
    a real restore into a throwaway database (the live one is never touched).

    With no NAME and no --all, the newest backup of the configured database is
    verified; --all verifies every database's. Exit 0 only if every check passed.
    """
    from velocity_pg.verbs import verify as verify_verb

    if names and everything:
        raise click.UsageError("give backup names or --all, not both")
    result = verify_verb.run(
        state.settings(),
        list(names),
        everything=everything,
        drill=restore_drill,
        remote=remote,
        say=None if as_json else click.echo,
        warn=echo_err,
    )
    finish(state, result, as_json, result.failure())


@cli.command(short_help="Delete old backups by age and count, oldest first; never the newest.")
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
@notify_option("cleanup")
@json_option
@global_options
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

    The newest backups (BACKUP_MIN_KEEP) are always kept, and so are those the
    retention tiers keep (BACKUP_KEEP_DAILY, _WEEKLY, _MONTHLY, _YEARLY). Only files named
    <database>_YYYY-MM-DD_HHMMSS.dump are considered, each database's on their own;
    other files are never touched.
    Fails at once, deleting nothing, while a restore or verify is reading the folder.
    """
    from velocity_pg.verbs import cleanup as cleanup_verb

    settings = state.settings(
        BACKUP_MAX_AGE_DAYS=max_age_days, BACKUP_MAX_COUNT=max_count, BACKUP_MIN_KEEP=min_keep
    )
    result = cleanup_verb.run(
        settings, dry_run=dry_run, say=None if as_json else click.echo, warn=echo_err
    )
    finish(state, result, as_json, result.failure())


@cli.command(short_help="Copy local backups off-site (BACKUP_S3_URL), checked, maybe encrypted.")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "everything", is_flag=True, help="Push every local backup not yet off-site.")
@notify_option("push")
@json_option
@global_options
@pass_state
def push(state: State, names: tuple[str, ...], everything: bool, as_json: bool) -> None:
    """Copy local backups off-site (BACKUP_S3_URL), encrypted when recipients are set.

    With no NAME and no --all, the newest backup. Each copy is read back and
    checked before its manifest is uploaded; until then it does not count.
    """
    from velocity_pg.verbs import push as push_verb

    if names and everything:
        raise click.UsageError("give backup names or --all, not both")
    result = push_verb.push(
        state.settings(), list(names), everything=everything, report=None if as_json else click.echo
    )
    finish(state, result, as_json, result.failure())


@cli.command(short_help="Pin a backup: cleanup never deletes it, here or off-site.")
@click.argument("name", metavar="NAME")
@click.option("--reason", metavar="TEXT", help="Why it is kept (shown by list and cleanup).")
@json_option
@global_options
@pass_state
def pin(state: State, name: str, reason: str | None, as_json: bool) -> None:
    """Pin backup NAME: cleanup never deletes it, locally or off-site, until it is unpinned.

    The pin is written into the backup's manifest and, with BACKUP_S3_URL set, into its
    off-site copy's. Pinning a pinned backup again updates its reason.
    """
    from velocity_pg.verbs import pin as pin_verb

    result = pin_verb.pin(state.settings(), name, reason)
    finish(state, result, as_json, result.failure())


@cli.command(short_help="Release a backup's pin; retention rules apply to it again.")
@click.argument("name", metavar="NAME")
@json_option
@global_options
@pass_state
def unpin(state: State, name: str, as_json: bool) -> None:
    """Release backup NAME's pin (a person's or an automatic one), here and off-site."""
    from velocity_pg.verbs import pin as pin_verb

    result = pin_verb.unpin(state.settings(), name)
    finish(state, result, as_json, result.failure())


@cli.command(short_help="A suspect backup's new state is intended: it counts as good again.")
@click.argument("name", metavar="NAME")
@json_option
@global_options
@pass_state
def accept(state: State, name: str, as_json: bool) -> None:
    """Accept suspect backup NAME: the change it shows was intended (a table emptied on
    purpose). It, and the backups suspect for the same anomaly, count as good from now
    on, and the automatic pin of the good backup before them is released (a person's pin
    stays). Recorded in the manifests, here and off-site.
    """
    from velocity_pg.verbs import accept as accept_verb

    result = accept_verb.accept(state.settings(), name)
    finish(state, result, as_json, result.failure())


@cli.command(
    short_help="Download an off-site backup into BACKUP_DIR, checked against its manifest."
)
@click.argument("name", metavar="NAME")
@global_options
@pass_state
def pull(state: State, name: str) -> None:
    """Download off-site backup NAME into BACKUP_DIR (decrypted with BACKUP_AGE_IDENTITY_FILE),
    checked against its manifest; from then on it is an ordinary local backup."""
    from velocity_pg.verbs import pull as pull_verb

    show(pull_verb.pull(state.settings(), name), as_json=False)


@cli.command(short_help="Back up by itself on BACKUP_SCHEDULE: back up, prune, verify, ping.")
@click.option(
    "--once", is_flag=True, help="One run now, then exit: 0 only if every step passed (for cron)."
)
@global_options
@pass_state
def schedule(state: State, once: bool) -> None:
    """Back up by itself: at each due time of BACKUP_SCHEDULE, back up, prune and verify.

    A long-running process for a container (the db-backup service): one line
    per step on stdout, pings to BACKUP_PING_URL, metrics in BACKUP_METRICS_FILE.
    SIGTERM or SIGINT stops it cleanly (exit 0). With --once: one run, for cron,
    systemd timers or Kubernetes CronJobs.
    """
    from velocity_pg.verbs import schedule as schedule_verb

    sys.exit(schedule_verb.run(state.settings(), one_run=once))


@cli.command(short_help="Serve the status page, /metrics and /healthz (read-only HTTP).")
@click.option(
    "--addr",
    metavar="HOST:PORT",
    help="Where to listen (default: BACKUP_HTTP_ADDR), e.g. 127.0.0.1:8070.",
)
@global_options
@pass_state
def serve(state: State, addr: str | None) -> None:
    """Serve a read-only status page of the backups at / (state, history charts, the
    backups here and off-site), the Prometheus metrics at /metrics and the freshness
    judgement of `status --max-age auto` at /healthz (200 or 503). GET and HEAD only.

    `velocity-pg schedule` serves the same when BACKUP_HTTP_ADDR is set.
    """
    from velocity_pg.verbs import serve as serve_verb

    sys.exit(serve_verb.run(state.settings(), addr))


@cli.command(short_help="Write the status page to one self-contained HTML file.")
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (replaced whole; mode 0600).",
)
@global_options
@pass_state
def report(state: State, html_file: Path) -> None:
    """Write the status page (what `serve` shows at /) to FILE: one file that needs
    nothing else, for a cron mail, a CI artifact or a browser on a laptop."""
    from velocity_pg.verbs import report as report_verb

    show(report_verb.run(state.settings(), html_file), as_json=False)


@cli.command(short_help="Replace the database with a backup; a failed restore changes nothing.")
@click.argument("name", metavar="NAME", required=False)
@click.option(
    "--check",
    is_flag=True,
    help="Only check the backup, the server and the permissions; change nothing.",
)
@click.option("--yes", "-y", is_flag=True, help="Skip the 5-second countdown (for scripts).")
@click.option(
    "--jobs",
    "-j",
    metavar="N",
    help="Parallel pg_restore jobs [default: the number of CPUs].",
)
@click.option(
    "--stage",
    "stage_only",
    is_flag=True,
    help="Build the restored copy beside the live database and stop; "
    "a later `restore NAME` only swaps it in.",
)
@click.option("--abort", is_flag=True, help="Drop the staged copy (see --stage).")
@click.option(
    "--undo",
    is_flag=True,
    help="Swap the rollback point (the contents before the last restore) back in.",
)
@click.option("--forget", is_flag=True, help="Drop the rollback point, freeing its space.")
@click.option(
    "--drop-later",
    is_flag=True,
    help="After the swap, leave what it replaced for good (an older rollback point) "
    "for --tidy to drop (just db-restore: the app restarts first).",
)
@click.option("--tidy", is_flag=True, help="Drop what a swap left for later (--drop-later).")
@click.option(
    "--into",
    metavar="DB",
    help="Restore into a new database DB beside the live one, which is not touched.",
)
@click.option(
    "--replace", is_flag=True, help="With --into: replace DB if it is an earlier --into copy."
)
@click.option(
    "--table",
    "tables",
    metavar="NAME",
    multiple=True,
    help="With --into: restore only this table ([schema.]table; repeatable).",
)
@click.option("--list-tables", is_flag=True, help="List the tables backup NAME holds.")
@click.option(
    "--staged-url",
    is_flag=True,
    help="Print the DATABASE_URL read from the standard input pointed at the staged copy "
    "(just db-restore: the project's migrate runs on it).",
)
@click.option(
    "--keep-previous/--no-keep-previous",
    default=None,
    help="Keep the previous contents as a rollback point "
    "[env BACKUP_KEEP_PREVIOUS; default: keep].",
)
@click.option(
    "--owner",
    metavar="ROLE",
    help="Make every restored object ROLE's (pg_restore --no-owner as ROLE); privileges "
    "of roles the target lacks are left out and named.",
)
@click.option(
    "--create-missing-roles",
    is_flag=True,
    help="Create the roles the backup needs and the target lacks (as recorded beside the "
    "backup, NOLOGIN) before the restore.",
)
@json_option
@global_options
@pass_state
def restore(
    state: State,
    name: str | None,
    check: bool,
    yes: bool,
    jobs: str | None,
    stage_only: bool,
    abort: bool,
    undo: bool,
    forget: bool,
    drop_later: bool,
    tidy: bool,
    keep_previous: bool | None,
    into: str | None,
    replace: bool,
    tables: tuple[str, ...],
    list_tables: bool,
    owner: str | None,
    create_missing_roles: bool,
    as_json: bool,
    staged_url: bool,
) -> None:
    """Replace the database with backup NAME (a file name in BACKUP_DIR, as `list` shows).

    The backup is restored into a new database first; only when that is
    complete is it swapped in, in one transaction. A failed or interrupted
    restore leaves the database exactly as it was. The previous contents are
    kept as a rollback point: `restore --undo` brings them back.
    """
    from velocity_pg.verbs import restore as restoring

    flags = (("--stage", stage_only), ("--abort", abort), ("--undo", undo),
             ("--forget", forget), ("--tidy", tidy), ("--list-tables", list_tables),
             ("--staged-url", staged_url))  # fmt: skip
    given = [flag for flag, on in flags if on]
    if len(given) > 1:
        raise click.UsageError(f"give only one of {', '.join(given)}")
    mode = restoring.MODES[given[0] if given else ""]
    if not mode.takes_name:
        if name is not None:
            raise click.UsageError(f"{mode.flag} takes no backup NAME")
        if check and not mode.checks:
            raise click.UsageError(f"--check does not go with {mode.flag}")
    elif name is None:
        raise click.UsageError("missing the backup NAME (see `velocity-pg list`)")
    aside = restoring.into_request(mode.flag, into, replace, tables, drop_later=drop_later)
    workers = None if jobs is None else parse_int(f"--jobs {jobs!r}", jobs, minimum=1, example=4)
    keep = None if keep_previous is None else ("true" if keep_previous else "false")
    settings = state.settings(BACKUP_KEEP_PREVIOUS=keep)
    if (owner is not None or create_missing_roles) and not mode.takes_name:
        raise click.UsageError(f"--owner and --create-missing-roles do not go with {mode.flag}")
    if owner is not None and not owner:
        raise click.UsageError("--owner needs a role name")
    request = restoring.Request(
        name,
        check=check,
        yes=yes,
        jobs=workers,
        drop_later=drop_later,
        into=aside,
        owner=owner,
        create_missing_roles=create_missing_roles,
    )
    show(mode.run(settings, request), as_json)


@cli.command(short_help="Messages (BACKUP_NOTIFY_URLS): show the settings; --test sends one.")
@click.option(
    "--test",
    "send_test",
    is_flag=True,
    help="Send a test message to each URL and say what became of it.",
)
@global_options
@pass_state
def notify(state: State, send_test: bool) -> None:
    """Show the message settings (BACKUP_NOTIFY_URLS, by position and service, never the
    URLs themselves); with --test, send a test message to each URL now and say, per URL,
    delivered or why not (exit 1 unless every URL took it)."""
    from velocity_pg.verbs import notify as notify_verb

    settings = state.settings()
    if not send_test:
        show(notify_verb.show_settings(settings), as_json=False)
        return
    result = notify_verb.run_test(settings, warn=echo_err)
    finish(state, result, as_json=False, failure=result.failure())


@cli.command(
    short_help="The db image's entrypoint: give /backups to postgres, then run COMMAND.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def entrypoint(command: tuple[str, ...]) -> None:
    """Started as root, give the backup folder (BACKUP_DIR, default /backups) to the
    postgres user (mode 0700) when it belongs to someone else, then become COMMAND
    (exec: the same process and PID, the same arguments), e.g.

    velocity-pg entrypoint -- docker-entrypoint.sh postgres
    """
    from velocity_pg.verbs import entrypoint as entrypoint_verb

    entrypoint_verb.run(command)


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
    except Interrupted as exc:  # a stop, after its clean-up: never "error"
        click.echo(f"velocity-pg: {exc.message}", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except VelocityError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"velocity-pg: error: {exc.message}", err=True)
        sys.exit(exc.exit_status)
    except (KeyboardInterrupt, Terminated) as exc:
        from velocity_pg.postgres.pgtools import stop_word

        click.echo(f"velocity-pg: {stop_word(exc)}", err=True)
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
