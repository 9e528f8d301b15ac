"""One scheduled run: an ordered list of steps, each calling a verb's own code.

The steps, in order (:func:`plan_steps`):

1. ``backup``: :func:`velocity_pg.verbs.backup.create_backup`;
2. ``push``, when off-site copies are configured (``BACKUP_S3_URL``):
   :func:`velocity_pg.offsite.push_backup` of the new backup;
3. ``cleanup``: :func:`velocity_pg.verbs.cleanup.run_cleanup` (local);
4. ``cleanup off-site``, when configured: :func:`velocity_pg.offsite.cleanup_remote`;
5. ``verify``: :func:`velocity_pg.verbs.verify.verify` of the new backup, as
   ``BACKUP_VERIFY`` says: ``checksum``, ``restore`` (with
   :func:`velocity_pg.verbs.verify.restore_drill`) or ``none``.

A step that fails is reported and the run goes on with the steps that do not
need it: nothing is pushed, pruned or verified without a new backup, and no
off-site copy is pruned after a push that failed. An interruption (Ctrl+C,
SIGTERM) is not a failure: the verb cleans up after itself (no temporary file,
no throwaway database) and the exception goes on to the scheduler, which stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from velocity_pg.errors import Interrupted, VelocityError
from velocity_pg.scheduling.config import ScheduleConfig, VerifyMode
from velocity_pg.settings import Settings

if TYPE_CHECKING:  # without importing psycopg before it is needed
    from velocity_pg.verbs.backup import BackupResult


class StepStatus(StrEnum):
    OK = "ok"
    FAILED = "FAILED"
    SKIPPED = "skipped"


@dataclass
class StepOutcome:
    name: str
    status: StepStatus
    detail: str
    at: datetime
    seconds: float = 0.0

    def line(self, zone: object = UTC) -> str:
        return f"{stamp(self.at, zone)} {self.name}: {self.status} {self.detail}"


@dataclass
class RunContext:
    """What a run's steps share: the settings, and what earlier steps produced."""

    settings: Settings
    config: ScheduleConfig
    backup: BackupResult | None = None
    extra: dict[str, object] = field(default_factory=dict)


StepFunction = Callable[[RunContext], str]
#: The step reported when a run could not take its lock, so nothing else ran.
RUN_LOCK_STEP = "run lock"


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFunction
    #: Steps that must have passed for this one to make sense.
    needs: tuple[str, ...] = ()


@dataclass
class RunResult:
    started: datetime
    finished: datetime
    steps: list[StepOutcome]
    backup_size: int | None

    @property
    def ok(self) -> bool:
        return all(s.status is not StepStatus.FAILED for s in self.steps)

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()


def stamp(moment: datetime, zone: object = UTC) -> str:
    """A log timestamp: ISO 8601 to the second, in the schedule's zone, with its offset."""
    return moment.astimezone(zone).isoformat(timespec="seconds")  # type: ignore[arg-type]


# -- the steps --------------------------------------------------------------------


def step_backup(ctx: RunContext) -> str:
    from velocity_pg.store.catalog import human_size
    from velocity_pg.verbs.backup import create_backup

    result = create_backup(ctx.settings)
    ctx.backup = result
    return (
        f"{result.name} ({human_size(result.size)}) of database {result.database!r} "
        f"in {result.duration:.1f} s"
    )


def step_cleanup(ctx: RunContext) -> str:
    from velocity_pg.errors import OperationFailed
    from velocity_pg.store.catalog import human_size
    from velocity_pg.verbs import cleanup

    result = cleanup.run_cleanup(ctx.settings)
    if result.partial:
        raise OperationFailed(result.partial_message())
    return (
        f"kept {len(result.plan.keep)} backup(s), deleted {len(result.deleted)}, "
        f"freed {human_size(result.bytes_freed)}"
    )


def step_verify(ctx: RunContext) -> str:
    from velocity_pg.errors import OperationFailed
    from velocity_pg.verbs import verify

    assert ctx.backup is not None
    drill = verify.restore_drill(ctx.settings) if ctx.config.verify is VerifyMode.RESTORE else None
    outcomes = verify.verify(ctx.settings, [ctx.backup.name], restore_check=drill)
    if not outcomes:  # pragma: no cover - the backup was just made
        raise OperationFailed(f"{ctx.backup.name} was not found to verify")
    outcome = outcomes[0]
    if not outcome.ok:
        raise OperationFailed(f"{outcome.name}: {outcome.problem}")
    return f"{outcome.name} ({', '.join(outcome.checks)})"


def step_push(ctx: RunContext) -> str:
    from velocity_pg import offsite
    from velocity_pg.store import lock
    from velocity_pg.store.catalog import human_size

    assert ctx.backup is not None
    remote = offsite.prepare(ctx.settings)
    # Held shared like `push`: an off-site cleanup never cuts this upload.
    with lock.shared(ctx.settings.backup_dir, f"push {ctx.backup.name}"):
        pushed = offsite.push_backup(remote, ctx.backup.path)
    how = "encrypted" if pushed.encrypted else "not encrypted"
    return (
        f"{pushed.name} {pushed.status}: {pushed.object_key} ({human_size(pushed.size)}, "
        f"{how}) in {remote.store.describe()}, checked"
    )


def step_cleanup_offsite(ctx: RunContext) -> str:
    from velocity_pg import offsite
    from velocity_pg.errors import OperationFailed

    result = offsite.cleanup_remote(ctx.settings)
    if result.failed:
        problems = "; ".join(f"{d.name}: {d.detail}" for d in result.failed[:3])
        raise OperationFailed(
            f"off-site cleanup was partial: {len(result.failed)} deletion(s) failed ({problems})"
        )
    summary = offsite.format_remote_summary(result)
    if result.leftovers_skipped:
        summary += f" Note: {result.leftovers_skipped}."
    warning = result.warning()
    return summary if warning is None else f"{summary} Warning: {warning}"


def plan_steps(settings: Settings, config: ScheduleConfig) -> list[Step]:
    """The run's steps, in order."""
    offsite = settings.offsite is not None
    steps = [Step("backup", step_backup)]
    if offsite:
        steps.append(Step("push", step_push, needs=("backup",)))
    steps.append(Step("cleanup", step_cleanup, needs=("backup",)))
    if offsite:
        steps.append(Step("cleanup off-site", step_cleanup_offsite, needs=("backup", "push")))
    if config.verify is not VerifyMode.NONE:
        steps.append(Step("verify", step_verify, needs=("backup",)))
    return steps


# -- running them -------------------------------------------------------------------


def run_steps(
    ctx: RunContext,
    steps: list[Step],
    *,
    clock: Callable[[], datetime],
    on_step: Callable[[StepOutcome], None],
) -> RunResult:
    """Run the steps in order; a failed step is recorded, an interruption goes on up."""
    import time

    from velocity_pg.postgres.pgtools import Terminated

    started = clock()
    outcomes: list[StepOutcome] = []
    passed: set[str] = set()
    for step in steps:
        missing = [need for need in step.needs if need not in passed]
        if missing:
            outcome = StepOutcome(
                step.name, StepStatus.SKIPPED, f"(not run: {', '.join(missing)} failed)", clock()
            )
        else:
            tick = time.monotonic()
            try:
                detail = step.run(ctx)
                status = StepStatus.OK
                passed.add(step.name)
            except (Interrupted, KeyboardInterrupt, Terminated):
                raise
            except VelocityError as exc:
                status, detail = StepStatus.FAILED, exc.message
            except Exception as exc:  # a bug or a surprise must not stop the scheduler
                status = StepStatus.FAILED
                detail = f"unexpected {type(exc).__name__}: {exc}"
            outcome = StepOutcome(step.name, status, detail, clock(), time.monotonic() - tick)
        outcomes.append(outcome)
        on_step(outcome)
    return RunResult(
        started=started,
        finished=clock(),
        steps=outcomes,
        backup_size=ctx.backup.size if ctx.backup is not None else None,
    )
