"""The job kinds, one module each, behind one small interface.

``batchctl.runs`` takes a run through its life the same way for every kind (the concurrency
policy, chaining, recovery); what differs between kinds is only what starting, cancelling and
retrying a run does, and that is a ``JobKind``. A new kind is one module that defines ``KIND``,
named in ``batchctl.kinds``; nothing else asks which kind a job is.

A kind whose attempts execute in this process (``command``, ``python``) is a ``LocalKind``: the
engine runs its attempts under the (job, scope) lock and polls the ``Execution`` it starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from batchctl.errors import UsageError
from batchctl.kinds import BATCH_KINDS, KIND_MODULES
from batchctl.records import Run, RunOutcome, RunStatus

if TYPE_CHECKING:
    from batchctl.config import JobConfig
    from batchctl.jobs.context import AttemptContext
    from batchctl.runs import Runs


class StartRequest(NamedTuple):
    """Why and when a run is started."""

    trigger: str = "manual"  # manual, schedule, retry, after
    retry_of: int | None = None
    scheduled_for: datetime | None = None


class Retried(NamedTuple):
    """What a retry gave: a new run, or the same run going on again with requests re-sent."""

    run: Run
    resent: int | None = None  # requests sent again, for a kind that retries inside its run


class JobKind(Protocol):
    # Its runs go on at a provider once started: no process of ours holds them (nor a lock), so
    # the concurrency policy looks at the runs still in flight, and a run may end after start.
    remote: bool

    def start(self, runs: Runs, job: JobConfig, scope: str | None, request: StartRequest) -> Run:
        """Start one run; return it, ended (a local kind) or in flight (a remote one)."""
        ...

    def cancel(self, runs: Runs, run: Run) -> Run:
        """Ask an active run to stop; return it as it stands."""
        ...

    def retry(
        self, runs: Runs, run: Run, outcomes: Sequence[str], *, include_invalid: bool = False
    ) -> Retried:
        """Run an ended run again; ``outcomes`` narrows what a remote kind sends again, and
        ``include_invalid`` has it send failures that cannot succeed unchanged as well."""
        ...


class Execution(Protocol):
    def poll(self) -> RunOutcome | None:
        """The outcome once the attempt has ended, else None."""
        ...

    def cancel(self, cause: str) -> None:
        """Stop the attempt; ``cause`` is "cancelled" or "timeout"."""
        ...

    def process_group(self) -> int | None:
        """The process group the attempt runs in, when it runs in one of its own."""
        ...


Execute = Callable[["JobConfig", "AttemptContext", Path], Execution]


class LocalKind:
    """A kind whose attempts run in this process: through the engine, under the run's lock."""

    remote = False

    def __init__(self, execute: Execute) -> None:
        self.execute = execute

    def start(self, runs: Runs, job: JobConfig, scope: str | None, request: StartRequest) -> Run:
        return runs.engine.run(
            job,
            scope,
            trigger=request.trigger,
            retry_of=request.retry_of,
            scheduled_for=request.scheduled_for,
        )

    def cancel(self, runs: Runs, run: Run) -> Run:
        return runs.engine.cancel(run.id)

    def retry(
        self, runs: Runs, run: Run, outcomes: Sequence[str], *, include_invalid: bool = False
    ) -> Retried:
        if not run.status.terminal:
            raise UsageError(f"run {run.id} is still {run.status.value}; nothing to retry yet")
        if run.status is RunStatus.COMPLETED:
            raise UsageError(f"run {run.id} completed; there is nothing to retry")
        job = runs.config.job(run.job)
        return Retried(runs.start(job, run.scope, trigger="retry", retry_of=run.id))


def kind(name: str) -> JobKind:
    """The kind named ``name`` in the config (the config allows only registered names)."""
    module = importlib.import_module(KIND_MODULES[name])
    found: JobKind = module.KIND
    return found


def start(job: JobConfig, ctx: AttemptContext, base_dir: Path) -> Execution:
    """Start one attempt of a job whose kind runs in this process (the engine's call)."""
    local = kind(job.kind)
    if not isinstance(local, LocalKind):
        raise ValueError(f"job kind {job.kind!r} cannot be run by the engine")
    return local.execute(job, ctx, base_dir)


__all__ = [
    "BATCH_KINDS",
    "KIND_MODULES",
    "Execution",
    "JobKind",
    "LocalKind",
    "Retried",
    "StartRequest",
    "kind",
    "start",
]
