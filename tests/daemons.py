"""``batchctl daemon`` processes for end-to-end tests: start them, read their logs, stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Workspace
from tests.waiting import scaled, wait_for


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_started(self) -> None:
        wait_for(
            lambda: "started (" in self.text() or self.process.poll() is not None,
            "the daemon to start",
        )
        assert self.process.poll() is None, f"the daemon exited: {self.text()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig`` and wait (``timeout`` scaled); (exit code, seconds it took)."""
        began = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=scaled(timeout))
        return code, time.monotonic() - began


@contextlib.contextmanager
def daemon_launcher(ws: Workspace, exe: str, *global_args: str) -> Iterator[Callable[..., Daemon]]:
    """``launch(*args, env=None)`` starts ``batchctl [global_args] daemon [args]`` in the
    workspace, its stderr in ``daemon-N.log``. On leaving, every daemon still running is killed,
    and so is every job process group that wrote its pid to ``pid-*`` (a SIGKILLed daemon's jobs
    outlive it)."""
    started: list[Daemon] = []

    def launch(*args: str, env: dict[str, str] | None = None) -> Daemon:
        log = ws.root / f"daemon-{len(started)}.log"
        with log.open("w") as err:
            process = subprocess.Popen(
                [exe, *global_args, "daemon", *args],
                env=env or ws.env(),
                cwd=ws.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
        started.append(Daemon(process, log))
        return started[-1]

    try:
        yield launch
    finally:
        for each in started:
            if each.process.poll() is None:
                each.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                each.process.wait(timeout=5)
        for pid_file in ws.root.glob("pid-*"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
