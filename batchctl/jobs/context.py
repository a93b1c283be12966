"""The context an attempt runs in: what the job may read and the channel it reports through.

Job kinds and processors run off the engine's thread; everything they report (log lines,
progress, "I am done") goes into one queue that the engine drains, so only the engine's thread
touches the store.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchctl.jobs.secrets import Masker
from batchctl.records import LogEntry, LogLevel, utcnow


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None


class Wake:
    """Sent when an execution has finished, so the engine stops waiting at once."""


Event = LogEntry | Progress | Wake


class AttemptContext:
    """The ``ctx`` handed to a processor (see ``batchctl.RunContext``)."""

    def __init__(
        self,
        *,
        run_id: int,
        job: str,
        scope: str | None,
        attempt: int,
        options: Mapping[str, Any],
        env: Mapping[str, str],
        events: queue.SimpleQueue[Event],
        clock: Any = utcnow,
        masker: Masker | None = None,
    ) -> None:
        self._run_id = run_id
        self._job = job
        self._scope = scope
        self._attempt = attempt
        self._options = dict(options)
        self._env = dict(env)
        self._events = events
        self._clock = clock
        self._masker = masker or Masker()
        self._cancelled = threading.Event()

    @property
    def run_id(self) -> int:
        return self._run_id

    @property
    def job(self) -> str:
        return self._job

    @property
    def scope(self) -> str | None:
        return self._scope

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def options(self) -> dict[str, Any]:
        return self._options

    @property
    def env(self) -> dict[str, str]:
        return self._env

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def progress(self, done: int, total: int | None = None) -> None:
        self._events.put(Progress(int(done), None if total is None else int(total)))

    def log(self, level: str, message: str, **fields: Any) -> None:
        try:
            parsed = LogLevel.parse(level)
        except ValueError:
            parsed = LogLevel.INFO
            fields = {**fields, "level": level}
        self._emit(parsed, str(message), "processor", fields)

    def emit_line(self, stream: str, line: str) -> None:
        """One line a command printed on ``stream`` (stdout or stderr)."""
        self._emit(LogLevel.INFO, line, stream, {})

    def wake(self) -> None:
        self._events.put(Wake())

    def _emit(self, level: LogLevel, message: str, stream: str, fields: dict[str, Any]) -> None:
        # Everything a job reports is recorded with the secrets it could see masked.
        message, fields = self._masker.text(message), self._masker.value(fields)
        now: datetime = self._clock()
        self._events.put(
            LogEntry(
                run_id=self._run_id,
                attempt=self._attempt,
                at=now,
                level=level,
                message=message,
                stream=stream,
                fields=fields,
            )
        )
