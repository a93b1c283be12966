"""Processors (``kind = "python"``) for the run-lifecycle tests: each one a behaviour of a job."""

from __future__ import annotations

import threading

from batchctl import ProcessResult
from batchctl.jobs.context import AttemptContext


def succeed(ctx: AttemptContext) -> ProcessResult:
    ctx.progress(3, 3)
    return ProcessResult(items_processed=3)


def fail(ctx: AttemptContext) -> None:
    raise RuntimeError(f"attempt {ctx.attempt} failed")


def succeed_on_third_attempt(ctx: AttemptContext) -> ProcessResult:
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return ProcessResult(items_processed=1)


def run_until_cancelled(ctx: AttemptContext) -> None:
    """Work until the engine asks it to stop (a timeout, a cancel), then return at once."""
    stop = threading.Event()
    while not ctx.cancelled:
        stop.wait(0.005)
