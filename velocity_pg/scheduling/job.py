"""One scheduled run: an ordered list of steps, run in order (the machinery).

The steps themselves call the verbs' own code; they are planned by the schedule verb
(:func:`velocity_pg.verbs.schedule.plan_steps`). A step that fails is reported and
the run goes on with the steps that do not need it (:attr:`Step.needs`). An
interruption (Ctrl+C, SIGTERM) is not a failure: the verb cleans up after itself
(no temporary file, no throwaway database) and the exception goes on to the
scheduler, which stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from velocity_pg.errors import Interrupted, VelocityError
from velocity_pg.scheduling.config import ScheduleConfig
from velocity_pg.settings import Settings


class NewBackup(Protocol):
    """The backup a run made (the backup verb's result), as later steps need it."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def size(self) -> int: ...


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
    backup: NewBackup | None = None
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
