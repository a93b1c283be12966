"""Jobs of kind ``command``: a shell command (or argv list) whose output lines go to the run log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from batchctl.config import JobConfig
from batchctl.jobs import LocalKind
from batchctl.jobs.context import AttemptContext
from batchctl.records import RunOutcome, RunStatus

READER_DRAIN_S = (
    2.0  # how long to wait for output after the process exits (a child may hold the pipe)
)


def start(job: JobConfig, ctx: AttemptContext, base_dir: Path) -> CommandExecution:
    assert job.command is not None
    env = {
        **os.environ,
        **job.env,
        "BATCHCTL_RUN_ID": str(ctx.run_id),
        "BATCHCTL_JOB": job.name,
        "BATCHCTL_SCOPE": ctx.scope or "",
        "BATCHCTL_ATTEMPT": str(ctx.attempt),
    }
    shell = isinstance(job.command, str)
    cwd = job.cwd or base_dir
    try:
        process = subprocess.Popen(
            job.command if shell else list(job.command),
            shell=shell,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so cancel reaches its children too
        )
    except OSError as exc:
        return CommandExecution.failed_to_start(f"cannot start command: {_why(exc, cwd)}")
    return CommandExecution(process, ctx, job.grace)


class CommandExecution:
    def __init__(
        self, process: subprocess.Popen[bytes] | None, ctx: AttemptContext | None, grace: float
    ) -> None:
        self._process = process
        self._ctx = ctx
        self._grace = grace
        self._cause: str | None = None
        self._kill_at: float | None = None
        self._exited_at: float | None = None
        self._start_error: str | None = None
        self._readers: list[threading.Thread] = []
        if process is not None and ctx is not None:
            for stream, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
                assert pipe is not None
                reader = threading.Thread(target=_read_lines, args=(pipe, stream, ctx), daemon=True)
                reader.start()
                self._readers.append(reader)
            threading.Thread(target=self._wait_and_wake, daemon=True).start()

    @classmethod
    def failed_to_start(cls, error: str) -> CommandExecution:
        execution = cls(None, None, 0.0)
        execution._start_error = error
        return execution

    def _wait_and_wake(self) -> None:
        assert self._process is not None and self._ctx is not None
        self._process.wait()
        for reader in self._readers:
            reader.join(READER_DRAIN_S)
        self._ctx.wake()

    def process_group(self) -> int | None:
        # start_new_session: the child leads a group whose id is its pid.
        return self._process.pid if self._process is not None else None

    def cancel(self, cause: str) -> None:
        if self._process is None or self._cause is not None:
            return
        self._cause = cause
        self._signal(signal.SIGTERM)
        self._kill_at = time.monotonic() + self._grace

    def poll(self) -> RunOutcome | None:
        if self._process is None:
            return RunOutcome(RunStatus.FAILED, error=self._start_error, cause="error")
        code = self._process.poll()
        if code is None:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._signal(signal.SIGKILL)
                self._kill_at = None
            return None
        if self._kill_at is not None and not self._group_gone():
            if time.monotonic() < self._kill_at:
                return None  # the leader is gone; give the rest of its group their grace too
            self._signal(signal.SIGKILL)
            self._kill_at = None
        if any(reader.is_alive() for reader in self._readers):
            self._exited_at = self._exited_at or time.monotonic()
            if time.monotonic() - self._exited_at < READER_DRAIN_S:
                return None
        return self._outcome(code)

    def _outcome(self, code: int) -> RunOutcome:
        if self._cause == "cancelled":
            return RunOutcome(
                RunStatus.CANCELLED, error="cancelled", exit_code=code, cause="cancelled"
            )
        if self._cause == "timeout":
            return RunOutcome(RunStatus.FAILED, error="timed out", exit_code=code, cause="timeout")
        if code == 0:
            return RunOutcome(RunStatus.COMPLETED, exit_code=0)
        if code < 0:
            name = signal.Signals(-code).name
            return RunOutcome(
                RunStatus.FAILED, error=f"killed by {name}", exit_code=code, cause="error"
            )
        return RunOutcome(
            RunStatus.FAILED, error=f"exit code {code}", exit_code=code, cause="error"
        )

    def _group_gone(self) -> bool:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _signal(self, signum: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)


def _read_lines(pipe: IO[bytes], stream: str, ctx: AttemptContext) -> None:
    with pipe:
        for raw in pipe:
            ctx.emit_line(stream, raw.decode("utf-8", errors="replace").rstrip("\r\n"))


KIND = LocalKind(start)


def _why(exc: OSError, cwd: str | os.PathLike[str] | None) -> str:
    """``cwd /x: No such file or directory`` or ``prog: Permission denied``, not Python's repr."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    name = os.fsdecode(exc.filename)
    if cwd is not None and name == os.fsdecode(cwd):
        name = f"cwd {name}"
    return f"{name}: {exc.strerror}"
