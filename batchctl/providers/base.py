"""The provider interface: what the core needs from a Batch API, whoever offers it.

Everything here is plain data. A second provider (say, Anthropic's Message Batches) implements
``Provider`` and maps its statuses onto ``TERMINAL``/``ACTIVE`` below; the engine never changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from batchctl.errors import BatchctlError, ExitCode
from batchctl.records import ACTIVE_PART_STATUSES, TERMINAL_PART_STATUSES

# The remote statuses (OpenAI's names, ``PartStatus``) and which of them are final.
TERMINAL = TERMINAL_PART_STATUSES
ACTIVE = ACTIVE_PART_STATUSES


class ProviderError(BatchctlError):
    """A call to the API failed. ``transient`` errors were retried until the policy gave up."""

    exit_code = ExitCode.FAILED

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.transient = transient


RetryListener = Callable[[str], None]
# Who hears of a call retried after a transient failure, in this thread: the submission being
# driven, which records it in its run's log.
_retry_listener: ContextVar[RetryListener | None] = ContextVar("retry_listener", default=None)


@contextmanager
def retry_notices(listener: RetryListener) -> Iterator[None]:
    """Within the block, tell ``listener`` (in this thread) of each API call a provider
    retries, with the reason."""
    token = _retry_listener.set(listener)
    try:
        yield
    finally:
        _retry_listener.reset(token)


def notify_retry(message: str) -> None:
    """A provider's report of a retried call, to the listener of this thread (if any)."""
    listener = _retry_listener.get()
    if listener is not None:
        listener(message)


class RequestCounts(NamedTuple):
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


class RemoteFile(NamedTuple):
    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int


class RemoteBatch(NamedTuple):
    """A batch as the API reports it (times are Unix seconds, as the API gives them).

    ``ended_at`` is when it reached its final status on the API's clock (its ``completed_at``,
    ``failed_at``, ``expired_at`` or ``cancelled_at``); None while it is in flight.
    """

    id: str
    status: str
    endpoint: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: int | None
    completed_at: int | None
    request_counts: RequestCounts
    metadata: Mapping[str, str]
    errors: tuple[Mapping[str, Any], ...]
    usage: Mapping[str, Any] | None
    model: str | None
    ended_at: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Provider(Protocol):
    name: str

    def upload(self, path: Path, filename: str) -> RemoteFile:
        """Upload a JSONL file for batch use. Never retried blindly: see ``find_file``."""
        ...

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        """A batch file with this name and size uploaded in the last ``within`` seconds (a span
        measured here, laid on the server's clock: this host's time of day is never trusted)."""
        ...

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        """Create a batch. Never retried blindly: see ``find_batch``."""
        ...

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        """The batch whose metadata has ``key`` = ``value``, among those created since the
        input file ``input_file_id`` was uploaded (by the server's clock, never this host's)."""
        ...

    def get_batch(self, batch_id: str) -> RemoteBatch: ...

    def list_batches(self) -> Iterator[RemoteBatch]:
        """Every batch of the account, newest first, page by page."""
        ...

    def batch_pages(self, *, since: int | None = None) -> Iterator[list[RemoteBatch]]:
        """The account's batches a page at a time (up to 100, one request each), newest first;
        with ``since`` (a ``created_at`` the API gave, never this host's clock) the last page is
        the one that reaches a batch created before it. The caller may stop any time sooner."""
        ...

    def cancel_batch(self, batch_id: str) -> RemoteBatch: ...

    def download(self, file_id: str, destination: Path) -> int:
        """Stream a file's content to ``destination`` (written whole or not at all); its size."""
        ...

    def close(self) -> None: ...
