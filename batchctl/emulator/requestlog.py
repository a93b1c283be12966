"""The log of every HTTP request the emulator received."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class RequestRecord:
    """One request.

    ``status`` is what the client got: an HTTP status, or ``"dropped"`` when the connection
    was closed without a reply. ``handled_status`` is the status the emulator's handler
    produced, or None if no handler ran (a ``drop``/``429``/``500``/``503`` fault); with a
    ``lost_reply`` fault it is e.g. 200 while ``status`` is ``"dropped"``: the operation
    took effect but the client never heard. ``retry_count`` is the SDK's
    ``x-stainless-retry-count`` header, when sent.
    """

    time: float
    wall_time: float
    method: str
    path: str
    query: str
    status: int | Literal["dropped"]
    handled_status: int | None
    fault: str | None
    retry_count: int | None

    @property
    def succeeded(self) -> bool:
        """Whether the request took effect (its handler returned a 2xx status)."""
        return self.handled_status is not None and 200 <= self.handled_status < 300

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, as ``GET /_emulator/requests`` returns it."""
        data = asdict(self)
        data["succeeded"] = self.succeeded
        return data


class RequestLog:
    """An append-only, thread-safe list of RequestRecords."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> int:
        """Append a record; returns its index."""
        with self._lock:
            self._records.append(record)
            return len(self._records) - 1

    def replace(self, index: int, record: RequestRecord) -> None:
        """Correct a record (e.g. its reply could not be sent after all)."""
        with self._lock:
            if index < len(self._records):
                self._records[index] = record

    def records(self) -> list[RequestRecord]:
        """A copy of every record, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
