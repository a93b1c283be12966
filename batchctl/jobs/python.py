"""Jobs of kind ``python``: a processor called in-process, on a worker thread.

A processor is ``module:attr`` (importable from the config file's directory or installed) or the
name of an entry point in the group ``batchctl.processors``. ``attr`` is a function
``process(ctx)``, or an object (or no-argument class) with a ``process(ctx)`` method.

Python code cannot be killed from outside: on cancel or timeout the processor sees
``ctx.cancelled`` become true and has the job's ``grace`` period to return; after that the attempt
is recorded as ended and the thread is abandoned.

Attempts run on threads kept between attempts (``_Threads``): starting a thread costs about as
much as a no-op processor's whole attempt. A thread serves one attempt at a time and is only
reused once its processor has returned, so an abandoned processor keeps its thread and the next
attempt gets another one.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchctl.config import JobConfig
from batchctl.jobs import LocalKind
from batchctl.jobs.context import AttemptContext
from batchctl.processing import (
    ProcessFunction,
    ProcessorImportError,
    ProcessResult,
    resolve_processor,
)
from batchctl.records import RunOutcome, RunStatus

IDLE_S = 60.0  # an idle attempt thread ends after this long without an attempt to run

log = logging.getLogger("batchctl.jobs")


def start(job: JobConfig, ctx: AttemptContext, base_dir: Path) -> PythonExecution:
    assert job.processor is not None
    try:
        function = resolve_processor(job.processor, base_dir)
    except ProcessorImportError as exc:
        return PythonExecution.failed_to_start(str(exc))
    return PythonExecution(function, ctx, job.grace)


class PythonExecution:
    def __init__(
        self, function: ProcessFunction | None, ctx: AttemptContext | None, grace: float
    ) -> None:
        self._ctx = ctx
        self._grace = grace
        self._outcome: RunOutcome | None = None
        self._cause: str | None = None
        self._give_up_at: float | None = None
        self._done = threading.Event()
        if function is not None and ctx is not None:
            _THREADS.run(lambda: self._call(function, ctx))

    @classmethod
    def failed_to_start(cls, error: str) -> PythonExecution:
        execution = cls(None, None, 0.0)
        execution._outcome = RunOutcome(RunStatus.FAILED, error=error, cause="error")
        execution._done.set()
        return execution

    def _call(self, function: ProcessFunction, ctx: AttemptContext) -> None:
        try:
            result = function(ctx)
            self._outcome = self._interpret(result)
        except BaseException as exc:  # the processor's failure is the run's failure, not ours
            ctx.log("error", "".join(traceback.format_exception(exc)).rstrip())
            self._outcome = RunOutcome(
                RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", cause="error"
            )
        finally:
            self._done.set()
            ctx.wake()

    def _interpret(self, result: Any) -> RunOutcome:
        if result is None:
            result = ProcessResult()
        if not isinstance(result, ProcessResult):
            return RunOutcome(
                RunStatus.FAILED,
                error=f"processor returned {type(result).__name__}, expected ProcessResult or None",
                cause="error",
            )
        figures = RunOutcome(
            RunStatus.COMPLETED,
            items_processed=int(result.items_processed),
            items_failed=int(result.items_failed),
            total_tokens=int(result.total_tokens),
            total_cost=float(result.total_cost),
            errors=tuple(str(e) for e in result.errors),
        )
        failed, processed = figures.items_failed, figures.items_processed
        if self._cause == "cancelled":
            return figures._replace(
                status=RunStatus.CANCELLED, error="cancelled", cause="cancelled"
            )
        if self._cause == "timeout":
            return figures._replace(status=RunStatus.FAILED, error="timed out", cause="timeout")
        if failed and not processed:
            return figures._replace(
                status=RunStatus.FAILED, error=f"all {failed} items failed", cause="error"
            )
        if failed:
            return figures._replace(
                status=RunStatus.PARTIAL,
                error=f"{failed} of {failed + processed} items failed",
                cause="partial",
            )
        return figures

    def process_group(self) -> int | None:
        return None  # runs in batchctl's own process

    def cancel(self, cause: str) -> None:
        if self._cause is not None or self._done.is_set():
            return
        self._cause = cause
        self._give_up_at = time.monotonic() + self._grace
        assert self._ctx is not None
        self._ctx.cancel()

    def poll(self) -> RunOutcome | None:
        if self._done.is_set():
            return self._outcome
        if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
            status = RunStatus.CANCELLED if self._cause == "cancelled" else RunStatus.FAILED
            return RunOutcome(
                status,
                error=f"{'timed out' if self._cause == 'timeout' else 'cancelled'}; the processor "
                f"did not return within the {self._grace:g}s grace period and was abandoned",
                cause=self._cause,
            )
        return None


class _Threads:
    """Threads that run attempts, each kept for the next attempt once its task returns.

    There is no bound: an attempt never waits for a thread (a processor that ignores cancel
    holds its thread for as long as it runs). Threads are daemon threads, as a thread per
    attempt was: an abandoned processor does not keep batchctl from exiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a task, less the tasks handed to them

    def run(self, task: Callable[[], None]) -> None:
        """Run ``task`` on an idle thread, or on a new one when none is idle."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._tasks.put(task)
                return
        threading.Thread(
            target=self._serve, args=(task,), name="batchctl-attempt", daemon=True
        ).start()

    def _serve(self, task: Callable[[], None]) -> None:
        while True:
            try:
                contextvars.Context().run(task)  # as on a new thread: no context variables
            except Exception:  # a task reports its own errors; this keeps the thread serving
                log.exception("an attempt's thread failed")
            with self._lock:
                self._idle += 1
            try:
                task = self._tasks.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    try:  # a task handed over just as the wait ran out is still this thread's
                        task = self._tasks.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


_THREADS = _Threads()


KIND = LocalKind(start)
