"""The job kinds: how one attempt of a job executes.

Each kind module offers ``start(job, ctx, base_dir) -> Execution``. An execution runs off the
engine's thread, reports through ``ctx``, and is polled by the engine until it has an outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from batchctl.config import JobConfig
from batchctl.jobs.context import AttemptContext
from batchctl.records import RunOutcome


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


def start(job: JobConfig, ctx: AttemptContext, base_dir: Path) -> Execution:
    if job.kind == "command":
        from batchctl.jobs import command

        return command.start(job, ctx, base_dir)
    if job.kind == "python":
        from batchctl.jobs import python

        return python.start(job, ctx, base_dir)
    raise ValueError(f"job kind {job.kind!r} cannot be run by the engine")


__all__ = ["AttemptContext", "Execution", "start"]
